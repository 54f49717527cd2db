/* Peers "image_reset_*": Wasmtime's model of resetting an instance to its image.
 *
 * A memfd holds an image of 1 GiB (quick 64 MiB), every page written once (its index in the
 * first 8 bytes, 0x5a after), so the image is resident in the page cache. The image is mapped
 * MAP_PRIVATE once. Each repetition is one run: write 8 bytes into each of N = 1,000 pages
 * (one kernel copy-on-write fault each: a private copy of the image page), then
 * madvise(MADV_DONTNEED) over the whole mapping, which drops the private copies so the
 * mapping reads the image again. The pages are drawn as pages.h says (seed printed): N
 * distinct random pages, or N consecutive pages; random and clustered each get a mapping of
 * their own (the kernel's page tables of one pattern do not slow the other's madvise).
 *
 *   image_reset_madvise_{random,clustered}  us_per_reset  the madvise alone
 *   image_reset_run_{random,clustered}      us_per_run    the writes + the madvise
 *     (extra writes_us: the writes alone)
 *
 * Checked outside the timing: after each reset the written pages read the image again. */
#include "pages.h"

#include <sys/mman.h>
#include <unistd.h>

#define WRITES 1000

static void run(const char *pattern, int clustered, int fd, size_t len, int reps)
{
    size_t total = len / PEER_PAGE;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) peer_die("mmap of the image");
    if (madvise(p, len, MADV_NOHUGEPAGE) != 0) peer_die("madvise(NOHUGEPAGE)");
    size_t *pages = calloc(WRITES, sizeof *pages);
    uint8_t *taken = calloc(total / 8 + 1, 1);
    double *run_us = calloc((size_t)reps, sizeof *run_us);
    double *reset_us = calloc((size_t)reps, sizeof *reset_us);
    double *write_us = calloc((size_t)reps, sizeof *write_us);
    if (!pages || !taken || !run_us || !reset_us || !write_us) peer_die("calloc");
    uint64_t state = PEER_SEED;
    for (int r = 0; r <= reps; r++) { /* r == 0: warm-up */
        if (clustered) peer_clustered_pages(&state, total, WRITES, pages);
        else peer_random_pages(&state, total, WRITES, pages, taken);
        uint64_t t0 = peer_now_ns();
        for (size_t i = 0; i < WRITES; i++)
            *(volatile uint64_t *)(p + pages[i] * PEER_PAGE) = 0xfeedfacecafef00dULL + i;
        uint64_t t1 = peer_now_ns();
        if (madvise(p, len, MADV_DONTNEED) != 0) peer_die("madvise(DONTNEED)");
        uint64_t t2 = peer_now_ns();
        for (size_t i = 0; i < WRITES; i++) {
            if (*(volatile uint64_t *)(p + pages[i] * PEER_PAGE) != pages[i]) {
                fprintf(stderr, "image_reset: page %zu does not read the image after the reset\n", pages[i]);
                exit(1);
            }
        }
        /* The check read the pages back in (read-only, from the image): drop those too, so
         * the next run starts as a fresh instance would, with nothing mapped. */
        if (madvise(p, len, MADV_DONTNEED) != 0) peer_die("madvise(DONTNEED)");
        if (r > 0) {
            run_us[r - 1] = (double)(t2 - t0) / 1e3;
            write_us[r - 1] = (double)(t1 - t0) / 1e3;
            reset_us[r - 1] = (double)(t2 - t1) / 1e3;
        }
    }
    printf("PEER image_reset_madvise_%s us_per_reset %.1f reps=%d pages=%d image_mib=%zu seed=%llu\n",
           pattern, peer_median(reset_us, reps), reps, WRITES, len >> 20, (unsigned long long)PEER_SEED);
    double writes = peer_median(write_us, reps);
    printf("PEER image_reset_run_%s us_per_run %.1f reps=%d pages=%d image_mib=%zu seed=%llu writes_us=%.1f\n",
           pattern, peer_median(run_us, reps), reps, WRITES, len >> 20, (unsigned long long)PEER_SEED, writes);
    fflush(stdout);
    free(pages);
    free(taken);
    free(run_us);
    free(reset_us);
    free(write_us);
    if (munmap(p, len) != 0) peer_die("munmap");
}

int main(int argc, char **argv)
{
    int quick = peer_parse_quick(argc, argv);
    int reps = quick ? 3 : 9;
    size_t len = quick ? (64ul << 20) : (1ul << 30);

    int fd = memfd_create("peer-image", MFD_CLOEXEC);
    if (fd < 0) peer_die("memfd_create");
    if (ftruncate(fd, (off_t)len) != 0) peer_die("ftruncate");
    char *img = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (img == MAP_FAILED) peer_die("mmap of the memfd");
    memset(img, 0x5a, len); /* every page of the image resident */
    for (size_t i = 0; i < len / PEER_PAGE; i++) *(uint64_t *)(img + i * PEER_PAGE) = i;
    if (munmap(img, len) != 0) peer_die("munmap");

    run("random", 0, fd, len, reps);
    run("clustered", 1, fd, len, reps);
    close(fd);
    return 0;
}
