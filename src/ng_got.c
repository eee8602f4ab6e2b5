/*
 * ng_got -- native mode's in-process mechanism (see ng_got.h for the contract, and
 * docs/internals.md "The GOT mechanism" for the why).
 *
 * Python-free. Linux only: elsewhere this file compiles to nothing. On Linux it supports
 * x86-64 and AArch64 (RELA relocations; JUMP_SLOT, GLOB_DAT and absolute 64-bit
 * pointers); ng_got_install() fails with a reason on any other architecture.
 *
 * Locking, in one place: g_lock serialises install, uninstall, rescans, pruning and
 * snapshots, and guards g_hooks, g_recs and g_stats. While it is held, nothing here calls
 * into the dynamic loader except dl_iterate_phdr (which takes only the loader's list
 * lock, never held while code outside the loader runs). Loader calls that take the
 * loader's main lock (dlopen, dlsym, dladdr, dlinfo) are made before g_lock is taken.
 * So a thread inside dlopen (holding the loader's lock, running a constructor that calls
 * a hooked dlopen) and a thread scanning can never wait for each other in a cycle.
 *
 * Everything a scan touches is read inside the dl_iterate_phdr callback for that object:
 * an object cannot be unmapped while it is being visited there (dlclose unlinks it under
 * the same list lock before unmapping it), so no slot is written in a dead mapping.
 */
#ifdef __linux__

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "ng_got.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NG_GOT_ARCH 1
#define NG_R_JUMP_SLOT R_X86_64_JUMP_SLOT
#define NG_R_GLOB_DAT R_X86_64_GLOB_DAT
#define NG_R_ABS R_X86_64_64
#elif defined(__aarch64__)
#define NG_GOT_ARCH 1
#define NG_R_JUMP_SLOT R_AARCH64_JUMP_SLOT
#define NG_R_GLOB_DAT R_AARCH64_GLOB_DAT
#define NG_R_ABS R_AARCH64_ABS64
#else
#define NG_GOT_ARCH 0
#endif

static char g_error[1024];

const char *
ng_got_error(void)
{
    return g_error;
}

static void
set_error(const char *fmt, const char *a, const char *b)
{
    snprintf(g_error, sizeof(g_error), fmt, a, b);
}

#if !NG_GOT_ARCH

int
ng_got_install(const ng_got_hook *hooks, size_t n)
{
    (void)hooks;
    (void)n;
    set_error("native mode's GOT patching supports x86-64 and AArch64 only%s%s", "", "");
    return -1;
}

void
ng_got_uninstall(void)
{
}

int
ng_got_installed(void)
{
    return 0;
}

int
ng_got_rescan(void)
{
    return 0;
}

void
ng_got_get_stats(ng_got_stats *out)
{
    memset(out, 0, sizeof(*out));
}

int
ng_got_snapshot(ng_got_patch **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    return 0;
}

#else /* NG_GOT_ARCH */

#if UINTPTR_MAX != 0xffffffffffffffffu
#error "ng_got: 64-bit targets only"
#endif
#define NG_R_SYM(i) ELF64_R_SYM(i)
#define NG_R_TYPE(i) ELF64_R_TYPE(i)
#define NG_ST_TYPE(i) ELF64_ST_TYPE(i)

/* ------------------------------------------------------------------------------------ */
/* The table.                                                                           */

typedef struct {
    const char *name;
    void *replacement;
    void *original; /* the real function */
    void *alias;    /* a canonical PLT entry of the main program that objects bind to
                       instead of the real function, or NULL */
    void **out;     /* where the caller wants `original` (NULL for our own hooks) */
} hook_entry;

/* The dl* functions this mechanism hooks for itself, appended to every table. */
#ifdef __GLIBC__
#define N_SELF 5
#else
#define N_SELF 3
#endif

typedef struct {
    void **slot;
    void *old;         /* the slot's value before the patch */
    void *replacement; /* what was written */
    uintptr_t base;    /* the object's load bias and dynamic section: its key */
    uintptr_t dyn;
    char *object;      /* malloc'd path */
    const char *symbol;
    bool mark;         /* scratch for walks */
} patch_rec;

/* Recursive: a scan may call malloc, and a malloc that looks a function up by name
   (through a patched dlsym slot) re-enters substitute(), which only reads the table. */
static pthread_mutex_t g_lock;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_installed; /* atomic; written under g_lock */
static hook_entry g_hooks[NG_GOT_MAX_HOOKS + N_SELF];
static size_t g_nhooks;
static unsigned char g_first[256]; /* first bytes of hooked names: a cheap pre-filter */
static patch_rec *g_recs;
static size_t g_nrecs, g_caprecs;
static ng_got_stats g_stats;
static size_t g_deferred; /* atomic: slots the last scan left to a later one */

/* Fixed facts about the process, read once (outside g_lock). */
static uintptr_t g_vdso;  /* AT_SYSINFO_EHDR */
static uintptr_t g_ldso;  /* AT_BASE: the dynamic linker's load bias */
static char g_exe[4096];  /* the main program's path (dl_iterate_phdr names it "") */
static uintptr_t g_exe_lo, g_exe_hi; /* the main program's mapping */
static size_t g_page;

/* The dl* hooks (defined below). */
static void *hook_dlopen(const char *file, int mode);
static int hook_dlclose(void *handle);
#ifdef __GLIBC__
static void *hook_dlmopen(Lmid_t lmid, const char *file, int mode);
#endif
/* dlsym and dlvsym enter through a few instructions of assembly (below), so that a
   lookup relative to the caller (RTLD_NEXT) reaches the real function with the caller's
   return address intact; every other lookup continues in ng_got__dlsym_impl(). */
extern char ng_got__dlsym_entry[] __attribute__((visibility("hidden")));
#ifdef __GLIBC__
extern char ng_got__dlvsym_entry[] __attribute__((visibility("hidden")));
#endif

static void
init_lock(void)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&g_lock, &attr);
    pthread_mutexattr_destroy(&attr);
}

static void
child_after_fork(void)
{
    /* A fork taken while another thread held the lock leaves it locked in the child,
       where that thread does not exist: start the child with a fresh one. The child
       keeps the patches (its memory is a copy) and may uninstall them. */
    memset(&g_lock, 0, sizeof(g_lock));
    init_lock();
}

static int
main_range_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    /* the first object is the main program, with glibc and musl alike */
    for (size_t i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        uintptr_t start = (uintptr_t)info->dlpi_addr + p->p_vaddr;
        if (p->p_type == PT_LOAD && p->p_memsz > 0) {
            if (g_exe_lo == 0 || start < g_exe_lo) {
                g_exe_lo = start;
            }
            if (start + p->p_memsz > g_exe_hi) {
                g_exe_hi = start + p->p_memsz;
            }
        }
    }
    return 1;
}

static void
init_once(void)
{
    long page = sysconf(_SC_PAGESIZE);
    g_page = page > 0 ? (size_t)page : 4096;
    g_vdso = (uintptr_t)getauxval(AT_SYSINFO_EHDR);
    g_ldso = (uintptr_t)getauxval(AT_BASE);
    ssize_t len = readlink("/proc/self/exe", g_exe, sizeof(g_exe) - 1);
    g_exe[len > 0 ? (size_t)len : 0] = '\0';
    dl_iterate_phdr(main_range_cb, NULL);
    init_lock();
    pthread_atfork(NULL, NULL, child_after_fork);
}

static int
find_hook(const char *name)
{
    if (!g_first[(unsigned char)name[0]]) {
        return -1;
    }
    for (size_t k = 0; k < g_nhooks; k++) {
        if (strcmp(g_hooks[k].name, name) == 0) {
            return (int)k;
        }
    }
    return -1;
}

/* ------------------------------------------------------------------------------------ */
/* One loaded object, as the program headers and the dynamic section describe it.       */

typedef struct {
    uintptr_t base;               /* load bias */
    uintptr_t lo, hi;             /* lowest and highest mapped address */
    uintptr_t dyn;                /* the dynamic section */
    uintptr_t relro_lo, relro_hi; /* pages the loader makes read-only after relocating */
    const ElfW(Phdr) *phdr;
    size_t phnum;
    const char *name;
    const ElfW(Sym) *symtab;
    const char *strtab;
    size_t strsz;
    const ElfW(Rela) *rela[2];
    size_t nrela[2];
} obj_view;

static bool
view_segments(const struct dl_phdr_info *info, obj_view *o)
{
    memset(o, 0, sizeof(*o));
    o->base = (uintptr_t)info->dlpi_addr;
    o->phdr = info->dlpi_phdr;
    o->phnum = info->dlpi_phnum;
    o->name = info->dlpi_name != NULL ? info->dlpi_name : "";
    o->lo = UINTPTR_MAX;
    for (size_t i = 0; i < o->phnum; i++) {
        const ElfW(Phdr) *p = &o->phdr[i];
        uintptr_t start = o->base + p->p_vaddr;
        if (p->p_type == PT_LOAD && p->p_memsz > 0) {
            if (start < o->lo) {
                o->lo = start;
            }
            if (start + p->p_memsz > o->hi) {
                o->hi = start + p->p_memsz;
            }
        }
        else if (p->p_type == PT_DYNAMIC) {
            o->dyn = start;
        }
        else if (p->p_type == PT_GNU_RELRO) {
            /* The loader (glibc and musl alike) protects whole pages: start and end are
               both rounded down, so a last partial page stays writable. */
            o->relro_lo = start & ~(uintptr_t)(g_page - 1);
            o->relro_hi = (start + p->p_memsz) & ~(uintptr_t)(g_page - 1);
        }
    }
    return o->dyn != 0 && o->lo < o->hi;
}

static inline bool
inside(const obj_view *o, uintptr_t addr, size_t size)
{
    return addr >= o->lo && addr <= o->hi && size <= o->hi - addr;
}

/* Read the dynamic section. Its address-valued entries are load-relative in the file;
   glibc rewrites most of them to absolute addresses in place when it can (not for a
   read-only dynamic section, as in the vDSO or on some architectures), musl never does.
   Which one this object has is decided once, from DT_STRTAB: an absolute address lies
   inside the object's mapping; a relative one lies there only once the bias is added.
   (An object mapped below its own size could be ambiguous; the first reading wins.) */
static bool
view_dynamic(obj_view *o)
{
    const ElfW(Dyn) *d = (const ElfW(Dyn) *)o->dyn;
    uintptr_t strtab = 0, symtab = 0, jmprel = 0, rela = 0;
    size_t strsz = 0, pltrelsz = 0, relasz = 0;
    intptr_t pltrel = DT_RELA;
    for (; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_STRTAB:
            strtab = d->d_un.d_ptr;
            break;
        case DT_SYMTAB:
            symtab = d->d_un.d_ptr;
            break;
        case DT_STRSZ:
            strsz = d->d_un.d_val;
            break;
        case DT_JMPREL:
            jmprel = d->d_un.d_ptr;
            break;
        case DT_PLTRELSZ:
            pltrelsz = d->d_un.d_val;
            break;
        case DT_PLTREL:
            pltrel = (intptr_t)d->d_un.d_val;
            break;
        case DT_RELA:
            rela = d->d_un.d_ptr;
            break;
        case DT_RELASZ:
            relasz = d->d_un.d_val;
            break;
        default:
            break;
        }
    }
    if (strtab == 0 || symtab == 0 || strsz == 0) {
        return false;
    }
    uintptr_t bias;
    if (o->base == 0 || inside(o, strtab, 1)) {
        bias = 0;
    }
    else if (inside(o, o->base + strtab, 1)) {
        bias = o->base;
    }
    else {
        return false;
    }
    if (!inside(o, strtab + bias, strsz) || !inside(o, symtab + bias, sizeof(ElfW(Sym)))) {
        return false;
    }
    o->strtab = (const char *)(strtab + bias);
    o->strsz = strsz;
    o->symtab = (const ElfW(Sym) *)(symtab + bias);
    if (jmprel != 0 && pltrel == DT_RELA && inside(o, jmprel + bias, pltrelsz)) {
        o->rela[0] = (const ElfW(Rela) *)(jmprel + bias);
        o->nrela[0] = pltrelsz / sizeof(ElfW(Rela));
    }
    if (rela != 0 && inside(o, rela + bias, relasz)) {
        o->rela[1] = (const ElfW(Rela) *)(rela + bias);
        o->nrela[1] = relasz / sizeof(ElfW(Rela));
    }
    return true;
}

/* The protection the program headers give the page holding addr once the loader is
   done: PROT_READ under RELRO, else the segment's flags; -1 when no writable or RELRO
   segment of this object holds it (a slot we must not touch). */
static int
slot_prot(const obj_view *o, uintptr_t addr)
{
    if (addr >= o->relro_lo && addr < o->relro_hi) {
        return PROT_READ;
    }
    for (size_t i = 0; i < o->phnum; i++) {
        const ElfW(Phdr) *p = &o->phdr[i];
        uintptr_t start = o->base + p->p_vaddr;
        if (p->p_type == PT_LOAD && addr >= start && addr - start < p->p_memsz) {
            if (!(p->p_flags & PF_W)) {
                return -1;
            }
            return PROT_WRITE | ((p->p_flags & PF_R) ? PROT_READ : 0) |
                   ((p->p_flags & PF_X) ? PROT_EXEC : 0);
        }
    }
    return -1;
}

/* True when addr lies in an executable segment of the object: where a not yet bound
   JUMP_SLOT points (the object's own PLT). */
static bool
in_exec(const obj_view *o, uintptr_t addr)
{
    for (size_t i = 0; i < o->phnum; i++) {
        const ElfW(Phdr) *p = &o->phdr[i];
        uintptr_t start = o->base + p->p_vaddr;
        if (p->p_type == PT_LOAD && (p->p_flags & PF_X) && addr >= start &&
            addr - start < p->p_memsz) {
            return true;
        }
    }
    return false;
}

static bool
is_self(const obj_view *o)
{
    if (g_vdso != 0 && g_vdso >= o->lo && g_vdso < o->hi) {
        return true; /* the vDSO */
    }
    if (g_ldso != 0 && o->base == g_ldso) {
        return true; /* the dynamic linker */
    }
    /* this mechanism's own object, and every object holding a replacement: their calls
       must reach the real functions */
    if (inside(o, (uintptr_t)(void *)&ng_got_install, 1)) {
        return true;
    }
    for (size_t k = 0; k < g_nhooks; k++) {
        if (inside(o, (uintptr_t)g_hooks[k].replacement, 1)) {
            return true;
        }
    }
#ifdef __GLIBC__
    /* Objects of another link-map namespace (dlmopen) have their own libc, whose errno
       and state the base namespace's functions do not share. The base namespace's list
       cannot change while dl_iterate_phdr runs this callback. */
    for (const struct link_map *l = _r_debug.r_map; l != NULL; l = l->l_next) {
        if ((uintptr_t)l->l_ld == o->dyn) {
            return false;
        }
    }
    return _r_debug.r_map != NULL;
#else
    return false;
#endif
}

/* Slot stores. A slot on a page the program headers leave writable is stored directly;
   a read-only page (RELRO) is made writable, written, and given back its protection.
   Consecutive slots on the same page share one pair of mprotect calls: the page stays
   writable while the writes of one object move along it (each mprotect of a mapping
   that other threads run in costs a TLB shootdown on every core they use). */
typedef struct {
    uintptr_t page;
    int prot; /* the protection to give back */
    bool open;
} page_window;

static void
store_ptr(void **slot, void *value)
{
    __atomic_store_n(slot, value, __ATOMIC_SEQ_CST);
}

/* Give the open page back its protection: 0, or -1 with errno (the page stays writable:
   harmless for correctness, reported as a failure). */
static int
window_close(page_window *w)
{
    if (!w->open) {
        return 0;
    }
    w->open = false;
    return mprotect((void *)w->page, g_page, w->prot);
}

/* Store value in slot, whose page has protection `prot` once the loader is done.
   0, or -1 with errno when the page could not be made writable (nothing written). */
static int
window_write(page_window *w, void **slot, void *value, int prot, int *close_errno)
{
    if (prot & PROT_WRITE) {
        store_ptr(slot, value);
        return 0;
    }
    uintptr_t page = (uintptr_t)slot & ~(uintptr_t)(g_page - 1);
    if (!w->open || w->page != page) {
        if (window_close(w) != 0) {
            *close_errno = errno;
        }
        if (mprotect((void *)page, g_page, prot | PROT_WRITE) != 0) {
            return -1;
        }
        *w = (page_window){page, prot, true};
    }
    store_ptr(slot, value);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* The real protection of pages, from /proc/self/maps, read at most once per scan.      */
/* A page the program headers put under RELRO that is still writable belongs to an      */
/* object the loader is relocating right now on another thread: it will make the page   */
/* read-only when it is done, and a store of ours in between would race with it (or     */
/* make the page read-only under its feet). Such objects wait for the next scan.        */

typedef struct {
    uintptr_t lo, hi;
    bool writable;
} map_area;

typedef struct {
    map_area *v;
    size_t n;
    int state; /* 0 not read, 1 read, -1 unavailable */
} maps_t;

static void
maps_load(maps_t *m)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    m->state = -1;
    if (fd < 0) {
        return;
    }
    for (;;) {
        if (cap - len < 4096) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nbuf = realloc(buf, ncap);
            if (nbuf == NULL) {
                goto done;
            }
            buf = nbuf;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            goto done;
        }
        if (r == 0) {
            break;
        }
        len += (size_t)r;
    }
    buf[len] = '\0';
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) {
        lines += buf[i] == '\n';
    }
    m->v = malloc((lines + 1) * sizeof(map_area));
    if (m->v == NULL) {
        goto done;
    }
    for (char *p = buf; *p != '\0';) {
        char *end;
        unsigned long long lo = strtoull(p, &end, 16);
        if (*end == '-') {
            unsigned long long hi = strtoull(end + 1, &end, 16);
            if (*end == ' ' && end[1] != '\0' && end[2] != '\0' && m->n <= lines) {
                m->v[m->n].lo = (uintptr_t)lo;
                m->v[m->n].hi = (uintptr_t)hi;
                m->v[m->n].writable = end[2] == 'w';
                m->n++;
            }
        }
        char *nl = strchr(p, '\n');
        if (nl == NULL) {
            break;
        }
        p = nl + 1;
    }
    m->state = 1;
done:
    free(buf);
    close(fd);
}

/* 1 when the page is read-only now (the loader is done with it), 0 when it is not or
   is not mapped as far as the snapshot knows. Without /proc the loader is trusted. */
static int
maps_settled(maps_t *m, uintptr_t addr)
{
    if (m->state == 0) {
        maps_load(m);
    }
    if (m->state < 0) {
        return 1;
    }
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->v[mid].hi <= addr) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo < m->n && m->v[lo].lo <= addr && !m->v[lo].writable;
}

/* ------------------------------------------------------------------------------------ */
/* Walks. Each runs under g_lock, inside dl_iterate_phdr.                               */

typedef struct {
    maps_t maps;
    page_window window; /* of the object being scanned */
    size_t deferred;
    size_t failed;
    char fail_object[256]; /* copied: the loader's string may be gone after the walk */
    const char *fail_symbol;
    int fail_errno;
} scan_ctx;

static void
scan_failed(scan_ctx *ctx, const obj_view *o, const char *symbol, int err)
{
    ctx->failed++;
    ctx->fail_errno = err;
    const char *name = o->name[0] != '\0' ? o->name : g_exe;
    size_t len = strlen(name);
    if (len >= sizeof(ctx->fail_object)) {
        len = sizeof(ctx->fail_object) - 1;
    }
    memcpy(ctx->fail_object, name, len);
    ctx->fail_object[len] = '\0';
    ctx->fail_symbol = symbol;
}

static bool
reserve_rec(void)
{
    if (g_nrecs < g_caprecs) {
        return true;
    }
    size_t ncap = g_caprecs ? g_caprecs * 2 : 64;
    patch_rec *n = realloc(g_recs, ncap * sizeof(*n));
    if (n == NULL) {
        return false;
    }
    g_recs = n;
    g_caprecs = ncap;
    return true;
}

static const char *
object_path(const obj_view *o)
{
    return o->name[0] != '\0' ? o->name : g_exe;
}

static void
scan_slot(scan_ctx *ctx, const obj_view *o, const ElfW(Rela) *r)
{
    unsigned type = (unsigned)NG_R_TYPE(r->r_info);
    if (type != NG_R_JUMP_SLOT && type != NG_R_GLOB_DAT &&
        !(type == NG_R_ABS && r->r_addend == 0)) {
        return;
    }
    size_t symi = (size_t)NG_R_SYM(r->r_info);
    if (symi == 0) {
        return;
    }
    const ElfW(Sym) *sym = &o->symtab[symi];
    /* An object that defines the name itself is an implementation (libc, a sanitizer
       runtime, an LD_PRELOAD interposer), not a caller. */
    if (sym->st_shndx != SHN_UNDEF || sym->st_name >= o->strsz) {
        return;
    }
    unsigned st = NG_ST_TYPE(sym->st_info);
    if (st != STT_FUNC && st != STT_NOTYPE && st != STT_GNU_IFUNC) {
        return;
    }
    int k = find_hook(o->strtab + sym->st_name);
    if (k < 0) {
        return;
    }
    const hook_entry *h = &g_hooks[k];
    uintptr_t addr = o->base + r->r_offset;
    if (h->original == NULL || (addr & (sizeof(void *) - 1)) != 0 ||
        !inside(o, addr, sizeof(void *))) {
        return;
    }
    int prot = slot_prot(o, addr);
    if (prot < 0) {
        return;
    }
    void **slot = (void **)addr;
    void *cur = __atomic_load_n(slot, __ATOMIC_RELAXED);
    if (cur == h->replacement) {
        return; /* patched by an earlier scan */
    }
    if (cur != h->original && (h->alias == NULL || cur != h->alias) &&
        !(type == NG_R_JUMP_SLOT && in_exec(o, (uintptr_t)cur))) {
        g_stats.foreign++;
        return;
    }
    if (!(prot & PROT_WRITE) && !maps_settled(&ctx->maps, addr)) {
        ctx->deferred++;
        return;
    }
    char *path = NULL;
    int close_errno = 0;
    if (!reserve_rec() || (path = strdup(object_path(o))) == NULL) {
        free(path);
        scan_failed(ctx, o, h->name, ENOMEM);
        return;
    }
    if (window_write(&ctx->window, slot, h->replacement, prot, &close_errno) != 0) {
        scan_failed(ctx, o, h->name, errno);
        free(path);
        return;
    }
    if (close_errno != 0) {
        scan_failed(ctx, o, "a page before", close_errno);
    }
    g_recs[g_nrecs++] = (patch_rec){
        .slot = slot,
        .old = cur,
        .replacement = h->replacement,
        .base = o->base,
        .dyn = o->dyn,
        .object = path,
        .symbol = h->name,
    };
    g_stats.patched++;
}

static int
scan_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    scan_ctx *ctx = arg;
    obj_view o;
    (void)size;
    if (!view_segments(info, &o) || is_self(&o) || !view_dynamic(&o)) {
        return 0;
    }
    g_stats.objects++;
    for (int t = 0; t < 2; t++) {
        for (size_t i = 0; i < o.nrela[t]; i++) {
            scan_slot(ctx, &o, &o.rela[t][i]);
        }
    }
    if (window_close(&ctx->window) != 0) {
        scan_failed(ctx, &o, "the last page", errno);
    }
    return 0;
}

/* A full scan under g_lock: 0, or -1 with g_error set when a slot could not be written. */
static int
scan_all(void)
{
    scan_ctx ctx = {0};
    dl_iterate_phdr(scan_cb, &ctx);
    free(ctx.maps.v);
    g_stats.scans++;
    g_stats.failed += ctx.failed;
    __atomic_store_n(&g_deferred, ctx.deferred, __ATOMIC_RELAXED);
    if (ctx.failed > 0) {
        snprintf(g_error, sizeof(g_error), "cannot patch the GOT slot of %s in %s: %s",
                 ctx.fail_symbol, ctx.fail_object, strerror(ctx.fail_errno));
        return -1;
    }
    return 0;
}

static int
restore_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    obj_view o;
    page_window window = {0, 0, false};
    int close_errno = 0;
    (void)size;
    (void)arg;
    if (!view_segments(info, &o)) {
        return 0;
    }
    /* newest first: when an object was unloaded and another mapped at the same place,
       the newer record holds the value to put back, and the older one then finds the
       slot no longer holding the replacement */
    for (size_t i = g_nrecs; i-- > 0;) {
        patch_rec *r = &g_recs[i];
        if (r->base != o.base || r->dyn != o.dyn) {
            continue;
        }
        r->mark = true;
        int prot = slot_prot(&o, (uintptr_t)r->slot);
        if (prot < 0 || __atomic_load_n(r->slot, __ATOMIC_RELAXED) != r->replacement) {
            continue; /* someone else rewrote it since: theirs stays */
        }
        if (window_write(&window, r->slot, r->old, prot, &close_errno) != 0) {
            g_stats.failed++;
        }
    }
    if (window_close(&window) != 0 || close_errno != 0) {
        g_stats.failed++;
    }
    return 0;
}

/* Set `mark` on the records whose object is still loaded and whose slot still holds the
   replacement. */
static int
mark_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    obj_view o;
    (void)size;
    (void)arg;
    if (!view_segments(info, &o)) {
        return 0;
    }
    for (size_t i = 0; i < g_nrecs; i++) {
        patch_rec *r = &g_recs[i];
        if (r->base == o.base && r->dyn == o.dyn && slot_prot(&o, (uintptr_t)r->slot) >= 0 &&
            __atomic_load_n(r->slot, __ATOMIC_RELAXED) == r->replacement) {
            r->mark = true;
        }
    }
    return 0;
}

static void
clear_marks(void)
{
    for (size_t i = 0; i < g_nrecs; i++) {
        g_recs[i].mark = false;
    }
}

/* Drop the records that are not marked. */
static void
drop_unmarked(void)
{
    size_t keep = 0;
    for (size_t i = 0; i < g_nrecs; i++) {
        if (g_recs[i].mark) {
            g_recs[keep++] = g_recs[i];
        }
        else {
            free(g_recs[i].object);
        }
    }
    g_nrecs = keep;
}

static void
restore_all(void)
{
    clear_marks();
    dl_iterate_phdr(restore_cb, NULL);
    for (size_t i = 0; i < g_nrecs; i++) {
        free(g_recs[i].object);
    }
    free(g_recs);
    g_recs = NULL;
    g_nrecs = g_caprecs = 0;
}

/* ------------------------------------------------------------------------------------ */
/* Load and unload counters: a dlopen that loaded nothing new needs no scan.             */

typedef struct {
    unsigned long long adds, subs;
    bool known;
} load_counts;

static int
counts_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    load_counts *c = arg;
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs)) {
        c->adds = info->dlpi_adds;
        c->subs = info->dlpi_subs;
        c->known = true;
    }
    return 1;
}

static load_counts
counts_now(void)
{
    load_counts c = {0, 0, false};
    dl_iterate_phdr(counts_cb, &c);
    return c;
}

/* ------------------------------------------------------------------------------------ */
/* Resolving the real functions (outside g_lock: dlsym and dladdr take the loader lock). */

typedef struct {
    char **v;
    size_t n, cap;
} name_list;

/* dl_iterate_phdr callback: the paths of the loaded objects but the main program and
   the vDSO, in load order. */
static int
collect_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    name_list *names = arg;
    (void)size;
    if (info->dlpi_name == NULL || info->dlpi_name[0] != '/') {
        return 0;
    }
    if (names->n == names->cap) {
        size_t ncap = names->cap ? names->cap * 2 : 32;
        char **nv = realloc(names->v, ncap * sizeof(char *));
        if (nv == NULL) {
            return 1;
        }
        names->v = nv;
        names->cap = ncap;
    }
    names->v[names->n] = strdup(info->dlpi_name);
    if (names->v[names->n] != NULL) {
        names->n++;
    }
    return 0;
}

/* True when a symbol *defined* in its object starts at p. glibc's dladdr also matches the
   undefined symbol that a canonical PLT entry carries (its value is the entry's address),
   so the symbol's section is checked there. */
static bool
defined_at(void *p)
{
    Dl_info di;
#ifdef __GLIBC__
    const ElfW(Sym) *sym = NULL;
    return dladdr1(p, &di, (void **)&sym, RTLD_DL_SYMENT) != 0 && di.dli_saddr == p &&
           sym != NULL && sym->st_shndx != SHN_UNDEF;
#else
    return dladdr(p, &di) != 0 && di.dli_saddr == p;
#endif
}

/* The real function: what dlsym(RTLD_DEFAULT) finds, unless that is a canonical PLT
   entry of a non-PIE main program (one that takes the function's address, so that every
   object binds to that entry, which jumps through the program's own, patched, slot).
   Then the definition behind it is searched object by object, and the entry is kept as
   `alias`: slots holding it are patched too. NULL when there is no definition. */
static void *
resolve_real(const char *name, void **alias)
{
    void *p = dlsym(RTLD_DEFAULT, name);
    *alias = NULL;
    if (p == NULL || (uintptr_t)p < g_exe_lo || (uintptr_t)p >= g_exe_hi || defined_at(p)) {
        return p;
    }
    *alias = p;
    name_list names = {NULL, 0, 0};
    void *found = NULL;
    dl_iterate_phdr(collect_cb, &names);
    for (size_t i = 0; i < names.n && found == NULL; i++) {
        void *h = dlopen(names.v[i], RTLD_LAZY | RTLD_NOLOAD);
        if (h != NULL) {
            void *q = dlsym(h, name);
            if (q != NULL && q != p && defined_at(q)) {
                found = q;
            }
            dlclose(h);
        }
    }
    for (size_t i = 0; i < names.n; i++) {
        free(names.v[i]);
    }
    free(names.v);
    return found;
}

/* ------------------------------------------------------------------------------------ */
/* install / uninstall / queries                                                          */

static const char *const self_names[N_SELF] = {
    "dlopen", "dlclose", "dlsym",
#ifdef __GLIBC__
    "dlmopen", "dlvsym",
#endif
};

static void *
self_replacement(size_t i)
{
    switch (i) {
    case 0:
        return (void *)&hook_dlopen;
    case 1:
        return (void *)&hook_dlclose;
    case 2:
        return (void *)ng_got__dlsym_entry;
#ifdef __GLIBC__
    case 3:
        return (void *)&hook_dlmopen;
    case 4:
        return (void *)ng_got__dlvsym_entry;
#endif
    default:
        return NULL;
    }
}

int
ng_got_install(const ng_got_hook *hooks, size_t n)
{
    hook_entry table[NG_GOT_MAX_HOOKS + N_SELF];
    size_t count = 0;

    pthread_once(&g_once, init_once);
    g_error[0] = '\0';
    if (n > NG_GOT_MAX_HOOKS) {
        set_error("too many hooks (at most %s)%s", "32", "");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (hooks[i].name == NULL || hooks[i].name[0] == '\0' || hooks[i].replacement == NULL ||
            hooks[i].original == NULL) {
            set_error("hook %s has no name, replacement or original pointer%s",
                      hooks[i].name ? hooks[i].name : "(null)", "");
            return -1;
        }
        for (size_t j = 0; j < N_SELF; j++) {
            if (strcmp(hooks[i].name, self_names[j]) == 0) {
                set_error("%s is hooked by the mechanism itself%s", hooks[i].name, "");
                return -1;
            }
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(hooks[i].name, hooks[j].name) == 0) {
                set_error("%s appears twice in the table%s", hooks[i].name, "");
                return -1;
            }
        }
        table[count++] = (hook_entry){hooks[i].name, hooks[i].replacement, NULL, NULL,
                                      hooks[i].original};
    }
    for (size_t j = 0; j < N_SELF; j++) {
        table[count++] = (hook_entry){self_names[j], self_replacement(j), NULL, NULL, NULL};
    }
    /* the real functions, once, before any slot changes (loader calls: no g_lock) */
    for (size_t i = 0; i < count; i++) {
        table[i].original = resolve_real(table[i].name, &table[i].alias);
        if (table[i].original == table[i].replacement) {
            set_error("%s already resolves to its replacement%s", table[i].name, "");
            return -1;
        }
    }

    pthread_mutex_lock(&g_lock);
    if (__atomic_load_n(&g_installed, __ATOMIC_ACQUIRE)) {
        pthread_mutex_unlock(&g_lock);
        set_error("already installed%s%s", "", "");
        return -1;
    }
    memset(g_first, 0, sizeof(g_first));
    for (size_t i = 0; i < count; i++) {
        g_hooks[i] = table[i];
        g_first[(unsigned char)table[i].name[0]] = 1;
        if (table[i].out != NULL) {
            *table[i].out = table[i].original;
        }
    }
    g_nhooks = count;
    memset(&g_stats, 0, sizeof(g_stats));
    __atomic_store_n(&g_installed, 1, __ATOMIC_RELEASE);
    int rc = scan_all();
    if (rc != 0) {
        __atomic_store_n(&g_installed, 0, __ATOMIC_RELEASE);
        restore_all();
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

void
ng_got_uninstall(void)
{
    pthread_once(&g_once, init_once);
    pthread_mutex_lock(&g_lock);
    if (__atomic_load_n(&g_installed, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&g_installed, 0, __ATOMIC_RELEASE);
        restore_all();
        __atomic_store_n(&g_deferred, 0, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&g_lock);
}

int
ng_got_installed(void)
{
    return __atomic_load_n(&g_installed, __ATOMIC_ACQUIRE);
}

int
ng_got_rescan(void)
{
    int rc = 0;
    int saved = errno;
    pthread_once(&g_once, init_once);
    pthread_mutex_lock(&g_lock);
    if (__atomic_load_n(&g_installed, __ATOMIC_ACQUIRE)) {
        rc = scan_all();
    }
    pthread_mutex_unlock(&g_lock);
    errno = saved;
    return rc;
}

void
ng_got_get_stats(ng_got_stats *out)
{
    pthread_once(&g_once, init_once);
    pthread_mutex_lock(&g_lock);
    *out = g_stats;
    out->deferred = __atomic_load_n(&g_deferred, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&g_lock);
}

int
ng_got_snapshot(ng_got_patch **out, size_t *n)
{
    int rc = 0;
    *out = NULL;
    *n = 0;
    pthread_once(&g_once, init_once);
    pthread_mutex_lock(&g_lock);
    clear_marks();
    dl_iterate_phdr(mark_cb, NULL);
    size_t live = 0, chars = 0;
    for (size_t i = 0; i < g_nrecs; i++) {
        if (g_recs[i].mark) {
            live++;
            chars += strlen(g_recs[i].object) + strlen(g_recs[i].symbol) + 2;
        }
    }
    ng_got_patch *v = malloc(live * sizeof(ng_got_patch) + chars + 1);
    if (v == NULL) {
        rc = -1;
        goto done;
    }
    char *s = (char *)(v + live);
    size_t j = 0;
    for (size_t i = 0; i < g_nrecs; i++) {
        const patch_rec *r = &g_recs[i];
        if (!r->mark) {
            continue;
        }
        size_t lo = strlen(r->object) + 1, ls = strlen(r->symbol) + 1;
        memcpy(s, r->object, lo);
        v[j].object = s;
        s += lo;
        memcpy(s, r->symbol, ls);
        v[j].symbol = s;
        s += ls;
        v[j].slot = r->slot;
        v[j].old = r->old;
        j++;
    }
    *out = v;
    *n = live;
done:
    pthread_mutex_unlock(&g_lock);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* The dl* hooks.                                                                         */

/* After a load: scan if something new was mapped, or an earlier scan left an object it
   found mid-relocation. Keeps errno (callers read it after dlopen). */
static void
after_load(load_counts before)
{
    load_counts now = counts_now();
    if (!__atomic_load_n(&g_installed, __ATOMIC_ACQUIRE)) {
        return;
    }
    if (!now.known || now.adds != before.adds || __atomic_load_n(&g_deferred, __ATOMIC_RELAXED)) {
        ng_got_rescan();
    }
}

#ifdef __GLIBC__
/* The library search list of a loaded object (RTLD_DI_SERINFO), or NULL. */
static Dl_serinfo *
search_list(void *map)
{
    Dl_serinfo size;
    if (dlinfo(map, RTLD_DI_SERINFOSIZE, &size) != 0) {
        return NULL;
    }
    Dl_serinfo *si = malloc(size.dls_size);
    if (si == NULL) {
        return NULL;
    }
    si->dls_size = size.dls_size;
    si->dls_cnt = size.dls_cnt;
    if (dlinfo(map, RTLD_DI_SERINFO, si) != 0) {
        free(si);
        return NULL;
    }
    return si;
}

static bool
in_list(const Dl_serinfo *si, const char *dir)
{
    for (unsigned i = 0; si != NULL && i < si->dls_cnt; i++) {
        if (strcmp(si->dls_serpath[i].dls_name, dir) == 0) {
            return true;
        }
    }
    return false;
}

static bool
exists_in(const char *dir, const char *file, char *path, size_t cap)
{
    int len = snprintf(path, cap, "%s/%s", dir, file);
    return len > 0 && (size_t)len < cap && access(path, F_OK) == 0;
}

/* glibc resolves a bare library name against the *caller's* DT_RPATH/DT_RUNPATH (with
   $ORIGIN the caller's directory). Through this hook the caller of the real dlopen is
   this object, whose search list lacks them, so the caller's own directories are tried
   here first, in the caller's order; a directory both lists share (LD_LIBRARY_PATH, the
   system directories) that holds the file ends the search in favour of the plain call,
   which also consults ld.so.cache. */
static void *
open_like(void *caller, const char *file, int mode)
{
    struct link_map *map = NULL, *self = NULL;
    Dl_info di;
    if (file == NULL || strchr(file, '/') != NULL ||
        dladdr1(caller, &di, (void **)&map, RTLD_DL_LINKMAP) == 0 || map == NULL ||
        dladdr1((void *)&ng_got_install, &di, (void **)&self, RTLD_DL_LINKMAP) == 0 ||
        self == NULL || map == self) {
        return dlopen(file, mode);
    }
    void *h = dlopen(file, mode | RTLD_NOLOAD); /* already loaded: same answer for all */
    if (h != NULL) {
        return h;
    }
    Dl_serinfo *theirs = search_list(map), *ours = search_list(self);
    char path[4096];
    for (unsigned i = 0; theirs != NULL && ours != NULL && i < theirs->dls_cnt; i++) {
        const char *dir = theirs->dls_serpath[i].dls_name;
        if (!exists_in(dir, file, path, sizeof(path))) {
            continue;
        }
        if (in_list(ours, dir)) {
            break;
        }
        if ((h = dlopen(path, mode)) != NULL) {
            break;
        }
    }
    free(theirs);
    free(ours);
    return h != NULL ? h : dlopen(file, mode);
}

static void *
hook_dlmopen(Lmid_t lmid, const char *file, int mode)
{
    load_counts before = counts_now();
    void *h = dlmopen(lmid, file, mode);
    int saved = errno;
    if (lmid == LM_ID_BASE) {
        after_load(before);
    }
    errno = saved;
    return h;
}
#else
static void *
open_like(void *caller, const char *file, int mode)
{
    (void)caller; /* musl searches the same paths whoever calls */
    return dlopen(file, mode);
}
#endif

static void *
hook_dlopen(const char *file, int mode)
{
    void *caller = __builtin_return_address(0);
    load_counts before = counts_now();
    void *h = open_like(caller, file, mode);
    int saved = errno;
    after_load(before);
    errno = saved;
    return h;
}

static int
hook_dlclose(void *handle)
{
    load_counts before = counts_now();
    int rc = dlclose(handle);
    int saved = errno;
    load_counts now = counts_now();
    if (!now.known || now.subs != before.subs) {
        /* forget the patches of objects that are gone */
        pthread_mutex_lock(&g_lock);
        if (g_nrecs > 0) {
            clear_marks();
            dl_iterate_phdr(mark_cb, NULL);
            drop_unmarked();
        }
        pthread_mutex_unlock(&g_lock);
    }
    errno = saved;
    return rc;
}

/* What dlsym/dlvsym return: the replacement when the lookup found the real function of
   a hooked name (so ctypes, or any code that looks functions up by name, calls it). */
static void *
substitute(void *found)
{
    if (found == NULL || !__atomic_load_n(&g_installed, __ATOMIC_ACQUIRE)) {
        return found;
    }
    pthread_mutex_lock(&g_lock);
    if (__atomic_load_n(&g_installed, __ATOMIC_ACQUIRE)) {
        for (size_t k = 0; k < g_nhooks; k++) {
            if (g_hooks[k].original == found ||
                (g_hooks[k].alias != NULL && g_hooks[k].alias == found)) {
                found = g_hooks[k].replacement;
                break;
            }
        }
    }
    pthread_mutex_unlock(&g_lock);
    return found;
}

void *ng_got__dlsym_impl(void *handle, const char *name) __attribute__((visibility("hidden")));
#ifdef __GLIBC__
/* glibc's RTLD_DEFAULT searches the caller's scope: the global scope, then the group of
   the object that loaded the caller's family (for a library dlopen'd RTLD_LOCAL: itself
   and its dependencies). From here the first part is the same; for the second, the
   caller's own group is searched when the first finds nothing. (For a dependency of
   such a library glibc would search the whole family's group: a narrower answer here.) */
static void *
default_lookup(void *caller, const char *name, const char *version)
{
    void *p = version ? dlvsym(RTLD_DEFAULT, name, version) : dlsym(RTLD_DEFAULT, name);
    struct link_map *map = NULL;
    Dl_info di;
    if (p == NULL && dladdr1(caller, &di, (void **)&map, RTLD_DL_LINKMAP) != 0 && map != NULL) {
        p = version ? dlvsym(map, name, version) : dlsym(map, name);
    }
    return p;
}
#endif

/* Every handle but RTLD_NEXT. An explicit handle does not depend on the caller. */
void *
ng_got__dlsym_impl(void *handle, const char *name)
{
#ifdef __GLIBC__
    if (handle == RTLD_DEFAULT) {
        return substitute(default_lookup(__builtin_return_address(0), name, NULL));
    }
#endif
    return substitute(dlsym(handle, name));
}

#ifdef __GLIBC__
void *ng_got__dlvsym_impl(void *handle, const char *name, const char *version)
    __attribute__((visibility("hidden")));
void *
ng_got__dlvsym_impl(void *handle, const char *name, const char *version)
{
    if (handle == RTLD_DEFAULT) {
        return substitute(default_lookup(__builtin_return_address(0), name, version));
    }
    return substitute(dlvsym(handle, name, version));
}
#endif

/* The entries: RTLD_NEXT ((void *)-1, in the first argument register) means "the next
   definition after the calling object", which glibc and musl find from the return
   address. It jumps straight to the real function through this object's own PLT (never
   patched), so the loader sees the original caller's return address; the answer is not
   substituted either (the code asking is an interposer that wants the real function).
   Anything else jumps to the C code above. */
#if defined(__x86_64__)
#define NG_DLSYM_ENTRY(entry, impl, real)                                                  \
    __asm__("  .text\n"                                                                    \
            "  .p2align 4\n"                                                               \
            "  .globl " #entry "\n"                                                        \
            "  .hidden " #entry "\n"                                                       \
            "  .type " #entry ", @function\n" #entry ":\n"                                 \
            "  .byte 0xf3, 0x0f, 0x1e, 0xfa\n" /* endbr64 */                               \
            "  cmpq $-1, %rdi\n"                                                           \
            "  je 1f\n"                                                                    \
            "  jmp " #impl "\n"                                                            \
            "1:\n"                                                                         \
            "  jmp " #real "@PLT\n"                                                        \
            "  .size " #entry ", .-" #entry "\n")
#elif defined(__aarch64__)
#define NG_DLSYM_ENTRY(entry, impl, real)                                                  \
    __asm__("  .text\n"                                                                    \
            "  .p2align 2\n"                                                               \
            "  .globl " #entry "\n"                                                        \
            "  .hidden " #entry "\n"                                                       \
            "  .type " #entry ", %function\n" #entry ":\n"                                 \
            "  hint #34\n" /* bti c */                                                     \
            "  cmn x0, #1\n"                                                               \
            "  b.eq 1f\n"                                                                  \
            "  b " #impl "\n"                                                              \
            "1:\n"                                                                         \
            "  b " #real "\n"                                                              \
            "  .size " #entry ", .-" #entry "\n")
#endif

NG_DLSYM_ENTRY(ng_got__dlsym_entry, ng_got__dlsym_impl, dlsym);
#ifdef __GLIBC__
NG_DLSYM_ENTRY(ng_got__dlvsym_entry, ng_got__dlvsym_impl, dlvsym);
#endif

#endif /* NG_GOT_ARCH */
#endif /* __linux__ */
