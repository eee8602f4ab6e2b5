/*
 * netguard._native -- the extension module that hosts native mode in the test process.
 *
 * Linux only (setup.py builds it there and nowhere else). It drives ng_got, the
 * mechanism that points the GOT entries of every loaded object for a table of libc
 * functions at replacements (src/ng_got.h; docs/internals.md "The GOT mechanism").
 *
 * Two hook tables, one installed at a time:
 *
 *   - native mode's own (`nv_table`): connect, sendto, sendmsg, sendmmsg, getaddrinfo,
 *     gethostbyname(2)(_r), gethostbyaddr and getnameinfo call the judging wrappers of
 *     ng_native.h against the active policy and record into a ring buffer the plugin
 *     drains after each phase; execve, execv, execvp, execvpe, fexecve, posix_spawn and
 *     posix_spawnp give a child started with an environment of its own the preload
 *     library and the NETGUARD_NATIVE_* variables of this process's environment back
 *     (ng_env_compose, no allocation: they may run between vfork and exec). Policies are
 *     registered once (a copy of the blob and its view, never freed while the module
 *     lives: a thread may still be judging with one) and activated by index, an atomic
 *     pointer store. Calls made by the object that holds `_socket`'s C code are not
 *     judged again: netguard's Python-level hooks judged them already (docs/internals.md,
 *     "Native mode in the plugin").
 *   - a test-only set (`selftest_table`), so that the mechanism can be exercised from
 *     Python with real calls: replacements that count their calls and, while installed,
 *     fail the way a denied call fails (connect, sendto, sendmsg and sendmmsg return -1
 *     with errno EACCES; getaddrinfo returns EAI_SYSTEM with errno EACCES; the
 *     gethostbyname family reports NO_RECOVERY, the _r variants returning EACCES).
 *
 * A replacement reached after uninstall (through a pointer that dlsym handed out while
 * the hooks were in place, as ctypes caches) calls the real function.
 *
 * A process forked while native mode's table is installed keeps the patches: its events
 * go to the session's events file (a pthread_atfork handler switches the sink), labelled
 * from its environment like a preloaded child's.
 *
 * GIL and interpreters: every entry point runs with the GIL held; the replacements run on
 * any thread, with or without it, and never enter Python. The patched GOT is
 * process-wide state, so the module declares that it does not support sub-interpreters
 * and needs the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <link.h>
#include <netdb.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ng_got.h"
#include "ng_native.h"

extern char **environ;

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
/* Native mode's hook table.                                                             */

enum {
    NV_CONNECT,
    NV_SENDTO,
    NV_SENDMSG,
    NV_SENDMMSG,
    NV_GETADDRINFO,
    NV_GETHOSTBYNAME,
    NV_GETHOSTBYNAME2,
    NV_GETHOSTBYNAME_R,
    NV_GETHOSTBYNAME2_R,
    NV_GETHOSTBYADDR,
    NV_GETNAMEINFO,
    NV_EXECVE,
    NV_EXECV,
    NV_EXECVP,
    NV_EXECVPE,
    NV_FEXECVE,
    NV_POSIX_SPAWN,
    NV_POSIX_SPAWNP,
    NV_COUNT
};

typedef int (*nv_execve_fn)(const char *, char *const[], char *const[]);
typedef int (*nv_execv_fn)(const char *, char *const[]);
typedef int (*nv_fexecve_fn)(int, char *const[], char *const[]);
typedef int (*nv_spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                           const posix_spawnattr_t *, char *const[], char *const[]);

static void *nv_original[NV_COUNT]; /* set by ng_got_install, kept after uninstall */

/* One registered policy: a copy of the blob, its view, the addresses learned from
   lookups its host rules allowed (none without host rules), and a judge for each mode
   (warn, strict) and recording choice (denied only, allowed too). */
typedef struct {
    char *blob;
    size_t size;
    ng_view view;
    ng_learned *learned;
    ng_judge judge[2][2]; /* [strict][record_allowed] */
    char *env_policy;     /* "NETGUARD_NATIVE_POLICY=<its file>" for children, or NULL */
} nv_policy;

static nv_policy **nv_policies; /* GIL; entries never move, freed with the module */
static size_t nv_npolicies, nv_cap;

static _Atomic(const ng_judge *) nv_active; /* NULL: calls are not judged */
static _Atomic(const nv_policy *) nv_child; /* the policy children get (last activated) */
static atomic_bool nv_live;                 /* native mode's table is installed */
static bool nv_record_allowed;              /* GIL */
static bool nv_installed;                   /* GIL: native mode's table is the installed one */

#define NV_RING_CAPACITY 1024u
static ng_ring nv_ring;
static ng_ring_slot *nv_slots; /* allocated at the first install, for the process's life */
/* Where events go: the ring in this process; the events file in a forked child. */
static ng_sink nv_sink;

static char nv_preload[4096]; /* the preload library, for children's LD_PRELOAD */
static char nv_events[4096];  /* the session's events file, for forked children */
static char nv_exe[4096];     /* this program, the "exe" label of a forked child */
static char nv_labels[8192];  /* a forked child's labels */
static char nv_env_mode[32];     /* NETGUARD_NATIVE_MODE=... for children */
static char nv_env_events[4200]; /* NETGUARD_NATIVE_EVENTS=... */
static char nv_env_record[32];   /* NETGUARD_NATIVE_RECORD=all, or "" */

/* The executable segments of the object holding _socket's C code: its calls were judged
   by netguard's Python-level hooks already. */
#define NV_MAX_EXEMPT 8
static struct {
    uintptr_t lo, hi;
} nv_exempt[NV_MAX_EXEMPT];
static atomic_size_t nv_nexempt;

static inline const ng_judge *
nv_judge(void)
{
    return atomic_load_explicit(&nv_active, memory_order_acquire);
}

static inline bool
nv_is_exempt(const void *caller)
{
    uintptr_t c = (uintptr_t)caller;
    size_t n = atomic_load_explicit(&nv_nexempt, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        if (c >= nv_exempt[i].lo && c < nv_exempt[i].hi) {
            return true;
        }
    }
    return false;
}

/* The caller of the replacement: the code that called through its GOT slot (a call, not
   a jump, in every caller we exempt: _socket calls these functions and uses the result). */
#define NV_CALLER __builtin_return_address(0)

#define NV_ORIG(type, k) ((type)nv_original[k])

static int
nv_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    ng_connect_fn orig = NV_ORIG(ng_connect_fn, NV_CONNECT);
    const ng_judge *j = nv_judge();
    if (j == NULL || nv_is_exempt(NV_CALLER)) {
        return orig(fd, sa, len);
    }
    return ng_native_connect(j, orig, fd, sa, len);
}

static ssize_t
nv_sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *sa,
          socklen_t len)
{
    ng_sendto_fn orig = NV_ORIG(ng_sendto_fn, NV_SENDTO);
    const ng_judge *j = nv_judge();
    if (j == NULL || nv_is_exempt(NV_CALLER)) {
        return orig(fd, buf, n, flags, sa, len);
    }
    return ng_native_sendto(j, orig, fd, buf, n, flags, sa, len);
}

static ssize_t
nv_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    ng_sendmsg_fn orig = NV_ORIG(ng_sendmsg_fn, NV_SENDMSG);
    const ng_judge *j = nv_judge();
    if (j == NULL || nv_is_exempt(NV_CALLER)) {
        return orig(fd, msg, flags);
    }
    return ng_native_sendmsg(j, orig, fd, msg, flags);
}

static int
nv_sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
    ng_sendmmsg_fn orig = NV_ORIG(ng_sendmmsg_fn, NV_SENDMMSG);
    const ng_judge *j = nv_judge();
    if (j == NULL || nv_is_exempt(NV_CALLER)) {
        return orig(fd, vec, vlen, flags);
    }
    return ng_native_sendmmsg(j, orig, fd, vec, vlen, flags);
}

/* A lookup _socket makes was judged by the Python-level hooks: the resolver's own
   traffic under it (an NSS module connecting to its daemon) is part of it, not judged. */
#define NV_LOOKUP(j, call, judged)                                                       \
    do {                                                                                 \
        if ((j) == NULL) {                                                               \
            return call;                                                                 \
        }                                                                                \
        if (nv_is_exempt(NV_CALLER)) {                                                   \
            ng_native_quiet_enter();                                                     \
            __typeof__(call) r_ = call;                                                  \
            ng_native_quiet_leave();                                                     \
            return r_;                                                                   \
        }                                                                                \
        return judged;                                                                   \
    } while (0)

static int
nv_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
               struct addrinfo **res)
{
    ng_getaddrinfo_fn orig = NV_ORIG(ng_getaddrinfo_fn, NV_GETADDRINFO);
    const ng_judge *j = nv_judge();
    NV_LOOKUP(j, orig(node, service, hints, res),
              ng_native_getaddrinfo(j, orig, node, service, hints, res));
}

static struct hostent *
nv_gethostbyname(const char *name)
{
    ng_gethostbyname_fn orig = NV_ORIG(ng_gethostbyname_fn, NV_GETHOSTBYNAME);
    const ng_judge *j = nv_judge();
    NV_LOOKUP(j, orig(name), ng_native_gethostbyname(j, orig, name));
}

static struct hostent *
nv_gethostbyname2(const char *name, int af)
{
    ng_gethostbyname2_fn orig = NV_ORIG(ng_gethostbyname2_fn, NV_GETHOSTBYNAME2);
    const ng_judge *j = nv_judge();
    NV_LOOKUP(j, orig(name, af), ng_native_gethostbyname2(j, orig, name, af));
}

static int
nv_gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t buflen,
                   struct hostent **result, int *h_errnop)
{
    ng_gethostbyname_r_fn orig = NV_ORIG(ng_gethostbyname_r_fn, NV_GETHOSTBYNAME_R);
    const ng_judge *j = nv_judge();
    NV_LOOKUP(j, orig(name, ret, buf, buflen, result, h_errnop),
              ng_native_gethostbyname_r(j, orig, name, ret, buf, buflen, result, h_errnop));
}

static int
nv_gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf, size_t buflen,
                    struct hostent **result, int *h_errnop)
{
    ng_gethostbyname2_r_fn orig = NV_ORIG(ng_gethostbyname2_r_fn, NV_GETHOSTBYNAME2_R);
    const ng_judge *j = nv_judge();
    NV_LOOKUP(j, orig(name, af, ret, buf, buflen, result, h_errnop),
              ng_native_gethostbyname2_r(j, orig, name, af, ret, buf, buflen, result,
                                         h_errnop));
}

static struct hostent *
nv_gethostbyaddr(const void *addr, socklen_t len, int type)
{
    ng_gethostbyaddr_fn orig = NV_ORIG(ng_gethostbyaddr_fn, NV_GETHOSTBYADDR);
    const ng_judge *j = nv_judge();
    NV_LOOKUP(j, orig(addr, len, type), ng_native_gethostbyaddr(j, orig, addr, len, type));
}

static int
nv_getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
               char *serv, socklen_t servlen, int flags)
{
    ng_getnameinfo_fn orig = NV_ORIG(ng_getnameinfo_fn, NV_GETNAMEINFO);
    const ng_judge *j = nv_judge();
    NV_LOOKUP(j, orig(sa, salen, host, hostlen, serv, servlen, flags),
              ng_native_getnameinfo(j, orig, sa, salen, host, hostlen, serv, servlen, flags));
}

/* Starting programs: a child gets LD_PRELOAD and the NETGUARD_NATIVE_* variables back
   when its own environment lacks them; variables it sets itself are kept. The policy,
   mode, events file and recording choice come from this module (the policy activate()
   named last, kept between phases), so a test that emptied os.environ still starts
   covered children; the labels (test id, size, phase) come from this process's
   environment, where the plugin puts them. No allocation: these may run between vfork
   and exec. */

#define NV_MAX_VARS 8

/* The additions for a child: false when native mode has named no policy yet (nothing is
   added then). vars: NV_MAX_VARS entries. */
static bool
nv_child_adds(ng_env_adds *adds, const char **vars)
{
    static const char *const labels[] = {
        "NETGUARD_NATIVE_TEST=",
        "NETGUARD_NATIVE_SIZE=",
        "NETGUARD_NATIVE_PHASE=",
    };
    size_t k = 0;
    if (!atomic_load_explicit(&nv_live, memory_order_acquire)) {
        return false;
    }
    const nv_policy *p = atomic_load_explicit(&nv_child, memory_order_acquire);
    if (p == NULL || p->env_policy == NULL) {
        return false;
    }
    vars[k++] = p->env_policy;
    vars[k++] = nv_env_mode;
    vars[k++] = nv_env_events;
    if (nv_env_record[0] != '\0') {
        vars[k++] = nv_env_record;
    }
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, "NETGUARD_NATIVE_", 16) != 0) {
            continue;
        }
        for (size_t n = 0; n < sizeof(labels) / sizeof(labels[0]); n++) {
            if (strncmp(*e, labels[n], strlen(labels[n])) == 0) {
                if (k < NV_MAX_VARS - 1) {
                    vars[k++] = *e;
                }
                break;
            }
        }
    }
    vars[k] = NULL;
    adds->preload = nv_preload[0] != '\0' ? nv_preload : NULL;
    adds->vars = vars;
    adds->override = false;
    return true;
}

/* Run `call` with `env` the composed environment: a macro, so that the arrays live in
   the caller's frame (the replacement's, until the exec). */
#define NV_WITH_CHILD_ENV(envp, env, call)                                               \
    do {                                                                                 \
        const char *vars_[NV_MAX_VARS];                                                  \
        ng_env_adds adds_;                                                               \
        if (!nv_child_adds(&adds_, vars_)) {                                             \
            char *const *env = (envp);                                                   \
            return call;                                                                 \
        }                                                                                \
        NG_RETURN_WITH_ENV(envp, &adds_, env, call);                                     \
    } while (0)

static int
nv_execve(const char *path, char *const argv[], char *const envp[])
{
    nv_execve_fn real = NV_ORIG(nv_execve_fn, NV_EXECVE);
    NV_WITH_CHILD_ENV(envp, env, real(path, argv, env));
}

/* execv and execvp use this process's environment: with the additions it goes to
   execve and execvpe (the same search, an explicit environment). */
static int
nv_execv(const char *path, char *const argv[])
{
    nv_execve_fn real = NV_ORIG(nv_execve_fn, NV_EXECVE);
    if (real == NULL) {
        return NV_ORIG(nv_execv_fn, NV_EXECV)(path, argv);
    }
    NV_WITH_CHILD_ENV(environ, env, real(path, argv, env));
}

static int
nv_execvp(const char *file, char *const argv[])
{
    nv_execve_fn real = NV_ORIG(nv_execve_fn, NV_EXECVPE);
    if (real == NULL) {
        return NV_ORIG(nv_execv_fn, NV_EXECVP)(file, argv);
    }
    NV_WITH_CHILD_ENV(environ, env, real(file, argv, env));
}

static int
nv_execvpe(const char *file, char *const argv[], char *const envp[])
{
    nv_execve_fn real = NV_ORIG(nv_execve_fn, NV_EXECVPE);
    NV_WITH_CHILD_ENV(envp, env, real(file, argv, env));
}

static int
nv_fexecve(int fd, char *const argv[], char *const envp[])
{
    nv_fexecve_fn real = NV_ORIG(nv_fexecve_fn, NV_FEXECVE);
    NV_WITH_CHILD_ENV(envp, env, real(fd, argv, env));
}

static int
nv_posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
               const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    nv_spawn_fn real = NV_ORIG(nv_spawn_fn, NV_POSIX_SPAWN);
    NV_WITH_CHILD_ENV(envp, env, real(pid, path, actions, attr, argv, env));
}

static int
nv_posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
                const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    nv_spawn_fn real = NV_ORIG(nv_spawn_fn, NV_POSIX_SPAWNP);
    NV_WITH_CHILD_ENV(envp, env, real(pid, file, actions, attr, argv, env));
}

/* The one table of native mode: name and replacement; index = NV_* constant. */
static const struct {
    const char *name;
    void *replacement;
} nv_table[NV_COUNT] = {
    [NV_CONNECT] = {"connect", (void *)nv_connect},
    [NV_SENDTO] = {"sendto", (void *)nv_sendto},
    [NV_SENDMSG] = {"sendmsg", (void *)nv_sendmsg},
    [NV_SENDMMSG] = {"sendmmsg", (void *)nv_sendmmsg},
    [NV_GETADDRINFO] = {"getaddrinfo", (void *)nv_getaddrinfo},
    [NV_GETHOSTBYNAME] = {"gethostbyname", (void *)nv_gethostbyname},
    [NV_GETHOSTBYNAME2] = {"gethostbyname2", (void *)nv_gethostbyname2},
    [NV_GETHOSTBYNAME_R] = {"gethostbyname_r", (void *)nv_gethostbyname_r},
    [NV_GETHOSTBYNAME2_R] = {"gethostbyname2_r", (void *)nv_gethostbyname2_r},
    [NV_GETHOSTBYADDR] = {"gethostbyaddr", (void *)nv_gethostbyaddr},
    [NV_GETNAMEINFO] = {"getnameinfo", (void *)nv_getnameinfo},
    [NV_EXECVE] = {"execve", (void *)nv_execve},
    [NV_EXECV] = {"execv", (void *)nv_execv},
    [NV_EXECVP] = {"execvp", (void *)nv_execvp},
    [NV_EXECVPE] = {"execvpe", (void *)nv_execvpe},
    [NV_FEXECVE] = {"fexecve", (void *)nv_fexecve},
    [NV_POSIX_SPAWN] = {"posix_spawn", (void *)nv_posix_spawn},
    [NV_POSIX_SPAWNP] = {"posix_spawnp", (void *)nv_posix_spawnp},
};

/* ,"key":"value" appended to nv_labels at pos (value cut at limit bytes); the new pos,
   or pos unchanged when it does not fit. */
static size_t
nv_label(size_t pos, const char *key, const char *value, size_t limit)
{
    size_t cap = sizeof(nv_labels) - 2, start = pos, n, kn = strlen(key);
    if (value == NULL) {
        return pos;
    }
    n = strnlen(value, limit);
    if (pos + kn + 6 > cap) {
        return start;
    }
    if (pos > 0) {
        nv_labels[pos++] = ',';
    }
    nv_labels[pos++] = '"';
    memcpy(nv_labels + pos, key, kn);
    pos += kn;
    memcpy(nv_labels + pos, "\":\"", 3);
    pos += 3;
    pos = ng_json_escape(nv_labels, pos, cap, value, n);
    if (pos >= cap) {
        nv_labels[start] = '\0';
        return start;
    }
    nv_labels[pos++] = '"';
    nv_labels[pos] = '\0';
    return pos;
}

static const char *
nv_getenv(const char *prefix)
{
    size_t n = strlen(prefix);
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, prefix, n) == 0) {
            return *e + n;
        }
    }
    return NULL;
}

/* In a child forked while native mode is installed (multiprocessing's fork workers, say):
   the patches stay, and events go to the session's events file, labelled as a preloaded
   child's, since nobody drains this copy of the ring. Only one thread runs here: no
   allocation, no lock. */
static void
nv_after_fork_child(void)
{
    size_t pos = 0;
    if (!atomic_load_explicit(&nv_live, memory_order_acquire) || nv_events[0] == '\0') {
        return;
    }
    const char *mode = nv_getenv("NETGUARD_NATIVE_MODE=");
    const ng_judge *j = nv_judge();
    nv_labels[0] = '\0';
    pos = nv_label(pos, "exe", nv_exe[0] != '\0' ? nv_exe : NULL, 1024);
    pos = nv_label(pos, "test", nv_getenv("NETGUARD_NATIVE_TEST="), 2048);
    pos = nv_label(pos, "size", nv_getenv("NETGUARD_NATIVE_SIZE="), 64);
    pos = nv_label(pos, "phase", nv_getenv("NETGUARD_NATIVE_PHASE="), 64);
    if (j != NULL) {
        mode = j->warn ? "warn" : "strict";
    }
    pos = nv_label(pos, "mode", mode, 64);
    (void)pos;
    nv_sink.ring = NULL;
    nv_sink.path = nv_events;
    nv_sink.labels = nv_labels;
}

/* dl_iterate_phdr: the executable segments of the object that holds `addr`. */
static int
nv_find_exempt(struct dl_phdr_info *info, size_t size, void *data)
{
    uintptr_t addr = *(const uintptr_t *)data;
    bool holds = false;
    (void)size;
    for (size_t i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = (uintptr_t)info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && addr >= lo && addr < lo + ph->p_memsz) {
            holds = true;
        }
    }
    if (!holds) {
        return 0;
    }
    size_t n = 0;
    for (size_t i = 0; i < info->dlpi_phnum && n < NV_MAX_EXEMPT; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            nv_exempt[n].lo = (uintptr_t)info->dlpi_addr + ph->p_vaddr;
            nv_exempt[n].hi = nv_exempt[n].lo + ph->p_memsz;
            n++;
        }
    }
    atomic_store_explicit(&nv_nexempt, n, memory_order_release);
    return 1;
}

/* Exempt the object holding _socket's C code (an extension module, or libpython or the
   program where _socket is built in), found from the C function behind
   _socket.socket.connect. Where it cannot be found, nothing is exempt: _socket's calls
   are then judged twice (the same answer; in warn mode, reported twice). */
static void
nv_exempt_socket(void)
{
    PyObject *mod = NULL, *type = NULL, *dict = NULL, *descr = NULL;
    atomic_store_explicit(&nv_nexempt, 0, memory_order_release);
    mod = PyImport_ImportModule("_socket");
    if (mod != NULL) {
        type = PyObject_GetAttrString(mod, "socket");
    }
    if (type != NULL) {
        dict = PyObject_GetAttrString(type, "__dict__");
    }
    if (dict != NULL) {
        descr = PyMapping_GetItemString(dict, "connect");
    }
    if (descr != NULL && PyObject_TypeCheck(descr, &PyMethodDescr_Type)) {
        uintptr_t addr = (uintptr_t)((PyMethodDescrObject *)descr)->d_method->ml_meth;
        dl_iterate_phdr(nv_find_exempt, &addr);
    }
    PyErr_Clear();
    Py_XDECREF(descr);
    Py_XDECREF(dict);
    Py_XDECREF(type);
    Py_XDECREF(mod);
}

static void
nv_free_policies(void)
{
    for (size_t i = 0; i < nv_npolicies; i++) {
        free(nv_policies[i]->learned);
        free(nv_policies[i]->blob);
        free(nv_policies[i]->env_policy);
        free(nv_policies[i]);
    }
    free(nv_policies);
    nv_policies = NULL;
    nv_npolicies = nv_cap = 0;
}

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

/* ------------------------------------------------------------------------------------ */
/* Native mode from Python.                                                              */

PyDoc_STRVAR(register_doc,
"register(blob, path=None, /)\n--\n\n"
"Register a compiled policy (Policy.to_bytes() of the C core) for activate(): its\n"
"index. The bytes are copied and checked once (ValueError for a blob that is not a\n"
"valid policy); the same bytes registered again give the same index. `path`: the file\n"
"holding the same blob, which children started while it is active are given\n"
"(NETGUARD_NATIVE_POLICY; without one, children get nothing added). Registered\n"
"policies stay for the life of the module.");

static PyObject *
register_blob(PyObject *arg, PyObject *path)
{
    Py_buffer buf;
    nv_policy *p = NULL;
    PyObject *result = NULL, *encoded = NULL;
    const char *bad;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (path != NULL && path != Py_None && !PyUnicode_FSConverter(path, &encoded)) {
        goto done;
    }
    for (size_t i = 0; i < nv_npolicies; i++) {
        nv_policy *q = nv_policies[i];
        if (q->size == (size_t)buf.len && memcmp(q->blob, buf.buf, q->size) == 0) {
            if (encoded != NULL && q->env_policy == NULL) {
                PyErr_SetString(PyExc_ValueError,
                                "this policy was registered without a file already");
                goto done;
            }
            result = PyLong_FromSize_t(i);
            goto done;
        }
    }
    if (buf.len <= 0) {
        PyErr_SetString(PyExc_ValueError, "not a netguard policy blob: empty");
        goto done;
    }
    if (nv_npolicies == nv_cap) {
        size_t cap = nv_cap ? nv_cap * 2 : 8;
        nv_policy **grown = realloc(nv_policies, cap * sizeof(*grown));
        if (grown == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        nv_policies = grown;
        nv_cap = cap;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL || (p->blob = malloc((size_t)buf.len)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(p->blob, buf.buf, (size_t)buf.len);
    p->size = (size_t)buf.len;
    if (encoded != NULL) {
        static const char name[] = "NETGUARD_NATIVE_POLICY=";
        size_t n = (size_t)PyBytes_GET_SIZE(encoded);
        p->env_policy = malloc(sizeof(name) + n);
        if (p->env_policy == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        memcpy(p->env_policy, name, sizeof(name) - 1);
        memcpy(p->env_policy + sizeof(name) - 1, PyBytes_AS_STRING(encoded), n + 1);
    }
    bad = ng_view_init(p->blob, p->size, &p->view);
    if (bad != NULL) {
        PyErr_Format(PyExc_ValueError, "not a netguard policy blob: %s", bad);
        goto done;
    }
    if (p->view.h->n_hosts > 0) {
        p->learned = calloc(1, sizeof(ng_learned));
        if (p->learned == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    for (int strict = 0; strict < 2; strict++) {
        for (int record = 0; record < 2; record++) {
            p->judge[strict][record] = (ng_judge){
                .view = &p->view,
                .learned = p->learned,
                .sink = &nv_sink,
                .warn = !strict,
                .record_allowed = record != 0,
                .tag = nv_npolicies,
            };
        }
    }
    result = PyLong_FromSize_t(nv_npolicies);
    if (result == NULL) {
        goto done;
    }
    nv_policies[nv_npolicies++] = p;
    p = NULL;
done:
    if (p != NULL) {
        free(p->env_policy);
        free(p->learned);
        free(p->blob);
        free(p);
    }
    Py_XDECREF(encoded);
    PyBuffer_Release(&buf);
    return result;
}

static PyObject *
native_register(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "register() takes 1 or 2 arguments (%zd given)", nargs);
        return NULL;
    }
    return register_blob(args[0], nargs > 1 ? args[1] : NULL);
}

PyDoc_STRVAR(activate_doc,
"activate(policy, strict=True, /)\n--\n\n"
"Judge the C library calls of this process by a registered policy (its index from\n"
"register(), or blob bytes, registered on the way) in strict (a denied call fails with\n"
"EACCES) or warn mode (it goes through); None: judge nothing. Process-wide, for every\n"
"thread; with an index, a pointer store.");

static PyObject *
native_activate(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "activate() takes 1 or 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (args[0] == Py_None) {
        atomic_store_explicit(&nv_active, NULL, memory_order_release);
        Py_RETURN_NONE;
    }
    int strict = nargs < 2 ? 1 : PyObject_IsTrue(args[1]);
    if (strict < 0) {
        return NULL;
    }
    Py_ssize_t index;
    if (PyObject_CheckBuffer(args[0])) {
        /* blob bytes: registered (once) here */
        PyObject *registered = register_blob(args[0], NULL);
        if (registered == NULL) {
            return NULL;
        }
        index = PyLong_AsSsize_t(registered);
        Py_DECREF(registered);
    }
    else {
        index = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    }
    if (index == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (index < 0 || (size_t)index >= nv_npolicies) {
        PyErr_Format(PyExc_IndexError, "no registered policy %zd (%zu registered)", index,
                     nv_npolicies);
        return NULL;
    }
    if (!nv_installed) {
        PyErr_SetString(PyExc_RuntimeError, "netguard._native: native mode is not installed");
        return NULL;
    }
    const nv_policy *p = nv_policies[index];
    atomic_store_explicit(&nv_child, p, memory_order_release);
    atomic_store_explicit(&nv_active, &p->judge[strict][nv_record_allowed ? 1 : 0],
                          memory_order_release);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(install_doc,
"install(preload, events, /, *, strict=True, record_allowed=False)\n--\n\n"
"Install native mode's hooks in every loaded object: the network calls are judged by\n"
"the policy activate() names (nothing is judged until then), and the exec family and\n"
"posix_spawn give children the preload library (`preload`, a path) and the\n"
"NETGUARD_NATIVE_* variables back when their environment lacks them: the file of the\n"
"policy activated last, the mode (`strict`), the events file (`events`, where a forked\n"
"child records too), and the labels of this process's environment. record_allowed:\n"
"record allowed calls too (children as well).\n"
"Calls made by _socket's own code are not judged (netguard's Python-level hooks judge\n"
"them). RuntimeError when hooks are installed already or the mechanism fails.");

static int
nv_copy_path(PyObject *obj, char *out, size_t cap, const char *what)
{
    PyObject *bytes = NULL;
    if (!PyUnicode_FSConverter(obj, &bytes)) {
        return -1;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    if ((size_t)n >= cap) {
        PyErr_Format(PyExc_ValueError, "the %s path is too long", what);
        Py_DECREF(bytes);
        return -1;
    }
    memcpy(out, PyBytes_AS_STRING(bytes), (size_t)n + 1);
    Py_DECREF(bytes);
    return 0;
}

static PyObject *
native_install(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"", "", "strict", "record_allowed", NULL};
    static bool atfork_registered = false;
    PyObject *preload, *events;
    int strict = 1, record_allowed = 0;
    ng_got_hook hooks[NV_COUNT];
    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|$pp:install", keywords, &preload,
                                     &events, &strict, &record_allowed)) {
        return NULL;
    }
    if (ng_got_installed()) {
        PyErr_SetString(PyExc_RuntimeError, "netguard._native: hooks are already installed");
        return NULL;
    }
    if (nv_copy_path(preload, nv_preload, sizeof(nv_preload), "preload library") < 0 ||
        nv_copy_path(events, nv_events, sizeof(nv_events), "events file") < 0) {
        return NULL;
    }
    if (nv_slots == NULL) {
        nv_slots = calloc(NV_RING_CAPACITY, sizeof(*nv_slots));
        if (nv_slots == NULL) {
            return PyErr_NoMemory();
        }
        (void)ng_ring_init(&nv_ring, nv_slots, NV_RING_CAPACITY);
    }
    if (!atfork_registered) {
        if (pthread_atfork(NULL, NULL, nv_after_fork_child) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "netguard._native: pthread_atfork failed");
            return NULL;
        }
        atfork_registered = true;
    }
    ssize_t en = readlink("/proc/self/exe", nv_exe, sizeof(nv_exe) - 1);
    nv_exe[en > 0 ? en : 0] = '\0';
    nv_exempt_socket();
    nv_sink = (ng_sink){.ring = &nv_ring, .path = NULL, .labels = NULL};
    nv_record_allowed = record_allowed != 0;
    snprintf(nv_env_mode, sizeof(nv_env_mode), "NETGUARD_NATIVE_MODE=%s",
             strict ? "strict" : "warn");
    snprintf(nv_env_events, sizeof(nv_env_events), "NETGUARD_NATIVE_EVENTS=%s", nv_events);
    snprintf(nv_env_record, sizeof(nv_env_record), "%s",
             record_allowed ? "NETGUARD_NATIVE_RECORD=all" : "");
    atomic_store_explicit(&nv_active, NULL, memory_order_release);
    atomic_store_explicit(&nv_child, NULL, memory_order_release);
    for (int k = 0; k < NV_COUNT; k++) {
        hooks[k] = (ng_got_hook){nv_table[k].name, nv_table[k].replacement, &nv_original[k]};
    }
    atomic_store_explicit(&nv_live, true, memory_order_release);
    if (install_table(hooks, NV_COUNT) < 0) {
        atomic_store_explicit(&nv_live, false, memory_order_release);
        return NULL;
    }
    nv_installed = true;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(drain_doc,
"drain()\n--\n\n"
"The events recorded in this process since the last call, oldest first: a list of\n"
"(op, verdict, family, host, port, pid, tid, policy) tuples. op and verdict as in the\n"
"events file (docs/native.md); family 0 for a name; host a str (file-system decoded);\n"
"port None when the call names none; policy the index of the registered policy that\n"
"judged the call.");

static PyObject *
native_drain(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    ng_event ev;
    PyObject *list = PyList_New(0), *item = NULL;
    (void)module;
    if (list == NULL || nv_slots == NULL) {
        return list;
    }
    while (ng_ring_pop(&nv_ring, &ev)) {
        size_t n = ev.host_len < NG_EVENT_HOST_MAX ? ev.host_len : NG_EVENT_HOST_MAX;
        PyObject *host = PyUnicode_DecodeFSDefaultAndSize(ev.host, (Py_ssize_t)n);
        PyObject *port = NULL;
        if (host != NULL) {
            port = ev.port < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(ev.port);
        }
        if (port == NULL) {
            Py_XDECREF(host);
            goto error;
        }
        item = Py_BuildValue("(ssiNNiiK)", ng_op_name(ev.op), ng_verdict_name(ev.verdict),
                             (int)ev.family, host, port, (int)ev.pid, (int)ev.tid,
                             (unsigned long long)ev.tag);
        if (item == NULL || PyList_Append(list, item) < 0) {
            goto error;
        }
        Py_CLEAR(item);
    }
    return list;
error:
    Py_XDECREF(item);
    Py_DECREF(list);
    return NULL;
}

PyDoc_STRVAR(dropped_doc,
"dropped()\n--\n\n"
"Events not recorded because the ring buffer was full (since the first install).");

static PyObject *
native_dropped(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return PyLong_FromUnsignedLongLong(nv_slots == NULL ? 0 : ng_ring_overflow(&nv_ring));
}

PyDoc_STRVAR(uninstall_doc,
"uninstall()\n--\n\n"
"Restore every patched GOT slot (in objects still loaded, whose slot still holds the\n"
"replacement). A no-op when nothing is installed.");

static PyObject *
native_uninstall(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    atomic_store_explicit(&nv_active, NULL, memory_order_release);
    ng_got_uninstall();
    atomic_store_explicit(&nv_live, false, memory_order_release);
    nv_installed = false;
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
    {"register", (PyCFunction)(void (*)(void))native_register, METH_FASTCALL, register_doc},
    {"install", (PyCFunction)(void (*)(void))native_install, METH_VARARGS | METH_KEYWORDS,
     install_doc},
    {"activate", (PyCFunction)(void (*)(void))native_activate, METH_FASTCALL, activate_doc},
    {"drain", (PyCFunction)native_drain, METH_NOARGS, drain_doc},
    {"dropped", (PyCFunction)native_dropped, METH_NOARGS, dropped_doc},
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
    names = PyTuple_New(NV_COUNT);
    if (names == NULL) {
        return -1;
    }
    for (int i = 0; i < NV_COUNT; i++) {
        PyObject *s = PyUnicode_FromString(nv_table[i].name);
        if (s == NULL) {
            Py_DECREF(names);
            return -1;
        }
        PyTuple_SET_ITEM(names, i, s);
    }
    rc = PyModule_AddObjectRef(module, "NAMES", names);
    Py_DECREF(names);
    if (rc < 0 || PyModule_AddIntConstant(module, "RING_CAPACITY", NV_RING_CAPACITY) < 0) {
        return -1;
    }
    return 0;
}

static void
native_free(void *module)
{
    (void)module;
    /* at interpreter shutdown: leave the process as it was found */
    atomic_store_explicit(&nv_active, NULL, memory_order_release);
    ng_got_uninstall();
    atomic_store_explicit(&nv_live, false, memory_order_release);
    nv_installed = false;
    nv_free_policies();
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
"Native mode's hooks (install, register, activate, drain, dropped), a test-only hook\n"
"set (_selftest_install, _selftest_count) and the mechanism's state (installed,\n"
"patched, stats, rescan, uninstall); see docs/internals.md, \"The GOT mechanism\".");

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
