/*
 * Compiled policies: the blob format, its read-only views, address normalisation and the
 * lookups of the hot path. Python-free C, so that the same code can judge in the
 * extension and, later, in the native-mode preload library.
 */
#ifndef NETGUARD_NG_POLICY_H
#define NETGUARD_NG_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

/* AF_UNIX destinations are judged where the platform has them in Python. */
#if defined(AF_UNIX) && !defined(_WIN32)
#define NG_HAVE_UNIX 1
#endif

/* ------------------------------------------------------------------------------------ */
/* 128-bit unsigned keys: one representation for both families.                          */

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
 *   v4 index: uint32 index[2^v4_bits + 1] (absent when v4_bits is 0)
 *   v6:    n_v6 x ng_rec6 {start hi, lo; end hi, lo; ports}: one record, so that the
 *          interval a search ends on brings its end and ports in the same cache line
 *   v6 index: as for v4
 *   ports: uint32 words; a port set at word p is words[p] = count | NG_PORTS_ANY?,
 *          followed by count words (lo << 16 | hi), sorted and disjoint
 *   unix:  n_unix x {uint32 offset, uint32 length} into strings (globs, fs-encoded)
 *   hosts: n_hosts x {uint32 offset, uint32 length, uint32 ports, uint32 reserved}
 *   strings
 *
 * Intervals are sorted and disjoint, so a lookup is one binary search for the last
 * start <= address, then one comparison with its end. Large tables carry an index that
 * narrows the search to a few intervals: the key of an address is the `bits` bits that
 * follow the `shift` bits every address of the table shares (the common prefix of the
 * first start and the last end), and index[k] is the number of intervals whose start has
 * a key below k. Keys grow with addresses, so the first start above an address lies in
 * [index[key], index[key + 1]].
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
    uint32_t v4_bits, v4_shift, off_v4_index;
    uint32_t v6_bits, v6_shift, off_v6_index;
} ng_header;

#define NG_INDEX_MAX_BITS 20u

typedef struct {
    uint64_t start_hi, start_lo;
    uint64_t end_hi, end_lo;
    uint32_t ports;
    uint32_t reserved;
} ng_rec6;

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
    const uint32_t *v4_start, *v4_end, *v4_ports, *v4_index;
    const ng_rec6 *v6;
    const uint32_t *v6_index;
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

/* Index keys (see the layout above); shift + bits may pass the end of the address, which
   shifts in zeros and keeps keys growing with addresses. */
static inline uint32_t
iv_key_v4(uint32_t addr, uint32_t shift, uint32_t bits)
{
    uint32_t moved = (uint32_t)(((uint64_t)addr << shift) & 0xffffffffu);
    return moved >> (32 - bits);
}

static inline uint32_t
iv_key_v6(u128 addr, uint32_t shift, uint32_t bits)
{
    uint64_t top;
    if (shift == 0) {
        top = addr.hi;
    }
    else if (shift < 64) {
        top = addr.hi << shift | addr.lo >> (64 - shift);
    }
    else if (shift < 128) {
        top = addr.lo << (shift - 64);
    }
    else {
        top = 0;
    }
    return (uint32_t)(top >> (64 - bits));
}

static inline uint32_t
iv_lookup_v4(const ng_view *v, uint32_t addr)
{
    uint32_t n = v->h->n_v4;
    if (n == 0 || addr < v->v4_start[0] || addr > v->v4_end[n - 1]) {
        return NG_NO_PORTS;
    }
    uint32_t lo = 0, hi = n;
    if (v->h->v4_bits != 0) {
        uint32_t key = iv_key_v4(addr, v->h->v4_shift, v->h->v4_bits);
        lo = v->v4_index[key];
        hi = v->v4_index[key + 1];
    }
    /* the first start > addr; the candidate is the one before it (start[0] <= addr) */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v->v4_start[mid] <= addr) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    if (v->v4_end[lo - 1] < addr) {
        return NG_NO_PORTS;
    }
    return v->v4_ports[lo - 1];
}

static inline uint32_t
iv_lookup_v6(const ng_view *v, u128 addr)
{
    uint32_t n = v->h->n_v6;
    if (n == 0) {
        return NG_NO_PORTS;
    }
    u128 first = {v->v6[0].start_hi, v->v6[0].start_lo};
    u128 last = {v->v6[n - 1].end_hi, v->v6[n - 1].end_lo};
    if (u128_cmp(addr, first) < 0 || u128_cmp(addr, last) > 0) {
        return NG_NO_PORTS;
    }
    uint32_t lo = 0, hi = n;
    if (v->h->v6_bits != 0) {
        uint32_t key = iv_key_v6(addr, v->h->v6_shift, v->h->v6_bits);
        lo = v->v6_index[key];
        hi = v->v6_index[key + 1];
    }
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint64_t sh = v->v6[mid].start_hi;
        if (sh < addr.hi || (sh == addr.hi && v->v6[mid].start_lo <= addr.lo)) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    const ng_rec6 *r = &v->v6[lo - 1];
    u128 e = {r->end_hi, r->end_lo};
    if (u128_cmp(e, addr) < 0) {
        return NG_NO_PORTS;
    }
    return r->ports;
}

/* Index construction, shared by the builder and the blob check. */
uint32_t ng_index_bits(uint32_t n);
uint32_t ng_common_prefix_v4(uint32_t a, uint32_t b);
uint32_t ng_common_prefix_v6(u128 a, u128 b);
/* Fill index[0 .. 2^bits] (zeroed by the caller). */
void ng_index_fill_v4(const uint32_t *start, uint32_t n, uint32_t shift, uint32_t bits,
                      uint32_t *index);
void ng_index_fill_v6(const ng_rec6 *recs, uint32_t n, uint32_t shift, uint32_t bits,
                      uint32_t *index);

/* ------------------------------------------------------------------------------------ */
/* Addresses.                                                                            */

typedef struct {
    int family;              /* AF_INET or AF_INET6 (as parsed) */
    unsigned char bytes[16]; /* network order; 4 bytes for AF_INET */
} ng_addr;

extern const unsigned char ng_v4mapped_prefix[12];

/* Judge against the tables: v4-mapped as IPv4, the unspecified address as loopback.
   Returns the port word index or NG_NO_PORTS. */
/* The judged forms of an address: the unspecified address means this host; a v4-mapped
   address is IPv4. Each returns the port word or NG_NO_PORTS. */
static inline uint32_t
iv_lookup_norm_v4(const ng_view *v, uint32_t addr)
{
    return iv_lookup_v4(v, addr == 0 ? 0x7f000001u : addr);
}

static inline uint32_t
iv_lookup_norm_v6(const ng_view *v, u128 addr)
{
    if (addr.hi == 0 && addr.lo >> 32 == 0xffffu) {
        return iv_lookup_norm_v4(v, (uint32_t)addr.lo);
    }
    if (addr.hi == 0 && addr.lo == 0) {
        addr.lo = 1; /* :: is ::1 */
    }
    return iv_lookup_v6(v, addr);
}

static inline uint32_t
iv_lookup_addr(const ng_view *v, const ng_addr *a)
{
    const unsigned char *b = a->bytes;
    if (a->family == AF_INET6) {
        return iv_lookup_norm_v6(v, u128_from_bytes(b));
    }
    return iv_lookup_norm_v4(v, (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
                                    (uint32_t)b[2] << 8 | b[3]);
}

/* The static verdict for an address of either family and a port. */
static inline bool
ng_view_allows_v4(const ng_view *v, uint32_t addr, uint32_t port)
{
    if (v->h->flags & NG_ALLOW_ALL) {
        return true;
    }
    uint32_t w = iv_lookup_norm_v4(v, addr);
    return w != NG_NO_PORTS && ports_contains(v->words, w, port);
}

static inline bool
ng_view_allows_v6(const ng_view *v, u128 addr, uint32_t port)
{
    if (v->h->flags & NG_ALLOW_ALL) {
        return true;
    }
    uint32_t w = iv_lookup_norm_v6(v, addr);
    return w != NG_NO_PORTS && ports_contains(v->words, w, port);
}

/* The common form, fast: four decimal parts without leading zeros ("127.0.0.1"). Any
   other form (and any failure here) goes to ng_parse_numeric, which reads it as the
   kernel does; the two agree on every string this accepts. */
static inline bool
ng_parse_dotted_quad(const char *s, size_t n, uint32_t *out)
{
    uint32_t addr = 0, part = 0, digits = 0, dots = 0;
    if (n < 7 || n > 15) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (digits == 0 || ++dots > 3) {
                return false;
            }
            addr = addr << 8 | part;
            part = digits = 0;
        }
        else if (c >= '0' && c <= '9') {
            if (digits > 0 && part == 0) {
                return false; /* a leading zero reads as octal: not ours */
            }
            part = part * 10 + (c - '0');
            if (part > 255 || ++digits > 3) {
                return false;
            }
        }
        else {
            return false;
        }
    }
    if (dots != 3 || digits == 0) {
        return false;
    }
    *out = addr << 8 | part;
    return true;
}

/* Validate a blob and fill a view of it: NULL on success, else what is wrong. */
const char *ng_view_init(const char *blob, size_t size, ng_view *v);

/* Parse a numeric host as CPython and the kernel would for a socket of `family`
   (AF_INET, AF_INET6, or AF_UNSPEC for either). False: a name, or invalid. */
bool ng_parse_numeric(const char *s, size_t n, int family, ng_addr *a);

/* 127.0.0.0/8, ::1, v4-mapped loopback, and the unspecified addresses (this host). */
bool ng_addr_is_loopback(const ng_addr *a);

/* Lower-case and strip one trailing dot into out; the length, or -1 if over 255. */
ptrdiff_t ng_normalize_name(const char *s, size_t n, char out[256]);

bool ng_host_pattern_matches(const char *pat, size_t plen, const char *name, size_t n);

/* The DNS policy for a normalised name; see docs/internals.md. With port >= 0, *port_ok
   tells whether a matching host rule covers the port. */
bool ng_view_allows_name(const ng_view *v, const char *name, size_t n, long port,
                         bool *by_rule, bool *port_ok);

/* fnmatch.fnmatchcase semantics on the n bytes of str (see ng_policy.c). */
bool ng_glob_match(const char *pat, const char *str, size_t n);

#ifdef NG_HAVE_UNIX
bool ng_view_allows_unix(const ng_view *v, const char *path, size_t n);
#endif

#endif /* NETGUARD_NG_POLICY_H */
