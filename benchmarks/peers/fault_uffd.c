/* Peers "fault_roundtrip_uffd" and "fault_roundtrip_uffd_zeropage": the same
 * "resolve a missing page from user space" job done with userfaultfd.
 *
 * An anonymous region is registered with UFFDIO_REGISTER (MISSING mode). A handler
 * thread poll()s the userfaultfd and resolves each fault with UFFDIO_COPY (from a
 * 4 KiB source page) or UFFDIO_ZEROPAGE; the main thread reads one byte of each page.
 * Between repetitions MADV_DONTNEED makes every page missing again. If the kernel
 * refuses userfaultfd, the program prints an "unavailable" line and exits 0. */
#include "peer.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { MODE_COPY = 0, MODE_ZEROPAGE = 1 };

static int g_uffd = -1;
static int g_stopfd = -1;
static char *g_src;
static atomic_int g_mode;
static atomic_ulong g_resolved;

static void *handler_thread(void *arg)
{
    (void)arg;
    struct pollfd pfd[2] = {
        { .fd = g_uffd, .events = POLLIN },
        { .fd = g_stopfd, .events = POLLIN },
    };
    struct uffd_msg msgs[16];
    for (;;) {
        int n = poll(pfd, 2, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            peer_die("poll");
        }
        if (pfd[1].revents & POLLIN)
            return NULL;
        if (pfd[0].revents & (POLLERR | POLLHUP))
            peer_die("userfaultfd poll error");
        if (!(pfd[0].revents & POLLIN))
            continue;
        ssize_t got = read(g_uffd, msgs, sizeof msgs);
        if (got < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            peer_die("read(userfaultfd)");
        }
        int mode = atomic_load_explicit(&g_mode, memory_order_relaxed);
        for (size_t i = 0; i < (size_t)got / sizeof msgs[0]; i++) {
            if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
                continue;
            unsigned long page = (unsigned long)msgs[i].arg.pagefault.address & ~(PEER_PAGE - 1);
            /* Count before resolving: the ioctl wakes the faulting thread, which may
             * finish its loop and check the count before this thread runs again. */
            atomic_fetch_add_explicit(&g_resolved, 1, memory_order_relaxed);
            int rc;
            if (mode == MODE_COPY) {
                struct uffdio_copy c = {
                    .dst = page, .src = (unsigned long)g_src, .len = PEER_PAGE, .mode = 0,
                };
                rc = ioctl(g_uffd, UFFDIO_COPY, &c);
            } else {
                struct uffdio_zeropage z = {
                    .range = { .start = page, .len = PEER_PAGE }, .mode = 0,
                };
                rc = ioctl(g_uffd, UFFDIO_ZEROPAGE, &z);
            }
            if (rc != 0 && errno != EEXIST)
                peer_die(mode == MODE_COPY ? "UFFDIO_COPY" : "UFFDIO_ZEROPAGE");
        }
    }
}

static void unavailable(int err)
{
    printf("PEER fault_roundtrip_uffd unavailable 0 reps=0 errno=%d\n", err);
    fprintf(stderr, "fault_uffd: userfaultfd refused: %s\n", strerror(err));
    exit(0);
}

/* Median ns per fault over `reps` repetitions (plus one uncounted warm-up). */
static double run_mode(int mode, char *region, size_t pages, int reps)
{
    size_t len = pages * PEER_PAGE;
    double *ns = calloc((size_t)reps, sizeof *ns);
    unsigned long sink = 0;
    atomic_store(&g_mode, mode);
    for (int r = 0; r <= reps; r++) {
        if (madvise(region, len, MADV_DONTNEED) != 0) peer_die("madvise(DONTNEED)");
        atomic_store(&g_resolved, 0);
        uint64_t t0 = peer_now_ns();
        for (size_t i = 0; i < pages; i++)
            sink += *(volatile unsigned char *)(region + i * PEER_PAGE);
        uint64_t t1 = peer_now_ns();
        unsigned long resolved = atomic_load(&g_resolved);
        if (resolved < pages) {
            fprintf(stderr, "fault_uffd: expected %zu faults, resolved %lu\n", pages, resolved);
            exit(1);
        }
        if (r > 0) ns[r - 1] = (double)(t1 - t0) / (double)pages;
    }
    if (sink != 0) { fprintf(stderr, "fault_uffd: resolved pages not zero\n"); exit(1); }
    double m = peer_median(ns, reps);
    free(ns);
    return m;
}

int main(int argc, char **argv)
{
    int quick = peer_parse_quick(argc, argv);
    size_t pages = quick ? 4096 : 65536;
    int reps = quick ? 3 : 5;
    size_t len = pages * PEER_PAGE;
    const char *flavour = "full";

    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
#ifdef UFFD_USER_MODE_ONLY
    if (uffd < 0 && errno == EPERM) {
        /* vm.unprivileged_userfaultfd=0 still allows user-mode-only descriptors. */
        uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
        flavour = "user_mode_only";
    }
#endif
    if (uffd < 0) {
        if (errno == EPERM || errno == ENOSYS || errno == EINVAL) unavailable(errno);
        peer_die("userfaultfd");
    }
    struct uffdio_api api = { .api = UFFD_API, .features = 0 };
    if (ioctl(uffd, UFFDIO_API, &api) != 0) {
        if (errno == EPERM || errno == EINVAL) unavailable(errno);
        peer_die("UFFDIO_API");
    }
    g_uffd = uffd;

    char *region = mmap(NULL, len, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED) peer_die("mmap region");
    madvise(region, len, MADV_NOHUGEPAGE); /* 4 KiB faults, like UVm */

    struct uffdio_register reg = {
        .range = { .start = (unsigned long)region, .len = len },
        .mode = UFFDIO_REGISTER_MODE_MISSING,
    };
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
        if (errno == EPERM) unavailable(errno);
        peer_die("UFFDIO_REGISTER");
    }
    int have_zeropage = (reg.ioctls & (1ull << _UFFDIO_ZEROPAGE)) != 0;
    if (!(reg.ioctls & (1ull << _UFFDIO_COPY))) {
        fprintf(stderr, "fault_uffd: UFFDIO_COPY not offered for this range\n");
        return 1;
    }

    g_src = mmap(NULL, PEER_PAGE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_src == MAP_FAILED) peer_die("mmap source page");
    memset(g_src, 0, PEER_PAGE); /* make it resident */

    g_stopfd = eventfd(0, EFD_CLOEXEC);
    if (g_stopfd < 0) peer_die("eventfd");
    pthread_t th;
    if ((errno = pthread_create(&th, NULL, handler_thread, NULL)) != 0) peer_die("pthread_create");

    double copy_ns = run_mode(MODE_COPY, region, pages, reps);
    double zero_ns = have_zeropage ? run_mode(MODE_ZEROPAGE, region, pages, reps) : 0.0;

    uint64_t one = 1;
    if (write(g_stopfd, &one, sizeof one) != (ssize_t)sizeof one) peer_die("eventfd write");
    pthread_join(th, NULL);

    printf("PEER fault_roundtrip_uffd ns_per_fault %.1f reps=%d pages=%zu ioctl=UFFDIO_COPY uffd=%s\n",
           copy_ns, reps, pages, flavour);
    if (have_zeropage)
        printf("PEER fault_roundtrip_uffd_zeropage ns_per_fault %.1f reps=%d pages=%zu ioctl=UFFDIO_ZEROPAGE uffd=%s\n",
               zero_ns, reps, pages, flavour);
    else
        fprintf(stderr, "fault_uffd: UFFDIO_ZEROPAGE not offered; zeropage figure skipped\n");

    munmap(region, len);
    munmap(g_src, PEER_PAGE);
    close(g_stopfd);
    close(uffd);
    return 0;
}
