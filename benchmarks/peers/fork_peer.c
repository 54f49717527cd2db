/* Peers "fork_kernel" and "fork_cow_write_kernel": the kernel's own fork().
 *
 * fork_kernel: the parent holds a resident anonymous region (1 GiB; quick 64 MiB);
 * each repetition times fork() -> child _exit(0) at once -> waitpid() reaps it.
 * Reported in microseconds per fork; the parent-side fork() call alone is reported
 * as the extra key fork_call_us.
 *
 * fork_cow_write_kernel: the parent holds only a resident 256 MiB (quick 16 MiB)
 * region; the child writes one byte to every page (one copy-on-write fault each) and
 * _exits. Reported as (fork -> reap) / pages, in ns per page written.
 *
 * Regions use MADV_NOHUGEPAGE so the kernel works per 4 KiB page, as UVm does. */
#include "peer.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static char *resident_region(size_t len)
{
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) peer_die("mmap %zu bytes", len);
    if (madvise(p, len, MADV_NOHUGEPAGE) != 0) peer_die("madvise(NOHUGEPAGE)");
    memset(p, 0x5a, len); /* make every page resident and private to the parent */
    return p;
}

static void reap(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) peer_die("waitpid");
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fork_peer: child failed (status 0x%x)\n", status);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    int quick = peer_parse_quick(argc, argv);
    int reps = quick ? 3 : 5;
    fflush(NULL); /* nothing buffered may be duplicated into children */

    /* fork_kernel */
    {
        size_t len = quick ? (64ul << 20) : (1ul << 30);
        char *p = resident_region(len);
        double *total_us = calloc((size_t)reps, sizeof *total_us);
        double *call_us = calloc((size_t)reps, sizeof *call_us);
        for (int r = 0; r <= reps; r++) { /* r == 0: warm-up */
            uint64_t t0 = peer_now_ns();
            pid_t pid = fork();
            if (pid == 0) _exit(0);
            uint64_t t1 = peer_now_ns();
            if (pid < 0) peer_die("fork");
            reap(pid);
            uint64_t t2 = peer_now_ns();
            if (r > 0) {
                total_us[r - 1] = (double)(t2 - t0) / 1e3;
                call_us[r - 1] = (double)(t1 - t0) / 1e3;
            }
        }
        printf("PEER fork_kernel us_per_fork %.1f reps=%d resident_mib=%zu fork_call_us=%.1f\n",
               peer_median(total_us, reps), reps, len >> 20, peer_median(call_us, reps));
        fflush(stdout);
        free(total_us);
        free(call_us);
        if (munmap(p, len) != 0) peer_die("munmap");
    }

    /* fork_cow_write_kernel */
    {
        size_t len = quick ? (16ul << 20) : (256ul << 20);
        size_t pages = len / PEER_PAGE;
        char *p = resident_region(len);
        double *ns = calloc((size_t)reps, sizeof *ns);
        double *call_us = calloc((size_t)reps, sizeof *call_us);
        for (int r = 0; r <= reps; r++) { /* r == 0: warm-up */
            uint64_t t0 = peer_now_ns();
            pid_t pid = fork();
            if (pid == 0) {
                for (size_t i = 0; i < pages; i++)
                    *(volatile char *)(p + i * PEER_PAGE) = 1;
                _exit(0);
            }
            uint64_t t1 = peer_now_ns();
            if (pid < 0) peer_die("fork");
            reap(pid);
            uint64_t t2 = peer_now_ns();
            if (r > 0) {
                ns[r - 1] = (double)(t2 - t0) / (double)pages;
                call_us[r - 1] = (double)(t1 - t0) / 1e3;
            }
        }
        if (p[0] != 0x5a) { fprintf(stderr, "fork_peer: child write leaked into parent\n"); return 1; }
        printf("PEER fork_cow_write_kernel ns_per_page %.1f reps=%d pages=%zu fork_call_us=%.1f\n",
               peer_median(ns, reps), reps, pages, peer_median(call_us, reps));
        free(ns);
        free(call_us);
        if (munmap(p, len) != 0) peer_die("munmap");
    }
    return 0;
}
