/*
 * The policy builder: packed rules from netguard._impl -> one blob. Port sets are
 * interned; a sweep over rule endpoints turns possibly overlapping rules into sorted
 * disjoint intervals, each carrying the union of the port sets of every rule covering it.
 */
#include "ng_build.h"

#include <stdlib.h>

#ifdef NG_DEBUG
#define NG_ASSERT(cond) assert(cond)
#else
#define NG_ASSERT(cond) ((void)0)
#endif

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

static inline uint32_t
event_digit(const sweep_event *e, int d)
{
    uint64_t word = d < 4 ? e->pos.lo : e->pos.hi;
    return (uint32_t)(word >> (16 * (d % 4))) & 0xffffu;
}

/*
 * Sort events by position: an LSD radix sort on 16-bit digits, stable, skipping the
 * digits every key shares (IPv4 keys have five of eight). For a million rules this is
 * several times faster than qsort with a comparison callback. 0, or -1 with an exception.
 */
static int
events_sort(sweep_event *ev, size_t n)
{
    if (n < 256 || n > UINT32_MAX) {
        qsort(ev, n, sizeof(sweep_event), event_cmp);
        return 0;
    }
    sweep_event *tmp = PyMem_Malloc(n * sizeof(sweep_event));
    uint32_t *count = PyMem_Calloc(8 * (size_t)65536, sizeof(uint32_t));
    if (tmp == NULL || count == NULL) {
        PyMem_Free(tmp);
        PyMem_Free(count);
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        for (int d = 0; d < 8; d++) {
            count[(size_t)d * 65536 + event_digit(&ev[i], d)]++;
        }
    }
    sweep_event *src = ev, *dst = tmp;
    for (int d = 0; d < 8; d++) {
        uint32_t *c = count + (size_t)d * 65536;
        if (c[event_digit(&src[0], d)] == n) {
            continue; /* every key has this digit */
        }
        uint32_t sum = 0;
        for (size_t k = 0; k < 65536; k++) {
            uint32_t v = c[k];
            c[k] = sum;
            sum += v;
        }
        for (size_t i = 0; i < n; i++) {
            dst[c[event_digit(&src[i], d)]++] = src[i];
        }
        sweep_event *t = src;
        src = dst;
        dst = t;
    }
    if (src != ev) {
        memcpy(ev, src, n * sizeof(sweep_event));
    }
    PyMem_Free(tmp);
    PyMem_Free(count);
    return 0;
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
    if (events_sort(ev, n_ev) < 0) {
        goto done;
    }

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
            if (m == 0) {
                Py_DECREF(ranges);
                PyErr_SetString(PyExc_ValueError, "a port set must not be empty");
                goto done;
            }
            if (m > 32768) {
                Py_DECREF(ranges);
                PyErr_SetString(PyExc_ValueError, "port set has too many ranges");
                goto done;
            }
            long prev_hi = -2;
            for (Py_ssize_t j = 0; j < m; j++) {
                long lo, hi;
                PyObject *item = PySequence_Fast_GET_ITEM(ranges, j);
                if (!PyTuple_Check(item)) {
                    Py_DECREF(ranges);
                    PyErr_SetString(PyExc_TypeError, "a port range must be a (lo, hi) tuple");
                    goto done;
                }
                if (!PyArg_ParseTuple(item, "ll", &lo, &hi)) {
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

int
policy_build(build_input *in, char **blob_out, size_t *size_out)
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
    int rc = -1;

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
        PyObject *item = PySequence_Fast_GET_ITEM(hosts_fast, i);
        if (!PyTuple_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "a host rule must be a (pattern, portset) tuple");
            goto done;
        }
        if (!PyArg_ParseTuple(item, "Un", &pattern, &ps)) {
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
    uint32_t bits4 = ng_index_bits((uint32_t)iv4.n), bits6 = ng_index_bits((uint32_t)iv6.n);
    size_t n_index4 = bits4 ? ((size_t)1 << bits4) + 1 : 0;
    size_t n_index6 = bits6 ? ((size_t)1 << bits6) + 1 : 0;
    if (iv4.n > UINT32_MAX / 16 || iv6.n > UINT32_MAX / 64) {
        PyErr_SetString(PyExc_OverflowError, "policy too large");
        goto done;
    }
    size_t off_v4 = align8(sizeof(ng_header));
    size_t off_v4_index = align8(off_v4 + iv4.n * 12);
    size_t off_v6 = align8(off_v4_index + n_index4 * 4);
    size_t off_v6_index = align8(off_v6 + iv6.n * sizeof(ng_rec6));
    size_t off_words = align8(off_v6_index + n_index6 * 4);
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
    h->v4_bits = bits4;
    h->off_v4_index = bits4 ? (uint32_t)off_v4_index : 0;
    h->v6_bits = bits6;
    h->off_v6_index = bits6 ? (uint32_t)off_v6_index : 0;
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
    ng_rec6 *r6 = (ng_rec6 *)(blob + off_v6);
    for (size_t i = 0; i < iv6.n; i++) {
        r6[i] = (ng_rec6){iv6.items[i].start.hi, iv6.items[i].start.lo, iv6.items[i].end.hi,
                          iv6.items[i].end.lo, iv6.items[i].ports, 0};
    }
    if (bits4) {
        h->v4_shift = ng_common_prefix_v4(s4[0], e4[iv4.n - 1]);
        ng_index_fill_v4(s4, (uint32_t)iv4.n, h->v4_shift, bits4,
                         (uint32_t *)(blob + off_v4_index));
    }
    if (bits6) {
        u128 first = {r6[0].start_hi, r6[0].start_lo};
        u128 last = {r6[iv6.n - 1].end_hi, r6[iv6.n - 1].end_lo};
        h->v6_shift = ng_common_prefix_v6(first, last);
        ng_index_fill_v6(r6, (uint32_t)iv6.n, h->v6_shift, bits6,
                         (uint32_t *)(blob + off_v6_index));
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
    *blob_out = blob;
    *size_out = size;
    blob = NULL;
    rc = 0;
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
    return rc;
}

