/* Peers "map_dispatch_raw", "map_dispatch_raw_per_page" and "mprotect_raw": the
 * syscall floor under UVm's TLB-flush dispatch for its 1 GiB map benchmark.
 *
 * A PROT_NONE arena of 1 GiB (quick 64 MiB) is reserved and a sparse memfd of the
 * same size stands in for the frame pool. Timed operations (pages are never touched):
 *   map_dispatch_raw          one mmap(MAP_SHARED|MAP_FIXED) of the whole contiguous run
 *   map_dispatch_raw_per_page one such mmap per 4 KiB page (offset = page offset)
 *   mprotect_raw              one mprotect(PROT_READ) of the whole mapped run
 * The arena is reset to PROT_NONE (untimed) before each map repetition; the run is
 * returned to read-write (untimed) after each mprotect repetition. */
#include "peer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

static void reset_arena(char *base, size_t len)
{
    if (mmap(base, len, PROT_NONE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) != base)
        peer_die("arena reset");
}

static void map_run(char *base, size_t len, int memfd)
{
    if (mmap(base, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, memfd, 0) != base)
        peer_die("mmap contiguous run");
}

int main(int argc, char **argv)
{
    int quick = peer_parse_quick(argc, argv);
    size_t len = quick ? (64ul << 20) : (1ul << 30);
    int reps = quick ? 3 : 5;
    size_t pages = len / PEER_PAGE;

    int memfd = memfd_create("peer-mmap-floor", MFD_CLOEXEC);
    if (memfd < 0) peer_die("memfd_create");
    if (ftruncate(memfd, (off_t)len) != 0) peer_die("ftruncate");
    char *base = mmap(NULL, len, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) peer_die("arena reserve");

    double *run_ns = calloc((size_t)reps, sizeof(double));
    double *page_ns = calloc((size_t)reps, sizeof(double));
    double *prot_ns = calloc((size_t)reps, sizeof(double));
    double run_total_us = 0, page_total_us = 0, prot_total_us = 0;

    /* Repetition 0 of each scenario is a warm-up and is not counted. */
    for (int r = 0; r <= reps; r++) {
        reset_arena(base, len);
        uint64_t t0 = peer_now_ns();
        map_run(base, len, memfd);
        uint64_t t1 = peer_now_ns();
        if (r > 0) run_ns[r - 1] = (double)(t1 - t0) / (double)pages;
    }
    for (int r = 0; r <= reps; r++) {
        reset_arena(base, len);
        uint64_t t0 = peer_now_ns();
        for (size_t i = 0; i < pages; i++) {
            size_t off = i * PEER_PAGE;
            if (mmap(base + off, PEER_PAGE, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_FIXED, memfd, (off_t)off) != base + off)
                peer_die("mmap page %zu", i);
        }
        uint64_t t1 = peer_now_ns();
        if (r > 0) page_ns[r - 1] = (double)(t1 - t0) / (double)pages;
    }
    reset_arena(base, len);
    map_run(base, len, memfd);
    for (int r = 0; r <= reps; r++) {
        uint64_t t0 = peer_now_ns();
        if (mprotect(base, len, PROT_READ) != 0) peer_die("mprotect(PROT_READ)");
        uint64_t t1 = peer_now_ns();
        if (mprotect(base, len, PROT_READ | PROT_WRITE) != 0) peer_die("mprotect(RW)");
        if (r > 0) prot_ns[r - 1] = (double)(t1 - t0) / (double)pages;
    }

    double run_med = peer_median(run_ns, reps);
    double page_med = peer_median(page_ns, reps);
    double prot_med = peer_median(prot_ns, reps);
    run_total_us = run_med * (double)pages / 1e3;
    page_total_us = page_med * (double)pages / 1e3;
    prot_total_us = prot_med * (double)pages / 1e3;
    printf("PEER map_dispatch_raw ns_per_page %.3f reps=%d pages=%zu syscalls=1 total_us=%.1f\n",
           run_med, reps, pages, run_total_us);
    printf("PEER map_dispatch_raw_per_page ns_per_page %.1f reps=%d pages=%zu syscalls=%zu total_us=%.1f\n",
           page_med, reps, pages, pages, page_total_us);
    printf("PEER mprotect_raw ns_per_page %.3f reps=%d pages=%zu syscalls=1 total_us=%.1f\n",
           prot_med, reps, pages, prot_total_us);

    free(run_ns);
    free(page_ns);
    free(prot_ns);
    munmap(base, len);
    close(memfd);
    return 0;
}
