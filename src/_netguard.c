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
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <fnmatch.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

#ifdef NG_DEBUG
#define NG_ASSERT(cond) assert(cond)
#else
#define NG_ASSERT(cond) ((void)0)
#endif

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

typedef struct {
    uint64_t hi;
    uint64_t lo;
} u128;

static inline int
u128_cmp(u128 a, u128 b)
{
    if (a.hi != b.hi) {
        return a.hi < b.hi ? -1 : 1;
    }
    if (a.lo != b.lo) {
        return a.lo < b.lo ? -1 : 1;
    }
    return 0;
}

static inline u128
u128_inc(u128 a, bool *overflow)
{
    u128 r = a;
    r.lo++;
    if (r.lo == 0) {
        r.hi++;
        if (r.hi == 0) {
            *overflow = true;
        }
    }
    return r;
}

static inline u128
u128_dec(u128 a)
{
    u128 r = a;
    if (r.lo == 0) {
        r.hi--;
    }
    r.lo--;
    return r;
}

static inline u128
u128_from_bytes(const unsigned char b[16])
{
    u128 r = {0, 0};
    for (int i = 0; i < 8; i++) {
        r.hi = (r.hi << 8) | b[i];
        r.lo = (r.lo << 8) | b[8 + i];
    }
    return r;
}

/* ------------------------------------------------------------------------------------ */
/* The blob.                                                                             */

#define NG_MAGIC "NGPOLICY"
#define NG_BLOB_VERSION 1u
#define NG_BYTE_ORDER 0x01020304u
#define NG_NO_PORTS UINT32_MAX
#define NG_PORTS_ANY 0x80000000u

#define NG_ALLOW_ALL 1u
#define NG_DNS_LOCALHOST 2u
#define NG_KNOWN_FLAGS (NG_ALLOW_ALL | NG_DNS_LOCALHOST)

/*
 * Layout, every section 8-byte aligned, all offsets from the start of the blob:
 *
 *   header
 *   v4:    uint32 start[n_v4], uint32 end[n_v4], uint32 ports[n_v4]      (inclusive ends)
 *   v6:    uint64 start[2*n_v6] (hi, lo), uint64 end[2*n_v6], uint32 ports[n_v6]
 *   ports: uint32 words; a port set at word p is words[p] = count | NG_PORTS_ANY?,
 *          followed by count words (lo << 16 | hi), sorted and disjoint
 *   unix:  n_unix x {uint32 offset, uint32 length} into strings (globs, fs-encoded)
 *   hosts: n_hosts x {uint32 offset, uint32 length, uint32 ports, uint32 reserved}
 *   strings
 *
 * Intervals are sorted and disjoint, so a lookup is one binary search for the last
 * start <= address, then one comparison with its end.
 */
typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t byte_order;
    uint32_t flags;
    uint32_t size;
    uint32_t n_v4, off_v4;
    uint32_t n_v6, off_v6;
    uint32_t n_words, off_words;
    uint32_t n_unix, off_unix;
    uint32_t n_hosts, off_hosts;
    uint32_t n_strings, off_strings;
} ng_header;

typedef struct {
    uint32_t offset;
    uint32_t length;
} ng_string_ref;

typedef struct {
    uint32_t offset;
    uint32_t length;
    uint32_t ports;
    uint32_t reserved;
} ng_host_ref;

/* Read-only view of a validated blob. */
typedef struct {
    const ng_header *h;
    const uint32_t *v4_start, *v4_end, *v4_ports;
    const uint64_t *v6_start, *v6_end;
    const uint32_t *v6_ports;
    const uint32_t *words;
    const ng_string_ref *unix_refs;
    const ng_host_ref *host_refs;
    const char *strings;
} ng_view;

static inline size_t
align8(size_t n)
{
    return (n + 7u) & ~(size_t)7u;
}

/* ------------------------------------------------------------------------------------ */
/* Port sets.                                                                            */

static inline bool
ports_contains(const uint32_t *words, uint32_t p, uint32_t port)
{
    uint32_t head = words[p];
    if (head & NG_PORTS_ANY) {
        return true;
    }
    uint32_t lo = 0, hi = head;
    const uint32_t *r = words + p + 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint32_t rlo = r[mid] >> 16, rhi = r[mid] & 0xffffu;
        if (port < rlo) {
            hi = mid;
        }
        else if (port > rhi) {
            lo = mid + 1;
        }
        else {
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------------------------ */
/* Lookups on a view.                                                                    */

static inline uint32_t
view_lookup_v4(const ng_view *v, uint32_t addr)
{
    uint32_t n = v->h->n_v4;
    uint32_t lo = 0, hi = n;
    /* find the first start > addr; the candidate is the one before it */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v->v4_start[mid] <= addr) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    if (lo == 0 || v->v4_end[lo - 1] < addr) {
        return NG_NO_PORTS;
    }
    return v->v4_ports[lo - 1];
}

static inline uint32_t
view_lookup_v6(const ng_view *v, u128 addr)
{
    uint32_t n = v->h->n_v6;
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        u128 s = {v->v6_start[2 * mid], v->v6_start[2 * mid + 1]};
        if (u128_cmp(s, addr) <= 0) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    if (lo == 0) {
        return NG_NO_PORTS;
    }
    u128 e = {v->v6_end[2 * (lo - 1)], v->v6_end[2 * (lo - 1) + 1]};
    if (u128_cmp(e, addr) < 0) {
        return NG_NO_PORTS;
    }
    return v->v6_ports[lo - 1];
}

/* ------------------------------------------------------------------------------------ */
/* Blob validation: everything from_bytes() accepts is safe to read.                     */

static int
blob_section(const ng_header *h, uint32_t off, size_t bytes, const char *what)
{
    if (off % 8 != 0 || off < sizeof(ng_header) || off > h->size ||
        bytes > (size_t)h->size - off) {
        PyErr_Format(PyExc_ValueError, "malformed policy blob: %s section out of bounds",
                     what);
        return -1;
    }
    return 0;
}

static int
blob_check_ports(const ng_header *h, const uint32_t *words, uint32_t p)
{
    if (p >= h->n_words) {
        goto bad;
    }
    uint32_t count = words[p] & ~NG_PORTS_ANY;
    if (count > h->n_words - p - 1) {
        goto bad;
    }
    if ((words[p] & NG_PORTS_ANY) && count != 0) {
        goto bad;
    }
    for (uint32_t i = 0; i < count; i++) {
        uint32_t w = words[p + 1 + i];
        if ((w >> 16) > (w & 0xffffu)) {
            goto bad;
        }
        if (i > 0 && (words[p + i] & 0xffffu) >= (w >> 16)) {
            goto bad;
        }
    }
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "malformed policy blob: bad port set");
    return -1;
}

static int
blob_view(const char *blob, size_t size, ng_view *v)
{
    const ng_header *h = (const ng_header *)blob;
    if (size < sizeof(ng_header) || memcmp(h->magic, NG_MAGIC, 8) != 0) {
        PyErr_SetString(PyExc_ValueError, "not a netguard policy blob (bad magic)");
        return -1;
    }
    if (h->byte_order != NG_BYTE_ORDER) {
        PyErr_SetString(PyExc_ValueError,
                        "policy blob was written on a machine of another byte order");
        return -1;
    }
    if (h->version != NG_BLOB_VERSION) {
        PyErr_Format(PyExc_ValueError, "policy blob version %u is not supported (expected %u)",
                     (unsigned)h->version, (unsigned)NG_BLOB_VERSION);
        return -1;
    }
    if (h->size != size) {
        PyErr_SetString(PyExc_ValueError, "malformed policy blob: size mismatch");
        return -1;
    }
    if (h->flags & ~NG_KNOWN_FLAGS) {
        PyErr_SetString(PyExc_ValueError, "malformed policy blob: unknown flags");
        return -1;
    }
    if (blob_section(h, h->off_v4, (size_t)h->n_v4 * 12, "IPv4") < 0 ||
        blob_section(h, h->off_v6, (size_t)h->n_v6 * 36, "IPv6") < 0 ||
        blob_section(h, h->off_words, (size_t)h->n_words * 4, "ports") < 0 ||
        blob_section(h, h->off_unix, (size_t)h->n_unix * sizeof(ng_string_ref), "unix") < 0 ||
        blob_section(h, h->off_hosts, (size_t)h->n_hosts * sizeof(ng_host_ref), "hosts") < 0 ||
        blob_section(h, h->off_strings, h->n_strings, "strings") < 0) {
        return -1;
    }
    v->h = h;
    v->v4_start = (const uint32_t *)(blob + h->off_v4);
    v->v4_end = v->v4_start + h->n_v4;
    v->v4_ports = v->v4_end + h->n_v4;
    v->v6_start = (const uint64_t *)(blob + h->off_v6);
    v->v6_end = v->v6_start + 2 * (size_t)h->n_v6;
    v->v6_ports = (const uint32_t *)(v->v6_end + 2 * (size_t)h->n_v6);
    v->words = (const uint32_t *)(blob + h->off_words);
    v->unix_refs = (const ng_string_ref *)(blob + h->off_unix);
    v->host_refs = (const ng_host_ref *)(blob + h->off_hosts);
    v->strings = blob + h->off_strings;

    for (uint32_t i = 0; i < h->n_v4; i++) {
        if (v->v4_start[i] > v->v4_end[i] ||
            (i > 0 && v->v4_end[i - 1] >= v->v4_start[i])) {
            PyErr_SetString(PyExc_ValueError,
                            "malformed policy blob: IPv4 intervals not sorted and disjoint");
            return -1;
        }
        if (blob_check_ports(h, v->words, v->v4_ports[i]) < 0) {
            return -1;
        }
    }
    for (uint32_t i = 0; i < h->n_v6; i++) {
        u128 s = {v->v6_start[2 * i], v->v6_start[2 * i + 1]};
        u128 e = {v->v6_end[2 * i], v->v6_end[2 * i + 1]};
        if (u128_cmp(s, e) > 0) {
            goto v6_bad;
        }
        if (i > 0) {
            u128 pe = {v->v6_end[2 * i - 2], v->v6_end[2 * i - 1]};
            if (u128_cmp(pe, s) >= 0) {
                goto v6_bad;
            }
        }
        if (blob_check_ports(h, v->words, v->v6_ports[i]) < 0) {
            return -1;
        }
    }
    for (uint32_t i = 0; i < h->n_unix; i++) {
        const ng_string_ref *r = &v->unix_refs[i];
        /* each string is NUL-terminated inside the strings section */
        if (r->offset > h->n_strings || r->length >= h->n_strings - r->offset ||
            v->strings[r->offset + r->length] != '\0' ||
            memchr(v->strings + r->offset, '\0', r->length) != NULL) {
            goto strings_bad;
        }
    }
    for (uint32_t i = 0; i < h->n_hosts; i++) {
        const ng_host_ref *r = &v->host_refs[i];
        if (r->offset > h->n_strings || r->length >= h->n_strings - r->offset ||
            v->strings[r->offset + r->length] != '\0' ||
            memchr(v->strings + r->offset, '\0', r->length) != NULL) {
            goto strings_bad;
        }
        if (blob_check_ports(h, v->words, r->ports) < 0) {
            return -1;
        }
    }
    return 0;
v6_bad:
    PyErr_SetString(PyExc_ValueError,
                    "malformed policy blob: IPv6 intervals not sorted and disjoint");
    return -1;
strings_bad:
    PyErr_SetString(PyExc_ValueError, "malformed policy blob: bad string reference");
    return -1;
}

/* ------------------------------------------------------------------------------------ */
/* Builder: port-set interning and the sweep over rule endpoints.                        */

typedef struct {
    uint32_t *words;
    size_t n, cap;
    uint32_t *table; /* open addressing: word index + 1, 0 = empty */
    size_t table_cap, table_used;
} ports_pool;

static uint64_t
ports_hash(const uint32_t *w, uint32_t nwords)
{
    uint64_t h = 1469598103934665603ull;
    for (uint32_t i = 0; i < nwords; i++) {
        h ^= w[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int
ports_pool_grow_table(ports_pool *pool)
{
    size_t cap = pool->table_cap ? pool->table_cap * 2 : 64;
    uint32_t *t = PyMem_Calloc(cap, sizeof(uint32_t));
    if (t == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < pool->table_cap; i++) {
        uint32_t e = pool->table[i];
        if (e == 0) {
            continue;
        }
        uint32_t p = e - 1;
        uint32_t nw = (pool->words[p] & ~NG_PORTS_ANY) + 1;
        size_t j = (size_t)ports_hash(pool->words + p, nw) & (cap - 1);
        while (t[j] != 0) {
            j = (j + 1) & (cap - 1);
        }
        t[j] = e;
    }
    PyMem_Free(pool->table);
    pool->table = t;
    pool->table_cap = cap;
    return 0;
}

/* Intern the port set `w` (head word + ranges); returns its word index or -1. */
static int64_t
ports_intern(ports_pool *pool, const uint32_t *w)
{
    uint32_t nw = (w[0] & ~NG_PORTS_ANY) + 1;
    if ((pool->table_used + 1) * 2 > pool->table_cap && ports_pool_grow_table(pool) < 0) {
        return -1;
    }
    size_t j = (size_t)ports_hash(w, nw) & (pool->table_cap - 1);
    while (pool->table[j] != 0) {
        uint32_t p = pool->table[j] - 1;
        if (pool->words[p] == w[0] && memcmp(pool->words + p, w, nw * sizeof(uint32_t)) == 0) {
            return p;
        }
        j = (j + 1) & (pool->table_cap - 1);
    }
    if (pool->n + nw > pool->cap) {
        size_t cap = pool->cap ? pool->cap * 2 : 64;
        while (cap < pool->n + nw) {
            cap *= 2;
        }
        uint32_t *words = PyMem_Realloc(pool->words, cap * sizeof(uint32_t));
        if (words == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        pool->words = words;
        pool->cap = cap;
    }
    if (pool->n + nw > UINT32_MAX / 2) {
        PyErr_SetString(PyExc_OverflowError, "too many port sets");
        return -1;
    }
    uint32_t p = (uint32_t)pool->n;
    memcpy(pool->words + p, w, nw * sizeof(uint32_t));
    pool->n += nw;
    pool->table[j] = p + 1;
    pool->table_used++;
    return p;
}

static void
ports_pool_free(ports_pool *pool)
{
    PyMem_Free(pool->words);
    PyMem_Free(pool->table);
}

typedef struct {
    u128 pos;
    uint32_t ps; /* input port-set index */
    int32_t delta;
} sweep_event;

static int
event_cmp(const void *a, const void *b)
{
    return u128_cmp(((const sweep_event *)a)->pos, ((const sweep_event *)b)->pos);
}

typedef struct {
    u128 start, end;
    uint32_t ports;
} out_interval;

typedef struct {
    out_interval *items;
    size_t n, cap;
} interval_vec;

static int
interval_push(interval_vec *v, u128 start, u128 end, uint32_t ports)
{
    if (v->n > 0) {
        out_interval *last = &v->items[v->n - 1];
        bool ovf = false;
        u128 next = u128_inc(last->end, &ovf);
        if (!ovf && last->ports == ports && u128_cmp(next, start) == 0) {
            last->end = end;
            return 0;
        }
    }
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        out_interval *items = PyMem_Realloc(v->items, cap * sizeof(out_interval));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        v->items = items;
        v->cap = cap;
    }
    v->items[v->n++] = (out_interval){start, end, ports};
    return 0;
}

static int
range_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * The union of the active input port sets, interned. `in_ports[i]` is the word index of
 * input set i in the pool. Returns a word index, or -1 with an exception set.
 */
static int64_t
sweep_union(ports_pool *pool, const uint32_t *in_ports, const uint32_t *active,
            size_t n_active, size_t n_any, uint32_t **scratch, size_t *scratch_cap)
{
    if (n_any > 0) {
        uint32_t any = NG_PORTS_ANY;
        return ports_intern(pool, &any);
    }
    if (n_active == 1) {
        return in_ports[active[0]];
    }
    size_t total = 0;
    for (size_t i = 0; i < n_active; i++) {
        total += pool->words[in_ports[active[i]]] & ~NG_PORTS_ANY;
    }
    if (total + 1 > *scratch_cap) {
        size_t cap = (total + 1) * 2;
        uint32_t *s = PyMem_Realloc(*scratch, cap * sizeof(uint32_t));
        if (s == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        *scratch = s;
        *scratch_cap = cap;
    }
    uint32_t *r = *scratch + 1;
    size_t k = 0;
    for (size_t i = 0; i < n_active; i++) {
        uint32_t p = in_ports[active[i]];
        uint32_t c = pool->words[p] & ~NG_PORTS_ANY;
        memcpy(r + k, pool->words + p + 1, c * sizeof(uint32_t));
        k += c;
    }
    /* ranges are lo << 16 | hi: sorting the words sorts by lo, then hi */
    qsort(r, k, sizeof(uint32_t), range_cmp);
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        uint32_t lo = r[i] >> 16, hi = r[i] & 0xffffu;
        if (m > 0 && lo <= (r[m - 1] & 0xffffu) + 1u) {
            uint32_t plo = r[m - 1] >> 16, phi = r[m - 1] & 0xffffu;
            r[m - 1] = plo << 16 | (hi > phi ? hi : phi);
        }
        else {
            r[m++] = lo << 16 | hi;
        }
    }
    if (m == 1 && r[0] == 0xffffu) {
        uint32_t any = NG_PORTS_ANY;
        return ports_intern(pool, &any);
    }
    (*scratch)[0] = (uint32_t)m;
    return ports_intern(pool, *scratch);
}

/*
 * Sweep: rules (first, last, input port set) -> sorted disjoint intervals carrying the
 * union of the port sets of every rule covering them. `max` is the family's last address.
 */
static int
sweep_build(ports_pool *pool, const uint32_t *in_ports, size_t n_in_ports,
            sweep_event *ev, size_t n_ev, interval_vec *out)
{
    uint32_t *count = NULL, *active = NULL, *slot = NULL, *scratch = NULL;
    size_t n_active = 0, n_any = 0, scratch_cap = 0;
    int rc = -1;

    count = PyMem_Calloc(n_in_ports ? n_in_ports : 1, sizeof(uint32_t));
    active = PyMem_Calloc(n_in_ports ? n_in_ports : 1, sizeof(uint32_t));
    slot = PyMem_Calloc(n_in_ports ? n_in_ports : 1, sizeof(uint32_t));
    if (count == NULL || active == NULL || slot == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    qsort(ev, n_ev, sizeof(sweep_event), event_cmp);

    size_t i = 0;
    while (i < n_ev) {
        u128 pos = ev[i].pos;
        for (; i < n_ev && u128_cmp(ev[i].pos, pos) == 0; i++) {
            uint32_t ps = ev[i].ps;
            bool any = (pool->words[in_ports[ps]] & NG_PORTS_ANY) != 0;
            if (ev[i].delta > 0) {
                if (count[ps]++ == 0) {
                    slot[ps] = (uint32_t)n_active;
                    active[n_active++] = ps;
                    n_any += any;
                }
            }
            else {
                NG_ASSERT(count[ps] > 0);
                if (--count[ps] == 0) {
                    uint32_t s = slot[ps];
                    active[s] = active[--n_active];
                    slot[active[s]] = s;
                    n_any -= any;
                }
            }
        }
        if (n_active == 0) {
            continue;
        }
        /* the segment runs to the next event, or to the end of the address space:
           every interval is closed by an end event unless it reaches the last address,
           in which case its end event was never created (last + 1 overflows) */
        u128 end;
        if (i < n_ev) {
            end = u128_dec(ev[i].pos);
        }
        else {
            end = (u128){UINT64_MAX, UINT64_MAX};
        }
        int64_t p = sweep_union(pool, in_ports, active, n_active, n_any, &scratch,
                                &scratch_cap);
        if (p < 0 || interval_push(out, pos, end, (uint32_t)p) < 0) {
            goto done;
        }
    }
    rc = 0;
done:
    PyMem_Free(count);
    PyMem_Free(active);
    PyMem_Free(slot);
    PyMem_Free(scratch);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Module state.                                                                         */

typedef struct {
    PyObject *policy_type;    /* Policy heap type */
    PyObject *callback;       /* deny callback, NULL when not installed */
    PyObject *active;         /* active Policy, NULL = no checks */
    bool strict;              /* audit backstop judges while true */
    bool audit_added;         /* PySys_AddAuditHook done (it cannot be undone) */
    bool installed;
    PyThreadState *in_hook;   /* thread currently inside a hook's original call */

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
    if (blob_view(blob, size, &self->view) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Builder input: the packed rules from netguard._impl. */
typedef struct {
    Py_buffer v4, v6;
    PyObject *portsets, *unix, *hosts; /* borrowed */
    uint32_t flags;
} build_input;

static int
build_portsets(ports_pool *pool, PyObject *seq, uint32_t **in_ports_out, size_t *n_out)
{
    PyObject *fast = PySequence_Fast(seq, "portsets must be a sequence");
    uint32_t *in_ports = NULL, *tmp = NULL;
    int rc = -1;
    if (fast == NULL) {
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    in_ports = PyMem_Calloc(n ? (size_t)n : 1, sizeof(uint32_t));
    tmp = PyMem_Calloc(65536 + 1, sizeof(uint32_t));
    if (in_ports == NULL || tmp == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ps = PySequence_Fast_GET_ITEM(fast, i);
        if (ps == Py_None) {
            tmp[0] = NG_PORTS_ANY;
        }
        else {
            PyObject *ranges = PySequence_Fast(ps, "a port set must be None or a sequence");
            if (ranges == NULL) {
                goto done;
            }
            Py_ssize_t m = PySequence_Fast_GET_SIZE(ranges);
            if (m > 32768) {
                Py_DECREF(ranges);
                PyErr_SetString(PyExc_ValueError, "port set has too many ranges");
                goto done;
            }
            long prev_hi = -2;
            for (Py_ssize_t j = 0; j < m; j++) {
                long lo, hi;
                if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(ranges, j), "ll", &lo, &hi)) {
                    Py_DECREF(ranges);
                    goto done;
                }
                if (lo < 0 || hi > 65535 || lo > hi || lo <= prev_hi + 1) {
                    Py_DECREF(ranges);
                    PyErr_SetString(PyExc_ValueError,
                                    "port ranges must be sorted, merged and within 0..65535");
                    goto done;
                }
                tmp[1 + j] = (uint32_t)lo << 16 | (uint32_t)hi;
                prev_hi = hi;
            }
            Py_DECREF(ranges);
            tmp[0] = (uint32_t)m;
            if (m == 1 && tmp[1] == 0xffffu) {
                tmp[0] = NG_PORTS_ANY; /* 0-65535 is "any" */
            }
        }
        int64_t p = ports_intern(pool, tmp);
        if (p < 0) {
            goto done;
        }
        in_ports[i] = (uint32_t)p;
    }
    *in_ports_out = in_ports;
    in_ports = NULL;
    *n_out = (size_t)n;
    rc = 0;
done:
    Py_DECREF(fast);
    PyMem_Free(in_ports);
    PyMem_Free(tmp);
    return rc;
}

static int
build_events(const Py_buffer *buf, int stride, size_t n_in_ports, sweep_event **out,
             size_t *n_out)
{
    if (buf->len % (Py_ssize_t)(stride * sizeof(uint64_t)) != 0) {
        PyErr_Format(PyExc_ValueError, "rule buffer length must be a multiple of %d uint64",
                     stride);
        return -1;
    }
    size_t n = (size_t)buf->len / (stride * sizeof(uint64_t));
    sweep_event *ev = PyMem_Malloc((2 * n + 1) * sizeof(sweep_event));
    if (ev == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t w[5];
        memcpy(w, (const char *)buf->buf + i * stride * sizeof(uint64_t),
               stride * sizeof(uint64_t));
        u128 first, last;
        uint64_t ps;
        if (stride == 3) {
            first = (u128){0, w[0]};
            last = (u128){0, w[1]};
            ps = w[2];
            if (w[0] > UINT32_MAX || w[1] > UINT32_MAX) {
                goto bad;
            }
        }
        else {
            first = (u128){w[0], w[1]};
            last = (u128){w[2], w[3]};
            ps = w[4];
        }
        if (u128_cmp(first, last) > 0 || ps >= n_in_ports) {
            goto bad;
        }
        ev[k++] = (sweep_event){first, (uint32_t)ps, +1};
        bool ovf = false;
        u128 after = u128_inc(last, &ovf);
        if (!ovf) {
            ev[k++] = (sweep_event){after, (uint32_t)ps, -1};
        }
    }
    *out = ev;
    *n_out = k;
    return 0;
bad:
    PyMem_Free(ev);
    PyErr_SetString(PyExc_ValueError, "rule with first > last, out of range, or unknown port set");
    return -1;
}

typedef struct {
    char *data;
    size_t n, cap;
} byte_vec;

static int
bytes_append(byte_vec *v, const char *s, size_t n)
{
    if (v->n + n > v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        while (cap < v->n + n) {
            cap *= 2;
        }
        char *d = PyMem_Realloc(v->data, cap);
        if (d == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        v->data = d;
        v->cap = cap;
    }
    memcpy(v->data + v->n, s, n);
    v->n += n;
    return 0;
}

/* Append a NUL-terminated string to the string table; returns its offset or -1. */
static int64_t
strings_add(byte_vec *strings, PyObject *str, uint32_t *len_out)
{
    PyObject *bytes = PyUnicode_Check(str) ? PyUnicode_EncodeFSDefault(str) : NULL;
    if (bytes == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "expected str");
        }
        return -1;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    const char *s = PyBytes_AS_STRING(bytes);
    if (memchr(s, '\0', (size_t)n) != NULL || n > INT32_MAX) {
        Py_DECREF(bytes);
        PyErr_SetString(PyExc_ValueError, "embedded NUL in a pattern");
        return -1;
    }
    int64_t off = (int64_t)strings->n;
    if (bytes_append(strings, s, (size_t)n + 1) < 0) {
        Py_DECREF(bytes);
        return -1;
    }
    Py_DECREF(bytes);
    *len_out = (uint32_t)n;
    return off;
}

static PyObject *
policy_build(PyTypeObject *type, build_input *in)
{
    ports_pool pool = {0};
    sweep_event *ev4 = NULL, *ev6 = NULL;
    size_t n_ev4 = 0, n_ev6 = 0, n_in_ports = 0;
    uint32_t *in_ports = NULL;
    interval_vec iv4 = {0}, iv6 = {0};
    byte_vec strings = {0};
    ng_string_ref *unix_refs = NULL;
    ng_host_ref *host_refs = NULL;
    PyObject *unix_fast = NULL, *hosts_fast = NULL;
    char *blob = NULL;
    PyObject *result = NULL;

    if (build_portsets(&pool, in->portsets, &in_ports, &n_in_ports) < 0 ||
        build_events(&in->v4, 3, n_in_ports, &ev4, &n_ev4) < 0 ||
        build_events(&in->v6, 5, n_in_ports, &ev6, &n_ev6) < 0) {
        goto done;
    }
    if (sweep_build(&pool, in_ports, n_in_ports, ev4, n_ev4, &iv4) < 0) {
        goto done;
    }
    PyMem_Free(ev4);
    ev4 = NULL;
    if (sweep_build(&pool, in_ports, n_in_ports, ev6, n_ev6, &iv6) < 0) {
        goto done;
    }
    PyMem_Free(ev6);
    ev6 = NULL;

    unix_fast = PySequence_Fast(in->unix, "unix must be a sequence of str");
    hosts_fast = PySequence_Fast(in->hosts, "hosts must be a sequence of (str, int)");
    if (unix_fast == NULL || hosts_fast == NULL) {
        goto done;
    }
    Py_ssize_t n_unix = PySequence_Fast_GET_SIZE(unix_fast);
    Py_ssize_t n_hosts = PySequence_Fast_GET_SIZE(hosts_fast);
    unix_refs = PyMem_Calloc(n_unix ? (size_t)n_unix : 1, sizeof(ng_string_ref));
    host_refs = PyMem_Calloc(n_hosts ? (size_t)n_hosts : 1, sizeof(ng_host_ref));
    if (unix_refs == NULL || host_refs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n_unix; i++) {
        int64_t off = strings_add(&strings, PySequence_Fast_GET_ITEM(unix_fast, i),
                                  &unix_refs[i].length);
        if (off < 0) {
            goto done;
        }
        unix_refs[i].offset = (uint32_t)off;
    }
    for (Py_ssize_t i = 0; i < n_hosts; i++) {
        PyObject *pattern;
        Py_ssize_t ps;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(hosts_fast, i), "Un", &pattern, &ps)) {
            goto done;
        }
        if (ps < 0 || (size_t)ps >= n_in_ports) {
            PyErr_SetString(PyExc_ValueError, "host rule names an unknown port set");
            goto done;
        }
        int64_t off = strings_add(&strings, pattern, &host_refs[i].length);
        if (off < 0) {
            goto done;
        }
        host_refs[i].offset = (uint32_t)off;
        host_refs[i].ports = in_ports[ps];
    }

    /* lay out the blob */
    size_t off_v4 = align8(sizeof(ng_header));
    size_t off_v6 = align8(off_v4 + iv4.n * 12);
    size_t off_words = align8(off_v6 + iv6.n * 36);
    size_t off_unix = align8(off_words + pool.n * 4);
    size_t off_hosts = align8(off_unix + (size_t)n_unix * sizeof(ng_string_ref));
    size_t off_strings = align8(off_hosts + (size_t)n_hosts * sizeof(ng_host_ref));
    size_t size = align8(off_strings + strings.n);
    if (size > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "policy too large (over 4 GiB)");
        goto done;
    }
    blob = PyMem_Calloc(size, 1);
    if (blob == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    ng_header *h = (ng_header *)blob;
    memcpy(h->magic, NG_MAGIC, 8);
    h->version = NG_BLOB_VERSION;
    h->byte_order = NG_BYTE_ORDER;
    h->flags = in->flags;
    h->size = (uint32_t)size;
    h->n_v4 = (uint32_t)iv4.n;
    h->off_v4 = (uint32_t)off_v4;
    h->n_v6 = (uint32_t)iv6.n;
    h->off_v6 = (uint32_t)off_v6;
    h->n_words = (uint32_t)pool.n;
    h->off_words = (uint32_t)off_words;
    h->n_unix = (uint32_t)n_unix;
    h->off_unix = (uint32_t)off_unix;
    h->n_hosts = (uint32_t)n_hosts;
    h->off_hosts = (uint32_t)off_hosts;
    h->n_strings = (uint32_t)strings.n;
    h->off_strings = (uint32_t)off_strings;

    uint32_t *s4 = (uint32_t *)(blob + off_v4), *e4 = s4 + iv4.n, *p4 = e4 + iv4.n;
    for (size_t i = 0; i < iv4.n; i++) {
        s4[i] = (uint32_t)iv4.items[i].start.lo;
        e4[i] = (uint32_t)iv4.items[i].end.lo;
        p4[i] = iv4.items[i].ports;
    }
    uint64_t *s6 = (uint64_t *)(blob + off_v6), *e6 = s6 + 2 * iv6.n;
    uint32_t *p6 = (uint32_t *)(e6 + 2 * iv6.n);
    for (size_t i = 0; i < iv6.n; i++) {
        s6[2 * i] = iv6.items[i].start.hi;
        s6[2 * i + 1] = iv6.items[i].start.lo;
        e6[2 * i] = iv6.items[i].end.hi;
        e6[2 * i + 1] = iv6.items[i].end.lo;
        p6[i] = iv6.items[i].ports;
    }
    if (pool.n) {
        memcpy(blob + off_words, pool.words, pool.n * 4);
    }
    if (n_unix) {
        memcpy(blob + off_unix, unix_refs, (size_t)n_unix * sizeof(ng_string_ref));
    }
    if (n_hosts) {
        memcpy(blob + off_hosts, host_refs, (size_t)n_hosts * sizeof(ng_host_ref));
    }
    if (strings.n) {
        memcpy(blob + off_strings, strings.data, strings.n);
    }
    /* policy_wrap validates the blob: the builder's output passes the same checks as
       from_bytes() input, which is the invariant check of debug builds and costs one
       linear pass otherwise */
    result = policy_wrap(type, blob, size);
    blob = NULL;
done:
    ports_pool_free(&pool);
    PyMem_Free(ev4);
    PyMem_Free(ev6);
    PyMem_Free(in_ports);
    PyMem_Free(iv4.items);
    PyMem_Free(iv6.items);
    PyMem_Free(strings.data);
    PyMem_Free(unix_refs);
    PyMem_Free(host_refs);
    Py_XDECREF(unix_fast);
    Py_XDECREF(hosts_fast);
    PyMem_Free(blob);
    return result;
}

static PyObject *
Policy_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ipv4", "ipv6", "portsets", "unix", "hosts", "flags", NULL};
    build_input in = {0};
    unsigned long flags = 0;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*OOOk:Policy", kwlist, &in.v4, &in.v6,
                                     &in.portsets, &in.unix, &in.hosts, &flags)) {
        return NULL;
    }
    if (flags & ~(unsigned long)NG_KNOWN_FLAGS) {
        PyErr_Format(PyExc_ValueError, "unknown policy flags: %lu", flags);
        goto done;
    }
    in.flags = (uint32_t)flags;
    result = policy_build(type, &in);
done:
    PyBuffer_Release(&in.v4);
    PyBuffer_Release(&in.v6);
    return result;
}

/* ------------------------------------------------------------------------------------ */
/* Addresses: parsing as the kernel and CPython do, and normalisation.                  */

typedef struct {
    int family;              /* AF_INET or AF_INET6 (as parsed) */
    unsigned char bytes[16]; /* network order; 4 bytes for AF_INET */
} ng_addr;

/* glibc's numbers-and-dots: a, a.b, a.b.c, a.b.c.d; each part decimal, 0-octal or
   0x-hex; the last part fills the remaining bytes. No trailing characters. */
static bool
parse_inet_aton(const char *s, size_t n, unsigned char out[4])
{
    uint64_t parts[4];
    int np = 0;
    size_t i = 0;
    if (n == 0) {
        return false;
    }
    for (;;) {
        if (i >= n || np == 4) {
            return false;
        }
        uint64_t v = 0;
        int base = 10;
        size_t digits = 0;
        if (s[i] == '0') {
            base = 8;
            i++;
            digits = 1;
            if (i < n && (s[i] == 'x' || s[i] == 'X')) {
                base = 16;
                i++;
                digits = 0;
            }
        }
        for (; i < n && s[i] != '.'; i++) {
            int d;
            char c = s[i];
            if (c >= '0' && c <= '9') {
                d = c - '0';
            }
            else if (base == 16 && c >= 'a' && c <= 'f') {
                d = c - 'a' + 10;
            }
            else if (base == 16 && c >= 'A' && c <= 'F') {
                d = c - 'A' + 10;
            }
            else {
                return false;
            }
            if (d >= base) {
                return false;
            }
            v = v * (uint64_t)base + (uint64_t)d;
            if (v > UINT32_MAX) {
                return false;
            }
            digits++;
        }
        if (digits == 0) {
            return false;
        }
        parts[np++] = v;
        if (i == n) {
            break;
        }
        i++; /* '.' */
    }
    uint64_t addr;
    switch (np) {
    case 1:
        addr = parts[0];
        break;
    case 2:
        if (parts[0] > 0xff || parts[1] > 0xffffff) {
            return false;
        }
        addr = parts[0] << 24 | parts[1];
        break;
    case 3:
        if (parts[0] > 0xff || parts[1] > 0xff || parts[2] > 0xffff) {
            return false;
        }
        addr = parts[0] << 24 | parts[1] << 16 | parts[2];
        break;
    default:
        if (parts[0] > 0xff || parts[1] > 0xff || parts[2] > 0xff || parts[3] > 0xff) {
            return false;
        }
        addr = parts[0] << 24 | parts[1] << 16 | parts[2] << 8 | parts[3];
        break;
    }
    out[0] = (unsigned char)(addr >> 24);
    out[1] = (unsigned char)(addr >> 16);
    out[2] = (unsigned char)(addr >> 8);
    out[3] = (unsigned char)addr;
    return true;
}

/*
 * Parse a numeric host for a socket of `family` (AF_INET, AF_INET6, or AF_UNSPEC for
 * "either"). Returns true with `a` filled when the host is an address CPython would not
 * resolve by name; false when it is a name (or invalid for the family).
 * `s` need not be NUL-terminated.
 */
static bool
parse_numeric(const char *s, size_t n, int family, ng_addr *a)
{
    char buf[INET6_ADDRSTRLEN + 64];
    if (n == 0 || n >= sizeof(buf)) {
        return false;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (family != AF_INET6) {
        if (inet_pton(AF_INET, buf, a->bytes) == 1 || parse_inet_aton(buf, n, a->bytes)) {
            a->family = AF_INET;
            return true;
        }
    }
    if (family != AF_INET) {
        char *pct = memchr(buf, '%', n);
        if (pct != NULL) {
            *pct = '\0';
        }
        if (inet_pton(AF_INET6, buf, a->bytes) == 1) {
            a->family = AF_INET6;
            return true;
        }
    }
    return false;
}

static const unsigned char v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Judge against the tables: v4-mapped as IPv4, the unspecified address as loopback.
   Returns the port word index or NG_NO_PORTS. */
static uint32_t
view_lookup_addr(const ng_view *v, const ng_addr *a)
{
    const unsigned char *b = a->bytes;
    uint32_t v4;
    if (a->family == AF_INET6) {
        if (memcmp(b, v4mapped_prefix, 12) == 0) {
            b += 12;
            goto ipv4;
        }
        u128 x = u128_from_bytes(b);
        if (x.hi == 0 && x.lo == 0) {
            x.lo = 1; /* :: means this host */
        }
        return view_lookup_v6(v, x);
    }
ipv4:
    v4 = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    if (v4 == 0) {
        v4 = 0x7f000001u; /* 0.0.0.0 means this host */
    }
    return view_lookup_v4(v, v4);
}

static bool
addr_is_loopback(const ng_addr *a)
{
    const unsigned char *b = a->bytes;
    if (a->family == AF_INET6) {
        static const unsigned char one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        static const unsigned char zero[16] = {0};
        if (memcmp(b, one, 16) == 0 || memcmp(b, zero, 16) == 0) {
            return true;
        }
        if (memcmp(b, v4mapped_prefix, 12) != 0) {
            return false;
        }
        b += 12;
    }
    return b[0] == 127 || (b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0);
}

static bool
policy_learned_allows(PolicyObject *p, const ng_addr *a, long port);

static bool
policy_allows_addr(PolicyObject *p, const ng_addr *a, long port)
{
    if (p->view.h->flags & NG_ALLOW_ALL) {
        return true;
    }
    uint32_t w = view_lookup_addr(&p->view, a);
    if (w != NG_NO_PORTS && ports_contains(p->view.words, w, (uint32_t)port)) {
        return true;
    }
    return p->learned != NULL && policy_learned_allows(p, a, port);
}

/* Host names ----------------------------------------------------------------------- */

/* Lower-case, strip one trailing dot. Returns the length written to out (<= 255) or -1
   when the name is too long to be one. */
static Py_ssize_t
normalize_name(const char *s, size_t n, char out[256])
{
    if (n > 0 && s[n - 1] == '.') {
        n--;
    }
    if (n > 255) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    out[n] = '\0';
    return (Py_ssize_t)n;
}

static bool
host_pattern_matches(const char *pat, size_t plen, const char *name, size_t n)
{
    if (plen >= 2 && pat[0] == '*' && pat[1] == '.') {
        /* *.example.com: any name ending in .example.com, not example.com itself */
        size_t slen = plen - 1; /* ".example.com" */
        return n > slen && memcmp(name + n - slen, pat + 1, slen) == 0;
    }
    return plen == n && memcmp(pat, name, n) == 0;
}

/* DNS policy for a normalised name. With port >= 0, *port_ok tells whether some matching
   host rule covers it. Returns whether the lookup is allowed. */
static bool
policy_allows_name(const ng_view *v, const char *name, size_t n, long port, bool *by_rule,
                   bool *port_ok)
{
    *by_rule = false;
    *port_ok = false;
    if (v->h->flags & NG_ALLOW_ALL) {
        *port_ok = true;
        return true;
    }
    bool allowed = false;
    if ((v->h->flags & NG_DNS_LOCALHOST) && n == 9 && memcmp(name, "localhost", 9) == 0) {
        allowed = true;
    }
    for (uint32_t i = 0; i < v->h->n_hosts; i++) {
        const ng_host_ref *r = &v->host_refs[i];
        if (host_pattern_matches(v->strings + r->offset, r->length, name, n)) {
            allowed = true;
            *by_rule = true;
            if (port >= 0 && ports_contains(v->words, r->ports, (uint32_t)port)) {
                *port_ok = true;
            }
        }
    }
    return allowed;
}

#ifdef AF_UNIX
static bool
policy_allows_unix(const ng_view *v, const char *path)
{
    if (v->h->flags & NG_ALLOW_ALL) {
        return true;
    }
    for (uint32_t i = 0; i < v->h->n_unix; i++) {
        /* FNM_NOESCAPE and no FNM_PATHNAME: the semantics of Python's fnmatch */
        if (fnmatch(v->strings + v->unix_refs[i].offset, path, FNM_NOESCAPE) == 0) {
            return true;
        }
    }
    return false;
}
#endif

/* Learned addresses ---------------------------------------------------------------- */

static PyObject *
learned_key(const ng_addr *a)
{
    unsigned char key[17] = {0};
    const unsigned char *b = a->bytes;
    if (a->family == AF_INET6 && memcmp(b, v4mapped_prefix, 12) == 0) {
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
        if (host_pattern_matches(p->view.strings + r->offset, r->length, name, n)) {
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
        if (!parse_numeric(s, (size_t)len, AF_UNSPEC, &a)) {
            continue;
        }
        PyObject *key = learned_key(&a);
        if (key == NULL) {
            goto done;
        }
        PyObject *old = PyDict_GetItemWithError(p->learned, key);
        int r;
        if (old != NULL) {
            PyObject *merged = PySequence_Concat(old, ports);
            r = merged ? PyDict_SetItem(p->learned, key, merged) : -1;
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
        port = PyLong_AsLong(args[1]);
        if (port == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (port < 0 || port > 65535) {
            PyErr_Format(PyExc_ValueError, "port must be 0..65535, not %ld", port);
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
#ifdef AF_UNIX
        PyObject *path = PyUnicode_Substring(args[0], 5, PY_SSIZE_T_MAX);
        if (path == NULL) {
            return NULL;
        }
        bytes = PyUnicode_EncodeFSDefault(path);
        Py_DECREF(path);
        if (bytes == NULL) {
            return NULL;
        }
        if (memchr(PyBytes_AS_STRING(bytes), '\0', (size_t)PyBytes_GET_SIZE(bytes))) {
            Py_DECREF(bytes);
            PyErr_SetString(PyExc_ValueError, "embedded NUL in a unix path");
            return NULL;
        }
        result = PyBool_FromLong(policy_allows_unix(v, PyBytes_AS_STRING(bytes)));
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
    if (parse_numeric(h, hn, AF_UNSPEC, &a)) {
        if (port < 0) {
            PyErr_SetString(PyExc_ValueError, "a port is required for an IP address");
            return NULL;
        }
        if (v->h->flags & NG_ALLOW_ALL) {
            Py_RETURN_TRUE;
        }
        uint32_t w = view_lookup_addr(v, &a);
        return PyBool_FromLong(w != NG_NO_PORTS && ports_contains(v->words, w, (uint32_t)port));
    }
    bytes = host_as_bytes(args[0]);
    if (bytes == NULL) {
        return NULL;
    }
    char name[256];
    Py_ssize_t nn = normalize_name(PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes),
                                   name);
    Py_DECREF(bytes);
    if (nn < 0) {
        Py_RETURN_FALSE;
    }
    bool by_rule, port_ok;
    bool ok = policy_allows_name(v, name, (size_t)nn, port, &by_rule, &port_ok);
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
            uint32_t w = view_lookup_v4(v, x);
            count += w != NG_NO_PORTS && ports_contains(v->words, w, (uint32_t)port);
        }
    }
    else {
        size_t n = (size_t)buf.len / 16;
        for (size_t i = 0; i < n; i++) {
            u128 x;
            memcpy(&x.hi, (const char *)buf.buf + 16 * i, 8);
            memcpy(&x.lo, (const char *)buf.buf + 16 * i + 8, 8);
            uint32_t w = view_lookup_v6(v, x);
            count += w != NG_NO_PORTS && ports_contains(v->words, w, (uint32_t)port);
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
            numeric = parse_numeric(s, (size_t)n, family, &a);
        }
        if (numeric) {
            Py_XDECREF(hb);
            if (policy_allows_addr(pol, &a, port)) {
                return 0;
            }
            return deny_addr(st, op, &a, port);
        }

        /* a host name: the DNS policy first */
        char name[256];
        Py_ssize_t nn = normalize_name(s, (size_t)n, name);
        PyObject *name_obj = hb ? hb : Py_NewRef(host); /* owns hb */
        bool by_rule = false, port_ok = false;
        int rc = -1;
        PyObject *infos = NULL, *newaddr = NULL;
        if (nn < 0 || !policy_allows_name(&pol->view, name, (size_t)nn, port, &by_rule,
                                          &port_ok)) {
            if (deny_name(st, op, nn < 0 ? s : name, nn < 0 ? n : nn, port) < 0) {
                goto name_done;
            }
        }
        if (!resolve) {
            rc = 0;
            goto name_done;
        }
        /* resolve once, under our control, and hand the original a numeric address */
        PyThreadState *prev = st->in_hook;
        st->in_hook = PyThreadState_Get();
        infos = PyObject_CallFunction(st->orig_getaddrinfo, "OOii", name_obj,
                                      PyTuple_GET_ITEM(addr, 1), family,
                                      sock_int(sock, st->off_type));
        st->in_hook = prev;
        if (infos == NULL) {
            goto name_done;
        }
        if (!PyList_Check(infos) || PyList_GET_SIZE(infos) == 0) {
            PyErr_SetString(PyExc_OSError, "getaddrinfo returned an empty list");
            goto name_done;
        }
        PyObject *info = PyList_GET_ITEM(infos, 0);
        PyObject *sa;
        if (!PyTuple_Check(info) || PyTuple_GET_SIZE(info) != 5 ||
            !PyTuple_Check(sa = PyTuple_GET_ITEM(info, 4)) || PyTuple_GET_SIZE(sa) < 2) {
            PyErr_SetString(PyExc_OSError, "unexpected getaddrinfo result");
            goto name_done;
        }
        PyObject *ip = PyTuple_GET_ITEM(sa, 0);
        Py_ssize_t iplen;
        const char *ips = PyUnicode_Check(ip) ? PyUnicode_AsUTF8AndSize(ip, &iplen) : NULL;
        if (ips == NULL || !parse_numeric(ips, (size_t)iplen, family, &a)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_OSError, "unexpected getaddrinfo result");
            }
            goto name_done;
        }
        if (!port_ok && !policy_allows_addr(pol, &a, port) &&
            deny_addr(st, op, &a, port) < 0) {
            goto name_done;
        }
        if (family == AF_INET) {
            newaddr = PyTuple_Pack(2, ip, PyTuple_GET_ITEM(addr, 1));
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
                newaddr = PyTuple_Pack(4, ip, PyTuple_GET_ITEM(addr, 1), flow, scope);
            }
            else {
                newaddr = PyTuple_Pack(2, ip, PyTuple_GET_ITEM(addr, 1));
            }
        }
        if (newaddr == NULL) {
            goto name_done;
        }
        *replacement = newaddr;
        newaddr = NULL;
        rc = 1;
    name_done:
        Py_DECREF(name_obj);
        Py_XDECREF(infos);
        Py_XDECREF(newaddr);
        return rc;
    }
#ifdef AF_UNIX
    if (family == AF_UNIX) {
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
            goto unix_done;
        }
        if (abstract) {
            buf[0] = '@';
            memcpy(buf + 1, p + 1, n - 1);
            buf[n] = '\0';
        }
        else {
            memcpy(buf, p, n);
            buf[n] = '\0';
        }
        /* a path with a NUL inside is judged up to it: the kernel stops there too */
        ok = policy_allows_unix(&pol->view, buf);
        if (ok) {
            rc = 0;
        }
        else {
            path = PyUnicode_DecodeFSDefault(buf);
            if (path != NULL) {
                rc = deny(st, op, AF_UNIX, path, -1);
            }
        }
        if (buf != small) {
            PyMem_Free(buf);
        }
    unix_done:
        PyBuffer_Release(&view);
        Py_XDECREF(enc);
        Py_XDECREF(path);
        return rc;
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
    PyThreadState *prev = st->in_hook;
    st->in_hook = PyThreadState_Get();
    PyObject *r = orig(self, arg);
    st->in_hook = prev;
    return r;
}

static PyObject *
hook_connect_common(PyObject *self, PyObject *addr, int op, PyCFunction orig)
{
    ng_state *st = g_state;
    PolicyObject *pol = active_policy(st);
    PyObject *replacement = NULL, *result;
    if (pol == NULL) {
        return orig(self, addr);
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
    if (op == OP_SENDMSG && addr == Py_None) {
        return orig(self, args);
    }
    Py_INCREF(pol);
    int r = judge_address(st, pol, op, self, addr, true, &replacement);
    Py_DECREF(pol);
    if (r < 0) {
        return NULL;
    }
    if (r == 1) {
        newargs = PyTuple_GetSlice(args, 0, PyTuple_GET_SIZE(args));
        if (newargs == NULL) {
            goto done;
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

/* The host argument of a lookup as normalised name bytes. Returns 1 when it is a lookup
   to judge (name filled), 0 when it is not a lookup (None, "", numeric) or not parseable
   (the original raises), -1 on error. */
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
    if (n == 0 || memchr(s, '\0', n) != NULL) {
        rc = 0;
    }
    else if (parse_numeric(s, n, AF_UNSPEC, numeric)) {
        rc = 2; /* numeric */
    }
    else {
        *nn = normalize_name(s, n, name);
        if (*nn < 0) {
            *nn = (Py_ssize_t)(n > 255 ? 255 : n);
            memcpy(name, s, (size_t)*nn);
            name[*nn] = '\0';
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
        if (!reverse || addr_is_loopback(&a)) {
            return 0;
        }
        char text[INET6_ADDRSTRLEN];
        if (inet_ntop(a.family, a.bytes, text, sizeof(text)) == NULL) {
            return deny_name(st, op, "?", 1, -1);
        }
        return deny_name(st, op, text, (Py_ssize_t)strlen(text), -1);
    }
    bool by_rule, port_ok;
    if (policy_allows_name(&pol->view, name, (size_t)*nn, port, &by_rule, &port_ok)) {
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
        }
    }
    if (judge_lookup(st, pol, op, host, port, ni_flags, &learn, name, &nn) < 0) {
        goto done;
    }
    PyThreadState *prev = st->in_hook;
    st->in_hook = PyThreadState_Get();
    result = PyObject_Call(orig, args, kwargs);
    st->in_hook = prev;
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
    ng_state *st = g_state;
    if (st == NULL || !st->strict || st->active == NULL) {
        return 0;
    }
    if (strncmp(event, "socket.", 7) != 0) {
        return 0;
    }
    const char *e = event + 7;
    int op;
    if (strcmp(e, "connect") == 0) {
        op = OP_CONNECT;
    }
    else if (strcmp(e, "sendto") == 0) {
        op = OP_SENDTO;
    }
    else if (strcmp(e, "sendmsg") == 0) {
        op = OP_SENDMSG;
    }
    else if (strcmp(e, "getaddrinfo") == 0) {
        op = OP_GETADDRINFO;
    }
    else if (strcmp(e, "gethostbyname") == 0) {
        op = OP_GETHOSTBYNAME;
    }
    else if (strcmp(e, "gethostbyaddr") == 0) {
        op = OP_GETHOSTBYADDR;
    }
    else if (strcmp(e, "getnameinfo") == 0) {
        op = OP_GETNAMEINFO;
    }
    else {
        return 0;
    }
    if (st->in_hook != NULL && st->in_hook == PyThreadState_Get()) {
        return 0; /* a hook of ours is calling the original: already judged */
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

static void
do_uninstall(ng_state *st)
{
    if (!st->installed) {
        return;
    }
    for (int i = 0; i < 4; i++) {
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
    st->strict = false;
    st->installed = false;
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

PyDoc_STRVAR(ng_activate_doc,
"activate($module, policy, strict, /)\n--\n\n"
"Make policy (a Policy, or None for no checks) the active one. With strict true the\n"
"audit-hook backstop judges calls that bypass the hooks; it is added on first use and,\n"
"as audit hooks cannot be removed, stays inert while no strict policy is active.");

static PyObject *
ng_activate(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    ng_state *st = PyModule_GetState(module);
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "activate() takes exactly 2 arguments");
        return NULL;
    }
    PyObject *policy = args[0];
    int strict = PyObject_IsTrue(args[1]);
    if (strict < 0) {
        return NULL;
    }
    if (policy != Py_None && !Py_IS_TYPE(policy, (PyTypeObject *)st->policy_type)) {
        PyErr_Format(PyExc_TypeError, "policy must be a netguard._netguard.Policy or None, not %s",
                     Py_TYPE(policy)->tp_name);
        return NULL;
    }
    if (!st->installed && policy != Py_None) {
        PyErr_SetString(PyExc_RuntimeError, "install() the hooks before activating a policy");
        return NULL;
    }
    if (strict && policy != Py_None && !st->audit_added) {
        if (PySys_AddAuditHook(audit_hook, NULL) < 0) {
            return NULL;
        }
        st->audit_added = true;
    }
    /* the swap: one pointer, under the GIL */
    PyObject *old = st->active;
    st->active = policy == Py_None ? NULL : Py_NewRef(policy);
    st->strict = strict && policy != Py_None;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ng_active_doc,
"active($module, /)\n--\n\nThe active Policy, or None.");

static PyObject *
ng_active(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    ng_state *st = PyModule_GetState(module);
    return Py_NewRef(st->active ? st->active : Py_None);
}

static PyMethodDef ng_methods[] = {
    {"install", (PyCFunction)ng_install, METH_O, ng_install_doc},
    {"uninstall", (PyCFunction)ng_uninstall, METH_NOARGS, ng_uninstall_doc},
    {"is_installed", (PyCFunction)ng_is_installed, METH_NOARGS, ng_is_installed_doc},
    {"activate", (PyCFunction)(void (*)(void))ng_activate, METH_FASTCALL, ng_activate_doc},
    {"active", (PyCFunction)ng_active, METH_NOARGS, ng_active_doc},
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
