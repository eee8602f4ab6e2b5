/*
 * ng_got -- native mode's in-process mechanism: point the GOT entries of every loaded
 * shared object for a table of libc functions at replacement functions, and undo it.
 *
 * Python-free, Linux only (glibc; musl compiles, see docs/internals.md "The GOT
 * mechanism"): on any other system this header declares nothing and ng_got.c compiles to
 * an empty object.
 *
 * What it does, in short:
 *   - install: resolve each name's real function once (dlsym), then walk every loaded
 *     object (dl_iterate_phdr) and rewrite each JUMP_SLOT, GLOB_DAT or absolute-pointer
 *     relocation of an undefined symbol of that name, whose slot holds the real function
 *     or a lazy-binding stub, to the replacement; slots under RELRO are made writable for
 *     the store and read-only again. Every (slot, old value) is remembered.
 *   - dlopen/dlmopen/dlclose/dlsym/dlvsym are hooked the same way: a library loaded later
 *     is patched when the real dlopen returns, and a dlsym lookup that finds the real
 *     function of a hooked name returns the replacement (this is how ctypes finds it).
 *   - uninstall: put every remembered old value back, in objects that are still loaded
 *     and whose slot still holds the replacement.
 *
 * Skipped: this mechanism's own object and the objects holding the replacements, the
 * vDSO, the dynamic linker, and (glibc) objects outside the base link-map namespace.
 *
 * Threads: install, uninstall and the rescans are serialised by one mutex; slot stores are
 * single aligned pointer stores, so another thread calling through a slot sees the old or
 * the new function, never a torn pointer. No loader call (dlopen, dlsym, dladdr, dlinfo)
 * is made while that mutex is held, so a library constructor that calls dlopen from
 * inside the loader cannot deadlock against a scan.
 */
#ifndef NG_GOT_H
#define NG_GOT_H

#ifdef __linux__

#include <stddef.h>

/* One hooked function. `original` receives the real function (never a lazy-binding
   stub) before any slot is rewritten, and keeps it after uninstall: a replacement may
   still be running on another thread, or be reached through a pointer that dlsym
   returned while the hooks were in place. It is NULL when the process has no such
   function (that name is then not hooked). */
typedef struct ng_got_hook {
    const char *name;
    void *replacement;
    void **original;
} ng_got_hook;

/* At most this many hooks per table (the dl* functions the mechanism hooks itself do
   not count). */
#define NG_GOT_MAX_HOOKS 32

/* Install the table: 0, or -1 with ng_got_error() saying why (nothing is left patched).
   Fails when already installed; uninstall first. The table is copied; the name strings
   must stay valid until uninstall. */
int ng_got_install(const ng_got_hook *hooks, size_t n);

/* Restore every patched slot. Safe to call when not installed. */
void ng_got_uninstall(void);

/* 1 while a table is installed. */
int ng_got_installed(void);

/* Scan the loaded objects again (objects loaded by code whose dlopen is not hooked,
   such as libc's own NSS modules, or objects a scan found mid-relocation). 0, or -1
   with ng_got_error() set when a slot could not be written. No-op when not installed. */
int ng_got_rescan(void);

/* The reason for the last failed ng_got_install(), or "" (a static buffer; not
   thread-safe: read it on the thread that called install). */
const char *ng_got_error(void);

/* Counters since the last install. */
typedef struct ng_got_stats {
    size_t objects;  /* objects whose relocations were read (all scans) */
    size_t scans;    /* walks of the loaded objects (install, and after dlopen) */
    size_t patched;  /* slots patched and remembered (restored or not) */
    size_t foreign;  /* slots of a hooked name left alone: they held neither the real
                        function nor a lazy stub (another interposer's, or a binding to
                        another definition) */
    size_t failed;   /* slots that could not be written (mprotect refused) */
    size_t deferred; /* slots the last scan left for later: their object was still being
                        relocated by the loader on another thread (its RELRO pages not yet
                        read-only); the next dlopen, or ng_got_rescan(), takes them */
} ng_got_stats;

void ng_got_get_stats(ng_got_stats *out);

/* One live patch, as ng_got_snapshot() lists it. */
typedef struct ng_got_patch {
    const char *object; /* the object's path ("" for none known) */
    const char *symbol; /* the hooked name */
    void **slot;        /* the patched slot */
    void *old;          /* what it held before, and will hold again after uninstall */
} ng_got_patch;

/* The patches in place now (object still loaded, slot still holding the replacement),
   oldest first: *out is one malloc'd block (entries, then their strings) that the caller
   frees with free(); *n its number of entries. 0, or -1 when out of memory. */
int ng_got_snapshot(ng_got_patch **out, size_t *n);

#endif /* __linux__ */
#endif /* NG_GOT_H */
