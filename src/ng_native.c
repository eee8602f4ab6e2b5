/*
 * Native mode's judge (see ng_native.h): the compiled policy applied to the C library's
 * network calls, the sinks events go to, learned addresses and a child's environment.
 *
 * The semantics are those of the Python-level hooks in _netguard.c, read at the level of
 * the C library: a sockaddr instead of an address tuple, a C string instead of a str. An
 * allowed call costs a parse and a table lookup; only a recorded event formats text.
 * Nothing on any path allocates, takes a lock or calls a function the wrappers wrap.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ng_native.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#if defined(__GNUC__) || defined(__clang__)
#define NG_TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define NG_TLS_MODEL
#endif

/* ------------------------------------------------------------------------------------ */
/* Names.                                                                                */

static const char *const op_names[NG_OP_COUNT] = {
    "connect",         "sendto",           "sendmsg",       "sendmmsg",
    "getaddrinfo",     "gethostbyname",    "gethostbyname2", "gethostbyname_r",
    "gethostbyname2_r", "gethostbyaddr",   "getnameinfo",   "init",
};

const char *
ng_op_name(int op)
{
    return op >= 0 && op < NG_OP_COUNT ? op_names[op] : "?";
}

const char *
ng_verdict_name(int verdict)
{
    switch (verdict) {
    case NG_VERDICT_ALLOWED:
        return "allowed";
    case NG_VERDICT_DENIED:
        return "denied";
    case NG_VERDICT_WARNED:
        return "warned";
    default:
        return "error";
    }
}

/* ------------------------------------------------------------------------------------ */
/* Quiet sections: a lookup's own connections (to a name server, nscd, systemd-resolved) */
/* are part of the lookup that was judged.                                               */

static _Thread_local unsigned ng_quiet NG_TLS_MODEL;

void
ng_native_quiet_enter(void)
{
    ng_quiet++;
}

void
ng_native_quiet_leave(void)
{
    ng_quiet--;
}

bool
ng_native_is_quiet(void)
{
    return ng_quiet != 0;
}

/* ------------------------------------------------------------------------------------ */
/* The ring buffer: a bounded queue of sequenced slots. A slot's sequence number says    */
/* whose turn it is: pos (free for the producer of pos), pos + 1 (written, for the       */
/* consumer), pos + capacity (read, free for the producer one lap later).                */

int
ng_ring_init(ng_ring *r, ng_ring_slot *slots, uint64_t capacity)
{
    if (capacity < 2 || (capacity & (capacity - 1)) != 0) {
        return -1;
    }
    r->slots = slots;
    r->mask = capacity - 1;
    for (uint64_t i = 0; i < capacity; i++) {
        atomic_init(&slots[i].seq, i);
    }
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    atomic_init(&r->overflow, 0);
    return 0;
}

bool
ng_ring_push(ng_ring *r, const ng_event *ev)
{
    uint64_t pos = atomic_load_explicit(&r->head, memory_order_relaxed);
    for (;;) {
        ng_ring_slot *slot = &r->slots[pos & r->mask];
        uint64_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - pos);
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->head, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                slot->event = *ev;
                atomic_store_explicit(&slot->seq, pos + 1, memory_order_release);
                return true;
            }
            /* pos now holds the current head: try again there */
        }
        else if (diff < 0) {
            /* the slot a lap ago is still unread: full */
            atomic_fetch_add_explicit(&r->overflow, 1, memory_order_relaxed);
            return false;
        }
        else {
            pos = atomic_load_explicit(&r->head, memory_order_relaxed);
        }
    }
}

bool
ng_ring_pop(ng_ring *r, ng_event *out)
{
    uint64_t pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
    ng_ring_slot *slot = &r->slots[pos & r->mask];
    uint64_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);
    if (seq != pos + 1) {
        return false; /* empty, or its producer is still writing */
    }
    *out = slot->event;
    atomic_store_explicit(&slot->seq, pos + r->mask + 1, memory_order_release);
    atomic_store_explicit(&r->tail, pos + 1, memory_order_relaxed);
    return true;
}

uint64_t
ng_ring_overflow(ng_ring *r)
{
    return atomic_load_explicit(&r->overflow, memory_order_relaxed);
}

/* ------------------------------------------------------------------------------------ */
/* JSON lines.                                                                           */

static size_t
put(char *buf, size_t pos, size_t cap, const char *s, size_t n)
{
    if (pos > cap || n > cap - pos) {
        return cap + 1;
    }
    memcpy(buf + pos, s, n);
    return pos + n;
}

static size_t
puts0(char *buf, size_t pos, size_t cap, const char *s)
{
    return put(buf, pos, cap, s, strlen(s));
}

static size_t
put_int(char *buf, size_t pos, size_t cap, long long v)
{
    char digits[24];
    size_t n = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        digits[sizeof(digits) - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0) {
        digits[sizeof(digits) - 1 - n++] = '-';
    }
    return put(buf, pos, cap, digits + sizeof(digits) - n, n);
}

/* The length of the valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1fu;
    }
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0fu;
    }
    else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07u;
    }
    else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0u) != 0x80u) {
            return 0;
        }
        cp = cp << 6 | (s[i] & 0x3fu);
    }
    /* overlong forms, surrogates and code points past U+10FFFF are not UTF-8 */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return len;
}

size_t
ng_json_escape(char *buf, size_t pos, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n && pos <= cap) {
        unsigned char c = u[i];
        char esc[6];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            pos = put(buf, pos, cap, esc, 2);
            i++;
        }
        else if (c < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            pos = put(buf, pos, cap, esc, 6);
            i++;
        }
        else if (c < 0x80) {
            pos = put(buf, pos, cap, (const char *)u + i, 1);
            i++;
        }
        else {
            size_t len = utf8_len(u + i, n - i);
            if (len != 0) {
                pos = put(buf, pos, cap, (const char *)u + i, len);
                i += len;
            }
            else {
                /* a byte that is not UTF-8: a lone surrogate, as surrogateescape does */
                memcpy(esc, "\\udc", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                pos = put(buf, pos, cap, esc, 6);
                i++;
            }
        }
    }
    return pos;
}

static size_t
put_str(char *buf, size_t pos, size_t cap, const char *s, size_t n)
{
    pos = put(buf, pos, cap, "\"", 1);
    pos = ng_json_escape(buf, pos, cap, s, n);
    return put(buf, pos, cap, "\"", 1);
}

size_t
ng_event_format(const ng_event *ev, const char *labels, char *buf, size_t cap)
{
    size_t pos = 0;
    size_t hn = ev->host_len < NG_EVENT_HOST_MAX ? ev->host_len : NG_EVENT_HOST_MAX;
    pos = puts0(buf, pos, cap, "{\"v\":1,");
    if (labels != NULL && labels[0] != '\0') {
        pos = puts0(buf, pos, cap, labels);
        pos = put(buf, pos, cap, ",", 1);
    }
    pos = puts0(buf, pos, cap, "\"pid\":");
    pos = put_int(buf, pos, cap, ev->pid);
    pos = puts0(buf, pos, cap, ",\"tid\":");
    pos = put_int(buf, pos, cap, ev->tid);
    pos = puts0(buf, pos, cap, ",\"op\":\"");
    pos = puts0(buf, pos, cap, ng_op_name(ev->op));
    pos = puts0(buf, pos, cap, "\",\"verdict\":\"");
    pos = puts0(buf, pos, cap, ng_verdict_name(ev->verdict));
    pos = put(buf, pos, cap, "\"", 1);
    if (ev->op == NG_OP_INIT) {
        pos = puts0(buf, pos, cap, ",\"error\":");
        pos = put_str(buf, pos, cap, ev->host, hn);
    }
    else {
        pos = puts0(buf, pos, cap, ",\"family\":");
        pos = put_int(buf, pos, cap, ev->family);
        pos = puts0(buf, pos, cap, ",\"host\":");
        pos = put_str(buf, pos, cap, ev->host, hn);
        pos = puts0(buf, pos, cap, ",\"port\":");
        pos = ev->port >= 0 ? put_int(buf, pos, cap, ev->port) : puts0(buf, pos, cap, "null");
        /* the destination as every netguard message shows it (errors.format_destination) */
        pos = puts0(buf, pos, cap, ",\"dest\":\"");
        /* IPv6 in brackets; so is an address given to a reverse lookup with a port */
        bool bracket = ev->family == AF_INET6 ||
                       (ev->family == 0 && ev->port >= 0 && memchr(ev->host, ':', hn) != NULL);
        if (ev->family == AF_UNIX) {
            pos = puts0(buf, pos, cap, "unix:");
        }
        else if (ev->family == 0) {
            pos = puts0(buf, pos, cap, "dns:");
        }
        if (bracket) {
            pos = put(buf, pos, cap, "[", 1);
        }
        pos = ng_json_escape(buf, pos, cap, ev->host, hn);
        if (bracket) {
            pos = put(buf, pos, cap, "]", 1);
        }
        if (ev->port >= 0 && ev->family != AF_UNIX) {
            pos = put(buf, pos, cap, ":", 1);
            pos = put_int(buf, pos, cap, ev->port);
        }
        pos = put(buf, pos, cap, "\"", 1);
    }
    pos = put(buf, pos, cap, "}\n", 2);
    return pos > cap ? 0 : pos;
}

/* ------------------------------------------------------------------------------------ */
/* Sinks.                                                                                */

/* One line, one write(): O_APPEND makes the offset and the write one step, so the lines
   of concurrent processes do not interleave. The file is opened for each event (events
   are rare: only denials, unless allowed calls are recorded too), so a process holds no
   descriptor of ours that it could close, reuse or find in its fd table. */
static void
sink_write_file(const char *path, const char *line, size_t n)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        return;
    }
    ssize_t w;
    do {
        w = write(fd, line, n);
    } while (w < 0 && errno == EINTR);
    close(fd);
}

void
ng_sink_emit(const ng_sink *sink, const ng_event *ev)
{
    if (sink == NULL) {
        return;
    }
    int saved = errno;
    if (sink->ring != NULL) {
        ng_ring_push(sink->ring, ev);
    }
    if (sink->path != NULL) {
        char line[8192];
        size_t n = ng_event_format(ev, sink->labels, line, sizeof(line));
        if (n == 0) {
            /* labels too long for one line: the event without them is still worth it */
            n = ng_event_format(ev, "\"truncated\":true", line, sizeof(line));
        }
        if (n != 0) {
            sink_write_file(sink->path, line, n);
        }
    }
    errno = saved;
}

void
ng_judge_record(const ng_judge *j, ng_event *ev)
{
    if (j->sink == NULL) {
        return;
    }
    int saved = errno;
    ev->tag = j->tag;
    ev->pid = (int32_t)getpid();
    ev->tid = (int32_t)syscall(SYS_gettid);
    ng_sink_emit(j->sink, ev);
    errno = saved;
}

/* ------------------------------------------------------------------------------------ */
/* Learned addresses: an append-only table. A writer claims an index, fills the entry    */
/* and publishes it with `ready`; readers scan the published entries. Repeated lookups   */
/* find their entry and add nothing.                                                     */

static void
learned_key(const ng_addr *a, uint64_t *hi, uint64_t *lo)
{
    unsigned char b[16];
    if (a->family == AF_INET) {
        memcpy(b, ng_v4mapped_prefix, 12);
        memcpy(b + 12, a->bytes, 4);
    }
    else {
        memcpy(b, a->bytes, 16);
    }
    u128 k = u128_from_bytes(b);
    *hi = k.hi;
    *lo = k.lo;
}

static bool
learned_has(const ng_learned *t, uint64_t hi, uint64_t lo, uint32_t ports)
{
    uint32_t n = atomic_load_explicit(&t->claimed, memory_order_acquire);
    n = n < NG_LEARNED_MAX ? n : NG_LEARNED_MAX;
    for (uint32_t i = 0; i < n; i++) {
        const ng_learned_entry *e = &t->entries[i];
        if (atomic_load_explicit(&e->ready, memory_order_acquire) && e->hi == hi &&
            e->lo == lo && e->ports == ports) {
            return true;
        }
    }
    return false;
}

static void
learn_one(ng_learned *t, const ng_addr *a, uint32_t ports)
{
    uint64_t hi, lo;
    learned_key(a, &hi, &lo);
    if (learned_has(t, hi, lo, ports)) {
        return;
    }
    if (atomic_load_explicit(&t->claimed, memory_order_relaxed) >= NG_LEARNED_MAX) {
        atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
        return;
    }
    uint32_t i = atomic_fetch_add_explicit(&t->claimed, 1, memory_order_relaxed);
    if (i >= NG_LEARNED_MAX) {
        atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
        return;
    }
    ng_learned_entry *e = &t->entries[i];
    e->hi = hi;
    e->lo = lo;
    e->ports = ports;
    atomic_store_explicit(&e->ready, 1, memory_order_release);
}

static bool
learned_allows(const ng_judge *j, const ng_addr *a, uint32_t port)
{
    const ng_learned *t = j->learned;
    if (t == NULL) {
        return false;
    }
    uint32_t n = atomic_load_explicit(&t->claimed, memory_order_acquire);
    if (n == 0) {
        return false;
    }
    n = n < NG_LEARNED_MAX ? n : NG_LEARNED_MAX;
    uint64_t hi, lo;
    learned_key(a, &hi, &lo);
    for (uint32_t i = 0; i < n; i++) {
        const ng_learned_entry *e = &t->entries[i];
        if (atomic_load_explicit(&e->ready, memory_order_acquire) && e->hi == hi &&
            e->lo == lo && ports_contains(j->view->words, e->ports, port)) {
            return true;
        }
    }
    return false;
}

/* Learn `a` with the port set of every host rule that matches name. */
static void
learn_addr(const ng_judge *j, const char *name, size_t n, const ng_addr *a)
{
    const ng_view *v = j->view;
    for (uint32_t i = 0; i < v->h->n_hosts; i++) {
        const ng_host_ref *r = &v->host_refs[i];
        if (ng_host_pattern_matches(v->strings + r->offset, r->length, name, n)) {
            learn_one(j->learned, a, r->ports);
        }
    }
}

void
ng_learn_addrinfo(const ng_judge *j, const char *name, size_t n, const struct addrinfo *res)
{
    if (j->learned == NULL || j->view == NULL) {
        return;
    }
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        ng_addr a;
        if (ai->ai_addr == NULL) {
            continue;
        }
        if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(struct sockaddr_in)) {
            struct sockaddr_in sin;
            memcpy(&sin, ai->ai_addr, sizeof(sin));
            a.family = AF_INET;
            memcpy(a.bytes, &sin.sin_addr, 4);
        }
        else if (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof(struct sockaddr_in6)) {
            struct sockaddr_in6 sin6;
            memcpy(&sin6, ai->ai_addr, sizeof(sin6));
            a.family = AF_INET6;
            memcpy(a.bytes, &sin6.sin6_addr, 16);
        }
        else {
            continue;
        }
        learn_addr(j, name, n, &a);
    }
}

void
ng_learn_hostent(const ng_judge *j, const char *name, size_t n, const struct hostent *h)
{
    if (j->learned == NULL || j->view == NULL || h == NULL || h->h_addr_list == NULL) {
        return;
    }
    int family = h->h_addrtype;
    size_t len = family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
    if (len == 0 || h->h_length != (int)len) {
        return;
    }
    for (char **p = h->h_addr_list; *p != NULL; p++) {
        ng_addr a;
        a.family = family;
        memcpy(a.bytes, *p, len);
        learn_addr(j, name, n, &a);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Destinations.                                                                         */

typedef struct {
    int family; /* AF_INET / AF_INET6 (addr, port) or AF_UNIX (path) */
    ng_addr addr;
    uint32_t port;
    size_t path_len;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 2]; /* "@name" or a path */
} ng_dest;

/* Read a sockaddr as the kernel would. false: not judged (a family never judged, or a
   length the kernel rejects before sending anything). */
static bool
dest_parse(const struct sockaddr *sa, socklen_t len, int sock_family, ng_dest *d)
{
    sa_family_t family;
    if (sa == NULL || len < (socklen_t)sizeof(family)) {
        return false;
    }
    memcpy(&family, sa, sizeof(family));
    if (family == AF_UNSPEC && sock_family == AF_INET) {
        /* IPv4 datagram and raw sockets send to an AF_UNSPEC address's sin_addr */
        family = AF_INET;
    }
    switch (family) {
    case AF_INET: {
        struct sockaddr_in sin;
        if (len < (socklen_t)sizeof(sin)) {
            return false;
        }
        memcpy(&sin, sa, sizeof(sin));
        d->family = AF_INET;
        d->addr.family = AF_INET;
        memcpy(d->addr.bytes, &sin.sin_addr, 4);
        d->port = ntohs(sin.sin_port);
        return true;
    }
    case AF_INET6: {
        /* the kernel takes the RFC 2133 size (no scope id); the scope id is not judged */
        struct sockaddr_in6 sin6;
        const socklen_t rfc2133 = (socklen_t)offsetof(struct sockaddr_in6, sin6_scope_id);
        if (len < rfc2133) {
            return false;
        }
        memset(&sin6, 0, sizeof(sin6));
        memcpy(&sin6, sa, rfc2133);
        d->family = AF_INET6;
        d->addr.family = AF_INET6;
        memcpy(d->addr.bytes, &sin6.sin6_addr, 16);
        d->port = ntohs(sin6.sin6_port);
        return true;
    }
    case AF_UNIX: {
        const size_t off = offsetof(struct sockaddr_un, sun_path);
        const char *p = (const char *)sa + off;
        if ((size_t)len <= off || (size_t)len > sizeof(struct sockaddr_un)) {
            return false; /* unnamed or too long: EINVAL from the kernel */
        }
        size_t n = (size_t)len - off;
        d->family = AF_UNIX;
        if (p[0] == '\0') {
            /* abstract: the whole name, NULs included, shown as @name */
            d->path[0] = '@';
            memcpy(d->path + 1, p + 1, n - 1);
            d->path_len = n;
        }
        else {
            const char *nul = memchr(p, '\0', n);
            n = nul != NULL ? (size_t)(nul - p) : n;
            memcpy(d->path, p, n);
            d->path_len = n;
        }
        d->path[d->path_len] = '\0';
        return true;
    }
    default:
        return false; /* AF_NETLINK, AF_PACKET, ...: not network destinations we judge */
    }
}

static bool
dest_allowed(const ng_judge *j, const ng_dest *d)
{
    const ng_view *v = j->view;
    if (v == NULL) {
        return false;
    }
    if (v->h->flags & NG_ALLOW_ALL) {
        return true;
    }
    if (d->family == AF_UNIX) {
#ifdef NG_HAVE_UNIX
        return ng_view_allows_unix(v, d->path, d->path_len);
#else
        return false;
#endif
    }
    uint32_t w = iv_lookup_addr(v, &d->addr);
    if (w != NG_NO_PORTS && ports_contains(v->words, w, d->port)) {
        return true;
    }
    return learned_allows(j, &d->addr, d->port);
}

static void
event_text(ng_event *ev, const char *s, size_t n)
{
    n = n < NG_EVENT_HOST_MAX ? n : NG_EVENT_HOST_MAX;
    memcpy(ev->host, s, n);
    ev->host_len = (uint32_t)n;
}

static void
event_addr(ng_event *ev, const ng_addr *a)
{
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(a->family, a->bytes, text, sizeof(text)) == NULL) {
        strcpy(text, "?");
    }
    event_text(ev, text, strlen(text));
}

static void
dest_event(const ng_dest *d, int op, ng_event *ev)
{
    ev->op = (uint16_t)op;
    ev->family = d->family;
    if (d->family == AF_UNIX) {
        ev->port = -1;
        event_text(ev, d->path, d->path_len);
    }
    else {
        ev->port = (int32_t)d->port;
        event_addr(ev, &d->addr);
    }
}

int
ng_judge_sockaddr(const ng_judge *j, const struct sockaddr *sa, socklen_t len, int sock_family,
                  ng_event *ev)
{
    ng_dest d;
    if (!dest_parse(sa, len, sock_family, &d)) {
        return -1;
    }
    if (ev != NULL) {
        dest_event(&d, NG_OP_CONNECT, ev);
    }
    return dest_allowed(j, &d) ? 1 : 0;
}

/* ------------------------------------------------------------------------------------ */
/* Names.                                                                                */

int
ng_judge_lookup(const ng_judge *j, const char *node, long port, ng_event *ev, bool *learn,
                char name[256], size_t *name_len)
{
    ng_addr a;
    *learn = false;
    *name_len = 0;
    if (node == NULL || node[0] == '\0') {
        return -1; /* no name, no lookup */
    }
    size_t n = strlen(node);
    if (ng_parse_numeric(node, n, AF_UNSPEC, &a)) {
        return -1; /* a numeric host is not a lookup */
    }
    ptrdiff_t nn = ng_normalize_name(node, n, name);
    ev->family = 0;
    ev->port = (int32_t)port;
    if (nn < 0) {
        /* too long to be a name any rule covers: denied, shown cut */
        memcpy(name, node, 255);
        name[255] = '\0';
        event_text(ev, name, 255);
        return 0;
    }
    *name_len = (size_t)nn;
    event_text(ev, name, (size_t)nn);
    if (j->view == NULL) {
        return 0;
    }
    bool by_rule, port_ok;
    if (!ng_view_allows_name(j->view, name, (size_t)nn, port, &by_rule, &port_ok)) {
        return 0;
    }
    *learn = by_rule;
    return 1;
}

/* A numeric service, as the Python hook reads one: 1 to 5 digits, at most 65535. */
static long
service_port(const char *service)
{
    long v = 0;
    size_t n = service != NULL ? strlen(service) : 0;
    if (n == 0 || n > 5) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (service[i] < '0' || service[i] > '9') {
            return -1;
        }
        v = v * 10 + (service[i] - '0');
    }
    return v <= 65535 ? v : -1;
}

/* ------------------------------------------------------------------------------------ */
/* The wrappers.                                                                         */

/* Record a judged call and say whether it proceeds. */
static bool
decide(const ng_judge *j, ng_event *ev, bool allowed)
{
    if (allowed) {
        if (j->record_allowed) {
            ev->verdict = NG_VERDICT_ALLOWED;
            ng_judge_record(j, ev);
        }
        return true;
    }
    /* without a policy, warn mode too fails closed: nothing says what to let through */
    bool proceed = j->warn && j->view != NULL;
    ev->verdict = proceed ? NG_VERDICT_WARNED : NG_VERDICT_DENIED;
    ng_judge_record(j, ev);
    return proceed;
}

/* Judge an address argument of op; false: the call must fail with EACCES. */
static bool
address_proceeds(const ng_judge *j, int op, int fd, const struct sockaddr *sa, socklen_t len)
{
    ng_dest d;
    int sock_family = 0;
    sa_family_t family = AF_UNSPEC + 1;
    if (sa != NULL && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        memcpy(&family, sa, sizeof(family));
    }
    if (family == AF_UNSPEC && op != NG_OP_CONNECT) {
        /* rare: ask the socket whether the kernel reads the address as IPv4 */
        socklen_t sl = sizeof(sock_family);
        int saved = errno;
        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &sock_family, &sl) != 0) {
            sock_family = AF_INET; /* fail closed: judge it */
        }
        errno = saved;
    }
    if (!dest_parse(sa, len, sock_family, &d)) {
        return true;
    }
    bool allowed = dest_allowed(j, &d);
    if (allowed && !j->record_allowed) {
        return true;
    }
    ng_event ev;
    dest_event(&d, op, &ev);
    return decide(j, &ev, allowed);
}

int
ng_native_connect(const ng_judge *j, ng_connect_fn orig, int fd, const struct sockaddr *sa,
                  socklen_t len)
{
    if (!ng_quiet && !address_proceeds(j, NG_OP_CONNECT, fd, sa, len)) {
        errno = EACCES;
        return -1;
    }
    return orig(fd, sa, len);
}

ssize_t
ng_native_sendto(const ng_judge *j, ng_sendto_fn orig, int fd, const void *buf, size_t n,
                 int flags, const struct sockaddr *sa, socklen_t len)
{
    if (!ng_quiet && sa != NULL && !address_proceeds(j, NG_OP_SENDTO, fd, sa, len)) {
        errno = EACCES;
        return -1;
    }
    return orig(fd, buf, n, flags, sa, len);
}

ssize_t
ng_native_sendmsg(const ng_judge *j, ng_sendmsg_fn orig, int fd, const struct msghdr *msg,
                  int flags)
{
    if (!ng_quiet && msg != NULL && msg->msg_name != NULL && msg->msg_namelen > 0 &&
        !address_proceeds(j, NG_OP_SENDMSG, fd, msg->msg_name, msg->msg_namelen)) {
        errno = EACCES;
        return -1;
    }
    return orig(fd, msg, flags);
}

int
ng_native_sendmmsg(const ng_judge *j, ng_sendmmsg_fn orig, int fd, struct mmsghdr *vec,
                   unsigned int vlen, int flags)
{
    if (!ng_quiet && vec != NULL) {
        for (unsigned int i = 0; i < vlen; i++) {
            const struct msghdr *m = &vec[i].msg_hdr;
            if (m->msg_name == NULL || m->msg_namelen == 0 ||
                address_proceeds(j, NG_OP_SENDMMSG, fd, m->msg_name, m->msg_namelen)) {
                continue;
            }
            /* strict: send what came before the denied message, as a partial batch */
            if (i == 0) {
                errno = EACCES;
                return -1;
            }
            vlen = i;
            break;
        }
    }
    return orig(fd, vec, vlen, flags);
}

/* Judge a forward lookup of name: true when it proceeds. */
static bool
lookup_proceeds(const ng_judge *j, int op, const char *node, long port, bool *learn,
                char name[256], size_t *nn)
{
    ng_event ev;
    ev.op = (uint16_t)op;
    int v = ng_judge_lookup(j, node, port, &ev, learn, name, nn);
    if (v < 0) {
        return true;
    }
    return decide(j, &ev, v == 1);
}

int
ng_native_getaddrinfo(const ng_judge *j, ng_getaddrinfo_fn orig, const char *node,
                      const char *service, const struct addrinfo *hints,
                      struct addrinfo **res)
{
    char name[256];
    size_t nn = 0;
    bool learn = false;
    if (ng_quiet || (hints != NULL && (hints->ai_flags & AI_NUMERICHOST))) {
        return orig(node, service, hints, res); /* AI_NUMERICHOST: no lookup */
    }
    if (!lookup_proceeds(j, NG_OP_GETADDRINFO, node, service_port(service), &learn, name,
                         &nn)) {
        if (res != NULL) {
            *res = NULL;
        }
        errno = EACCES;
        return EAI_SYSTEM;
    }
    ng_quiet++;
    int rc = orig(node, service, hints, res);
    int saved = errno;
    ng_quiet--;
    if (rc == 0 && learn && res != NULL) {
        ng_learn_addrinfo(j, name, nn, *res);
    }
    errno = saved;
    return rc;
}

static void
deny_hostent(void)
{
    h_errno = NO_RECOVERY;
    errno = EACCES;
}

struct hostent *
ng_native_gethostbyname(const ng_judge *j, ng_gethostbyname_fn orig, const char *name)
{
    char norm[256];
    size_t nn = 0;
    bool learn = false;
    if (ng_quiet) {
        return orig(name);
    }
    if (!lookup_proceeds(j, NG_OP_GETHOSTBYNAME, name, -1, &learn, norm, &nn)) {
        deny_hostent();
        return NULL;
    }
    ng_quiet++;
    struct hostent *h = orig(name);
    int saved = errno;
    ng_quiet--;
    if (h != NULL && learn) {
        ng_learn_hostent(j, norm, nn, h);
    }
    errno = saved;
    return h;
}

struct hostent *
ng_native_gethostbyname2(const ng_judge *j, ng_gethostbyname2_fn orig, const char *name,
                         int af)
{
    char norm[256];
    size_t nn = 0;
    bool learn = false;
    if (ng_quiet) {
        return orig(name, af);
    }
    if (!lookup_proceeds(j, NG_OP_GETHOSTBYNAME2, name, -1, &learn, norm, &nn)) {
        deny_hostent();
        return NULL;
    }
    ng_quiet++;
    struct hostent *h = orig(name, af);
    int saved = errno;
    ng_quiet--;
    if (h != NULL && learn) {
        ng_learn_hostent(j, norm, nn, h);
    }
    errno = saved;
    return h;
}

static int
deny_hostent_r(struct hostent **result, int *h_errnop)
{
    if (result != NULL) {
        *result = NULL;
    }
    if (h_errnop != NULL) {
        *h_errnop = NO_RECOVERY;
    }
    errno = EACCES;
    return EACCES;
}

int
ng_native_gethostbyname_r(const ng_judge *j, ng_gethostbyname_r_fn orig, const char *name,
                          struct hostent *ret, char *buf, size_t buflen,
                          struct hostent **result, int *h_errnop)
{
    char norm[256];
    size_t nn = 0;
    bool learn = false;
    if (ng_quiet) {
        return orig(name, ret, buf, buflen, result, h_errnop);
    }
    if (!lookup_proceeds(j, NG_OP_GETHOSTBYNAME_R, name, -1, &learn, norm, &nn)) {
        return deny_hostent_r(result, h_errnop);
    }
    ng_quiet++;
    int rc = orig(name, ret, buf, buflen, result, h_errnop);
    int saved = errno;
    ng_quiet--;
    if (rc == 0 && learn && result != NULL) {
        ng_learn_hostent(j, norm, nn, *result);
    }
    errno = saved;
    return rc;
}

int
ng_native_gethostbyname2_r(const ng_judge *j, ng_gethostbyname2_r_fn orig, const char *name,
                           int af, struct hostent *ret, char *buf, size_t buflen,
                           struct hostent **result, int *h_errnop)
{
    char norm[256];
    size_t nn = 0;
    bool learn = false;
    if (ng_quiet) {
        return orig(name, af, ret, buf, buflen, result, h_errnop);
    }
    if (!lookup_proceeds(j, NG_OP_GETHOSTBYNAME2_R, name, -1, &learn, norm, &nn)) {
        return deny_hostent_r(result, h_errnop);
    }
    ng_quiet++;
    int rc = orig(name, af, ret, buf, buflen, result, h_errnop);
    int saved = errno;
    ng_quiet--;
    if (rc == 0 && learn && result != NULL) {
        ng_learn_hostent(j, norm, nn, *result);
    }
    errno = saved;
    return rc;
}

/* A reverse lookup of a: true when it proceeds (loopback, or everything allowed). */
static bool
reverse_proceeds(const ng_judge *j, int op, const ng_addr *a)
{
    ng_event ev;
    bool allowed = j->view != NULL &&
                   ((j->view->h->flags & NG_ALLOW_ALL) || ng_addr_is_loopback(a));
    if (allowed && !j->record_allowed) {
        return true;
    }
    ev.op = (uint16_t)op;
    ev.family = 0;
    ev.port = -1;
    event_addr(&ev, a);
    return decide(j, &ev, allowed);
}

struct hostent *
ng_native_gethostbyaddr(const ng_judge *j, ng_gethostbyaddr_fn orig, const void *addr,
                        socklen_t len, int type)
{
    ng_addr a;
    if (!ng_quiet && addr != NULL &&
        ((type == AF_INET && len >= 4) || (type == AF_INET6 && len >= 16))) {
        a.family = type;
        memcpy(a.bytes, addr, type == AF_INET ? 4 : 16);
        if (!reverse_proceeds(j, NG_OP_GETHOSTBYADDR, &a)) {
            deny_hostent();
            return NULL;
        }
    }
    ng_quiet++;
    struct hostent *h = orig(addr, len, type);
    int saved = errno;
    ng_quiet--;
    errno = saved;
    return h;
}

int
ng_native_getnameinfo(const ng_judge *j, ng_getnameinfo_fn orig, const struct sockaddr *sa,
                      socklen_t salen, char *host, socklen_t hostlen, char *serv,
                      socklen_t servlen, int flags)
{
    ng_dest d;
    /* only a host name asked for without NI_NUMERICHOST is a reverse lookup */
    if (!ng_quiet && host != NULL && hostlen > 0 && !(flags & NI_NUMERICHOST) &&
        dest_parse(sa, salen, 0, &d) && d.family != AF_UNIX &&
        !reverse_proceeds(j, NG_OP_GETNAMEINFO, &d.addr)) {
        errno = EACCES;
        return EAI_SYSTEM;
    }
    ng_quiet++;
    int rc = orig(sa, salen, host, hostlen, serv, servlen, flags);
    int saved = errno;
    ng_quiet--;
    errno = saved;
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* A child's environment.                                                                */

#define NG_ENV_MAX_VARS 16
static const char ld_preload[] = "LD_PRELOAD=";
#define LD_PRELOAD_LEN (sizeof(ld_preload) - 1)

/* entry is "NAME=..." for the NAME of var ("NAME=value") */
static bool
same_name(const char *entry, const char *var)
{
    const char *eq = strchr(var, '=');
    size_t n = eq != NULL ? (size_t)(eq - var) + 1 : strlen(var);
    return strncmp(entry, var, n) == 0;
}

/* Whether the colon- or space-separated list holds item exactly. */
static bool
list_has(const char *list, const char *item)
{
    size_t n = strlen(item);
    const char *p = list;
    while (*p != '\0') {
        size_t len = strcspn(p, ": ");
        if (len == n && memcmp(p, item, n) == 0) {
            return true;
        }
        p += len;
        if (*p != '\0') {
            p++;
        }
    }
    return false;
}

/* A sanitizer runtime must stay the first preloaded object: its length in list, or 0. */
static size_t
leading_runtime(const char *list)
{
    static const char *const runtimes[] = {"libasan", "libclang_rt.asan", "libtsan",
                                           "libclang_rt.tsan", "libhwasan"};
    size_t len = strcspn(list, ": ");
    const char *base = list;
    for (size_t i = 0; i < len; i++) {
        if (list[i] == '/') {
            base = list + i + 1;
        }
    }
    for (size_t i = 0; i < sizeof(runtimes) / sizeof(runtimes[0]); i++) {
        size_t rn = strlen(runtimes[i]);
        if ((size_t)(list + len - base) >= rn && memcmp(base, runtimes[i], rn) == 0) {
            return len;
        }
    }
    return 0;
}

static size_t
count_vars(const ng_env_adds *adds)
{
    size_t k = 0;
    while (adds->vars != NULL && adds->vars[k] != NULL && k < NG_ENV_MAX_VARS) {
        k++;
    }
    return k;
}

void
ng_env_sizes(char *const *envp, const ng_env_adds *adds, size_t *slots, size_t *bytes)
{
    size_t n = 0;
    const char *old = NULL;
    for (; envp != NULL && envp[n] != NULL; n++) {
        if (old == NULL && strncmp(envp[n], ld_preload, LD_PRELOAD_LEN) == 0) {
            old = envp[n] + LD_PRELOAD_LEN;
        }
    }
    *slots = n + count_vars(adds) + 2;
    *bytes = LD_PRELOAD_LEN + (adds->preload ? strlen(adds->preload) : 0) + 2 +
             (old ? strlen(old) : 0);
}

/* "LD_PRELOAD=" with preload added to old (NULL: none) into buf. */
static bool
compose_preload(const char *preload, const char *old, char *buf, size_t bytes)
{
    size_t pn = strlen(preload), on = old ? strlen(old) : 0;
    size_t keep = old ? leading_runtime(old) : 0;
    if (LD_PRELOAD_LEN + pn + on + 2 > bytes) {
        return false;
    }
    char *p = buf;
    memcpy(p, ld_preload, LD_PRELOAD_LEN);
    p += LD_PRELOAD_LEN;
    if (keep > 0) {
        memcpy(p, old, keep);
        p += keep;
        *p++ = ':';
        old += keep;
        on -= keep;
        while (on > 0 && (*old == ':' || *old == ' ')) {
            old++;
            on--;
        }
    }
    memcpy(p, preload, pn);
    p += pn;
    if (on > 0) {
        *p++ = ':';
        memcpy(p, old, on);
        p += on;
    }
    *p = '\0';
    return true;
}

char *const *
ng_env_compose(char *const *envp, const ng_env_adds *adds, char **out, size_t slots,
               char *buf, size_t bytes)
{
    bool seen[NG_ENV_MAX_VARS] = {false};
    bool seen_preload = false, changed = false;
    size_t k = count_vars(adds), m = 0, need, need_bytes;
    ng_env_sizes(envp, adds, &need, &need_bytes);
    if (slots < need || bytes < need_bytes) {
        return NULL;
    }
    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++) {
        char *e = envp[i];
        if (!seen_preload && strncmp(e, ld_preload, LD_PRELOAD_LEN) == 0) {
            seen_preload = true;
            if (adds->preload != NULL && !list_has(e + LD_PRELOAD_LEN, adds->preload)) {
                if (!compose_preload(adds->preload, e + LD_PRELOAD_LEN, buf, bytes)) {
                    return NULL;
                }
                out[m++] = buf;
                changed = true;
                continue;
            }
        }
        else {
            size_t v = 0;
            for (; v < k; v++) {
                if (!seen[v] && same_name(e, adds->vars[v])) {
                    break;
                }
            }
            if (v < k) {
                seen[v] = true;
                if (adds->override && strcmp(e, adds->vars[v]) != 0) {
                    out[m++] = (char *)adds->vars[v];
                    changed = true;
                    continue;
                }
            }
        }
        out[m++] = e;
    }
    for (size_t v = 0; v < k; v++) {
        if (!seen[v]) {
            out[m++] = (char *)adds->vars[v];
            changed = true;
        }
    }
    if (!seen_preload && adds->preload != NULL) {
        if (!compose_preload(adds->preload, NULL, buf, bytes)) {
            return NULL;
        }
        out[m++] = buf;
        changed = true;
    }
    out[m] = NULL;
    return changed ? out : envp;
}
