/* LD_PRELOAD shim for tests/publish/test_reader_swap.py: the N-th open of one file first renames
 * another file onto it, i.e. a publish swaps the catalog exactly between two of DuckDB's opens.
 * SWAP_TARGET: the path watched; SWAP_SOURCE: the file renamed onto it; SWAP_AT_OPEN: N (1-based). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static int opens = 0;

static void maybe_swap(const char *path) {
    const char *target = getenv("SWAP_TARGET");
    const char *source = getenv("SWAP_SOURCE");
    const char *at = getenv("SWAP_AT_OPEN");
    if (!target || !source || !at || !path || strcmp(path, target) != 0) return;
    if (++opens == atoi(at)) rename(source, target);
}

static mode_t mode_of(int flags, va_list ap) {
    return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

#define SHIM_OPEN(name)                                                         \
    int name(const char *path, int flags, ...) {                               \
        static int (*real)(const char *, int, ...) = NULL;                     \
        va_list ap;                                                            \
        va_start(ap, flags);                                                   \
        mode_t mode = mode_of(flags, ap);                                      \
        va_end(ap);                                                            \
        if (!real) real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, #name); \
        maybe_swap(path);                                                      \
        return real(path, flags, mode);                                        \
    }

#define SHIM_OPENAT(name)                                                       \
    int name(int dirfd, const char *path, int flags, ...) {                    \
        static int (*real)(int, const char *, int, ...) = NULL;                \
        va_list ap;                                                            \
        va_start(ap, flags);                                                   \
        mode_t mode = mode_of(flags, ap);                                      \
        va_end(ap);                                                            \
        if (!real) real = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, #name); \
        maybe_swap(path);                                                      \
        return real(dirfd, path, flags, mode);                                 \
    }

SHIM_OPEN(open)
SHIM_OPEN(open64)
SHIM_OPENAT(openat)
SHIM_OPENAT(openat64)
