/* Peer "fault_roundtrip_libsigsegv": the fault_raw resolver written with GNU libsigsegv.
 *
 * Same arena, memfd and access pattern as fault_raw.c; the only difference is that the
 * SIGSEGV plumbing is libsigsegv's (sigsegv_install_handler). The handler maps the
 * faulting page MAP_SHARED|MAP_FIXED from the memfd and returns 1 ("handled, retry"). */
#include "peer.h"

#include <fcntl.h>
#include <sigsegv.h>
#include <sys/mman.h>
#include <unistd.h>

static char *volatile g_base;
static volatile size_t g_len;
static volatile int g_memfd = -1;
static volatile unsigned long g_faults;

static int on_fault(void *fault_address, int serious)
{
    (void)serious;
    char *addr = (char *)fault_address;
    char *base = g_base;
    if (addr < base || addr >= base + g_len)
        return 0; /* not ours: let libsigsegv fall back to the default action */
    int saved = errno;
    size_t off = (size_t)(addr - base) & ~(PEER_PAGE - 1);
    void *p = mmap(base + off, PEER_PAGE, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_FIXED, g_memfd, (off_t)off);
    errno = saved;
    if (p == MAP_FAILED)
        return 0;
    g_faults++;
    return 1;
}

static void reset_arena(char *base, size_t len, int memfd)
{
    if (mmap(base, len, PROT_NONE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) != base)
        peer_die("arena reset");
    if (fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)len) != 0)
        peer_die("fallocate(PUNCH_HOLE)");
}

int main(int argc, char **argv)
{
    int quick = peer_parse_quick(argc, argv);
    size_t pages = quick ? 4096 : 65536;
    int reps = quick ? 3 : 5;
    size_t len = pages * PEER_PAGE;

#if !HAVE_SIGSEGV_RECOVERY
    fprintf(stderr, "fault_libsigsegv: libsigsegv has no fault recovery on this platform\n");
    return 1;
#endif

    int memfd = memfd_create("peer-fault-libsigsegv", MFD_CLOEXEC);
    if (memfd < 0) peer_die("memfd_create");
    if (ftruncate(memfd, (off_t)len) != 0) peer_die("ftruncate");

    char *base = mmap(NULL, len, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) peer_die("arena reserve");
    g_base = base;
    g_len = len;
    g_memfd = memfd;

    if (sigsegv_install_handler(on_fault) != 0) {
        fprintf(stderr, "fault_libsigsegv: sigsegv_install_handler failed\n");
        return 1;
    }

    double *ns = calloc((size_t)reps + 1, sizeof *ns);
    unsigned long sink = 0;
    /* Repetition 0 is a warm-up and is not counted. */
    for (int r = 0; r <= reps; r++) {
        reset_arena(base, len, memfd);
        g_faults = 0;
        uint64_t t0 = peer_now_ns();
        for (size_t i = 0; i < pages; i++)
            sink += *(volatile unsigned char *)(base + i * PEER_PAGE);
        uint64_t t1 = peer_now_ns();
        if (g_faults != pages) {
            fprintf(stderr, "fault_libsigsegv: expected %zu faults, saw %lu\n", pages, g_faults);
            return 1;
        }
        if (r > 0) ns[r - 1] = (double)(t1 - t0) / (double)pages;
    }
    if (sink != 0) { fprintf(stderr, "fault_libsigsegv: memfd pages not zero\n"); return 1; }

    sigsegv_deinstall_handler();
    printf("PEER fault_roundtrip_libsigsegv ns_per_fault %.1f reps=%d pages=%zu\n",
           peer_median(ns, reps), reps, pages);
    free(ns);
    munmap(base, len);
    close(memfd);
    return 0;
}
