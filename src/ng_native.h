/*
 * Native mode's judge: the compiled policy applied to the C library's network calls
 * (connect, sendto, sendmsg, sendmmsg, getaddrinfo, gethostbyname*, gethostbyaddr,
 * getnameinfo), with the same semantics as the Python-level hooks of _netguard.c (see
 * docs/internals.md and docs/native.md). Python-free: it is built into the preload shim
 * for child processes (ng_preload.c) and into the in-process native extension.
 *
 * Pieces, each usable on its own:
 *   - ng_judge: what judges (a view of a blob, or none: fail closed), the mode, the
 *     learned addresses, the sink, and a tag copied into every event;
 *   - the wrappers ng_native_connect() ...: judge, record, then call the original
 *     function the caller resolved (or fail with EACCES without calling it);
 *   - ng_learned: addresses learned from lookups allowed by host rules, a fixed table
 *     written and read without locks;
 *   - sinks: an events file (one JSON line per event, one write() per line) and a
 *     lock-free ring buffer of fixed capacity;
 *   - ng_env_compose(): the environment of an exec'd child with the preload library and
 *     the NETGUARD_NATIVE_* variables re-added, without malloc.
 *
 * Nothing here allocates on the judging path or calls a function the wrappers wrap, so
 * a wrapper may run from any thread, without the GIL, and between fork and exec.
 */
#ifndef NETGUARD_NG_NATIVE_H
#define NETGUARD_NG_NATIVE_H

/* struct mmsghdr and sendmmsg are GNU extensions; Python.h (pyconfig.h) defines it too */
#if !defined(_GNU_SOURCE) && defined(__linux__)
#error "define _GNU_SOURCE before including any header (ng_native.h needs struct mmsghdr)"
#endif

#include <netdb.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "ng_policy.h"

/* ------------------------------------------------------------------------------------ */
/* Events.                                                                               */

enum {
    NG_OP_CONNECT,
    NG_OP_SENDTO,
    NG_OP_SENDMSG,
    NG_OP_SENDMMSG,
    NG_OP_GETADDRINFO,
    NG_OP_GETHOSTBYNAME,
    NG_OP_GETHOSTBYNAME2,
    NG_OP_GETHOSTBYNAME_R,
    NG_OP_GETHOSTBYNAME2_R,
    NG_OP_GETHOSTBYADDR,
    NG_OP_GETNAMEINFO,
    NG_OP_INIT, /* a configuration problem found at start-up; host holds the reason */
    NG_OP_COUNT
};

enum {
    NG_VERDICT_ALLOWED,
    NG_VERDICT_DENIED, /* strict: the call failed with EACCES */
    NG_VERDICT_WARNED, /* warn: the call went through */
    NG_VERDICT_ERROR,  /* NG_OP_INIT events */
};

/* Long enough for a DNS name with a port, an AF_UNIX path (abstract names are shown as
   "@name" and keep their NUL bytes), or a reason. */
#define NG_EVENT_HOST_MAX 384

typedef struct {
    uint64_t tag;   /* the judge's tag when the event was made */
    int32_t pid;
    int32_t tid;
    int32_t family; /* AF_INET, AF_INET6, AF_UNIX; 0 for a name (DNS) */
    int32_t port;   /* -1: none */
    uint16_t op;
    uint16_t verdict;
    uint32_t host_len;
    char host[NG_EVENT_HOST_MAX]; /* host_len bytes, not NUL-terminated */
} ng_event;

const char *ng_op_name(int op);
const char *ng_verdict_name(int verdict);

/* ------------------------------------------------------------------------------------ */
/* The ring buffer sink: many producers, one consumer, never blocks.                     */

typedef struct {
    _Atomic uint64_t seq;
    ng_event event;
} ng_ring_slot;

/* head and tail on lines of their own: producers and the consumer do not share one */
typedef struct {
    ng_ring_slot *slots;
    uint64_t mask;
    char pad0[48];
    _Atomic uint64_t head; /* next position a producer claims */
    char pad1[56];
    _Atomic uint64_t tail; /* next position the consumer reads */
    char pad2[56];
    _Atomic uint64_t overflow; /* events dropped because the ring was full */
} ng_ring;

/* capacity: a power of two >= 2; slots: that many, owned by the caller. 0 or -1 (bad
   capacity). */
int ng_ring_init(ng_ring *r, ng_ring_slot *slots, uint64_t capacity);
/* From any thread; false (and the overflow counted) when full. */
bool ng_ring_push(ng_ring *r, const ng_event *ev);
/* One consumer at a time (the caller serialises, e.g. with the GIL). false: empty, or
   the oldest event is still being written. */
bool ng_ring_pop(ng_ring *r, ng_event *out);
uint64_t ng_ring_overflow(ng_ring *r);

/* ------------------------------------------------------------------------------------ */
/* Where events go.                                                                      */

typedef struct {
    ng_ring *ring;      /* in-process: events are pushed here (may be NULL) */
    const char *path;   /* child processes: the events file, appended to (may be NULL) */
    const char *labels; /* JSON members written into every line after "v" ("\"test\":
                           \"...\",\"size\":\"small\""), already escaped; may be NULL */
} ng_sink;

void ng_sink_emit(const ng_sink *sink, const ng_event *ev);

/* One event as a JSON line ending in '\n' into buf; the length, or 0 if it does not fit
   (cap >= 1024 always fits an event with labels of up to cap - 1024 bytes). */
size_t ng_event_format(const ng_event *ev, const char *labels, char *buf, size_t cap);

/* Append s (n bytes) as the body of a JSON string: quotes, backslashes and control
   characters escaped; valid UTF-8 kept; every other byte as \udcXX (Python's
   surrogateescape, so os.fsencode() gives the bytes back). Returns the new position, or
   cap + 1 when it does not fit. */
size_t ng_json_escape(char *buf, size_t pos, size_t cap, const char *s, size_t n);

/* ------------------------------------------------------------------------------------ */
/* Learned addresses.                                                                    */

#define NG_LEARNED_MAX 1024u

typedef struct {
    uint64_t hi, lo;        /* the address as IPv6; IPv4 as v4-mapped */
    uint32_t ports;         /* a port set of the blob this table belongs to */
    _Atomic uint32_t ready; /* written last: the entry may be read */
} ng_learned_entry;

/* Zero-initialised is empty. Append-only: a learned address stays learned. */
typedef struct {
    _Atomic uint32_t claimed;
    _Atomic uint64_t dropped; /* addresses not learned because the table was full */
    ng_learned_entry entries[NG_LEARNED_MAX];
} ng_learned;

/* ------------------------------------------------------------------------------------ */
/* The judge.                                                                            */

typedef struct {
    const ng_view *view;  /* NULL: fail closed, every judged call is denied (warn too) */
    ng_learned *learned;  /* NULL: nothing is learned */
    const ng_sink *sink;  /* NULL: nothing is recorded */
    bool warn;            /* warn mode: denied calls go through (and are recorded) */
    bool record_allowed;  /* record allowed calls too (verdict "allowed") */
    uint64_t tag;
} ng_judge;

/* The verdict of a destination, without recording it. 1: allowed; 0: denied; -1: not
   judged (a family netguard never judges, or an address the kernel rejects anyway).
   `ev` (may be NULL) receives the family, host and port. `sock_family` is the socket's
   domain when known (0 otherwise): with AF_INET, an AF_UNSPEC address is judged as the
   IPv4 address the kernel sends to. */
int ng_judge_sockaddr(const ng_judge *j, const struct sockaddr *sa, socklen_t len,
                      int sock_family, ng_event *ev);

/* The DNS policy for a forward lookup of node (NUL-terminated; NULL or "" is no lookup,
   nor is a numeric host). port: a numeric port the call names, or -1. 1 allowed, 0
   denied. *learn: allowed by a host rule, so the addresses found are to be learned under
   name (the normalised name, name_len bytes). */
int ng_judge_lookup(const ng_judge *j, const char *node, long port, ng_event *ev, bool *learn,
                    char name[256], size_t *name_len);

/* Teach the addresses of a lookup of `name` allowed by host rules. */
void ng_learn_addrinfo(const ng_judge *j, const char *name, size_t n,
                       const struct addrinfo *res);
void ng_learn_hostent(const ng_judge *j, const char *name, size_t n, const struct hostent *h);

/* Record an event made by a judge (sets pid, tid and tag). */
void ng_judge_record(const ng_judge *j, ng_event *ev);

/* ------------------------------------------------------------------------------------ */
/* The wrappers: judge, record, and call `orig` unless the call is denied in strict mode */
/* (then: -1 with errno EACCES; see each for the lookups). Inside an allowed lookup's    */
/* original call (a resolver connecting to its name server), calls are not judged.      */

typedef int (*ng_connect_fn)(int, const struct sockaddr *, socklen_t);
typedef ssize_t (*ng_sendto_fn)(int, const void *, size_t, int, const struct sockaddr *,
                                socklen_t);
typedef ssize_t (*ng_sendmsg_fn)(int, const struct msghdr *, int);
typedef int (*ng_sendmmsg_fn)(int, struct mmsghdr *, unsigned int, int);
typedef int (*ng_getaddrinfo_fn)(const char *, const char *, const struct addrinfo *,
                                 struct addrinfo **);
typedef struct hostent *(*ng_gethostbyname_fn)(const char *);
typedef struct hostent *(*ng_gethostbyname2_fn)(const char *, int);
typedef int (*ng_gethostbyname_r_fn)(const char *, struct hostent *, char *, size_t,
                                     struct hostent **, int *);
typedef int (*ng_gethostbyname2_r_fn)(const char *, int, struct hostent *, char *, size_t,
                                      struct hostent **, int *);
typedef struct hostent *(*ng_gethostbyaddr_fn)(const void *, socklen_t, int);
typedef int (*ng_getnameinfo_fn)(const struct sockaddr *, socklen_t, char *, socklen_t,
                                 char *, socklen_t, int);

int ng_native_connect(const ng_judge *j, ng_connect_fn orig, int fd, const struct sockaddr *sa,
                      socklen_t len);
ssize_t ng_native_sendto(const ng_judge *j, ng_sendto_fn orig, int fd, const void *buf,
                         size_t n, int flags, const struct sockaddr *sa, socklen_t len);
ssize_t ng_native_sendmsg(const ng_judge *j, ng_sendmsg_fn orig, int fd,
                          const struct msghdr *msg, int flags);
/* Messages are judged in order; in strict mode the first denied one ends the batch: the
   ones before it are sent (their count returned), or -1/EACCES if it is the first. */
int ng_native_sendmmsg(const ng_judge *j, ng_sendmmsg_fn orig, int fd, struct mmsghdr *vec,
                       unsigned int vlen, int flags);
/* Denied: EAI_SYSTEM with errno EACCES, *res set to NULL. */
int ng_native_getaddrinfo(const ng_judge *j, ng_getaddrinfo_fn orig, const char *node,
                          const char *service, const struct addrinfo *hints,
                          struct addrinfo **res);
/* Denied: NULL with h_errno NO_RECOVERY and errno EACCES. */
struct hostent *ng_native_gethostbyname(const ng_judge *j, ng_gethostbyname_fn orig,
                                        const char *name);
struct hostent *ng_native_gethostbyname2(const ng_judge *j, ng_gethostbyname2_fn orig,
                                         const char *name, int af);
/* Denied: returns EACCES with *result NULL, *h_errnop NO_RECOVERY, errno EACCES. */
int ng_native_gethostbyname_r(const ng_judge *j, ng_gethostbyname_r_fn orig, const char *name,
                              struct hostent *ret, char *buf, size_t buflen,
                              struct hostent **result, int *h_errnop);
int ng_native_gethostbyname2_r(const ng_judge *j, ng_gethostbyname2_r_fn orig,
                               const char *name, int af, struct hostent *ret, char *buf,
                               size_t buflen, struct hostent **result, int *h_errnop);
/* Reverse lookups: allowed for loopback addresses only (and under ALLOW_ALL). */
struct hostent *ng_native_gethostbyaddr(const ng_judge *j, ng_gethostbyaddr_fn orig,
                                        const void *addr, socklen_t len, int type);
int ng_native_getnameinfo(const ng_judge *j, ng_getnameinfo_fn orig,
                          const struct sockaddr *sa, socklen_t salen, char *host,
                          socklen_t hostlen, char *serv, socklen_t servlen, int flags);

/* Calls made between enter and leave on this thread are not judged (a lookup's own
   connections; the in-process hooks use it around calls Python-level hooks judged). */
void ng_native_quiet_enter(void);
void ng_native_quiet_leave(void);
bool ng_native_is_quiet(void);

/* ------------------------------------------------------------------------------------ */
/* A child's environment.                                                                */

typedef struct {
    const char *preload;      /* the preload library's path, made sure to be in LD_PRELOAD */
    const char *const *vars;  /* "NAME=value" strings, NULL-terminated (may be NULL) */
    bool override;            /* true: vars replace the caller's; false: only fill in */
} ng_env_adds;

/* The sizes ng_env_compose() needs: *slots pointers (NULL included) and *bytes for the
   composed LD_PRELOAD entry. */
void ng_env_sizes(char *const *envp, const ng_env_adds *adds, size_t *slots, size_t *bytes);

/* envp (NULL is empty) with the additions: entries of out (slots long) point into envp,
   adds->vars and buf (bytes long). Returns out, or envp itself when nothing changes;
   NULL when out or buf is too small. Never modifies envp; no allocation. */
char *const *ng_env_compose(char *const *envp, const ng_env_adds *adds, char **out,
                            size_t slots, char *buf, size_t bytes);

/* The most a composed environment may take on the stack: larger ones are passed on
   unchanged (no real environment comes near). */
#define NG_ENV_SLOTS_MAX 16384u
#define NG_ENV_BYTES_MAX 65536u

/* `return call;` with `env` bound to envp composed with *adds: a macro, so that the arrays
   live in the caller's frame (an exec wrapper's, until the exec); no allocation, as these
   may run between vfork and exec. Shared by the preload library and netguard._native. */
#define NG_RETURN_WITH_ENV(envp, adds, env, call)                                           \
    do {                                                                                 \
        size_t slots_, bytes_;                                                           \
        ng_env_sizes((envp), (adds), &slots_, &bytes_);                                  \
        if (slots_ > NG_ENV_SLOTS_MAX || bytes_ > NG_ENV_BYTES_MAX) {                    \
            char *const *env = (envp);                                                   \
            return call;                                                                 \
        }                                                                                \
        char *out_[slots_];                                                              \
        char buf_[bytes_];                                                               \
        char *const *env = ng_env_compose((envp), (adds), out_, slots_, buf_, bytes_);   \
        if (env == NULL) {                                                               \
            env = (envp);                                                                \
        }                                                                                \
        return call;                                                                     \
    } while (0)

#endif /* NETGUARD_NG_NATIVE_H */
