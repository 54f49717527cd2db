/* Peer "first_touch_kernel": the kernel's own anonymous demand paging.
 *
 * Each repetition maps a fresh MAP_PRIVATE|MAP_ANONYMOUS region, writes one byte to
 * every page (one kernel page fault that allocates and zeroes a 4 KiB page each),
 * and unmaps it. Transparent huge pages are disabled on the region (MADV_NOHUGEPAGE)
 * so the kernel pays per 4 KiB page, as UVm does. Reports ns per page. */
#include "peer.h"

#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int quick = peer_parse_quick(argc, argv);
    size_t len = quick ? (16ul << 20) : (256ul << 20);
    int reps = quick ? 3 : 5;
    size_t pages = len / PEER_PAGE;

    double *ns = calloc((size_t)reps, sizeof *ns);
    /* Repetition 0 is a warm-up and is not counted. */
    for (int r = 0; r <= reps; r++) {
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) peer_die("mmap");
        if (madvise(p, len, MADV_NOHUGEPAGE) != 0) peer_die("madvise(NOHUGEPAGE)");
        uint64_t t0 = peer_now_ns();
        for (size_t i = 0; i < pages; i++)
            *(volatile char *)(p + i * PEER_PAGE) = 1;
        uint64_t t1 = peer_now_ns();
        if (munmap(p, len) != 0) peer_die("munmap");
        if (r > 0) ns[r - 1] = (double)(t1 - t0) / (double)pages;
    }
    printf("PEER first_touch_kernel ns_per_page %.1f reps=%d pages=%zu thp=off\n",
           peer_median(ns, reps), reps, pages);
    free(ns);
    return 0;
}
