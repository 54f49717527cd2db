/* Peers "copy_memcpy_<size>": libc memcpy throughput between resident buffers, the
 * ceiling for UVm's VmReader/VmWriter copies of the same sizes.
 *
 * For each size (4 KiB, 64 KiB, 1 MiB) a source and a destination buffer are made
 * resident, then memcpy(dst, src, size) is repeated until a fixed byte budget is
 * copied. Reports GB/s (1e9 bytes per second), median over repetitions. */
#include "peer.h"


static volatile size_t g_size_sink;

int main(int argc, char **argv)
{
    int quick = peer_parse_quick(argc, argv);
    int reps = quick ? 3 : 5;
    size_t budget = quick ? (128ul << 20) : (2ul << 30); /* bytes copied per repetition */
    static const size_t sizes[] = { 4096, 65536, 1048576 };

    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        g_size_sink = sizes[s];
        size_t size = g_size_sink; /* opaque to the compiler: a real runtime-sized copy */
        char *src = aligned_alloc(PEER_PAGE, size);
        char *dst = aligned_alloc(PEER_PAGE, size);
        if (!src || !dst) peer_die("aligned_alloc");
        memset(src, 0x11, size);
        memset(dst, 0x22, size);
        size_t iters = budget / size;
        double *gbps = calloc((size_t)reps, sizeof *gbps);
        for (int r = 0; r <= reps; r++) { /* r == 0: warm-up */
            uint64_t t0 = peer_now_ns();
            for (size_t i = 0; i < iters; i++) {
                memcpy(dst, src, size);
                __asm__ volatile("" : : "r"(dst), "r"(src) : "memory");
            }
            uint64_t t1 = peer_now_ns();
            if (r > 0) gbps[r - 1] = (double)(iters * size) / (double)(t1 - t0);
        }
        if (dst[size - 1] != 0x11) { fprintf(stderr, "memcpy_peer: copy not done\n"); return 1; }
        printf("PEER copy_memcpy_%zu GB_per_s %.2f reps=%d bytes=%zu iters=%zu\n",
               size, peer_median(gbps, reps), reps, size, iters);
        free(gbps);
        free(src);
        free(dst);
    }
    return 0;
}
