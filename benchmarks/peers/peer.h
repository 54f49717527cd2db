/* Shared helpers for the UVm benchmark peers (header-only, C11).
 *
 * Every peer prints its results on stdout as lines of the form
 *   PEER <scenario> <unit> <median> reps=<n> <extra key=value ...>
 * and nothing else; diagnostics go to stderr. */
#ifndef UVM_PEER_H
#define UVM_PEER_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PEER_PAGE 4096UL

static inline uint64_t peer_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

__attribute__((noreturn, format(printf, 1, 2)))
static inline void peer_die(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    fprintf(stderr, "peer: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (errno=%d: %s)\n", saved, strerror(saved));
    exit(1);
}

/* Returns 1 when "--quick" is among the arguments; rejects anything else. */
static inline int peer_parse_quick(int argc, char **argv)
{
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else {
            fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
            exit(2);
        }
    }
    return quick;
}

static inline int peer_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of n samples (sorts the array in place). */
static inline double peer_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, peer_cmp_double);
    return (n % 2) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif
