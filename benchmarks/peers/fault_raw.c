/* Peer "fault_roundtrip_raw": the hand-written equivalent of UVm's fault path.
 *
 * A PROT_NONE arena is reserved; a SA_SIGINFO SIGSEGV handler resolves every fault
 * by mapping the faulting page MAP_SHARED|MAP_FIXED from a memfd at the page's own
 * offset, then returns so the faulting load is retried. Each page therefore costs
 * one SIGSEGV delivery + one mmap + the retried access (which takes the kernel's
 * shmem fault). Between repetitions the arena is reset to PROT_NONE and the memfd
 * is hole-punched, so every repetition starts from empty frames. */
#include "peer.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

static char *volatile g_base;
static volatile size_t g_len;
static volatile int g_memfd = -1;
static volatile unsigned long g_faults;

static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    (void)uctx;
    int saved = errno;
    char *addr = (char *)si->si_addr;
    char *base = g_base;
    if (addr >= base && addr < base + g_len) {
        size_t off = (size_t)(addr - base) & ~(PEER_PAGE - 1);
        void *p = mmap(base + off, PEER_PAGE, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_FIXED, g_memfd, (off_t)off);
        if (p != MAP_FAILED) {
            g_faults++;
            errno = saved;
            return; /* retry the access */
        }
    }
    /* Not ours (or unresolvable): fall back to the default action and re-fault. */
    signal(sig, SIG_DFL);
    errno = saved;
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

    int memfd = memfd_create("peer-fault-raw", MFD_CLOEXEC);
    if (memfd < 0) peer_die("memfd_create");
    if (ftruncate(memfd, (off_t)len) != 0) peer_die("ftruncate");

    char *base = mmap(NULL, len, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) peer_die("arena reserve");
    g_base = base;
    g_len = len;
    g_memfd = memfd;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0) peer_die("sigaction");

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
            fprintf(stderr, "fault_raw: expected %zu faults, saw %lu\n", pages, g_faults);
            return 1;
        }
        if (r > 0) ns[r - 1] = (double)(t1 - t0) / (double)pages;
    }
    if (sink != 0) { fprintf(stderr, "fault_raw: memfd pages not zero\n"); return 1; }

    printf("PEER fault_roundtrip_raw ns_per_fault %.1f reps=%d pages=%zu\n",
           peer_median(ns, reps), reps, pages);
    free(ns);
    munmap(base, len);
    close(memfd);
    return 0;
}
