/*
 * Compiled policies: blob validation, address parsing and name matching (see
 * ng_policy.h). Python-free.
 */
#include "ng_policy.h"

const unsigned char ng_v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* ------------------------------------------------------------------------------------ */
/* Blob validation: everything from_bytes() accepts is safe to read.                     */

static bool
blob_section_ok(const ng_header *h, uint32_t off, size_t bytes)
{
    return off % 8 == 0 && off >= sizeof(ng_header) && off <= h->size &&
           bytes <= (size_t)h->size - off;
}

static bool
blob_ports_ok(const ng_header *h, const uint32_t *words, uint32_t p)
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
    return true;
bad:
    return false;
}

/* ------------------------------------------------------------------------------------ */
/* Lookup indexes.                                                                       */

uint32_t
ng_index_bits(uint32_t n)
{
    /* about 1 to 2 intervals a bucket, so a search touches one line of starts; small
       tables do without */
    uint32_t log2 = 0;
    while (log2 < 31 && (1u << (log2 + 1)) <= n) {
        log2++;
    }
    if (log2 < 6) {
        return 0;
    }
    return log2 > NG_INDEX_MAX_BITS ? NG_INDEX_MAX_BITS : log2;
}

uint32_t
ng_common_prefix_v4(uint32_t a, uint32_t b)
{
    uint32_t x = a ^ b, bits = 0;
    while (bits < 32 && !(x & (0x80000000u >> bits))) {
        bits++;
    }
    return bits;
}

uint32_t
ng_common_prefix_v6(u128 a, u128 b)
{
    uint64_t x = a.hi ^ b.hi;
    uint32_t bits = 0;
    if (x == 0) {
        x = a.lo ^ b.lo;
        bits = 64;
        if (x == 0) {
            return 128;
        }
    }
    while (!(x & (0x8000000000000000ull >> (bits % 64)))) {
        bits++;
    }
    return bits;
}

void
ng_index_fill_v4(const uint32_t *start, uint32_t n, uint32_t shift, uint32_t bits,
                 uint32_t *index)
{
    /* count the starts of each key into index[key + 1], then sum */
    for (uint32_t i = 0; i < n; i++) {
        index[iv_key_v4(start[i], shift, bits) + 1]++;
    }
    for (uint32_t k = 1; k <= (1u << bits); k++) {
        index[k] += index[k - 1];
    }
}

void
ng_index_fill_v6(const ng_rec6 *recs, uint32_t n, uint32_t shift, uint32_t bits,
                 uint32_t *index)
{
    for (uint32_t i = 0; i < n; i++) {
        u128 s = {recs[i].start_hi, recs[i].start_lo};
        index[iv_key_v6(s, shift, bits) + 1]++;
    }
    for (uint32_t k = 1; k <= (1u << bits); k++) {
        index[k] += index[k - 1];
    }
}

/* A stored index must be exactly what the builder would write for these intervals:
   then every lookup stays in bounds and finds the right interval. */
static bool
index_ok_v4(const ng_view *v)
{
    const ng_header *h = v->h;
    if (h->v4_bits == 0) {
        return h->v4_shift == 0;
    }
    if (h->n_v4 == 0 ||
        h->v4_shift != ng_common_prefix_v4(v->v4_start[0], v->v4_end[h->n_v4 - 1])) {
        return false;
    }
    const uint32_t *idx = v->v4_index;
    if (idx[0] != 0 || idx[1u << h->v4_bits] != h->n_v4) {
        return false;
    }
    for (uint32_t k = 1; k <= (1u << h->v4_bits); k++) {
        if (idx[k] < idx[k - 1]) {
            return false;
        }
    }
    for (uint32_t i = 0; i < h->n_v4; i++) {
        uint32_t key = iv_key_v4(v->v4_start[i], h->v4_shift, h->v4_bits);
        if (!(idx[key] <= i && i < idx[key + 1])) {
            return false;
        }
    }
    return true;
}

static bool
index_ok_v6(const ng_view *v)
{
    const ng_header *h = v->h;
    if (h->v6_bits == 0) {
        return h->v6_shift == 0;
    }
    if (h->n_v6 == 0) {
        return false;
    }
    u128 first = {v->v6[0].start_hi, v->v6[0].start_lo};
    u128 last = {v->v6[h->n_v6 - 1].end_hi, v->v6[h->n_v6 - 1].end_lo};
    if (h->v6_shift != ng_common_prefix_v6(first, last)) {
        return false;
    }
    const uint32_t *idx = v->v6_index;
    if (idx[0] != 0 || idx[1u << h->v6_bits] != h->n_v6) {
        return false;
    }
    for (uint32_t k = 1; k <= (1u << h->v6_bits); k++) {
        if (idx[k] < idx[k - 1]) {
            return false;
        }
    }
    for (uint32_t i = 0; i < h->n_v6; i++) {
        u128 s = {v->v6[i].start_hi, v->v6[i].start_lo};
        uint32_t key = iv_key_v6(s, h->v6_shift, h->v6_bits);
        if (!(idx[key] <= i && i < idx[key + 1])) {
            return false;
        }
    }
    return true;
}

const char *
ng_view_init(const char *blob, size_t size, ng_view *v)
{
    const ng_header *h = (const ng_header *)blob;
    if (size < sizeof(ng_header) || memcmp(h->magic, NG_MAGIC, 8) != 0) {
        return "not a netguard policy blob (bad magic)";
    }
    if (h->byte_order != NG_BYTE_ORDER) {
        return "policy blob was written on a machine of another byte order";
    }
    if (h->version != NG_BLOB_VERSION) {
        return "policy blob version is not supported";
    }
    if (h->size != size) {
        return "malformed policy blob: size mismatch";
    }
    if (h->flags & ~NG_KNOWN_FLAGS) {
        return "malformed policy blob: unknown flags";
    }
    if (h->v4_bits > NG_INDEX_MAX_BITS || h->v6_bits > NG_INDEX_MAX_BITS ||
        h->v4_shift > 32 || h->v6_shift > 128) {
        return "malformed policy blob: bad index parameters";
    }
    size_t n_index4 = h->v4_bits ? ((size_t)1 << h->v4_bits) + 1 : 0;
    size_t n_index6 = h->v6_bits ? ((size_t)1 << h->v6_bits) + 1 : 0;
    if (!blob_section_ok(h, h->off_v4, (size_t)h->n_v4 * 12) ||
        !blob_section_ok(h, h->off_v6, (size_t)h->n_v6 * sizeof(ng_rec6)) ||
        (n_index4 && !blob_section_ok(h, h->off_v4_index, n_index4 * 4)) ||
        (n_index6 && !blob_section_ok(h, h->off_v6_index, n_index6 * 4)) ||
        !blob_section_ok(h, h->off_words, (size_t)h->n_words * 4) ||
        !blob_section_ok(h, h->off_unix, (size_t)h->n_unix * sizeof(ng_string_ref)) ||
        !blob_section_ok(h, h->off_hosts, (size_t)h->n_hosts * sizeof(ng_host_ref)) ||
        !blob_section_ok(h, h->off_strings, h->n_strings)) {
        return "malformed policy blob: a section is out of bounds";
    }
    v->h = h;
    v->v4_start = (const uint32_t *)(blob + h->off_v4);
    v->v4_end = v->v4_start + h->n_v4;
    v->v4_ports = v->v4_end + h->n_v4;
    v->v6 = (const ng_rec6 *)(blob + h->off_v6);
    v->v4_index = n_index4 ? (const uint32_t *)(blob + h->off_v4_index) : NULL;
    v->v6_index = n_index6 ? (const uint32_t *)(blob + h->off_v6_index) : NULL;
    v->words = (const uint32_t *)(blob + h->off_words);
    v->unix_refs = (const ng_string_ref *)(blob + h->off_unix);
    v->host_refs = (const ng_host_ref *)(blob + h->off_hosts);
    v->strings = blob + h->off_strings;

    for (uint32_t i = 0; i < h->n_v4; i++) {
        if (v->v4_start[i] > v->v4_end[i] ||
            (i > 0 && v->v4_end[i - 1] >= v->v4_start[i])) {
            return "malformed policy blob: IPv4 intervals not sorted and disjoint";
        }
        if (!blob_ports_ok(h, v->words, v->v4_ports[i])) {
            return "malformed policy blob: bad port set";
        }
    }
    for (uint32_t i = 0; i < h->n_v6; i++) {
        u128 s = {v->v6[i].start_hi, v->v6[i].start_lo};
        u128 e = {v->v6[i].end_hi, v->v6[i].end_lo};
        if (u128_cmp(s, e) > 0) {
            goto v6_bad;
        }
        if (i > 0) {
            u128 pe = {v->v6[i - 1].end_hi, v->v6[i - 1].end_lo};
            if (u128_cmp(pe, s) >= 0) {
                goto v6_bad;
            }
        }
        if (v->v6[i].reserved != 0 || !blob_ports_ok(h, v->words, v->v6[i].ports)) {
            return "malformed policy blob: bad port set";
        }
    }
    if (!index_ok_v4(v) || !index_ok_v6(v)) {
        return "malformed policy blob: bad lookup index";
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
        if (!blob_ports_ok(h, v->words, r->ports)) {
            return "malformed policy blob: bad port set";
        }
    }
    return NULL;
v6_bad:
    return "malformed policy blob: IPv6 intervals not sorted and disjoint";
strings_bad:
    return "malformed policy blob: bad string reference";
}

/* ------------------------------------------------------------------------------------ */
/* Addresses: parsing as the kernel and CPython do.                                      */

/* glibc's numbers-and-dots: a, a.b, a.b.c, a.b.c.d; each part decimal, 0-octal or
   0x-hex; the last part fills the remaining bytes. No trailing characters. */
static bool
ng_parse_inet_aton(const char *s, size_t n, unsigned char out[4])
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
bool
ng_parse_numeric(const char *s, size_t n, int family, ng_addr *a)
{
    /* Every dotted quad inet_pton accepts reads the same as numbers-and-dots, and
       CPython falls back to getaddrinfo (which reads numbers-and-dots) for the rest, so
       one parser covers IPv4 without copying the string. */
    if (family != AF_INET6 && ng_parse_inet_aton(s, n, a->bytes)) {
        a->family = AF_INET;
        return true;
    }
    if (family != AF_INET) {
        char buf[INET6_ADDRSTRLEN + 64];
        const char *pct = memchr(s, '%', n);
        if (pct != NULL) {
            n = (size_t)(pct - s); /* the scope id is ignored for matching */
        }
        if (n == 0 || n >= sizeof(buf)) {
            return false;
        }
        memcpy(buf, s, n);
        buf[n] = '\0';
        if (inet_pton(AF_INET6, buf, a->bytes) == 1) {
            a->family = AF_INET6;
            return true;
        }
    }
    return false;
}

bool
ng_addr_is_loopback(const ng_addr *a)
{
    const unsigned char *b = a->bytes;
    if (a->family == AF_INET6) {
        static const unsigned char one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        static const unsigned char zero[16] = {0};
        if (memcmp(b, one, 16) == 0 || memcmp(b, zero, 16) == 0) {
            return true;
        }
        if (memcmp(b, ng_v4mapped_prefix, 12) != 0) {
            return false;
        }
        b += 12;
    }
    return b[0] == 127 || (b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0);
}

/* Host names ----------------------------------------------------------------------- */

/* Lower-case, strip one trailing dot. Returns the length written to out (<= 255) or -1
   when the name is too long to be one. */
ptrdiff_t
ng_normalize_name(const char *s, size_t n, char out[256])
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
    return (ptrdiff_t)n;
}

bool
ng_host_pattern_matches(const char *pat, size_t plen, const char *name, size_t n)
{
    if (plen >= 2 && pat[0] == '*' && pat[1] == '.') {
        /* *.example.com: any name ending in .example.com, not example.com itself */
        size_t slen = plen - 1; /* ".example.com" */
        return n > slen && memcmp(name + n - slen, pat + 1, slen) == 0;
    }
    return plen == n && memcmp(pat, name, n) == 0;
}

bool
ng_view_allows_name(const ng_view *v, const char *name, size_t n, long port, bool *by_rule,
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
        if (ng_host_pattern_matches(v->strings + r->offset, r->length, name, n)) {
            allowed = true;
            *by_rule = true;
            if (port >= 0 && ports_contains(v->words, r->ports, (uint32_t)port)) {
                *port_ok = true;
            }
        }
    }
    return allowed;
}

/* ------------------------------------------------------------------------------------ */
/* Globs, with the semantics of Python's fnmatch.fnmatchcase: '*' matches any run ('/'   */
/* included), '?' one character, '[...]' / '[!...]' a set with ranges; a '[' without a   */
/* closing ']' is literal; a backslash is an ordinary character. Bytes, not code points. */

/* The bracket expression at pat ('['): 1 or 0 for whether c is in it, with *end past
   it; -1 when the '[' is not closed and so stands for itself. */
static int
glob_class(const char *pat, unsigned char c, const char **end)
{
    const char *p = pat + 1;
    bool negate = false;
    if (*p == '!') {
        negate = true;
        p++;
    }
    const char *q = p;
    if (*q == ']') {
        q++; /* a ']' first in the set is a member */
    }
    while (*q != '\0' && *q != ']') {
        q++;
    }
    if (*q == '\0') {
        return -1;
    }
    *end = q + 1;
    bool member = false;
    while (p < q) {
        unsigned char lo = (unsigned char)p[0];
        if (p + 2 < q && p[1] == '-') {
            unsigned char hi = (unsigned char)p[2];
            member |= lo <= c && c <= hi; /* a reversed range is empty */
            p += 3;
        }
        else {
            member |= c == lo;
            p++;
        }
    }
    return member != negate;
}

bool
ng_glob_match(const char *pat, const char *str, size_t n)
{
    const char *star_pat = NULL, *star_str = NULL, *stop = str + n;
    while (str < stop) {
        if (*pat == '*') {
            star_pat = ++pat;
            star_str = str;
            continue;
        }
        if (*pat == '?') {
            pat++;
            str++;
            continue;
        }
        if (*pat == '[') {
            const char *end = NULL;
            int r = glob_class(pat, (unsigned char)*str, &end);
            if (r == 1) {
                pat = end;
                str++;
                continue;
            }
            if (r == -1 && *str == '[') {
                pat++;
                str++;
                continue;
            }
        }
        else if (*pat != '\0' && *pat == *str) {
            pat++;
            str++;
            continue;
        }
        /* every token but '*' matches one character: retry the last star one further */
        if (star_pat == NULL) {
            return false;
        }
        pat = star_pat;
        str = ++star_str;
    }
    while (*pat == '*') {
        pat++;
    }
    return *pat == '\0';
}

#ifdef NG_HAVE_UNIX
bool
ng_view_allows_unix(const ng_view *v, const char *path, size_t n)
{
    if (v->h->flags & NG_ALLOW_ALL) {
        return true;
    }
    for (uint32_t i = 0; i < v->h->n_unix; i++) {
        if (ng_glob_match(v->strings + v->unix_refs[i].offset, path, n)) {
            return true;
        }
    }
    return false;
}
#endif
