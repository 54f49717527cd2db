/* Peers "remap_floor_*": the host's own cost of the work UVm's snapshots give it, without UVm.
 *
 * UVm's arena maps frames of a memfd MAP_SHARED. A copy-on-write write to a page of a
 * snapshot copies the frame into a fresh one and maps that one over the page; a reset maps the
 * snapshot's frame back. This peer does exactly those host calls by hand, no signal, no
 * managed code: a memfd of 2 x 1 GiB (quick 2 x 64 MiB), the first half an image (every page
 * written once), mapped MAP_SHARED whole; per run, for each of N = 1,000 pages drawn as
 * pages.h says:
 *   copy:    pwrite of the image page into a fresh page of the second half (the frame a copy
 *            gets), mmap(MAP_SHARED|MAP_FIXED|MAP_POPULATE) of that page over the image page,
 *            then the 8-byte write;
 *   restore: mmap(MAP_SHARED|MAP_FIXED) of the image page back over it, one call per run of
 *            consecutive pages (UVm merges runs the same way);
 *   punch:   fallocate(PUNCH_HOLE) of the copies, one call per run of consecutive copies.
 * Reported in ns per page written (copy, restore, punch), each the median over repetitions.
 * Checked: after the restore every written page reads the image again. */
#include "pages.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#define WRITES 1000

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

static void run(const char *pattern, int clustered, int fd, char *base, size_t len, int reps)
{
    size_t total = len / PEER_PAGE;
    size_t *pages = calloc(WRITES, sizeof *pages);
    size_t *sorted = calloc(WRITES, sizeof *sorted);
    uint8_t *taken = calloc(total / 8 + 1, 1);
    double *copy_ns = calloc((size_t)reps, sizeof *copy_ns);
    double *restore_ns = calloc((size_t)reps, sizeof *restore_ns);
    double *punch_ns = calloc((size_t)reps, sizeof *punch_ns);
    if (!pages || !sorted || !taken || !copy_ns || !restore_ns || !punch_ns) peer_die("calloc");
    uint64_t state = PEER_SEED;
    long restore_calls = 0;
    for (int r = 0; r <= reps; r++) { /* r == 0: warm-up */
        if (clustered) peer_clustered_pages(&state, total, WRITES, pages);
        else peer_random_pages(&state, total, WRITES, pages, taken);
        uint64_t t0 = peer_now_ns();
        for (size_t i = 0; i < WRITES; i++) {
            size_t p = pages[i];
            off_t frame = (off_t)(len + i * PEER_PAGE); /* copies get consecutive frames, as from a chunk */
            if (pwrite(fd, base + p * PEER_PAGE, PEER_PAGE, frame) != (ssize_t)PEER_PAGE) peer_die("pwrite");
            if (mmap(base + p * PEER_PAGE, PEER_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_POPULATE, fd, frame) == MAP_FAILED)
                peer_die("mmap of a copy");
            *(volatile uint64_t *)(base + p * PEER_PAGE) = 0xfeedfacecafef00dULL + i;
        }
        uint64_t t1 = peer_now_ns();
        memcpy(sorted, pages, WRITES * sizeof *sorted);
        qsort(sorted, WRITES, sizeof *sorted, cmp_size);
        long calls = 0;
        for (size_t i = 0; i < WRITES;) {
            size_t j = i + 1;
            while (j < WRITES && sorted[j] == sorted[j - 1] + 1) j++;
            if (mmap(base + sorted[i] * PEER_PAGE, (j - i) * PEER_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
                     (off_t)(sorted[i] * PEER_PAGE)) == MAP_FAILED)
                peer_die("mmap of the image back");
            calls++;
            i = j;
        }
        uint64_t t2 = peer_now_ns();
        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)len, (off_t)(WRITES * PEER_PAGE)) != 0)
            peer_die("fallocate(PUNCH_HOLE)");
        uint64_t t3 = peer_now_ns();
        for (size_t i = 0; i < WRITES; i++) {
            if (*(volatile uint64_t *)(base + pages[i] * PEER_PAGE) != pages[i]) {
                fprintf(stderr, "remap_floor: page %zu does not read the image after the restore\n", pages[i]);
                exit(1);
            }
        }
        if (r > 0) {
            copy_ns[r - 1] = (double)(t1 - t0) / WRITES;
            restore_ns[r - 1] = (double)(t2 - t1) / WRITES;
            punch_ns[r - 1] = (double)(t3 - t2) / WRITES;
            restore_calls = calls;
        }
    }
    printf("PEER remap_floor_copy_%s ns_per_page %.1f reps=%d pages=%d image_mib=%zu seed=%llu\n",
           pattern, peer_median(copy_ns, reps), reps, WRITES, len >> 20, (unsigned long long)PEER_SEED);
    printf("PEER remap_floor_restore_%s ns_per_page %.1f reps=%d pages=%d image_mib=%zu calls=%ld\n",
           pattern, peer_median(restore_ns, reps), reps, WRITES, len >> 20, restore_calls);
    printf("PEER remap_floor_punch_%s ns_per_page %.1f reps=%d pages=%d image_mib=%zu calls=1\n",
           pattern, peer_median(punch_ns, reps), reps, WRITES, len >> 20);
    fflush(stdout);
    free(pages);
    free(sorted);
    free(taken);
    free(copy_ns);
    free(restore_ns);
    free(punch_ns);
}

int main(int argc, char **argv)
{
    int quick = peer_parse_quick(argc, argv);
    int reps = quick ? 3 : 9;
    size_t len = quick ? (64ul << 20) : (1ul << 30);

    int fd = memfd_create("peer-remap-floor", MFD_CLOEXEC);
    if (fd < 0) peer_die("memfd_create");
    if (ftruncate(fd, (off_t)(2 * len)) != 0) peer_die("ftruncate");
    char *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) peer_die("mmap of the memfd");
    if (madvise(base, len, MADV_NOHUGEPAGE) != 0) peer_die("madvise(NOHUGEPAGE)");
    memset(base, 0x5a, len); /* the image resident, its page-table entries installed */
    for (size_t i = 0; i < len / PEER_PAGE; i++) *(uint64_t *)(base + i * PEER_PAGE) = i;

    run("random", 0, fd, base, len, reps);
    run("clustered", 1, fd, base, len, reps);
    munmap(base, len);
    close(fd);
    return 0;
}
