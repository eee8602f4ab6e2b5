/*
 * The native-mode preload library (Linux): netguard's policy for child processes.
 *
 * Loaded with LD_PRELOAD, it defines connect, sendto, sendmsg, sendmmsg, getaddrinfo,
 * gethostbyname, gethostbyname2, gethostbyname_r, gethostbyname2_r, gethostbyaddr and
 * getnameinfo; each judges the call with ng_native.c against the compiled policy and
 * calls the C library's own function (found with dlsym(RTLD_NEXT)) unless the call is
 * denied in strict mode. It also defines the exec family (execve, execv, execvp,
 * execvpe, execl, execlp, execle, fexecve) and posix_spawn/posix_spawnp, so that a child
 * started with an environment of its own (even an empty one) still gets LD_PRELOAD and
 * the NETGUARD_NATIVE_* variables.
 *
 * Configuration, read once when the library is loaded (docs/native.md):
 *   NETGUARD_NATIVE_POLICY   path of a compiled policy blob (mapped read-only)
 *   NETGUARD_NATIVE_MODE     strict | warn
 *   NETGUARD_NATIVE_EVENTS   path of the events file (JSON lines, appended)
 *   NETGUARD_NATIVE_TEST, NETGUARD_NATIVE_SIZE, NETGUARD_NATIVE_PHASE   labels of events
 *   NETGUARD_NATIVE_RECORD   denied (default) | all: record allowed calls too
 * A missing or broken policy fails closed: every judged call is denied, and an "init"
 * event says why. Everything is hidden but the functions above and one test entry.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <sched.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ng_native.h"

#define NG_EXPORT __attribute__((visibility("default")))

/* The dlsym path runs inside a sanitizer runtime's own start-up (it looks its
   interceptors up with dlsym), before that runtime can serve instrumented code: in a
   sanitizer build of this library (tests only), that path is left uninstrumented. */
#if defined(__has_attribute)
#if __has_attribute(no_sanitize)
#define NG_NO_SANITIZE __attribute__((no_sanitize("address", "undefined")))
#endif
#endif
#ifndef NG_NO_SANITIZE
#define NG_NO_SANITIZE
#endif

/* glibc declares the socket calls with a transparent union for the address when
   _GNU_SOURCE is on; a definition must use the same type. */
#if defined(__GLIBC__) && defined(__USE_GNU) && !defined(__cplusplus) && \
    !defined(__CONST_SOCKADDR_ARG)
typedef __CONST_SOCKADDR_ARG ng_csa_arg;
#define NG_CSA(a) ((a).__sockaddr__)
#else
typedef const struct sockaddr *ng_csa_arg;
#define NG_CSA(a) (a)
#endif

/* sendmmsg's flags are an int in glibc, an unsigned int in musl */
#ifdef __GLIBC__
typedef int ng_mmsg_flags;
#else
typedef unsigned int ng_mmsg_flags;
#endif

typedef int (*ng_execve_fn)(const char *, char *const[], char *const[]);
typedef int (*ng_execvpe_fn)(const char *, char *const[], char *const[]);
typedef int (*ng_fexecve_fn)(int, char *const[], char *const[]);
typedef int (*ng_spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                           const posix_spawnattr_t *, char *const[], char *const[]);

#define NG_ARGV_MAX 16384u /* the most arguments execl* collect on the stack */

enum { INIT_NONE, INIT_RUNNING, INIT_DONE };

static struct {
    _Atomic int state;
    ng_view view;
    ng_learned learned;
    ng_sink sink;
    ng_judge judge;
    ng_env_adds adds;
    const char *vars[8];
    char self[PATH_MAX];

    ng_connect_fn connect;
    ng_sendto_fn sendto;
    ng_sendmsg_fn sendmsg;
    ng_sendmmsg_fn sendmmsg;
    ng_getaddrinfo_fn getaddrinfo;
    ng_gethostbyname_fn gethostbyname;
    ng_gethostbyname2_fn gethostbyname2;
    ng_gethostbyname_r_fn gethostbyname_r;
    ng_gethostbyname2_r_fn gethostbyname2_r;
    ng_gethostbyaddr_fn gethostbyaddr;
    ng_getnameinfo_fn getnameinfo;
    ng_execve_fn execve;
    ng_execvpe_fn execvpe;
    ng_fexecve_fn fexecve;
    ng_spawn_fn posix_spawn;
    ng_spawn_fn posix_spawnp;
} g;

/* ------------------------------------------------------------------------------------ */
/* Start-up.                                                                             */

/* ------------------------------------------------------------------------------------ */
/* dlsym: a program that looks a function up in the C library by handle                 */
/* (ctypes.CDLL("libc.so.6").connect) gets the wrapper. glibc only: the real dlsym is    */
/* found by version with dlvsym, and RTLD_NEXT and RTLD_DEFAULT, which glibc resolves    */
/* relative to the caller, are resolved here relative to our caller.                     */

typedef void *(*ng_dlsym_fn)(void *, const char *);

#ifdef __GLIBC__
#define NG_WRAP_DLSYM 1
#include <link.h>

static _Atomic(ng_dlsym_fn) g_real_dlsym;

NG_NO_SANITIZE static ng_dlsym_fn
real_dlsym(void)
{
    static const char *const versions[] = {
        "GLIBC_2.34", /* every architecture since dlsym moved into libc */
        "GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.0", "GLIBC_2.2", "GLIBC_2.3", "GLIBC_2.4",
        "GLIBC_2.16", "GLIBC_2.18", "GLIBC_2.21", "GLIBC_2.27", "GLIBC_2.29", "GLIBC_2.32",
        "GLIBC_2.35", "GLIBC_2.36",
    };
    ng_dlsym_fn f = atomic_load_explicit(&g_real_dlsym, memory_order_acquire);
    for (size_t i = 0; f == NULL && i < sizeof(versions) / sizeof(versions[0]); i++) {
        void *p = dlvsym(RTLD_NEXT, "dlsym", versions[i]);
        memcpy(&f, &p, sizeof(p));
    }
    if (f != NULL) {
        atomic_store_explicit(&g_real_dlsym, f, memory_order_release);
    }
    return f;
}

NG_NO_SANITIZE static struct link_map *
owner_of(const void *addr)
{
    Dl_info info;
    struct link_map *lm = NULL;
    if (dladdr1(addr, &info, (void **)&lm, RTLD_DL_LINKMAP) == 0) {
        return NULL;
    }
    return lm;
}

static void *our_wrapper(const char *name);

/* Whether `later` comes after `earlier` in the load order (the global search order). */
NG_NO_SANITIZE static bool
loaded_after(const struct link_map *earlier, const struct link_map *later)
{
    for (const struct link_map *l = earlier->l_next; l != NULL; l = l->l_next) {
        if (l == later) {
            return true;
        }
    }
    return false;
}

/*
 * dlsym(RTLD_NEXT, name) for `caller`: the first definition in an object loaded after
 * the caller's. glibc would answer for us, the caller of the real dlsym, so:
 *   - a caller loaded before us (a sanitizer runtime preloaded first): our wrapper when
 *     we define name, else the first definition after us;
 *   - a caller loaded after us: the objects after it, one by one (dlopen with
 *     RTLD_NOLOAD gives a handle whose lookup starts at that object).
 */
NG_NO_SANITIZE static void *
next_after(ng_dlsym_fn real, const void *caller, const char *name)
{
    struct link_map *self = owner_of((const void *)&g), *lm = owner_of(caller);
    if (lm == NULL || self == NULL || lm == self || !loaded_after(self, lm)) {
        void *ours = lm != self ? our_wrapper(name) : NULL;
        return ours != NULL ? ours : real(RTLD_NEXT, name);
    }
    for (struct link_map *l = lm->l_next; l != NULL; l = l->l_next) {
        if (l->l_name == NULL || l->l_name[0] != '/') {
            continue; /* the vDSO */
        }
        void *h = dlopen(l->l_name, RTLD_LAZY | RTLD_NOLOAD);
        if (h == NULL) {
            continue;
        }
        void *p = real(h, name); /* l, then its dependencies */
        dlclose(h);
        if (p != NULL && owner_of(p) == l) {
            return p;
        }
    }
    return NULL; /* dlerror() tells the last object's "undefined symbol" */
}
#else
static ng_dlsym_fn
real_dlsym(void)
{
    return dlsym;
}
#endif

static void
resolve(void *slot, const char *name)
{
    ng_dlsym_fn real = real_dlsym();
    void *p = real != NULL ? real(RTLD_NEXT, name) : NULL;
    memcpy(slot, &p, sizeof(p)); /* a data pointer to a function pointer, without a cast */
}

/* "NAME=value" for an environment variable that is set, kept for children. */
static const char *
keep_var(const char *name, size_t *count)
{
    const char *value = getenv(name);
    if (value == NULL) {
        return NULL;
    }
    size_t n = strlen(name), vn = strlen(value);
    char *entry = malloc(n + vn + 2);
    if (entry == NULL) {
        return value;
    }
    memcpy(entry, name, n);
    entry[n] = '=';
    memcpy(entry + n + 1, value, vn + 1);
    if (*count < sizeof(g.vars) / sizeof(g.vars[0]) - 1) {
        g.vars[(*count)++] = entry;
    }
    return value;
}

/* Append ,"key":"value" (value cut at limit bytes) to the labels. */
static size_t
label(char *buf, size_t pos, size_t cap, const char *key, const char *value, size_t limit)
{
    if (value == NULL || pos > cap) {
        return pos;
    }
    size_t n = strlen(value);
    n = n < limit ? n : limit;
    size_t start = pos;
    char head[40];
    int hn = snprintf(head, sizeof(head), "%s\"%s\":\"", pos ? "," : "", key);
    if (hn < 0 || (size_t)hn >= sizeof(head) || (size_t)hn > cap - pos) {
        return start;
    }
    memcpy(buf + pos, head, (size_t)hn);
    pos = ng_json_escape(buf, pos + (size_t)hn, cap, value, n);
    if (pos >= cap) {
        buf[start] = '\0';
        return start;
    }
    buf[pos++] = '"';
    buf[pos] = '\0';
    return pos;
}

static void
init_event(const char *reason)
{
    ng_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.op = NG_OP_INIT;
    ev.verdict = NG_VERDICT_ERROR;
    ev.port = -1;
    size_t n = strlen(reason);
    n = n < NG_EVENT_HOST_MAX ? n : NG_EVENT_HOST_MAX;
    memcpy(ev.host, reason, n);
    ev.host_len = (uint32_t)n;
    ng_judge_record(&g.judge, &ev);
}

/* Map and check the policy blob: NULL, or why it cannot be used. */
static const char *
load_policy(const char *path, char *why, size_t cap)
{
    struct stat st;
    const char *bad;
    if (path == NULL || path[0] == '\0') {
        return "NETGUARD_NATIVE_POLICY is not set: every network call is denied";
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, cap, "cannot open the policy %s: %s: every network call is denied", path,
                 strerror(errno));
        return why;
    }
    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
        close(fd);
        snprintf(why, cap, "the policy %s is empty: every network call is denied", path);
        return why;
    }
    void *blob = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (blob == MAP_FAILED) {
        snprintf(why, cap, "cannot map the policy %s: %s: every network call is denied", path,
                 strerror(errno));
        return why;
    }
    bad = ng_view_init(blob, (size_t)st.st_size, &g.view);
    if (bad != NULL) {
        munmap(blob, (size_t)st.st_size);
        snprintf(why, cap, "the policy %s is unusable (%s): every network call is denied",
                 path, bad);
        return why;
    }
    return NULL; /* mapped for the life of the process */
}

static void
init_now(void)
{
    static char labels[4096];
    static char why[512];
    const char *reason = NULL;
    size_t nvars = 0, pos = 0;

    resolve(&g.connect, "connect");
    resolve(&g.sendto, "sendto");
    resolve(&g.sendmsg, "sendmsg");
    resolve(&g.sendmmsg, "sendmmsg");
    resolve(&g.getaddrinfo, "getaddrinfo");
    resolve(&g.gethostbyname, "gethostbyname");
    resolve(&g.gethostbyname2, "gethostbyname2");
    resolve(&g.gethostbyname_r, "gethostbyname_r");
    resolve(&g.gethostbyname2_r, "gethostbyname2_r");
    resolve(&g.gethostbyaddr, "gethostbyaddr");
    resolve(&g.getnameinfo, "getnameinfo");
    resolve(&g.execve, "execve");
    resolve(&g.execvpe, "execvpe");
    resolve(&g.fexecve, "fexecve");
    resolve(&g.posix_spawn, "posix_spawn");
    resolve(&g.posix_spawnp, "posix_spawnp");

    /* this library's own path, absolute, for the children's LD_PRELOAD */
    Dl_info info;
    if (dladdr((void *)&g, &info) != 0 && info.dli_fname != NULL &&
        realpath(info.dli_fname, g.self) != NULL) {
        g.adds.preload = g.self;
    }

    const char *policy = keep_var("NETGUARD_NATIVE_POLICY", &nvars);
    const char *mode = keep_var("NETGUARD_NATIVE_MODE", &nvars);
    const char *events = keep_var("NETGUARD_NATIVE_EVENTS", &nvars);
    const char *test = keep_var("NETGUARD_NATIVE_TEST", &nvars);
    const char *size = keep_var("NETGUARD_NATIVE_SIZE", &nvars);
    const char *phase = keep_var("NETGUARD_NATIVE_PHASE", &nvars);
    const char *record = keep_var("NETGUARD_NATIVE_RECORD", &nvars);
    g.vars[nvars] = NULL;
    g.adds.vars = g.vars;
    g.adds.override = false; /* a child's own NETGUARD_NATIVE_* (a nested run) are kept */

    bool warn = mode != NULL && strcmp(mode, "warn") == 0;
    char exe[PATH_MAX];
    ssize_t en = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[en > 0 ? en : 0] = '\0';
    pos = label(labels, pos, sizeof(labels), "exe", en > 0 ? exe : NULL, 1024);
    pos = label(labels, pos, sizeof(labels), "test", test, 2048);
    pos = label(labels, pos, sizeof(labels), "size", size, 64);
    pos = label(labels, pos, sizeof(labels), "phase", phase, 64);
    pos = label(labels, pos, sizeof(labels), "mode", warn ? "warn" : "strict", 64);

    g.sink.labels = labels;
    g.sink.path = events != NULL && events[0] != '\0' ? events : NULL;
    g.sink.ring = NULL;

    reason = load_policy(policy, why, sizeof(why));
    g.judge.view = reason == NULL ? &g.view : NULL;
    g.judge.learned = &g.learned;
    g.judge.sink = &g.sink;
    g.judge.warn = warn;
    g.judge.record_allowed = record != NULL && strcmp(record, "all") == 0;
    g.judge.tag = 0;
    if (reason != NULL) {
        init_event(reason);
    }
    if (mode != NULL && strcmp(mode, "strict") != 0 && !warn) {
        init_event("NETGUARD_NATIVE_MODE is neither strict nor warn: judged as strict");
    }
}

/* Set while this thread runs init_now(): a call back into us from there (a sanitizer
   runtime starting up inside realpath, say) must not wait for itself. */
static _Thread_local bool g_initializing __attribute__((tls_model("initial-exec")));

static void
ensure_init(void)
{
    int state = atomic_load_explicit(&g.state, memory_order_acquire);
    if (state == INIT_DONE || g_initializing) {
        return;
    }
    int expected = INIT_NONE;
    if (atomic_compare_exchange_strong(&g.state, &expected, INIT_RUNNING)) {
        g_initializing = true;
        init_now();
        g_initializing = false;
        atomic_store_explicit(&g.state, INIT_DONE, memory_order_release);
        return;
    }
    while (atomic_load_explicit(&g.state, memory_order_acquire) != INIT_DONE) {
        sched_yield(); /* another thread is initialising */
    }
}

__attribute__((constructor)) static void
ng_preload_init(void)
{
    ensure_init();
}

/* ------------------------------------------------------------------------------------ */
/* The network calls.                                                                    */

#define NG_REAL(name, fail)                                                              \
    do {                                                                                 \
        ensure_init();                                                                   \
        if (g.name == NULL) {                                                            \
            errno = ENOSYS;                                                              \
            return fail;                                                                 \
        }                                                                                \
    } while (0)

NG_EXPORT int
connect(int fd, ng_csa_arg addr, socklen_t len)
{
    NG_REAL(connect, -1);
    return ng_native_connect(&g.judge, g.connect, fd, NG_CSA(addr), len);
}

NG_EXPORT ssize_t
sendto(int fd, const void *buf, size_t n, int flags, ng_csa_arg addr, socklen_t len)
{
    NG_REAL(sendto, -1);
    return ng_native_sendto(&g.judge, g.sendto, fd, buf, n, flags, NG_CSA(addr), len);
}

NG_EXPORT ssize_t
sendmsg(int fd, const struct msghdr *msg, int flags)
{
    NG_REAL(sendmsg, -1);
    return ng_native_sendmsg(&g.judge, g.sendmsg, fd, msg, flags);
}

NG_EXPORT int
sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, ng_mmsg_flags flags)
{
    NG_REAL(sendmmsg, -1);
    return ng_native_sendmmsg(&g.judge, g.sendmmsg, fd, vec, vlen, (int)flags);
}

NG_EXPORT int
getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
            struct addrinfo **res)
{
    ensure_init();
    if (g.getaddrinfo == NULL) {
        errno = ENOSYS;
        return EAI_SYSTEM;
    }
    return ng_native_getaddrinfo(&g.judge, g.getaddrinfo, node, service, hints, res);
}

NG_EXPORT struct hostent *
gethostbyname(const char *name)
{
    NG_REAL(gethostbyname, NULL);
    return ng_native_gethostbyname(&g.judge, g.gethostbyname, name);
}

NG_EXPORT struct hostent *
gethostbyname2(const char *name, int af)
{
    NG_REAL(gethostbyname2, NULL);
    return ng_native_gethostbyname2(&g.judge, g.gethostbyname2, name, af);
}

NG_EXPORT int
gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t buflen,
                struct hostent **result, int *h_errnop)
{
    NG_REAL(gethostbyname_r, ENOSYS);
    return ng_native_gethostbyname_r(&g.judge, g.gethostbyname_r, name, ret, buf, buflen,
                                     result, h_errnop);
}

NG_EXPORT int
gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf, size_t buflen,
                 struct hostent **result, int *h_errnop)
{
    NG_REAL(gethostbyname2_r, ENOSYS);
    return ng_native_gethostbyname2_r(&g.judge, g.gethostbyname2_r, name, af, ret, buf,
                                      buflen, result, h_errnop);
}

NG_EXPORT struct hostent *
gethostbyaddr(const void *addr, socklen_t len, int type)
{
    NG_REAL(gethostbyaddr, NULL);
    return ng_native_gethostbyaddr(&g.judge, g.gethostbyaddr, addr, len, type);
}

NG_EXPORT int
getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
            char *serv, socklen_t servlen, int flags)
{
    ensure_init();
    if (g.getnameinfo == NULL) {
        errno = ENOSYS;
        return EAI_SYSTEM;
    }
    return ng_native_getnameinfo(&g.judge, g.getnameinfo, sa, salen, host, hostlen, serv,
                                 servlen, flags);
}

/* ------------------------------------------------------------------------------------ */
/* Starting programs: the child's environment gets LD_PRELOAD and NETGUARD_NATIVE_* back. */
/* No allocation (these run between vfork and exec): the composed environment lives on   */
/* the stack.                                                                            */

/* Run `call` with envp composed: a macro, so the arrays live in the caller's frame. */
#define WITH_CHILD_ENV(envp, env, call) NG_RETURN_WITH_ENV(envp, &g.adds, env, call)

static int
exec_env(const char *path, char *const argv[], char *const envp[])
{
    if (g.execve == NULL) {
        errno = ENOSYS;
        return -1;
    }
    WITH_CHILD_ENV(envp, env, g.execve(path, argv, env));
}

static int
execp_env(const char *file, char *const argv[], char *const envp[])
{
    if (g.execvpe == NULL) {
        errno = ENOSYS;
        return -1;
    }
    WITH_CHILD_ENV(envp, env, g.execvpe(file, argv, env));
}

NG_EXPORT int
execve(const char *path, char *const argv[], char *const envp[])
{
    ensure_init();
    return exec_env(path, argv, envp);
}

NG_EXPORT int
execv(const char *path, char *const argv[])
{
    ensure_init();
    return exec_env(path, argv, environ);
}

NG_EXPORT int
execvp(const char *file, char *const argv[])
{
    ensure_init();
    return execp_env(file, argv, environ);
}

NG_EXPORT int
execvpe(const char *file, char *const argv[], char *const envp[])
{
    ensure_init();
    return execp_env(file, argv, envp);
}

NG_EXPORT int
fexecve(int fd, char *const argv[], char *const envp[])
{
    ensure_init();
    if (g.fexecve == NULL) {
        errno = ENOSYS;
        return -1;
    }
    WITH_CHILD_ENV(envp, env, g.fexecve(fd, argv, env));
}

/* The arguments of execl/execlp/execle after `arg`, up to their NULL: how many. */
static size_t
count_args(const char *arg, va_list ap)
{
    size_t n = 0;
    if (arg == NULL) {
        return 0;
    }
    n = 1;
    while (va_arg(ap, const char *) != NULL) {
        n++;
    }
    return n;
}

/* Fill argv (n + 1 slots) from arg and ap; returns what follows the NULL for execle. */
static void
fill_args(const char **argv, size_t n, const char *arg, va_list ap)
{
    if (n > 0) {
        argv[0] = arg;
        for (size_t i = 1; i < n; i++) {
            argv[i] = va_arg(ap, const char *);
        }
        (void)va_arg(ap, const char *); /* the terminating NULL */
    }
    argv[n] = NULL;
}

/* The body of execl, execlp and execle: `arg` and the arguments after it, up to their NULL,
   collected into `argv` on the stack; `envp` read from what follows the NULL (`tail`:
   execle's environment, or `environ`); then `call` runs with both. */
#define EXEC_FROM_VARARGS(arg, tail, call)                                                   \
    do {                                                                                     \
        va_list ap;                                                                          \
        ensure_init();                                                                       \
        va_start(ap, arg);                                                                   \
        size_t n = count_args(arg, ap);                                                      \
        va_end(ap);                                                                          \
        if (n > NG_ARGV_MAX) {                                                               \
            errno = E2BIG;                                                                   \
            return -1;                                                                       \
        }                                                                                    \
        const char *argv[n + 1];                                                             \
        va_start(ap, arg);                                                                   \
        fill_args(argv, n, arg, ap);                                                         \
        char *const *envp = (tail);                                                          \
        va_end(ap);                                                                          \
        return (call);                                                                       \
    } while (0)

NG_EXPORT int
execl(const char *path, const char *arg, ...)
{
    EXEC_FROM_VARARGS(arg, environ, exec_env(path, (char *const *)argv, envp));
}

NG_EXPORT int
execlp(const char *file, const char *arg, ...)
{
    EXEC_FROM_VARARGS(arg, environ, execp_env(file, (char *const *)argv, envp));
}

NG_EXPORT int
execle(const char *path, const char *arg, ...)
{
    EXEC_FROM_VARARGS(arg, va_arg(ap, char *const *), exec_env(path, (char *const *)argv, envp));
}

NG_EXPORT int
posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
            const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    ensure_init();
    if (g.posix_spawn == NULL) {
        return ENOSYS;
    }
    WITH_CHILD_ENV(envp, env, g.posix_spawn(pid, path, actions, attr, argv, env));
}

NG_EXPORT int
posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
             const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    ensure_init();
    if (g.posix_spawnp == NULL) {
        return ENOSYS;
    }
    WITH_CHILD_ENV(envp, env, g.posix_spawnp(pid, file, actions, attr, argv, env));
}

/* Hidden aliases: the addresses of our own definitions. A reference to `connect` from
   this file goes through the GOT and finds the first `connect` in the process, which is
   another preloaded library's when one comes before us. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 9
#define NG_COPY(name) __attribute__((copy(name))) /* the header's nothrow, leaf, ... */
#else
#define NG_COPY(name)
#endif
#define NG_LOCAL(name)                                                                   \
    extern __typeof__(name) ng_local_##name NG_COPY(name)                                \
        __attribute__((alias(#name), visibility("hidden")));
NG_LOCAL(connect)
NG_LOCAL(sendto)
NG_LOCAL(sendmsg)
NG_LOCAL(sendmmsg)
NG_LOCAL(getaddrinfo)
NG_LOCAL(gethostbyname)
NG_LOCAL(gethostbyname2)
NG_LOCAL(gethostbyname_r)
NG_LOCAL(gethostbyname2_r)
NG_LOCAL(gethostbyaddr)
NG_LOCAL(getnameinfo)
NG_LOCAL(execve)
NG_LOCAL(execv)
NG_LOCAL(execvp)
NG_LOCAL(execvpe)
NG_LOCAL(execl)
NG_LOCAL(execlp)
NG_LOCAL(execle)
NG_LOCAL(fexecve)
NG_LOCAL(posix_spawn)
NG_LOCAL(posix_spawnp)
#undef NG_LOCAL
#undef NG_COPY

#ifdef NG_WRAP_DLSYM
/* The C library's own function found through dlsym: the wrapper instead. */
typedef void (*ng_any_fn)(void);

NG_NO_SANITIZE static void *
fn_data(ng_any_fn f)
{
    void *p;
    memcpy(&p, &f, sizeof(p));
    return p;
}

NG_NO_SANITIZE static void *
our_wrapper(const char *name)
{
    static const struct {
        const char *name;
        ng_any_fn ours;
    } wrappers[] = {
        {"connect", (ng_any_fn)ng_local_connect},
        {"sendto", (ng_any_fn)ng_local_sendto},
        {"sendmsg", (ng_any_fn)ng_local_sendmsg},
        {"sendmmsg", (ng_any_fn)ng_local_sendmmsg},
        {"getaddrinfo", (ng_any_fn)ng_local_getaddrinfo},
        {"gethostbyname", (ng_any_fn)ng_local_gethostbyname},
        {"gethostbyname2", (ng_any_fn)ng_local_gethostbyname2},
        {"gethostbyname_r", (ng_any_fn)ng_local_gethostbyname_r},
        {"gethostbyname2_r", (ng_any_fn)ng_local_gethostbyname2_r},
        {"gethostbyaddr", (ng_any_fn)ng_local_gethostbyaddr},
        {"getnameinfo", (ng_any_fn)ng_local_getnameinfo},
        {"execve", (ng_any_fn)ng_local_execve},
        {"execv", (ng_any_fn)ng_local_execv},
        {"execvp", (ng_any_fn)ng_local_execvp},
        {"execvpe", (ng_any_fn)ng_local_execvpe},
        {"execl", (ng_any_fn)ng_local_execl},
        {"execlp", (ng_any_fn)ng_local_execlp},
        {"execle", (ng_any_fn)ng_local_execle},
        {"fexecve", (ng_any_fn)ng_local_fexecve},
        {"posix_spawn", (ng_any_fn)ng_local_posix_spawn},
        {"posix_spawnp", (ng_any_fn)ng_local_posix_spawnp},
    };
    for (size_t i = 0; name != NULL && i < sizeof(wrappers) / sizeof(wrappers[0]); i++) {
        /* compared by hand: a sanitizer runtime still starting up calls in here, and
           its own strcmp is not ready yet */
        const char *a = name, *b = wrappers[i].name;
        while (*a != '\0' && *a == *b) {
            a++;
            b++;
        }
        if (*a == *b) {
            return fn_data(wrappers[i].ours);
        }
    }
    return NULL;
}

NG_NO_SANITIZE static void *
substitute(void *p)
{
    const struct {
        ng_any_fn real, ours;
    } pairs[] = {
        {(ng_any_fn)g.connect, (ng_any_fn)ng_local_connect},
        {(ng_any_fn)g.sendto, (ng_any_fn)ng_local_sendto},
        {(ng_any_fn)g.sendmsg, (ng_any_fn)ng_local_sendmsg},
        {(ng_any_fn)g.sendmmsg, (ng_any_fn)ng_local_sendmmsg},
        {(ng_any_fn)g.getaddrinfo, (ng_any_fn)ng_local_getaddrinfo},
        {(ng_any_fn)g.gethostbyname, (ng_any_fn)ng_local_gethostbyname},
        {(ng_any_fn)g.gethostbyname2, (ng_any_fn)ng_local_gethostbyname2},
        {(ng_any_fn)g.gethostbyname_r, (ng_any_fn)ng_local_gethostbyname_r},
        {(ng_any_fn)g.gethostbyname2_r, (ng_any_fn)ng_local_gethostbyname2_r},
        {(ng_any_fn)g.gethostbyaddr, (ng_any_fn)ng_local_gethostbyaddr},
        {(ng_any_fn)g.getnameinfo, (ng_any_fn)ng_local_getnameinfo},
        {(ng_any_fn)g.execve, (ng_any_fn)ng_local_execve},
        {(ng_any_fn)g.execvpe, (ng_any_fn)ng_local_execvpe},
        {(ng_any_fn)g.fexecve, (ng_any_fn)ng_local_fexecve},
        {(ng_any_fn)g.posix_spawn, (ng_any_fn)ng_local_posix_spawn},
        {(ng_any_fn)g.posix_spawnp, (ng_any_fn)ng_local_posix_spawnp},
    };
    ng_any_fn fp;
    if (p == NULL) {
        return NULL;
    }
    memcpy(&fp, &p, sizeof(p));
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        if (pairs[i].real == fp) {
            return fn_data(pairs[i].ours);
        }
    }
    return p;
}

NG_NO_SANITIZE NG_EXPORT void *
dlsym(void *handle, const char *name)
{
    const void *caller = __builtin_return_address(0);
    ng_dlsym_fn real = real_dlsym();
    if (real == NULL) {
        return NULL;
    }
    if (handle == RTLD_NEXT) {
        return next_after(real, caller, name);
    }
    void *p = real(handle, name);
    if (atomic_load_explicit(&g.state, memory_order_acquire) != INIT_DONE) {
        return p; /* before start-up, when nothing is known to substitute */
    }
    if (p == NULL && handle == RTLD_DEFAULT) {
        /* the global scope, then the caller's own: an object loaded with RTLD_LOCAL
           finds its dependencies' symbols (a handle from dlopen, not the bare link map,
           whose search list glibc builds only when the object is opened) */
        struct link_map *lm = owner_of(caller);
        void *h = lm != NULL && lm->l_name != NULL && lm->l_name[0] == '/'
                      ? dlopen(lm->l_name, RTLD_LAZY | RTLD_NOLOAD)
                      : NULL;
        if (h != NULL) {
            p = real(h, name);
            dlclose(h);
        }
    }
    return substitute(p);
}
#endif

/* ------------------------------------------------------------------------------------ */
/* Test entries (tests/test_native_preload.py loads this library with ctypes).           */

/*
 * Judge one destination with the blob given, as the wrappers do, without calling
 * anything. kind 0: `arg` is a sockaddr of `arglen` bytes given to connect; 1: `arg` is
 * a NUL-terminated name given to getaddrinfo with `port` (-1: none); 2: `arg` is a
 * sockaddr given to getnameinfo (a reverse lookup). Returns 1 allowed, 0 denied, 2 not
 * judged, -1 for a blob ng_view_init rejects.
 */
NG_EXPORT int
ng_native_judge_for_tests(const void *blob, size_t size, int kind, const void *arg,
                          size_t arglen, long port)
{
    ng_view view;
    ng_judge j = {0};
    ng_event ev;
    int result = -1;
    /* a private, aligned copy, as Policy.from_bytes makes */
    void *copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return -1;
    }
    memcpy(copy, blob, size);
    if (ng_view_init(copy, size, &view) != NULL) {
        goto done;
    }
    j.view = &view;
    if (kind == 0) {
        int v = ng_judge_sockaddr(&j, arg, (socklen_t)arglen, 0, &ev);
        result = v < 0 ? 2 : v;
    }
    else if (kind == 1) {
        bool learn;
        char name[256];
        size_t nn;
        int v = ng_judge_lookup(&j, arg, port, &ev, &learn, name, &nn);
        result = v < 0 ? 2 : v;
    }
    else if (kind == 2) {
        /* the same parse as a connect, then the reverse lookup's rule */
        ng_addr a;
        sa_family_t family;
        int v = ng_judge_sockaddr(&j, arg, (socklen_t)arglen, 0, &ev);
        memcpy(&family, arg, sizeof(family));
        if (v < 0 || ev.family == AF_UNIX) {
            result = 2;
        }
        else {
            a.family = family;
            if (family == AF_INET) {
                memcpy(a.bytes, (const char *)arg + offsetof(struct sockaddr_in, sin_addr), 4);
            }
            else {
                memcpy(a.bytes, (const char *)arg + offsetof(struct sockaddr_in6, sin6_addr),
                       16);
            }
            result = (view.h->flags & NG_ALLOW_ALL) || ng_addr_is_loopback(&a);
        }
    }
done:
    free(copy);
    return result;
}

/*
 * ng_env_compose() on envp with the preload path and vars given: the resulting entries
 * joined by '\n' into out (cap bytes). Returns 1 when the environment changed, 0 when
 * envp is passed on as it is, -1 when out is too small.
 */
NG_EXPORT int
ng_native_env_for_tests(char *const *envp, const char *preload, const char *const *vars,
                        int override, char *out, size_t cap)
{
    ng_env_adds adds = {preload, vars, override != 0};
    size_t slots, bytes, pos = 0;
    ng_env_sizes(envp, &adds, &slots, &bytes);
    char **arr = malloc(slots * sizeof(char *));
    char *buf = malloc(bytes);
    int result = -1;
    if (arr == NULL || buf == NULL) {
        goto done;
    }
    char *const *env = ng_env_compose(envp, &adds, arr, slots, buf, bytes);
    if (env == NULL) {
        goto done;
    }
    for (size_t i = 0; env[i] != NULL; i++) {
        size_t n = strlen(env[i]);
        if (pos + n + 2 > cap) {
            goto done;
        }
        memcpy(out + pos, env[i], n);
        pos += n;
        out[pos++] = '\n';
    }
    if (pos >= cap) {
        goto done;
    }
    out[pos] = '\0';
    result = env == (char *const *)arr ? 1 : 0;
done:
    free(arr);
    free(buf);
    return result;
}

/*
 * The ring buffer, for tests: one ring in this library, filled and emptied by the
 * calls below from as many threads as the test likes (ctypes releases the GIL). Each
 * event's tag is its producer's number (high 32 bits) and sequence number (low 32).
 */
static ng_ring test_ring;
static ng_ring_slot *test_slots;

NG_EXPORT int
ng_native_ring_test_init(uint64_t capacity)
{
    free(test_slots);
    test_slots = malloc(capacity * sizeof(ng_ring_slot));
    if (test_slots == NULL) {
        return -1;
    }
    return ng_ring_init(&test_ring, test_slots, capacity);
}

/* Push count events tagged first, first + 1, ...; returns how many went in. */
NG_EXPORT uint64_t
ng_native_ring_test_push(uint64_t first, uint64_t count)
{
    ng_event ev;
    uint64_t pushed = 0;
    memset(&ev, 0, sizeof(ev));
    ev.op = NG_OP_CONNECT;
    ev.host_len = 9;
    memcpy(ev.host, "127.0.0.1", 9);
    for (uint64_t i = 0; i < count; i++) {
        ev.tag = first + i;
        ev.port = (int32_t)(ev.tag & 0xffff);
        pushed += ng_ring_push(&test_ring, &ev);
    }
    return pushed;
}

/* Pop up to max events into tags; returns how many (events must arrive whole). */
NG_EXPORT uint64_t
ng_native_ring_test_pop(uint64_t *tags, uint64_t max)
{
    ng_event ev;
    uint64_t n = 0;
    while (n < max && ng_ring_pop(&test_ring, &ev)) {
        if (ev.port != (int32_t)(ev.tag & 0xffff) || ev.host_len != 9) {
            return UINT64_MAX; /* a torn event */
        }
        tags[n++] = ev.tag;
    }
    return n;
}

NG_EXPORT uint64_t
ng_native_ring_test_overflow(void)
{
    return ng_ring_overflow(&test_ring);
}
