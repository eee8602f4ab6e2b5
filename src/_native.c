/*
 * netguard._native -- the extension module that hosts native mode in the test process.
 *
 * Linux only (setup.py builds it there and nowhere else). It drives ng_got, the
 * mechanism that points the GOT entries of every loaded object for a table of libc
 * functions at replacements (src/ng_got.h; docs/internals.md "The GOT mechanism").
 *
 * What it exposes today is a test-only hook set, so that the mechanism can be exercised
 * from Python with real calls: replacements for the network functions that count their
 * calls and, while installed, fail the way a denied call fails (connect, sendto, sendmsg
 * and sendmmsg return -1 with errno EACCES; getaddrinfo returns EAI_SYSTEM with errno
 * EACCES; the gethostbyname family reports NO_RECOVERY, the _r variants returning
 * EACCES). The table is `selftest_table` below, in one place. Native mode proper will
 * pass its judging wrappers (src/ng_native.h) as another `ng_got_hook` table through
 * install_table(), which turns a failure into a Python exception.
 *
 * A replacement reached after uninstall (through a pointer that dlsym handed out while
 * the hooks were in place, as ctypes caches) calls the real function.
 *
 * GIL and interpreters: every entry point runs with the GIL held; the patched GOT is
 * process-wide state, so the module declares that it does not support sub-interpreters
 * and needs the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "ng_got.h"

/* ------------------------------------------------------------------------------------ */
/* The self-test hook set.                                                               */

enum {
    ST_CONNECT,
    ST_SENDTO,
    ST_SENDMSG,
    ST_SENDMMSG,
    ST_GETADDRINFO,
    ST_GETHOSTBYNAME,
    ST_GETHOSTBYNAME_R,
    ST_GETHOSTBYNAME2,
    ST_GETHOSTBYNAME2_R,
    ST_COUNT
};

static void *st_original[ST_COUNT]; /* set by ng_got_install, kept after uninstall */
static size_t st_calls[ST_COUNT];   /* atomic */
static int st_active;               /* atomic: deny while set */
static bool st_installed;           /* GIL: the self-test table is the installed one */

/* Count the call; true when it is to be denied. */
static inline bool
st_enter(int which)
{
    __atomic_fetch_add(&st_calls[which], 1, __ATOMIC_RELAXED);
    return __atomic_load_n(&st_active, __ATOMIC_ACQUIRE) != 0;
}

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
typedef ssize_t (*sendto_fn)(int, const void *, size_t, int, const struct sockaddr *,
                             socklen_t);
typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);
typedef int (*sendmmsg_fn)(int, struct mmsghdr *, unsigned int, int);
typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *,
                              struct addrinfo **);
typedef struct hostent *(*gethostbyname_fn)(const char *);
typedef int (*gethostbyname_r_fn)(const char *, struct hostent *, char *, size_t,
                                  struct hostent **, int *);
typedef struct hostent *(*gethostbyname2_fn)(const char *, int);
typedef int (*gethostbyname2_r_fn)(const char *, int, struct hostent *, char *, size_t,
                                   struct hostent **, int *);

static int
st_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    if (st_enter(ST_CONNECT)) {
        errno = EACCES;
        return -1;
    }
    return ((connect_fn)st_original[ST_CONNECT])(fd, addr, len);
}

static ssize_t
st_sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr,
          socklen_t len)
{
    if (st_enter(ST_SENDTO)) {
        errno = EACCES;
        return -1;
    }
    return ((sendto_fn)st_original[ST_SENDTO])(fd, buf, n, flags, addr, len);
}

static ssize_t
st_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (st_enter(ST_SENDMSG)) {
        errno = EACCES;
        return -1;
    }
    return ((sendmsg_fn)st_original[ST_SENDMSG])(fd, msg, flags);
}

static int
st_sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
    if (st_enter(ST_SENDMMSG)) {
        errno = EACCES;
        return -1;
    }
    return ((sendmmsg_fn)st_original[ST_SENDMMSG])(fd, vec, vlen, flags);
}

static int
st_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
               struct addrinfo **res)
{
    if (st_enter(ST_GETADDRINFO)) {
        errno = EACCES;
        return EAI_SYSTEM;
    }
    return ((getaddrinfo_fn)st_original[ST_GETADDRINFO])(node, service, hints, res);
}

static struct hostent *
st_gethostbyname(const char *name)
{
    if (st_enter(ST_GETHOSTBYNAME)) {
        h_errno = NO_RECOVERY;
        errno = EACCES;
        return NULL;
    }
    return ((gethostbyname_fn)st_original[ST_GETHOSTBYNAME])(name);
}

static int
st_gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t buflen,
                   struct hostent **result, int *h_errnop)
{
    if (st_enter(ST_GETHOSTBYNAME_R)) {
        *result = NULL;
        *h_errnop = NO_RECOVERY;
        return EACCES;
    }
    return ((gethostbyname_r_fn)st_original[ST_GETHOSTBYNAME_R])(name, ret, buf, buflen,
                                                                 result, h_errnop);
}

static struct hostent *
st_gethostbyname2(const char *name, int af)
{
    if (st_enter(ST_GETHOSTBYNAME2)) {
        h_errno = NO_RECOVERY;
        errno = EACCES;
        return NULL;
    }
    return ((gethostbyname2_fn)st_original[ST_GETHOSTBYNAME2])(name, af);
}

static int
st_gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf, size_t buflen,
                    struct hostent **result, int *h_errnop)
{
    if (st_enter(ST_GETHOSTBYNAME2_R)) {
        *result = NULL;
        *h_errnop = NO_RECOVERY;
        return EACCES;
    }
    return ((gethostbyname2_r_fn)st_original[ST_GETHOSTBYNAME2_R])(name, af, ret, buf, buflen,
                                                                   result, h_errnop);
}

/* The one table of the self-test set: name and replacement; index = ST_* constant. */
static const struct {
    const char *name;
    void *replacement;
} selftest_table[ST_COUNT] = {
    [ST_CONNECT] = {"connect", (void *)st_connect},
    [ST_SENDTO] = {"sendto", (void *)st_sendto},
    [ST_SENDMSG] = {"sendmsg", (void *)st_sendmsg},
    [ST_SENDMMSG] = {"sendmmsg", (void *)st_sendmmsg},
    [ST_GETADDRINFO] = {"getaddrinfo", (void *)st_getaddrinfo},
    [ST_GETHOSTBYNAME] = {"gethostbyname", (void *)st_gethostbyname},
    [ST_GETHOSTBYNAME_R] = {"gethostbyname_r", (void *)st_gethostbyname_r},
    [ST_GETHOSTBYNAME2] = {"gethostbyname2", (void *)st_gethostbyname2},
    [ST_GETHOSTBYNAME2_R] = {"gethostbyname2_r", (void *)st_gethostbyname2_r},
};

/* ------------------------------------------------------------------------------------ */
/* Python entry points.                                                                   */

/* Install a hook table: 0, or -1 with RuntimeError carrying ng_got's reason. */
static int
install_table(const ng_got_hook *hooks, size_t n)
{
    if (ng_got_installed()) {
        PyErr_SetString(PyExc_RuntimeError, "netguard._native: hooks are already installed");
        return -1;
    }
    if (ng_got_install(hooks, n) != 0) {
        PyErr_Format(PyExc_RuntimeError, "netguard._native: cannot install the hooks: %s",
                     ng_got_error());
        return -1;
    }
    return 0;
}

static int
selftest_index(PyObject *name)
{
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "hook names are str, not %.100s", Py_TYPE(name)->tp_name);
        return -1;
    }
    const char *text = PyUnicode_AsUTF8(name);
    if (text == NULL) {
        return -1;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        if (strcmp(text, selftest_table[i].name) == 0) {
            return i;
        }
    }
    PyErr_Format(PyExc_ValueError, "no self-test hook for %R (known: see SELFTEST_NAMES)",
                 name);
    return -1;
}

PyDoc_STRVAR(selftest_install_doc,
"_selftest_install(names, /)\n--\n\n"
"Test only: hook the functions named in `names` (from SELFTEST_NAMES) in every loaded\n"
"object with replacements that count their calls and fail as a denied call does\n"
"(EACCES), and reset the counts. RuntimeError if hooks are installed already or the\n"
"mechanism fails; ValueError for an unknown name.");

static PyObject *
native_selftest_install(PyObject *module, PyObject *names)
{
    ng_got_hook hooks[ST_COUNT];
    bool chosen[ST_COUNT] = {false};
    size_t n = 0;
    PyObject *seq = PySequence_Fast(names, "names must be an iterable of str");
    (void)module;
    if (seq == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        int k = selftest_index(PySequence_Fast_GET_ITEM(seq, i));
        if (k < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        if (!chosen[k]) {
            chosen[k] = true;
            hooks[n++] = (ng_got_hook){selftest_table[k].name, selftest_table[k].replacement,
                                       &st_original[k]};
        }
    }
    Py_DECREF(seq);
    for (int k = 0; k < ST_COUNT; k++) {
        __atomic_store_n(&st_calls[k], 0, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&st_active, 1, __ATOMIC_RELEASE);
    if (install_table(hooks, n) < 0) {
        __atomic_store_n(&st_active, 0, __ATOMIC_RELEASE);
        return NULL;
    }
    st_installed = true;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(selftest_count_doc,
"_selftest_count(name, /)\n--\n\n"
"Test only: how many calls reached the self-test replacement of `name` since the last\n"
"_selftest_install().");

static PyObject *
native_selftest_count(PyObject *module, PyObject *name)
{
    (void)module;
    int k = selftest_index(name);
    if (k < 0) {
        return NULL;
    }
    return PyLong_FromSize_t(__atomic_load_n(&st_calls[k], __ATOMIC_RELAXED));
}

PyDoc_STRVAR(uninstall_doc,
"uninstall()\n--\n\n"
"Restore every patched GOT slot (in objects still loaded, whose slot still holds the\n"
"replacement). A no-op when nothing is installed.");

static PyObject *
native_uninstall(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    ng_got_uninstall();
    if (st_installed) {
        __atomic_store_n(&st_active, 0, __ATOMIC_RELEASE);
        st_installed = false;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(installed_doc, "installed()\n--\n\nTrue while a hook table is installed.");

static PyObject *
native_installed(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return PyBool_FromLong(ng_got_installed());
}

PyDoc_STRVAR(rescan_doc,
"rescan()\n--\n\n"
"Scan the loaded objects again: objects loaded without going through a hooked dlopen,\n"
"or found mid-relocation by an earlier scan. A no-op when nothing is installed.");

static PyObject *
native_rescan(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    if (ng_got_rescan() != 0) {
        PyErr_Format(PyExc_RuntimeError, "netguard._native: rescan failed: %s", ng_got_error());
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(patched_doc,
"patched()\n--\n\n"
"The GOT slots patched now, oldest first: a list of (object path, symbol, slot address,\n"
"value before the patch) tuples. The main program is listed by its path.");

static PyObject *
native_patched(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    ng_got_patch *v = NULL;
    size_t n = 0;
    PyObject *list = NULL, *item = NULL;
    (void)module;
    if (ng_got_snapshot(&v, &n) != 0) {
        return PyErr_NoMemory();
    }
    list = PyList_New(0);
    if (list == NULL) {
        goto error;
    }
    for (size_t i = 0; i < n; i++) {
        PyObject *fields[4] = {
            PyUnicode_DecodeFSDefault(v[i].object),
            PyUnicode_FromString(v[i].symbol),
            PyLong_FromVoidPtr((void *)v[i].slot),
            PyLong_FromVoidPtr(v[i].old),
        };
        item = PyTuple_New(4);
        for (int f = 0; f < 4; f++) {
            if (item != NULL && fields[f] != NULL) {
                PyTuple_SET_ITEM(item, f, fields[f]);
            }
            else {
                Py_XDECREF(fields[f]);
                Py_CLEAR(item);
            }
        }
        if (item == NULL || PyList_Append(list, item) < 0) {
            goto error;
        }
        Py_CLEAR(item);
    }
    free(v);
    return list;
error:
    Py_XDECREF(item);
    Py_XDECREF(list);
    free(v);
    return NULL;
}

PyDoc_STRVAR(stats_doc,
"stats()\n--\n\n"
"Counters of the mechanism since the last install, as a dict: objects (relocation\n"
"tables read), scans, patched (slots), foreign (slots of a hooked name left alone\n"
"because they held another function), failed (slots that could not be written),\n"
"deferred (slots the last scan left for later: their object was mid-relocation).");

static PyObject *
native_stats(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    ng_got_stats s;
    (void)module;
    ng_got_get_stats(&s);
    return Py_BuildValue("{snsnsnsnsnsn}", "objects", (Py_ssize_t)s.objects, "scans",
                         (Py_ssize_t)s.scans, "patched", (Py_ssize_t)s.patched, "foreign",
                         (Py_ssize_t)s.foreign, "failed", (Py_ssize_t)s.failed, "deferred",
                         (Py_ssize_t)s.deferred);
}

static PyMethodDef native_methods[] = {
    {"_selftest_install", (PyCFunction)native_selftest_install, METH_O, selftest_install_doc},
    {"_selftest_count", (PyCFunction)native_selftest_count, METH_O, selftest_count_doc},
    {"uninstall", (PyCFunction)native_uninstall, METH_NOARGS, uninstall_doc},
    {"installed", (PyCFunction)native_installed, METH_NOARGS, installed_doc},
    {"rescan", (PyCFunction)native_rescan, METH_NOARGS, rescan_doc},
    {"patched", (PyCFunction)native_patched, METH_NOARGS, patched_doc},
    {"stats", (PyCFunction)native_stats, METH_NOARGS, stats_doc},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------------------------ */
/* Module.                                                                               */

static int
native_exec(PyObject *module)
{
    PyObject *names = PyTuple_New(ST_COUNT);
    if (names == NULL) {
        return -1;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        PyObject *s = PyUnicode_FromString(selftest_table[i].name);
        if (s == NULL) {
            Py_DECREF(names);
            return -1;
        }
        PyTuple_SET_ITEM(names, i, s);
    }
    int rc = PyModule_AddObjectRef(module, "SELFTEST_NAMES", names);
    Py_DECREF(names);
    if (rc < 0 || PyModule_AddIntConstant(module, "MAX_HOOKS", NG_GOT_MAX_HOOKS) < 0) {
        return -1;
    }
    return 0;
}

static void
native_free(void *module)
{
    (void)module;
    /* at interpreter shutdown: leave the process as it was found */
    ng_got_uninstall();
    __atomic_store_n(&st_active, 0, __ATOMIC_RELEASE);
    st_installed = false;
}

static PyModuleDef_Slot native_slots[] = {
    {Py_mod_exec, native_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(native_doc,
"netguard's native mode in the test process (Linux): GOT patching of loaded objects.\n\n"
"Today it exposes a test-only hook set (_selftest_install, _selftest_count) and the\n"
"mechanism's state (installed, patched, stats, rescan, uninstall); see\n"
"docs/internals.md, \"The GOT mechanism\".");

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "netguard._native",
    .m_doc = native_doc,
    .m_size = 0,
    .m_methods = native_methods,
    .m_slots = native_slots,
    .m_free = native_free,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&native_module);
}
