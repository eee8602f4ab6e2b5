/*
 * netguard._netguard -- the C core of netguard.
 *
 * What lives here (docs/internals.md is the contract):
 *   - compiled policies: per address family, sorted disjoint address intervals, each
 *     carrying the union of the port sets of every rule covering it, stored in one
 *     versioned, position-independent, read-only blob (Policy.to_bytes/from_bytes);
 *   - address normalisation (v4-mapped, scope ids, this-host, inet_aton forms);
 *   - the hooks: C method descriptors on socket.socket for connect, connect_ex, sendto and
 *     sendmsg that call the original C functions directly, C replacements for the DNS
 *     functions, and an audit-hook backstop for calls that bypass both.
 *
 * An allowed call never enters Python. A denied call makes exactly one call into the
 * Python callback given to install(), which records it and raises or warns. C never
 * formats user-facing text.
 *
 * GIL and interpreters: every entry point runs with the GIL held; the active policy is a
 * strong reference swapped under the GIL. The hooks are installed on types of the one
 * interpreter that imported this module, and audit hooks are process-wide, so the module
 * declares that it does not support sub-interpreters and needs the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define NG_T_INT T_INT
#else
#define NG_T_INT Py_T_INT
#endif

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#ifndef _WIN32
#include <netdb.h>
#endif

#include "ng_build.h"
#include "ng_policy.h"

/* Keep an exception aside while cleaning up. */
typedef struct {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc;
#else
    PyObject *type, *value, *tb;
#endif
} ng_saved_error;

static inline void
err_save(ng_saved_error *e)
{
#if PY_VERSION_HEX >= 0x030C0000
    e->exc = PyErr_GetRaisedException();
#else
    PyErr_Fetch(&e->type, &e->value, &e->tb);
#endif
}

static inline void
err_restore(ng_saved_error *e)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(e->exc);
#else
    PyErr_Restore(e->type, e->value, e->tb);
#endif
}

/* ------------------------------------------------------------------------------------ */
/* 128-bit unsigned keys: one representation for both families in the builder.          */

/* ------------------------------------------------------------------------------------ */
/* Module state.                                                                         */

typedef struct {
    PyObject *policy_type;    /* Policy heap type */
    PyObject *callback;       /* deny callback, NULL when not installed */
    /* What the hooks judge by, and the two levels it is chosen from: the guard stack's
       (activate/deactivate) while it is set, else the base's (activate_base), which the
       pytest plugin sets for each phase of each test. */
    PyObject *active;         /* effective Policy, NULL = no checks */
    bool strict;              /* audit backstop judges while true */
    bool top_set;             /* a guard of the stack is active */
    PyObject *top;            /* its Policy, NULL = no checks */
    bool top_strict;
    PyObject *base;           /* the base guard's Policy, NULL = none or no checks */
    bool base_strict;
    bool audit_added;         /* PySys_AddAuditHook done (it cannot be undone) */
    bool installed;
    /* The base switch (aim_base, enter_base, start_base, leave_base): the pytest plugin's
       per-phase path. What the aimed test's phases run under, and the owner (the guard
       violations are recorded on) of the phase that runs now. */
    PyObject *aim_item;       /* the test whose phases enter_base() may start, or NULL */
    PyObject *aim_owner;      /* what its phases are recorded on, NULL = nothing aimed */
    PyObject *aim_policy;     /* its Policy, NULL = no checks */
    bool aim_strict;
    bool aim_quick;           /* enter_base() may start its phases (else Python does) */
    PyObject *base_owner;     /* owner of the running phase, NULL between phases */
    bool base_marked;         /* the running phase has something to report */
    PyThreadState *in_hook;   /* thread currently inside a hook's original call */

    /* The last dotted quad parsed on the hot path: most code connects to the same few
       addresses, and comparing 7..15 bytes is cheaper than parsing them. GIL-protected. */
    char quad_text[16];
    size_t quad_len;
    uint32_t quad_addr;

    PyTypeObject *sock_type;  /* _socket.socket */
    PyObject *socket_class;   /* socket.socket */
    PyObject *socket_mod, *c_socket_mod;
    Py_ssize_t off_family, off_type;

    PyCFunction orig_connect, orig_connect_ex, orig_sendto, orig_sendmsg;
    PyObject *saved_methods[4]; /* socket.socket.__dict__ entries before install, or NULL */
    PyObject *orig_getaddrinfo; /* _socket.getaddrinfo */
    PyObject *saved_dns[2][5];  /* [socket, _socket][function] before install, or NULL */
    PyObject *orig_dns[5];      /* originals of the DNS functions, from _socket */
    PyObject *hook_dns[5];      /* our replacements */

    PyObject *str_op[9];
} ng_state;

/* The hooks are method descriptors installed on a type of another module, which gives
   them no route back to this module: they reach the state through this pointer. It is
   set once by the module's exec slot; a second exec is refused. */
static ng_state *g_state = NULL;

enum {
    OP_CONNECT,
    OP_CONNECT_EX,
    OP_SENDTO,
    OP_SENDMSG,
    OP_GETADDRINFO,
    OP_GETHOSTBYNAME,
    OP_GETHOSTBYNAME_EX,
    OP_GETHOSTBYADDR,
    OP_GETNAMEINFO,
};
static const char *const op_names[9] = {
    "connect",       "connect_ex",       "sendto",        "sendmsg",     "getaddrinfo",
    "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo",
};

static const char *const method_names[4] = {"connect", "connect_ex", "sendto", "sendmsg"};
static const char *const dns_names[5] = {"getaddrinfo", "gethostbyname", "gethostbyname_ex",
                                         "gethostbyaddr", "getnameinfo"};

/* ------------------------------------------------------------------------------------ */
/* Policy objects.                                                                       */

typedef struct {
    PyObject_HEAD
    char *blob; /* PyMem_Malloc'd, read-only once built */
    size_t size;
    ng_view view;
    PyObject *learned; /* dict: 17-byte key -> tuple of port word indices, or NULL */
} PolicyObject;

static void
Policy_dealloc(PolicyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->learned);
    PyMem_Free(self->blob);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
Policy_traverse(PolicyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->learned);
    return 0;
}

static int
Policy_clear(PolicyObject *self)
{
    Py_CLEAR(self->learned);
    return 0;
}

static PyObject *
policy_wrap(PyTypeObject *type, char *blob, size_t size)
{
    /* takes ownership of blob */
    PolicyObject *self = (PolicyObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        PyMem_Free(blob);
        return NULL;
    }
    self->blob = blob;
    self->size = size;
    const char *bad = ng_view_init(blob, size, &self->view);
    if (bad != NULL) {
        PyErr_SetString(PyExc_ValueError, bad);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *
Policy_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ipv4", "ipv6", "portsets", "unix", "hosts", "flags", NULL};
    build_input in = {0};
    PyObject *flags_obj;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*OOOO!:Policy", kwlist, &in.v4, &in.v6,
                                     &in.portsets, &in.unix, &in.hosts,
                                     &PyLong_Type, &flags_obj)) {
        return NULL;
    }
    int overflow;
    long long flags = PyLong_AsLongLongAndOverflow(flags_obj, &overflow);
    if (flags == -1 && PyErr_Occurred()) {
        goto done;
    }
    if (overflow || flags < 0 || (flags & ~(long long)NG_KNOWN_FLAGS)) {
        PyErr_Format(PyExc_ValueError, "unknown policy flags: %R", flags_obj);
        goto done;
    }
    in.flags = (uint32_t)flags;
    char *blob;
    size_t size;
    if (policy_build(&in, &blob, &size) == 0) {
        /* the builder's output passes the same checks as from_bytes() input */
        result = policy_wrap(type, blob, size);
    }
done:
    PyBuffer_Release(&in.v4);
    PyBuffer_Release(&in.v6);
    return result;
}

static bool
policy_learned_allows(PolicyObject *p, const ng_addr *a, long port);

static bool
policy_allows_addr(PolicyObject *p, const ng_addr *a, long port)
{
    if (p->view.h->flags & NG_ALLOW_ALL) {
        return true;
    }
    uint32_t w = iv_lookup_addr(&p->view, a);
    if (w != NG_NO_PORTS && ports_contains(p->view.words, w, (uint32_t)port)) {
        return true;
    }
    return p->learned != NULL && policy_learned_allows(p, a, port);
}

/* Learned addresses ---------------------------------------------------------------- */

static PyObject *
learned_key(const ng_addr *a)
{
    unsigned char key[17] = {0};
    const unsigned char *b = a->bytes;
    if (a->family == AF_INET6 && memcmp(b, ng_v4mapped_prefix, 12) == 0) {
        key[0] = 4;
        memcpy(key + 1, b + 12, 4);
    }
    else if (a->family == AF_INET6) {
        key[0] = 6;
        memcpy(key + 1, b, 16);
    }
    else {
        key[0] = 4;
        memcpy(key + 1, b, 4);
    }
    return PyBytes_FromStringAndSize((const char *)key, 17);
}

static bool
policy_learned_allows(PolicyObject *p, const ng_addr *a, long port)
{
    bool ok = false;
    PyObject *key = learned_key(a);
    if (key == NULL) {
        PyErr_Clear(); /* fail closed: judged as not learned */
        return false;
    }
    PyObject *ports = PyDict_GetItemWithError(p->learned, key); /* borrowed */
    Py_DECREF(key);
    if (ports == NULL) {
        PyErr_Clear();
        return false;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(ports) && !ok; i++) {
        uint32_t w = (uint32_t)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(ports, i));
        ok = ports_contains(p->view.words, w, (uint32_t)port);
    }
    return ok;
}

/* Remember the addresses of a lookup allowed by host rules, with those rules' ports. */
static int
policy_learn(PolicyObject *p, const char *name, size_t n, PyObject *addrs_hosts)
{
    PyObject *ports = NULL, *list = NULL;
    int rc = -1;
    list = PyList_New(0);
    if (list == NULL) {
        goto done;
    }
    for (uint32_t i = 0; i < p->view.h->n_hosts; i++) {
        const ng_host_ref *r = &p->view.host_refs[i];
        if (ng_host_pattern_matches(p->view.strings + r->offset, r->length, name, n)) {
            PyObject *w = PyLong_FromUnsignedLong(r->ports);
            if (w == NULL || PyList_Append(list, w) < 0) {
                Py_XDECREF(w);
                goto done;
            }
            Py_DECREF(w);
        }
    }
    ports = PyList_AsTuple(list);
    if (ports == NULL) {
        goto done;
    }
    if (p->learned == NULL && (p->learned = PyDict_New()) == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(addrs_hosts); i++) {
        PyObject *host = PyList_GET_ITEM(addrs_hosts, i);
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(host, &len);
        ng_addr a;
        if (s == NULL) {
            goto done;
        }
        if (!ng_parse_numeric(s, (size_t)len, AF_UNSPEC, &a)) {
            continue;
        }
        PyObject *key = learned_key(&a);
        if (key == NULL) {
            goto done;
        }
        PyObject *old = PyDict_GetItemWithError(p->learned, key);
        int r;
        if (old != NULL) {
            /* the union: a repeated lookup must not grow the entry */
            PyObject *merged = PySequence_List(old);
            r = merged ? 0 : -1;
            for (Py_ssize_t k = 0; r == 0 && k < PyTuple_GET_SIZE(ports); k++) {
                PyObject *w = PyTuple_GET_ITEM(ports, k);
                int has = PySequence_Contains(merged, w);
                r = has < 0 ? -1 : has ? 0 : PyList_Append(merged, w);
            }
            if (r == 0 && PyList_GET_SIZE(merged) != PyTuple_GET_SIZE(old)) {
                PyObject *t = PyList_AsTuple(merged);
                r = t ? PyDict_SetItem(p->learned, key, t) : -1;
                Py_XDECREF(t);
            }
            Py_XDECREF(merged);
        }
        else {
            r = PyErr_Occurred() ? -1 : PyDict_SetItem(p->learned, key, ports);
        }
        Py_DECREF(key);
        if (r < 0) {
            goto done;
        }
    }
    rc = 0;
done:
    Py_XDECREF(ports);
    Py_XDECREF(list);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Policy methods.                                                                       */

/* Text of a str/bytes host as ASCII bytes, the way CPython's idna converter does: ASCII
   str as is, other str IDNA-encoded, bytes and bytearray as is. New reference or NULL
   with an exception. */
static PyObject *
host_as_bytes(PyObject *host)
{
    if (PyUnicode_Check(host)) {
        if (PyUnicode_IS_ASCII(host)) {
            return PyUnicode_AsASCIIString(host);
        }
        return PyUnicode_AsEncodedString(host, "idna", NULL);
    }
    if (PyBytes_Check(host)) {
        return Py_NewRef(host);
    }
    if (PyByteArray_Check(host)) {
        return PyBytes_FromStringAndSize(PyByteArray_AS_STRING(host),
                                         PyByteArray_GET_SIZE(host));
    }
    PyErr_Format(PyExc_TypeError, "str, bytes or bytearray expected, not %s",
                 Py_TYPE(host)->tp_name);
    return NULL;
}

PyDoc_STRVAR(Policy_allows_doc,
"allows($self, host, port=None, /)\n--\n\n"
"Whether the policy allows host (an IP address in any form the kernel accepts,\n"
"'unix:PATH', or a host name) on port. Static: learned addresses are not consulted\n"
"and nothing touches the network. A port is required for an IP address.");

static PyObject *
Policy_allows(PolicyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *bytes = NULL, *result = NULL;
    long port = -1;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "allows() takes host and an optional port");
        return NULL;
    }
    if (!PyUnicode_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "host must be str, not %s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    if (nargs == 2 && args[1] != Py_None) {
        int overflow;
        port = PyLong_AsLongAndOverflow(args[1], &overflow);
        if (port == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (overflow || port < 0 || port > 65535) {
            PyErr_Format(PyExc_ValueError, "port must be 0..65535, not %R", args[1]);
            return NULL;
        }
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(args[0], &n);
    if (s == NULL) {
        return NULL;
    }
    const ng_view *v = &self->view;
    if (n >= 5 && memcmp(s, "unix:", 5) == 0) {
        if (port >= 0) {
            PyErr_SetString(PyExc_ValueError, "a unix: destination takes no port");
            return NULL;
        }
#ifdef NG_HAVE_UNIX
        PyObject *path = PyUnicode_Substring(args[0], 5, PY_SSIZE_T_MAX);
        if (path == NULL) {
            return NULL;
        }
        bytes = PyUnicode_EncodeFSDefault(path);
        Py_DECREF(path);
        if (bytes == NULL) {
            return NULL;
        }
        const char *path_s = PyBytes_AS_STRING(bytes);
        size_t path_n = (size_t)PyBytes_GET_SIZE(bytes);
        const char *nul = memchr(path_s, '\0', path_n);
        if (nul != NULL && path_s[0] != '@') {
            path_n = (size_t)(nul - path_s); /* as connect() judges it */
        }
        result = PyBool_FromLong(ng_view_allows_unix(v, path_s, path_n));
        Py_DECREF(bytes);
        return result;
#else
        return PyBool_FromLong(v->h->flags & NG_ALLOW_ALL);
#endif
    }
    const char *h = s;
    size_t hn = (size_t)n;
    if (hn >= 2 && h[0] == '[' && h[hn - 1] == ']') {
        h++;
        hn -= 2;
    }
    ng_addr a;
    if (ng_parse_numeric(h, hn, AF_UNSPEC, &a)) {
        if (port < 0) {
            PyErr_SetString(PyExc_ValueError, "a port is required for an IP address");
            return NULL;
        }
        if (v->h->flags & NG_ALLOW_ALL) {
            Py_RETURN_TRUE;
        }
        uint32_t w = iv_lookup_addr(v, &a);
        return PyBool_FromLong(w != NG_NO_PORTS && ports_contains(v->words, w, (uint32_t)port));
    }
    bytes = host_as_bytes(args[0]);
    if (bytes == NULL) {
        return NULL;
    }
    char name[256];
    Py_ssize_t nn = (Py_ssize_t)ng_normalize_name(PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes),
                                   name);
    Py_DECREF(bytes);
    if (nn < 0) {
        Py_RETURN_FALSE;
    }
    if (nn == 0) {
        /* no name, no lookup */
        return PyBool_FromLong(port < 0 || (v->h->flags & NG_ALLOW_ALL));
    }
    bool by_rule, port_ok;
    bool ok = ng_view_allows_name(v, name, (size_t)nn, port, &by_rule, &port_ok);
    return PyBool_FromLong(port < 0 ? ok : port_ok);
}

PyDoc_STRVAR(Policy_count_allowed_doc,
"count_allowed($self, family, addresses, port, /)\n--\n\n"
"Judge many addresses in one call: family 4 with a buffer of uint32 addresses, or 6\n"
"with a buffer of uint64 pairs (high, low), all on port. Returns how many are\n"
"allowed. Used by the benchmarks and the differential tests; no Python per address.");

static PyObject *
Policy_count_allowed(PolicyObject *self, PyObject *args)
{
    int family;
    Py_buffer buf;
    long port;
    if (!PyArg_ParseTuple(args, "iy*l:count_allowed", &family, &buf, &port)) {
        return NULL;
    }
    Py_ssize_t count = 0;
    const ng_view *v = &self->view;
    if (port < 0 || port > 65535 || (family != 4 && family != 6)) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "family must be 4 or 6 and port 0..65535");
        return NULL;
    }
    if (family == 4) {
        size_t n = (size_t)buf.len / 4;
        for (size_t i = 0; i < n; i++) {
            uint32_t x;
            memcpy(&x, (const char *)buf.buf + 4 * i, 4);
            count += ng_view_allows_v4(v, x, (uint32_t)port);
        }
    }
    else {
        size_t n = (size_t)buf.len / 16;
        for (size_t i = 0; i < n; i++) {
            u128 x;
            memcpy(&x.hi, (const char *)buf.buf + 16 * i, 8);
            memcpy(&x.lo, (const char *)buf.buf + 16 * i + 8, 8);
            count += ng_view_allows_v6(v, x, (uint32_t)port);
        }
    }
    PyBuffer_Release(&buf);
    return PyLong_FromSsize_t(count);
}

PyDoc_STRVAR(Policy_to_bytes_doc,
"to_bytes($self, /)\n--\n\n"
"The compiled policy as one versioned, position-independent blob.");

static PyObject *
Policy_to_bytes(PolicyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBytes_FromStringAndSize(self->blob, (Py_ssize_t)self->size);
}

PyDoc_STRVAR(Policy_from_bytes_doc,
"from_bytes($type, data, /)\n--\n\n"
"A policy from a blob written by to_bytes(). Every offset, count and ordering is\n"
"checked; anything malformed raises ValueError.");

static PyObject *
Policy_from_bytes(PyTypeObject *type, PyObject *arg)
{
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    /* a private, aligned copy: the caller's buffer may change or be unaligned */
    char *blob = PyMem_Malloc(buf.len ? (size_t)buf.len : 1);
    if (blob == NULL) {
        PyBuffer_Release(&buf);
        return PyErr_NoMemory();
    }
    memcpy(blob, buf.buf, (size_t)buf.len);
    size_t size = (size_t)buf.len;
    PyBuffer_Release(&buf);
    return policy_wrap(type, blob, size);
}

static PyObject *
Policy_get_flags(PolicyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(self->view.h->flags);
}

static PyObject *
Policy_get_intervals(PolicyObject *self, void *Py_UNUSED(closure))
{
    return Py_BuildValue("(II)", self->view.h->n_v4, self->view.h->n_v6);
}

static PyObject *
Policy_get_nbytes(PolicyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->size);
}

static PyObject *
Policy_get_learned(PolicyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->learned ? PyDict_GET_SIZE(self->learned) : 0);
}

static PyMethodDef Policy_methods[] = {
    {"allows", (PyCFunction)(void (*)(void))Policy_allows, METH_FASTCALL, Policy_allows_doc},
    {"count_allowed", (PyCFunction)Policy_count_allowed, METH_VARARGS,
     Policy_count_allowed_doc},
    {"to_bytes", (PyCFunction)Policy_to_bytes, METH_NOARGS, Policy_to_bytes_doc},
    {"from_bytes", (PyCFunction)Policy_from_bytes, METH_O | METH_CLASS, Policy_from_bytes_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Policy_getset[] = {
    {"flags", (getter)Policy_get_flags, NULL, "ALLOW_ALL | DNS_LOCALHOST bits.", NULL},
    {"intervals", (getter)Policy_get_intervals, NULL,
     "Number of (IPv4, IPv6) intervals in the compiled tables.", NULL},
    {"nbytes", (getter)Policy_get_nbytes, NULL, "Size of the compiled blob in bytes.", NULL},
    {"learned", (getter)Policy_get_learned, NULL,
     "Number of addresses learned from lookups allowed by host rules.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(Policy_doc,
"Policy(ipv4, ipv6, portsets, unix, hosts, flags)\n--\n\n"
"A compiled policy. Built by netguard._impl from parsed rules: ipv4 is a buffer of\n"
"uint64 triples (first, last, portset), ipv6 of 5-tuples (first_hi, first_lo,\n"
"last_hi, last_lo, portset); portsets a sequence of None (any port) or sorted merged\n"
"(lo, hi) tuples; unix a sequence of globs; hosts a sequence of (pattern, portset).");

static PyType_Slot Policy_slots[] = {
    {Py_tp_new, Policy_new},
    {Py_tp_dealloc, Policy_dealloc},
    {Py_tp_traverse, Policy_traverse},
    {Py_tp_clear, Policy_clear},
    {Py_tp_methods, Policy_methods},
    {Py_tp_getset, Policy_getset},
    {Py_tp_doc, (void *)Policy_doc},
    {0, NULL},
};

static PyType_Spec Policy_spec = {
    .name = "netguard._netguard.Policy",
    .basicsize = sizeof(PolicyObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Policy_slots,
};

/* ------------------------------------------------------------------------------------ */
/* Judging a call.                                                                       */

static inline int
sock_int(PyObject *sock, Py_ssize_t off)
{
    return *(const int *)((const char *)sock + off);
}

/*
 * While a hook calls an original function, the audit event that function raises has
 * already been judged. The marker names the thread; it is cleared only by the thread that
 * set it, because another thread may have set its own while this one had released the
 * GIL inside the original. CPython raises the event before it blocks, so a marker that
 * was overwritten only costs a second, identical judgement.
 */
static inline PyThreadState *
marker_set(ng_state *st)
{
    PyThreadState *me = PyThreadState_Get();
    st->in_hook = me;
    return me;
}

static inline void
marker_clear(ng_state *st, PyThreadState *me)
{
    if (st->in_hook == me) {
        st->in_hook = NULL;
    }
}

/* Call the deny callback: 0 = proceed, -1 = exception set. */
static int
deny(ng_state *st, int op, int family, PyObject *host, long port)
{
    PyObject *res, *port_obj;
    if (st->callback == NULL) {
        /* installed hooks always have a callback; be safe */
        PyErr_SetString(PyExc_PermissionError, "netguard: network call blocked");
        return -1;
    }
    port_obj = port >= 0 ? PyLong_FromLong(port) : Py_NewRef(Py_None);
    if (port_obj == NULL) {
        return -1;
    }
    if (st->base_owner != NULL) {
        st->base_marked = true; /* leave_base() hands the phase to Python */
    }
    PyObject *cb = Py_NewRef(st->callback); /* the callback may uninstall */
    res = PyObject_CallFunction(cb, "OiOO", st->str_op[op], family, host, port_obj);
    Py_DECREF(cb);
    Py_DECREF(port_obj);
    if (res == NULL) {
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

static int
deny_addr(ng_state *st, int op, const ng_addr *a, long port)
{
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(a->family, a->bytes, text, sizeof(text)) == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    PyObject *host = PyUnicode_FromString(text);
    if (host == NULL) {
        return -1;
    }
    int r = deny(st, op, a->family, host, port);
    Py_DECREF(host);
    return r;
}

static int
deny_name(ng_state *st, int op, const char *name, Py_ssize_t n, long port)
{
    PyObject *host = PyUnicode_DecodeASCII(name, n, "replace");
    if (host == NULL) {
        return -1;
    }
    int r = deny(st, op, 0, host, port);
    Py_DECREF(host);
    return r;
}

/* An exact int's value when it is small, else -1 (no exception): the hot path's port. */
static inline long
small_int(PyObject *obj)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)obj)) {
        return (long)PyUnstable_Long_CompactValue((PyLongObject *)obj);
    }
    return -1;
#else
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
    }
    return v;
#endif
}

/* Read a port the way CPython's "i" format does. false: not parseable here (the original
   call raises its own error). */
static bool
parse_port(PyObject *obj, long *port)
{
    PyObject *idx;
    if (PyLong_CheckExact(obj)) {
        idx = Py_NewRef(obj);
    }
    else if (PyFloat_Check(obj) || !PyIndex_Check(obj)) {
        return false;
    }
    else if ((idx = PyNumber_Index(obj)) == NULL) {
        PyErr_Clear();
        return false;
    }
    int overflow;
    long v = PyLong_AsLongAndOverflow(idx, &overflow);
    Py_DECREF(idx);
    if ((v == -1 && PyErr_Occurred()) || overflow || v < 0 || v > 65535) {
        PyErr_Clear();
        return false;
    }
    *port = v;
    return true;
}

static PyObject *result_hosts(int op, PyObject *result);

/* AF_INET6 flowinfo and scope id as CPython reads them ("I": an index, masked to 32
   bits; flowinfo at most 0xfffff). false: the original raises its own error. */
static bool
flow_scope_valid(PyObject *addr, Py_ssize_t size)
{
    for (Py_ssize_t i = 2; i < size; i++) {
        PyObject *item = PyTuple_GET_ITEM(addr, i);
        if (PyFloat_Check(item) || !PyIndex_Check(item)) {
            return false;
        }
        PyObject *idx = PyNumber_Index(item);
        if (idx == NULL) {
            PyErr_Clear();
            return false;
        }
        unsigned long v = PyLong_AsUnsignedLongMask(idx);
        Py_DECREF(idx);
        if (v == (unsigned long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return false;
        }
        if (i == 2 && (v & 0xffffffffu) > 0xfffffu) {
            return false;
        }
    }
    return true;
}

/* (host, port, *rest of addr): the address tuple with the judged host and port. */
static PyObject *
replace_host_port(PyObject *addr, PyObject *host, long port)
{
    Py_ssize_t n = PyTuple_GET_SIZE(addr);
    PyObject *t = PyTuple_New(n);
    PyObject *p = PyLong_FromLong(port);
    if (t == NULL || p == NULL) {
        Py_XDECREF(t);
        Py_XDECREF(p);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, Py_NewRef(host));
    PyTuple_SET_ITEM(t, 1, p);
    for (Py_ssize_t i = 2; i < n; i++) {
        PyTuple_SET_ITEM(t, i, Py_NewRef(PyTuple_GET_ITEM(addr, i)));
    }
    return t;
}

/*
 * The hot path, kept small so that it costs no more than it must: an AF_INET socket given
 * ("a.b.c.d", small int) that the tables allow. false sends the call to judge_address.
 */
static inline bool
fast_allowed(ng_state *st, PolicyObject *pol, PyObject *sock, PyObject *addr)
{
    if (!PyTuple_CheckExact(addr) || PyTuple_GET_SIZE(addr) != 2 ||
        sock_int(sock, st->off_family) != AF_INET) {
        return false;
    }
    PyObject *host = PyTuple_GET_ITEM(addr, 0), *port_obj = PyTuple_GET_ITEM(addr, 1);
    if (!PyUnicode_CheckExact(host) || !PyUnicode_IS_ASCII(host) ||
        !PyLong_CheckExact(port_obj)) {
        return false;
    }
    long port = small_int(port_obj);
    if (port < 0 || port > 65535) {
        return false;
    }
    const char *text = (const char *)PyUnicode_DATA(host);
    size_t len = (size_t)PyUnicode_GET_LENGTH(host);
    uint32_t v4;
    if (len == st->quad_len && memcmp(text, st->quad_text, len) == 0) {
        v4 = st->quad_addr;
    }
    else if (ng_parse_dotted_quad(text, len, &v4)) {
        memcpy(st->quad_text, text, len);
        st->quad_len = len;
        st->quad_addr = v4;
    }
    else {
        return false;
    }
    return ng_view_allows_v4(&pol->view, v4, (uint32_t)port);
}

/*
 * A host name in an address: judged by the DNS policy; then, when resolving (the hooks,
 * not the audit backstop), looked up once here with the original getaddrinfo, the first
 * address judged, and the original call handed that number (no second lookup, no gap
 * between check and use). Same returns as judge_address. name_obj is borrowed.
 */
static int
judge_name(ng_state *st, PolicyObject *pol, int op, PyObject *sock, PyObject *addr,
           PyObject *name_obj, const char *s, Py_ssize_t n, long port, bool resolve,
           PyObject **replacement)
{
    int family = sock_int(sock, st->off_family);
    Py_ssize_t size = PyTuple_GET_SIZE(addr);
    ng_addr a;
    char name[256];
    Py_ssize_t nn = (Py_ssize_t)ng_normalize_name(s, (size_t)n, name);
    bool by_rule = false, port_ok = false;
    int rc = -1;
    PyObject *infos = NULL, *newaddr = NULL;
    if (nn < 0 || !ng_view_allows_name(&pol->view, name, (size_t)nn, port, &by_rule,
                                      &port_ok)) {
        if (deny_name(st, op, nn < 0 ? s : name, nn < 0 ? n : nn, port) < 0) {
            goto done;
        }
        port_ok = true; /* let through (warn mode): one event per call */
    }
    if (!resolve) {
        rc = 0;
        goto done;
    }
    /* resolve once, under our control, and hand the original a numeric address */
    PyThreadState *me = marker_set(st);
    infos = PyObject_CallFunction(st->orig_getaddrinfo, "Olii", name_obj, port, family,
                                  sock_int(sock, st->off_type));
    marker_clear(st, me);
    if (infos == NULL) {
        goto done;
    }
    if (!PyList_Check(infos) || PyList_GET_SIZE(infos) == 0) {
        PyErr_SetString(PyExc_OSError, "getaddrinfo returned an empty list");
        goto done;
    }
    PyObject *info = PyList_GET_ITEM(infos, 0);
    PyObject *sa;
    if (!PyTuple_Check(info) || PyTuple_GET_SIZE(info) != 5 ||
        !PyTuple_Check(sa = PyTuple_GET_ITEM(info, 4)) || PyTuple_GET_SIZE(sa) < 2) {
        PyErr_SetString(PyExc_OSError, "unexpected getaddrinfo result");
        goto done;
    }
    PyObject *ip = PyTuple_GET_ITEM(sa, 0);
    Py_ssize_t iplen;
    const char *ips = PyUnicode_Check(ip) ? PyUnicode_AsUTF8AndSize(ip, &iplen) : NULL;
    if (ips == NULL || !ng_parse_numeric(ips, (size_t)iplen, family, &a)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_OSError, "unexpected getaddrinfo result");
        }
        goto done;
    }
    if (by_rule) {
        /* a lookup allowed by a host rule: its addresses are learned */
        PyObject *hosts = result_hosts(OP_GETADDRINFO, infos);
        int r = hosts ? policy_learn(pol, name, (size_t)nn, hosts) : -1;
        Py_XDECREF(hosts);
        if (r < 0) {
            goto done;
        }
    }
    if (!port_ok && !policy_allows_addr(pol, &a, port) &&
        deny_addr(st, op, &a, port) < 0) {
        goto done;
    }
    if (family == AF_INET) {
        newaddr = replace_host_port(addr, ip, port);
    }
    else {
        /* the caller's flowinfo and scope id win over the resolved ones */
        PyObject *flow = size > 2 ? PyTuple_GET_ITEM(addr, 2)
                                  : (PyTuple_GET_SIZE(sa) > 2 ? PyTuple_GET_ITEM(sa, 2)
                                                              : NULL);
        PyObject *scope = size > 3 ? PyTuple_GET_ITEM(addr, 3)
                                   : (PyTuple_GET_SIZE(sa) > 3 ? PyTuple_GET_ITEM(sa, 3)
                                                               : NULL);
        if (flow != NULL && scope != NULL) {
            newaddr = Py_BuildValue("(OlOO)", ip, port, flow, scope);
        }
        else {
            newaddr = Py_BuildValue("(Ol)", ip, port);
        }
    }
    if (newaddr == NULL) {
        goto done;
    }
    *replacement = newaddr;
    newaddr = NULL;
    rc = 1;
done:
    Py_XDECREF(infos);
    Py_XDECREF(newaddr);
    return rc;
}

/* An AF_INET/AF_INET6 address tuple, parsed as CPython parses it. */
static int
judge_inet(ng_state *st, PolicyObject *pol, int op, PyObject *sock, PyObject *addr,
           bool resolve, PyObject **replacement)
{
    int family = sock_int(sock, st->off_family);
    Py_ssize_t size;
    if (!PyTuple_Check(addr) || (size = PyTuple_GET_SIZE(addr)) < 2 ||
        (family == AF_INET && size != 2) || size > 4) {
        return 0;
    }
    PyObject *host = PyTuple_GET_ITEM(addr, 0);
    long port;
    ng_addr a;
    if (!parse_port(PyTuple_GET_ITEM(addr, 1), &port)) {
        return 0;
    }
    if (size > 2 && !flow_scope_valid(addr, size)) {
        return 0;
    }
    const char *s = NULL;
    Py_ssize_t n = 0;
    PyObject *hb = NULL;
    if (PyUnicode_Check(host) && PyUnicode_IS_ASCII(host)) {
        s = (const char *)PyUnicode_DATA(host);
        n = PyUnicode_GET_LENGTH(host);
    }
    else if (PyBytes_Check(host)) {
        s = PyBytes_AS_STRING(host);
        n = PyBytes_GET_SIZE(host);
    }
    else if (PyUnicode_Check(host) || PyByteArray_Check(host)) {
        hb = host_as_bytes(host);
        if (hb == NULL) {
            PyErr_Clear(); /* the original raises the same encoding error */
            return 0;
        }
        s = PyBytes_AS_STRING(hb);
        n = PyBytes_GET_SIZE(hb);
    }
    else {
        return 0;
    }
    if (memchr(s, '\0', (size_t)n) != NULL) {
        Py_XDECREF(hb);
        return 0; /* CPython rejects embedded NULs */
    }
    bool numeric;
    if (n == 0) {
        memset(&a, 0, sizeof(a)); /* "" is INADDR_ANY / in6addr_any */
        a.family = family;
        numeric = true;
    }
    else if (family == AF_INET && n == 11 && memcmp(s, "<broadcast>", 11) == 0) {
        a.family = AF_INET;
        memset(a.bytes, 0xff, 4);
        numeric = true;
    }
    else {
        /* either family: an address of the other family is no lookup either;
           CPython then fails to convert it, or (v4-mapped) connects to it */
        numeric = ng_parse_numeric(s, (size_t)n, AF_UNSPEC, &a);
    }
    if (numeric) {
        int rc = 0;
        if (!policy_allows_addr(pol, &a, port) && deny_addr(st, op, &a, port) < 0) {
            rc = -1;
        }
        else if (resolve && (hb != NULL || !PyLong_CheckExact(PyTuple_GET_ITEM(addr, 1)))) {
            /* a bytearray host or an __index__ port could read differently when the
               original converts them again: hand it the values that were judged */
            *replacement = replace_host_port(addr, hb ? hb : host, port);
            rc = *replacement ? 1 : -1;
        }
        Py_XDECREF(hb);
        return rc;
    }

    PyObject *name_obj = hb ? hb : host;
    int rc = judge_name(st, pol, op, sock, addr, name_obj, s, n, port, resolve, replacement);
    Py_XDECREF(hb);
    return rc;
}

#ifdef NG_HAVE_UNIX
/* An AF_UNIX path (str, bytes or any buffer): judged by the unix globs. */
static int
judge_unix(ng_state *st, PolicyObject *pol, int op, PyObject *addr)
{
    Py_buffer view;
    PyObject *enc = NULL, *path = NULL;
    int rc = -1;
    bool ok;
    if (PyUnicode_Check(addr)) {
        enc = PyUnicode_EncodeFSDefault(addr);
        if (enc == NULL) {
            PyErr_Clear();
            return 0;
        }
    }
    if (PyObject_GetBuffer(enc ? enc : addr, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        Py_XDECREF(enc);
        return 0;
    }
    const char *p = view.buf;
    size_t n = (size_t)view.len;
    bool abstract = n > 0 && p[0] == '\0';
    char small[256];
    char *buf = n + 2 <= sizeof(small) ? small : PyMem_Malloc(n + 2);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (abstract) {
        /* the kernel takes an abstract name whole, NULs included */
        buf[0] = '@';
        memcpy(buf + 1, p + 1, n - 1);
    }
    else {
        /* a path name ends at the first NUL, for the kernel too */
        const char *nul = memchr(p, '\0', n);
        n = nul ? (size_t)(nul - p) : n;
        memcpy(buf, p, n);
    }
    buf[n] = '\0';
    ok = ng_view_allows_unix(&pol->view, buf, n);
    if (ok) {
        rc = 0;
    }
    else {
        path = PyUnicode_DecodeFSDefaultAndSize(buf, (Py_ssize_t)n);
        if (path != NULL) {
            rc = deny(st, op, AF_UNIX, path, -1);
        }
    }
    if (buf != small) {
        PyMem_Free(buf);
    }
done:
    PyBuffer_Release(&view);
    Py_XDECREF(enc);
    Py_XDECREF(path);
    return rc;
}
#endif

/*
 * Judge an address argument. Returns -1 (exception set), 0 (pass the original address),
 * or 1 (pass *replacement, a new reference: a host name was resolved here). In audit mode
 * (resolve == false) names are judged by the DNS policy only.
 */
static int
judge_address(ng_state *st, PolicyObject *pol, int op, PyObject *sock, PyObject *addr,
              bool resolve, PyObject **replacement)
{
    int family = sock_int(sock, st->off_family);
    if (family == AF_INET || family == AF_INET6) {
        return judge_inet(st, pol, op, sock, addr, resolve, replacement);
    }
#ifdef NG_HAVE_UNIX
    if (family == AF_UNIX) {
        return judge_unix(st, pol, op, addr);
    }
#endif
    return 0; /* AF_NETLINK and every other family are not network destinations */
}

/* ------------------------------------------------------------------------------------ */
/* Socket method hooks.                                                                  */

static inline PolicyObject *
active_policy(ng_state *st)
{
    PolicyObject *p = (PolicyObject *)st->active;
    if (p == NULL || (p->view.h->flags & NG_ALLOW_ALL)) {
        return NULL;
    }
    return p;
}

static PyObject *
call_original_o(ng_state *st, PyCFunction orig, PyObject *self, PyObject *arg)
{
    if (!st->strict) {
        return orig(self, arg); /* the audit backstop is inert: nothing to mark */
    }
    PyThreadState *me = marker_set(st);
    PyObject *r = orig(self, arg);
    marker_clear(st, me);
    return r;
}

static PyObject *
hook_connect_common(PyObject *self, PyObject *addr, int op, PyCFunction orig)
{
    ng_state *st = g_state;
    PolicyObject *pol = active_policy(st);
    PyObject *replacement = NULL, *result;
    if (pol == NULL || fast_allowed(st, pol, self, addr)) {
        return call_original_o(st, orig, self, addr);
    }
    Py_INCREF(pol); /* the callback may swap the active policy */
    int r = judge_address(st, pol, op, self, addr, true, &replacement);
    Py_DECREF(pol);
    if (r < 0) {
        return NULL;
    }
    result = call_original_o(st, orig, self, r ? replacement : addr);
    Py_XDECREF(replacement);
    return result;
}

static PyObject *
hook_connect(PyObject *self, PyObject *addr)
{
    return hook_connect_common(self, addr, OP_CONNECT, g_state->orig_connect);
}

static PyObject *
hook_connect_ex(PyObject *self, PyObject *addr)
{
    return hook_connect_common(self, addr, OP_CONNECT_EX, g_state->orig_connect_ex);
}

/* sendto(data[, flags], address) and sendmsg(buffers[, ancdata[, flags[, address]]]):
   the address is argument `pos`, if present. */
static PyObject *
hook_send_common(PyObject *self, PyObject *args, int op, PyCFunction orig, Py_ssize_t pos)
{
    ng_state *st = g_state;
    PolicyObject *pol = active_policy(st);
    PyObject *replacement = NULL, *newargs = NULL, *result = NULL;
    if (pol == NULL || !PyTuple_Check(args) || PyTuple_GET_SIZE(args) <= pos) {
        return orig(self, args);
    }
    PyObject *addr = PyTuple_GET_ITEM(args, pos);
    if ((op == OP_SENDMSG && addr == Py_None) || fast_allowed(st, pol, self, addr)) {
        return call_original_o(st, orig, self, args);
    }
    Py_INCREF(pol);
    int r = judge_address(st, pol, op, self, addr, true, &replacement);
    Py_DECREF(pol);
    if (r < 0) {
        return NULL;
    }
    if (r == 1) {
        /* a fresh tuple: the caller's (maybe a constant) must not change */
        Py_ssize_t n = PyTuple_GET_SIZE(args);
        newargs = PyTuple_New(n);
        if (newargs == NULL) {
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyTuple_SET_ITEM(newargs, i, Py_NewRef(PyTuple_GET_ITEM(args, i)));
        }
        Py_SETREF(((PyTupleObject *)newargs)->ob_item[pos], replacement);
        replacement = NULL;
    }
    result = call_original_o(st, orig, self, newargs ? newargs : args);
done:
    Py_XDECREF(replacement);
    Py_XDECREF(newargs);
    return result;
}

static PyObject *
hook_sendto(PyObject *self, PyObject *args)
{
    /* sendto(data, address) or sendto(data, flags, address) */
    Py_ssize_t n = PyTuple_Check(args) ? PyTuple_GET_SIZE(args) : 0;
    return hook_send_common(self, args, OP_SENDTO, g_state->orig_sendto, n == 3 ? 2 : 1);
}

static PyObject *
hook_sendmsg(PyObject *self, PyObject *args)
{
    return hook_send_common(self, args, OP_SENDMSG, g_state->orig_sendmsg, 3);
}

PyDoc_STRVAR(hook_connect_doc, "connect(address)\n\nConnect to address (judged by netguard).");
PyDoc_STRVAR(hook_connect_ex_doc,
             "connect_ex(address) -> errno\n\nLike connect(address) (judged by netguard).");
PyDoc_STRVAR(hook_sendto_doc,
             "sendto(data[, flags], address) -> count\n\nSend to address (judged by netguard).");
PyDoc_STRVAR(hook_sendmsg_doc,
             "sendmsg(buffers[, ancdata[, flags[, address]]]) -> count\n\n"
             "Send a message (judged by netguard).");

static PyMethodDef hook_method_defs[4] = {
    {"connect", (PyCFunction)hook_connect, METH_O, hook_connect_doc},
    {"connect_ex", (PyCFunction)hook_connect_ex, METH_O, hook_connect_ex_doc},
    {"sendto", (PyCFunction)hook_sendto, METH_VARARGS, hook_sendto_doc},
    {"sendmsg", (PyCFunction)hook_sendmsg, METH_VARARGS, hook_sendmsg_doc},
};

/* ------------------------------------------------------------------------------------ */
/* DNS hooks.                                                                            */

/* The host argument of a lookup, as normalised name bytes. Returns 1: a lookup of name;
   2: numeric (*numeric filled); 3: a name too long for any rule (name holds its start);
   0: no lookup (None, "") or not parseable (the original raises its own error). */
static int
lookup_name(PyObject *host, char name[256], Py_ssize_t *nn, ng_addr *numeric)
{
    if (host == NULL || host == Py_None) {
        return 0;
    }
    if (!PyUnicode_Check(host) && !PyBytes_Check(host) && !PyByteArray_Check(host)) {
        return 0;
    }
    PyObject *b = host_as_bytes(host);
    if (b == NULL) {
        PyErr_Clear();
        return 0;
    }
    const char *s = PyBytes_AS_STRING(b);
    size_t n = (size_t)PyBytes_GET_SIZE(b);
    int rc = 1;
    const char *nul = memchr(s, '\0', n);
    if (nul != NULL) {
        /* getaddrinfo does not reject a NUL: the resolver reads the name up to it */
        n = (size_t)(nul - s);
    }
    if (n == 0) {
        rc = 0;
    }
    else if (ng_parse_numeric(s, n, AF_UNSPEC, numeric)) {
        rc = 2; /* numeric */
    }
    else {
        *nn = (Py_ssize_t)ng_normalize_name(s, n, name);
        if (*nn < 0) {
            /* too long to be a name any rule covers: judged as such, shown cut */
            rc = 3;
            *nn = 255;
            memcpy(name, s, 255);
            name[255] = '\0';
        }
    }
    Py_DECREF(b);
    return rc;
}

/* Collect the address strings of a lookup's result for learning. New list or NULL. */
static PyObject *
result_hosts(int op, PyObject *result)
{
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    if (op == OP_GETADDRINFO && PyList_Check(result)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(result); i++) {
            PyObject *info = PyList_GET_ITEM(result, i), *sa;
            if (PyTuple_Check(info) && PyTuple_GET_SIZE(info) == 5 &&
                PyTuple_Check(sa = PyTuple_GET_ITEM(info, 4)) && PyTuple_GET_SIZE(sa) >= 1 &&
                PyUnicode_Check(PyTuple_GET_ITEM(sa, 0)) &&
                PyList_Append(list, PyTuple_GET_ITEM(sa, 0)) < 0) {
                goto error;
            }
        }
    }
    else if (op == OP_GETHOSTBYNAME && PyUnicode_Check(result)) {
        if (PyList_Append(list, result) < 0) {
            goto error;
        }
    }
    else if (op == OP_GETHOSTBYNAME_EX && PyTuple_Check(result) &&
             PyTuple_GET_SIZE(result) == 3 && PyList_Check(PyTuple_GET_ITEM(result, 2))) {
        PyObject *addrs = PyTuple_GET_ITEM(result, 2);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(addrs); i++) {
            if (PyUnicode_Check(PyList_GET_ITEM(addrs, i)) &&
                PyList_Append(list, PyList_GET_ITEM(addrs, i)) < 0) {
                goto error;
            }
        }
    }
    return list;
error:
    Py_DECREF(list);
    return NULL;
}

/* Judge a lookup. Returns -1 error, 0 proceed; *learn is set when the result should be
   learned (allowed by a host rule). */
static int
judge_lookup(ng_state *st, PolicyObject *pol, int op, PyObject *host, PyObject *port_obj,
             int ni_flags, bool *learn, char name[256], Py_ssize_t *nn)
{
    ng_addr a;
    long port = -1;
    *learn = false;
    if (port_obj != NULL && port_obj != Py_None) {
        if (PyLong_Check(port_obj)) {
            if (!parse_port(port_obj, &port)) {
                port = -1;
            }
        }
        else if (PyUnicode_Check(port_obj) || PyBytes_Check(port_obj)) {
            PyObject *b = PyUnicode_Check(port_obj) ? PyUnicode_AsASCIIString(port_obj)
                                                    : Py_NewRef(port_obj);
            if (b == NULL) {
                PyErr_Clear();
            }
            else {
                const char *s = PyBytes_AS_STRING(b);
                Py_ssize_t n = PyBytes_GET_SIZE(b);
                long v = 0;
                bool digits = n > 0 && n <= 5;
                for (Py_ssize_t i = 0; digits && i < n; i++) {
                    digits = s[i] >= '0' && s[i] <= '9';
                    v = v * 10 + (s[i] - '0');
                }
                if (digits && v <= 65535) {
                    port = v;
                }
                Py_DECREF(b);
            }
        }
    }
    bool reverse = op == OP_GETHOSTBYADDR || op == OP_GETNAMEINFO;
    int kind = lookup_name(host, name, nn, &a);
    if (kind == 0) {
        return 0;
    }
    if (kind == 2) {
        /* a numeric host: no lookup, unless a reverse one is asked for */
#ifdef NI_NUMERICHOST
        if (op == OP_GETNAMEINFO && (ni_flags & NI_NUMERICHOST)) {
            return 0;
        }
#else
        (void)ni_flags;
#endif
        if (!reverse || ng_addr_is_loopback(&a)) {
            return 0;
        }
        char text[INET6_ADDRSTRLEN];
        if (inet_ntop(a.family, a.bytes, text, sizeof(text)) == NULL) {
            return deny_name(st, op, "?", 1, -1);
        }
        return deny_name(st, op, text, (Py_ssize_t)strlen(text), -1);
    }
    bool by_rule, port_ok;
    if (kind == 1 &&
        ng_view_allows_name(&pol->view, name, (size_t)*nn, port, &by_rule, &port_ok)) {
        *learn = by_rule && !reverse;
        return 0;
    }
    return deny_name(st, op, name, *nn, reverse ? -1 : port);
}

static PyObject *
hook_dns(int op, PyObject *args, PyObject *kwargs)
{
    ng_state *st = g_state;
    PolicyObject *pol = active_policy(st);
    PyObject *orig = st->orig_dns[op - OP_GETADDRINFO];
    PyObject *result = NULL, *hosts = NULL;
    char name[256];
    Py_ssize_t nn = 0;
    bool learn = false;
    if (pol == NULL) {
        return PyObject_Call(orig, args, kwargs);
    }
    Py_INCREF(pol);
    PyObject *host = NULL, *port = NULL;
    int ni_flags = 0;
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    if (op == OP_GETNAMEINFO) {
        PyObject *sa = nargs > 0 ? PyTuple_GET_ITEM(args, 0) : NULL;
        if (sa != NULL && PyTuple_Check(sa) && PyTuple_GET_SIZE(sa) >= 1) {
            host = PyTuple_GET_ITEM(sa, 0);
        }
        if (nargs > 1 && PyLong_Check(PyTuple_GET_ITEM(args, 1))) {
            ni_flags = (int)PyLong_AsLong(PyTuple_GET_ITEM(args, 1));
            if (ni_flags == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                ni_flags = 0;
            }
        }
    }
    else {
        host = nargs > 0 ? PyTuple_GET_ITEM(args, 0) : NULL;
        if (host == NULL && kwargs != NULL) {
            host = PyDict_GetItemString(kwargs, "host");
        }
        if (op == OP_GETADDRINFO) {
            port = nargs > 1 ? PyTuple_GET_ITEM(args, 1) : NULL;
            if (port == NULL && kwargs != NULL) {
                port = PyDict_GetItemString(kwargs, "port");
            }
            PyObject *flags = nargs > 5 ? PyTuple_GET_ITEM(args, 5) : NULL;
            if (flags == NULL && kwargs != NULL) {
                flags = PyDict_GetItemString(kwargs, "flags");
            }
            if (flags != NULL && PyLong_Check(flags)) {
                long f = PyLong_AsLong(flags);
                if (f == -1 && PyErr_Occurred()) {
                    PyErr_Clear();
                }
                else if (f & AI_NUMERICHOST) {
                    /* no lookup: the resolver fails on a name */
                    Py_DECREF(pol);
                    return PyObject_Call(orig, args, kwargs);
                }
            }
        }
    }
    if (judge_lookup(st, pol, op, host, port, ni_flags, &learn, name, &nn) < 0) {
        goto done;
    }
    PyThreadState *me = marker_set(st);
    result = PyObject_Call(orig, args, kwargs);
    marker_clear(st, me);
    if (result != NULL && learn) {
        hosts = result_hosts(op, result);
        if (hosts == NULL || policy_learn(pol, name, (size_t)nn, hosts) < 0) {
            Py_CLEAR(result);
        }
    }
done:
    Py_DECREF(pol);
    Py_XDECREF(hosts);
    return result;
}

#define NG_DNS_HOOK(fname, OP)                                                           \
    static PyObject *fname(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kwargs)     \
    {                                                                                    \
        return hook_dns(OP, args, kwargs);                                               \
    }
NG_DNS_HOOK(hook_getaddrinfo, OP_GETADDRINFO)
NG_DNS_HOOK(hook_gethostbyname, OP_GETHOSTBYNAME)
NG_DNS_HOOK(hook_gethostbyname_ex, OP_GETHOSTBYNAME_EX)
NG_DNS_HOOK(hook_gethostbyaddr, OP_GETHOSTBYADDR)
NG_DNS_HOOK(hook_getnameinfo, OP_GETNAMEINFO)
#undef NG_DNS_HOOK

PyDoc_STRVAR(hook_dns_doc, "The socket module's lookup function of the same name, judged by "
                           "netguard's DNS policy before it runs.");

static PyMethodDef hook_dns_defs[5] = {
    {"getaddrinfo", (PyCFunction)(void (*)(void))hook_getaddrinfo,
     METH_VARARGS | METH_KEYWORDS, hook_dns_doc},
    {"gethostbyname", (PyCFunction)(void (*)(void))hook_gethostbyname,
     METH_VARARGS | METH_KEYWORDS, hook_dns_doc},
    {"gethostbyname_ex", (PyCFunction)(void (*)(void))hook_gethostbyname_ex,
     METH_VARARGS | METH_KEYWORDS, hook_dns_doc},
    {"gethostbyaddr", (PyCFunction)(void (*)(void))hook_gethostbyaddr,
     METH_VARARGS | METH_KEYWORDS, hook_dns_doc},
    {"getnameinfo", (PyCFunction)(void (*)(void))hook_getnameinfo,
     METH_VARARGS | METH_KEYWORDS, hook_dns_doc},
};

/* ------------------------------------------------------------------------------------ */
/* Audit backstop.                                                                       */

static int
audit_hook(const char *event, PyObject *args, void *Py_UNUSED(data))
{
    /* Every audit event of the process comes here once the hook is added: a test's
       fixtures, attribute reads and imports raise a dozen or more each. Turn away those
       not about sockets at their first byte, before anything else is read. */
    if (event[0] != 's' || strncmp(event, "socket.", 7) != 0) {
        return 0;
    }
    ng_state *st = g_state;
    if (st == NULL || !st->strict || st->active == NULL) {
        return 0;
    }
    if (st->in_hook != NULL && st->in_hook == PyThreadState_Get()) {
        return 0; /* a hook of ours is calling the original: already judged */
    }
    /* the events of the calls that reach the network, by name after "socket." */
    static const struct {
        const char *name;
        int op;
    } events[] = {
        {"connect", OP_CONNECT},
        {"sendto", OP_SENDTO},
        {"sendmsg", OP_SENDMSG},
        {"getaddrinfo", OP_GETADDRINFO},
        {"gethostbyname", OP_GETHOSTBYNAME},
        {"gethostbyaddr", OP_GETHOSTBYADDR},
        {"getnameinfo", OP_GETNAMEINFO},
    };
    int op = -1;
    for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
        if (strcmp(event + 7, events[i].name) == 0) {
            op = events[i].op;
            break;
        }
    }
    if (op < 0) {
        return 0;
    }
    PolicyObject *pol = active_policy(st);
    if (pol == NULL || !PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 1) {
        return 0;
    }
    int rc = 0;
    Py_INCREF(pol);
    if (op <= OP_SENDMSG) {
        PyObject *sock = PyTuple_GET_ITEM(args, 0), *replacement = NULL;
        if (PyTuple_GET_SIZE(args) >= 2 && PyObject_TypeCheck(sock, st->sock_type) &&
            PyTuple_GET_ITEM(args, 1) != Py_None) {
            rc = judge_address(st, pol, op, sock, PyTuple_GET_ITEM(args, 1), false,
                               &replacement);
            Py_XDECREF(replacement);
            rc = rc < 0 ? -1 : 0;
        }
    }
    else {
        PyObject *host = PyTuple_GET_ITEM(args, 0), *port = NULL;
        bool learn;
        char name[256];
        Py_ssize_t nn = 0;
        if (op == OP_GETNAMEINFO && PyTuple_Check(host) && PyTuple_GET_SIZE(host) >= 1) {
            host = PyTuple_GET_ITEM(host, 0);
        }
        if (op == OP_GETADDRINFO && PyTuple_GET_SIZE(args) >= 2) {
            port = PyTuple_GET_ITEM(args, 1);
        }
        rc = judge_lookup(st, pol, op, host, port, 0, &learn, name, &nn);
    }
    Py_DECREF(pol);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* install / uninstall / activate.                                                       */

static int
fetch_original(ng_state *st, const char *name, int flags, PyCFunction *out)
{
    PyObject *d = PyDict_GetItemString(st->sock_type->tp_dict, name); /* borrowed */
    if (d == NULL || !Py_IS_TYPE(d, &PyMethodDescr_Type)) {
        PyErr_Format(PyExc_RuntimeError, "netguard: _socket.socket.%s is not a C method", name);
        return -1;
    }
    PyMethodDef *def = ((PyMethodDescrObject *)d)->d_method;
    if ((def->ml_flags & ~METH_COEXIST) != flags) {
        PyErr_Format(PyExc_RuntimeError,
                     "netguard: _socket.socket.%s has an unexpected calling convention", name);
        return -1;
    }
    *out = def->ml_meth;
    return 0;
}

static void
restore_attr(PyObject *owner, const char *name, PyObject **saved)
{
    /* put back exactly what was there: the saved value, or nothing */
    int r;
    if (*saved != NULL) {
        r = PyObject_SetAttrString(owner, name, *saved);
    }
    else {
        r = PyObject_DelAttrString(owner, name);
    }
    if (r < 0) {
        PyErr_WriteUnraisable(owner);
    }
    Py_CLEAR(*saved);
}

/* Forget the aimed test and the running phase's owner (not the base level). */
static void
clear_base_switch(ng_state *st)
{
    st->aim_strict = st->aim_quick = st->base_marked = false;
    Py_CLEAR(st->aim_item);
    Py_CLEAR(st->aim_owner);
    Py_CLEAR(st->aim_policy);
    Py_CLEAR(st->base_owner);
}

static void
do_uninstall(ng_state *st)
{
    if (!st->installed) {
        return;
    }
    for (int i = 0; i < 4; i++) {
        if (i == 3 && st->orig_sendmsg == NULL) {
            continue;
        }
        restore_attr(st->socket_class, method_names[i], &st->saved_methods[i]);
    }
    PyObject *mods[2] = {st->socket_mod, st->c_socket_mod};
    for (int m = 0; m < 2; m++) {
        for (int i = 0; i < 5; i++) {
            if (m == 0 && i == 0) {
                continue; /* socket.getaddrinfo is Python and calls _socket.getaddrinfo */
            }
            restore_attr(mods[m], dns_names[i], &st->saved_dns[m][i]);
        }
    }
    Py_CLEAR(st->callback);
    Py_CLEAR(st->active);
    Py_CLEAR(st->top);
    Py_CLEAR(st->base);
    st->strict = st->top_strict = st->base_strict = st->top_set = false;
    st->installed = false;
    clear_base_switch(st);
}

static PyObject *
dict_get_ref(PyObject *owner, const char *name)
{
    /* the value in owner's own __dict__ (not inherited), new ref, or NULL with no error */
    PyObject *dict = PyObject_GetAttrString(owner, "__dict__");
    if (dict == NULL) {
        return NULL;
    }
    PyObject *key = PyUnicode_FromString(name);
    PyObject *v = key ? PyObject_GetItem(dict, key) : NULL;
    Py_XDECREF(key);
    Py_DECREF(dict);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear();
    }
    return v;
}

PyDoc_STRVAR(ng_install_doc,
"install(callback, /)\n--\n\n"
"Install the hooks: C method descriptors on socket.socket for connect, connect_ex,\n"
"sendto and sendmsg, and C replacements for the DNS functions. callback(op, family,\n"
"host, port) is called for every denied call; returning lets it proceed, raising\n"
"propagates. Raises RuntimeError when already installed.");

static PyObject *
ng_install(PyObject *module, PyObject *callback)
{
    ng_state *st = PyModule_GetState(module);
    if (st->installed) {
        PyErr_SetString(PyExc_RuntimeError, "netguard hooks are already installed");
        return NULL;
    }
    if (!PyCallable_Check(callback)) {
        PyErr_SetString(PyExc_TypeError, "callback must be callable");
        return NULL;
    }
    /* record what was there, then patch; on failure, roll back what was patched */
    st->installed = true;
    for (int i = 0; i < 4; i++) {
        if (i == 3 && st->orig_sendmsg == NULL) {
            continue; /* no sendmsg on this platform */
        }
        st->saved_methods[i] = dict_get_ref(st->socket_class, method_names[i]);
        if (PyErr_Occurred()) {
            goto error;
        }
        PyObject *descr = PyDescr_NewMethod(st->sock_type, &hook_method_defs[i]);
        if (descr == NULL) {
            goto error;
        }
        int r = PyObject_SetAttrString(st->socket_class, method_names[i], descr);
        Py_DECREF(descr);
        if (r < 0) {
            goto error;
        }
    }
    PyObject *mods[2] = {st->socket_mod, st->c_socket_mod};
    for (int m = 0; m < 2; m++) {
        for (int i = 0; i < 5; i++) {
            if (m == 0 && i == 0) {
                continue;
            }
            st->saved_dns[m][i] = dict_get_ref(mods[m], dns_names[i]);
            if (PyErr_Occurred() ||
                PyObject_SetAttrString(mods[m], dns_names[i], st->hook_dns[i]) < 0) {
                goto error;
            }
        }
    }
    st->callback = Py_NewRef(callback);
    Py_RETURN_NONE;
error:
    {
        ng_saved_error saved;
        err_save(&saved);
        do_uninstall(st);
        err_restore(&saved);
    }
    return NULL;
}

PyDoc_STRVAR(ng_uninstall_doc,
"uninstall($module, /)\n--\n\n"
"Remove the hooks and restore every patched attribute exactly (an attribute that was\n"
"absent is deleted again). Deactivates the policy. No-op when not installed.");

static PyObject *
ng_uninstall(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    do_uninstall(PyModule_GetState(module));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ng_is_installed_doc,
"is_installed($module, /)\n--\n\nWhether the hooks are installed.");

static PyObject *
ng_is_installed(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(((ng_state *)PyModule_GetState(module))->installed);
}

/* Check an activation's arguments (policy: a Policy or None; strict: truthy) and add the
   audit backstop on the first strict one. Returns -1 with an exception, else 0. */
static int
activation_args(ng_state *st, const char *fn, PyObject *const *args, Py_ssize_t nargs,
                int *strict)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly 2 arguments", fn);
        return -1;
    }
    PyObject *policy = args[0];
    if ((*strict = PyObject_IsTrue(args[1])) < 0) {
        return -1;
    }
    if (policy != Py_None && !Py_IS_TYPE(policy, (PyTypeObject *)st->policy_type)) {
        PyErr_Format(PyExc_TypeError, "policy must be a netguard._netguard.Policy or None, not %s",
                     Py_TYPE(policy)->tp_name);
        return -1;
    }
    if (!st->installed && policy != Py_None) {
        PyErr_SetString(PyExc_RuntimeError, "install() the hooks before activating a policy");
        return -1;
    }
    if (*strict && policy != Py_None && !st->audit_added) {
        if (PySys_AddAuditHook(audit_hook, NULL) < 0) {
            return -1;
        }
        st->audit_added = true;
    }
    return 0;
}

/* Set one level (*slot, *slot_strict) and recompute what the hooks judge by: the stack's
   level while set, else the base's. One pointer swap under the GIL; no Python code runs
   in between (a Policy's dealloc runs none), so the hooks never see a half-made state. */
static void
set_level(ng_state *st, PyObject **slot, bool *slot_strict, PyObject *policy, bool strict)
{
    PyObject *old_slot = *slot, *old_active = st->active;
    *slot = policy == Py_None ? NULL : Py_NewRef(policy);
    *slot_strict = strict && *slot != NULL;
    PyObject *eff = st->top_set ? st->top : st->base;
    st->active = Py_XNewRef(eff);
    st->strict = st->top_set ? st->top_strict : st->base_strict;
    Py_XDECREF(old_slot);
    Py_XDECREF(old_active);
}

PyDoc_STRVAR(ng_activate_doc,
"activate($module, policy, strict, /)\n--\n\n"
"Make policy (a Policy, or None for no checks) the active one: the guard stack's level,\n"
"which holds until deactivate(), whatever the base. With strict true the audit-hook\n"
"backstop judges calls that bypass the hooks; it is added on first use and, as audit\n"
"hooks cannot be removed, stays inert while no strict policy is active.");

/* activate() and activate_base(): check the arguments, then set the stack's level (top)
   or the base's. */
static PyObject *
activate_level(PyObject *module, const char *fn, bool top, PyObject *const *args,
               Py_ssize_t nargs)
{
    ng_state *st = PyModule_GetState(module);
    int strict;
    if (activation_args(st, fn, args, nargs, &strict) < 0) {
        return NULL;
    }
    if (top) {
        st->top_set = true;
        set_level(st, &st->top, &st->top_strict, args[0], strict);
    }
    else {
        set_level(st, &st->base, &st->base_strict, args[0], strict);
    }
    Py_RETURN_NONE;
}

static PyObject *
ng_activate(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return activate_level(module, "activate", true, args, nargs);
}

PyDoc_STRVAR(ng_deactivate_doc,
"deactivate($module, /)\n--\n\n"
"End the guard stack's level: the base's policy (activate_base) holds again.");

static PyObject *
ng_deactivate(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    ng_state *st = PyModule_GetState(module);
    st->top_set = false;
    set_level(st, &st->top, &st->top_strict, Py_None, false);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ng_activate_base_doc,
"activate_base($module, policy, strict, /)\n--\n\n"
"Set the base level: the policy (or None) that holds while the guard stack's level is\n"
"not set. The pytest plugin's per-phase switch.");

static PyObject *
ng_activate_base(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return activate_level(module, "activate_base", false, args, nargs);
}

PyDoc_STRVAR(ng_active_doc,
"active($module, /)\n--\n\nThe active Policy, or None.");

static PyObject *
ng_active(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    ng_state *st = PyModule_GetState(module);
    return Py_NewRef(st->active ? st->active : Py_None);
}

/* The base switch. The plugin aims it once per test (aim_base) and then starts and ends
   each phase with one call each (enter_base, leave_base), which do in C what the Python
   side would: set the base level, and tell whether the ended phase left anything to
   report. They touch no attribute of the owner: a denial during the phase (deny() above)
   or mark_base() is what makes a phase worth reporting. */

PyDoc_STRVAR(ng_aim_base_doc,
"aim_base($module, item, owner, policy, strict, quick, /)\n--\n\n"
"Aim the base switch at the phases of item (any object, compared by identity): each\n"
"phase started by start_base() (or, when quick is true, by enter_base(item)) sets the\n"
"base level to policy (a Policy, or None for no checks) and strict, as activate_base()\n"
"would, and makes owner (what the caller records the phase's violations on) the running\n"
"phase's owner. owner None forgets the aim.");

static PyObject *
ng_aim_base(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    ng_state *st = PyModule_GetState(module);
    int strict, quick;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "aim_base() takes exactly 5 arguments");
        return NULL;
    }
    if ((quick = PyObject_IsTrue(args[4])) < 0 ||
        activation_args(st, "aim_base", args + 2, 2, &strict) < 0) {
        return NULL;
    }
    PyObject *old_item = st->aim_item, *old_owner = st->aim_owner,
             *old_policy = st->aim_policy;
    bool aimed = args[1] != Py_None;
    st->aim_item = aimed ? Py_NewRef(args[0]) : NULL;
    st->aim_owner = aimed ? Py_NewRef(args[1]) : NULL;
    st->aim_policy = aimed && args[2] != Py_None ? Py_NewRef(args[2]) : NULL;
    st->aim_strict = strict && st->aim_policy != NULL;
    st->aim_quick = aimed && quick;
    /* last: a dealloc may run Python code, which must find the new aim in place */
    Py_XDECREF(old_item);
    Py_XDECREF(old_owner);
    Py_XDECREF(old_policy);
    Py_RETURN_NONE;
}

/* Start a phase of the aimed test (the caller checked there is one): the aimed policy
   becomes the base level, the owner the running phase's, with nothing to report yet. */
static void
base_start(ng_state *st)
{
    PyObject *old_owner = st->base_owner;
    st->base_owner = Py_NewRef(st->aim_owner);
    st->base_marked = false;
    set_level(st, &st->base, &st->base_strict, st->aim_policy ? st->aim_policy : Py_None,
              st->aim_strict);
    Py_XDECREF(old_owner);
}

PyDoc_STRVAR(ng_enter_base_doc,
"enter_base($module, item, /)\n--\n\n"
"Start a phase of item if it is the aimed test and the aim was quick, as start_base()\n"
"does, and return True; else change nothing and return False (then Python aims, or\n"
"starts the phase itself).");

static PyObject *
ng_enter_base(PyObject *module, PyObject *item)
{
    ng_state *st = PyModule_GetState(module);
    if (!st->aim_quick || item != st->aim_item) {
        Py_RETURN_FALSE;
    }
    base_start(st);
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(ng_start_base_doc,
"start_base($module, /)\n--\n\n"
"Start a phase of the aimed test, whatever the aim's quick flag: the aimed policy becomes\n"
"the base level, the owner the running phase's (replacing a phase that never ended).\n"
"RuntimeError if nothing is aimed.");

static PyObject *
ng_start_base(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    ng_state *st = PyModule_GetState(module);
    if (st->aim_owner == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "start_base(): nothing aimed (aim_base() first)");
        return NULL;
    }
    base_start(st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ng_mark_base_doc,
"mark_base($module, /)\n--\n\n"
"Say that the running phase has something to report (violations recorded without a\n"
"denial of these hooks: native mode's), so that leave_base() returns its owner. No-op\n"
"between phases.");

static PyObject *
ng_mark_base(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    ng_state *st = PyModule_GetState(module);
    if (st->base_owner != NULL) {
        st->base_marked = true;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ng_leave_base_doc,
"leave_base($module, /)\n--\n\n"
"End the running phase: the base level is cleared. Returns its owner when Python has\n"
"something to do (the hooks denied a call during the phase, mark_base() was called, or\n"
"the aim was not quick or has changed), else None; None too when no phase runs.");

static PyObject *
ng_leave_base(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    ng_state *st = PyModule_GetState(module);
    PyObject *owner = st->base_owner; /* its reference passes to this call */
    if (owner == NULL) {
        Py_RETURN_NONE;
    }
    bool report = st->base_marked || !st->aim_quick || owner != st->aim_owner;
    st->base_owner = NULL;
    st->base_marked = false;
    set_level(st, &st->base, &st->base_strict, Py_None, false);
    if (report) {
        return owner;
    }
    Py_DECREF(owner);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ng_base_owner_doc,
"base_owner($module, /)\n--\n\nThe owner of the running phase, or None between phases.");

static PyObject *
ng_base_owner(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    ng_state *st = PyModule_GetState(module);
    return Py_NewRef(st->base_owner ? st->base_owner : Py_None);
}

static PyMethodDef ng_methods[] = {
    {"install", (PyCFunction)ng_install, METH_O, ng_install_doc},
    {"uninstall", (PyCFunction)ng_uninstall, METH_NOARGS, ng_uninstall_doc},
    {"is_installed", (PyCFunction)ng_is_installed, METH_NOARGS, ng_is_installed_doc},
    {"activate", (PyCFunction)(void (*)(void))ng_activate, METH_FASTCALL, ng_activate_doc},
    {"deactivate", (PyCFunction)ng_deactivate, METH_NOARGS, ng_deactivate_doc},
    {"activate_base", (PyCFunction)(void (*)(void))ng_activate_base, METH_FASTCALL,
     ng_activate_base_doc},
    {"active", (PyCFunction)ng_active, METH_NOARGS, ng_active_doc},
    {"aim_base", (PyCFunction)(void (*)(void))ng_aim_base, METH_FASTCALL, ng_aim_base_doc},
    {"enter_base", (PyCFunction)ng_enter_base, METH_O, ng_enter_base_doc},
    {"start_base", (PyCFunction)ng_start_base, METH_NOARGS, ng_start_base_doc},
    {"mark_base", (PyCFunction)ng_mark_base, METH_NOARGS, ng_mark_base_doc},
    {"leave_base", (PyCFunction)ng_leave_base, METH_NOARGS, ng_leave_base_doc},
    {"base_owner", (PyCFunction)ng_base_owner, METH_NOARGS, ng_base_owner_doc},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------------------------ */
/* Module.                                                                               */

static int
member_offset(PyTypeObject *type, const char *name, Py_ssize_t *out)
{
    PyObject *d = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)d)->d_member->type != NG_T_INT) {
        PyErr_Format(PyExc_ImportError, "netguard: _socket.socket.%s is not an int member",
                     name);
        return -1;
    }
    *out = ((PyMemberDescrObject *)d)->d_member->offset;
    return 0;
}

static int
ng_exec(PyObject *module)
{
    ng_state *st = PyModule_GetState(module);
    if (g_state != NULL) {
        PyErr_SetString(PyExc_ImportError,
                        "netguard._netguard can be loaded once per process");
        return -1;
    }
    st->c_socket_mod = PyImport_ImportModule("_socket");
    st->socket_mod = st->c_socket_mod ? PyImport_ImportModule("socket") : NULL;
    if (st->socket_mod == NULL) {
        return -1;
    }
    st->sock_type = (PyTypeObject *)PyObject_GetAttrString(st->c_socket_mod, "socket");
    st->socket_class = PyObject_GetAttrString(st->socket_mod, "socket");
    st->orig_getaddrinfo = PyObject_GetAttrString(st->c_socket_mod, "getaddrinfo");
    if (st->sock_type == NULL || st->socket_class == NULL || st->orig_getaddrinfo == NULL) {
        return -1;
    }
    if (!PyType_Check(st->sock_type) || !PyType_Check(st->socket_class) ||
        !PyType_IsSubtype((PyTypeObject *)st->socket_class, st->sock_type)) {
        PyErr_SetString(PyExc_ImportError, "netguard: unexpected socket module layout");
        return -1;
    }
    if (member_offset(st->sock_type, "family", &st->off_family) < 0 ||
        member_offset(st->sock_type, "type", &st->off_type) < 0 ||
        fetch_original(st, "connect", METH_O, &st->orig_connect) < 0 ||
        fetch_original(st, "connect_ex", METH_O, &st->orig_connect_ex) < 0 ||
        fetch_original(st, "sendto", METH_VARARGS, &st->orig_sendto) < 0) {
        return -1;
    }
#ifndef _WIN32
    if (fetch_original(st, "sendmsg", METH_VARARGS, &st->orig_sendmsg) < 0) {
        return -1;
    }
#endif
    for (int i = 0; i < 5; i++) {
        st->orig_dns[i] = PyObject_GetAttrString(st->c_socket_mod, dns_names[i]);
        st->hook_dns[i] = PyCFunction_NewEx(&hook_dns_defs[i], NULL, NULL);
        if (st->orig_dns[i] == NULL || st->hook_dns[i] == NULL) {
            return -1;
        }
    }
    for (int i = 0; i < 9; i++) {
        st->str_op[i] = PyUnicode_InternFromString(op_names[i]);
        if (st->str_op[i] == NULL) {
            return -1;
        }
    }
    st->policy_type = PyType_FromModuleAndSpec(module, &Policy_spec, NULL);
    if (st->policy_type == NULL || PyModule_AddObjectRef(module, "Policy", st->policy_type) < 0) {
        return -1;
    }
    if (PyModule_AddIntConstant(module, "ALLOW_ALL", NG_ALLOW_ALL) < 0 ||
        PyModule_AddIntConstant(module, "DNS_LOCALHOST", NG_DNS_LOCALHOST) < 0 ||
        PyModule_AddIntConstant(module, "BLOB_VERSION", NG_BLOB_VERSION) < 0) {
        return -1;
    }
    g_state = st;
    return 0;
}

static int
ng_traverse(PyObject *module, visitproc visit, void *arg)
{
    ng_state *st = PyModule_GetState(module);
    if (st == NULL) {
        return 0;
    }
    Py_VISIT(st->policy_type);
    Py_VISIT(st->callback);
    Py_VISIT(st->active);
    Py_VISIT(st->top);
    Py_VISIT(st->base);
    Py_VISIT(st->aim_item);
    Py_VISIT(st->aim_owner);
    Py_VISIT(st->aim_policy);
    Py_VISIT(st->base_owner);
    return 0;
}

static int
ng_clear(PyObject *module)
{
    ng_state *st = PyModule_GetState(module);
    if (st == NULL) {
        return 0;
    }
    do_uninstall(st);
    clear_base_switch(st);
    Py_CLEAR(st->policy_type);
    Py_CLEAR(st->sock_type);
    Py_CLEAR(st->socket_class);
    Py_CLEAR(st->socket_mod);
    Py_CLEAR(st->c_socket_mod);
    Py_CLEAR(st->orig_getaddrinfo);
    for (int i = 0; i < 5; i++) {
        Py_CLEAR(st->orig_dns[i]);
        Py_CLEAR(st->hook_dns[i]);
    }
    for (int i = 0; i < 9; i++) {
        Py_CLEAR(st->str_op[i]);
    }
    if (g_state == st) {
        /* the audit hook, if added, stays registered and sees NULL: inert */
        g_state = NULL;
    }
    return 0;
}

static void
ng_free(void *module)
{
    ng_clear((PyObject *)module);
}

static PyModuleDef_Slot ng_slots[] = {
    {Py_mod_exec, ng_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(ng_doc,
"netguard's C core: compiled policies and the socket/DNS hooks.\n\n"
"Use it through netguard (netguard._impl picks this module or netguard._reference).");

static struct PyModuleDef ng_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "netguard._netguard",
    .m_doc = ng_doc,
    .m_size = sizeof(ng_state),
    .m_methods = ng_methods,
    .m_slots = ng_slots,
    .m_traverse = ng_traverse,
    .m_clear = ng_clear,
    .m_free = ng_free,
};

PyMODINIT_FUNC
PyInit__netguard(void)
{
    return PyModuleDef_Init(&ng_module);
}
