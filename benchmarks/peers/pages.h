/* Page choices shared by the snapshot peers (fork_server.c, image_reset.c) and mirrored in
 * UVm's SnapshotBenchmarks.cs, so a seed names the same pages in C and in C#.
 *
 * The generator is splitmix64. "random": N distinct pages of P, uniform, drawn in order
 * (x = next() % P, redrawn when already taken), written in the order drawn. "clustered": N
 * consecutive pages starting at next() % (P - N + 1). Each repetition draws the next set
 * from the same stream. */
#ifndef UVM_PEER_PAGES_H
#define UVM_PEER_PAGES_H

#include "peer.h"

#define PEER_SEED 0x5eed5eedULL

static inline uint64_t peer_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Fills out[0..n) with n distinct page numbers below total, uniform, in the order drawn.
 * taken is a scratch bitmap of total bits, all clear on entry and on return. */
static inline void peer_random_pages(uint64_t *state, size_t total, size_t n, size_t *out, uint8_t *taken)
{
    for (size_t i = 0; i < n;) {
        size_t x = (size_t)(peer_splitmix64(state) % total);
        if (taken[x >> 3] & (1u << (x & 7))) continue;
        taken[x >> 3] |= (uint8_t)(1u << (x & 7));
        out[i++] = x;
    }
    for (size_t i = 0; i < n; i++) taken[out[i] >> 3] &= (uint8_t)~(1u << (out[i] & 7));
}

/* Fills out[0..n) with n consecutive page numbers at a random start below total - n + 1. */
static inline void peer_clustered_pages(uint64_t *state, size_t total, size_t n, size_t *out)
{
    size_t start = (size_t)(peer_splitmix64(state) % (total - n + 1));
    for (size_t i = 0; i < n; i++) out[i] = start + i;
}

#endif
