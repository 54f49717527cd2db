/* Peers "fork_server_random" and "fork_server_clustered": AFL's fork server.
 *
 * The parent holds a resident anonymous region of 1 GiB (quick 64 MiB), every page written
 * once (its index in the first 8 bytes, 0x5a after). Each repetition is one run of the
 * target: fork() -> the child writes 8 bytes into each of N = 1,000 pages (one kernel
 * copy-on-write fault each) and _exit(0)s -> the parent reaps it. Reported in microseconds
 * per run (fork -> reap); the parent-side fork() call alone is the extra key fork_call_us.
 * The pages are drawn as pages.h says (seed printed): N distinct random pages, or N
 * consecutive pages. Checked: the parent's pages are unchanged after every run.
 *
 * The region uses MADV_NOHUGEPAGE so the kernel works per 4 KiB page, as UVm does. */
#include "pages.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define WRITES 1000

static void reap(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) peer_die("waitpid");
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fork_server: child failed (status 0x%x)\n", status);
        exit(1);
    }
}

static void run(const char *scenario, int clustered, char *p, size_t total, int reps, size_t len)
{
    size_t *pages = calloc(WRITES, sizeof *pages);
    uint8_t *taken = calloc(total / 8 + 1, 1);
    double *us = calloc((size_t)reps, sizeof *us);
    double *call_us = calloc((size_t)reps, sizeof *call_us);
    if (!pages || !taken || !us || !call_us) peer_die("calloc");
    uint64_t state = PEER_SEED;
    for (int r = 0; r <= reps; r++) { /* r == 0: warm-up */
        if (clustered) peer_clustered_pages(&state, total, WRITES, pages);
        else peer_random_pages(&state, total, WRITES, pages, taken);
        uint64_t t0 = peer_now_ns();
        pid_t pid = fork();
        if (pid == 0) {
            for (size_t i = 0; i < WRITES; i++)
                *(volatile uint64_t *)(p + pages[i] * PEER_PAGE) = 0xfeedfacecafef00dULL + i;
            _exit(0);
        }
        uint64_t t1 = peer_now_ns();
        if (pid < 0) peer_die("fork");
        reap(pid);
        uint64_t t2 = peer_now_ns();
        for (size_t i = 0; i < WRITES; i++) {
            if (*(uint64_t *)(p + pages[i] * PEER_PAGE) != pages[i]) {
                fprintf(stderr, "fork_server: the child's write to page %zu leaked into the parent\n", pages[i]);
                exit(1);
            }
        }
        if (r > 0) {
            us[r - 1] = (double)(t2 - t0) / 1e3;
            call_us[r - 1] = (double)(t1 - t0) / 1e3;
        }
    }
    printf("PEER %s us_per_run %.1f reps=%d pages=%d resident_mib=%zu seed=%llu fork_call_us=%.1f\n",
           scenario, peer_median(us, reps), reps, WRITES, len >> 20, (unsigned long long)PEER_SEED,
           peer_median(call_us, reps));
    fflush(stdout);
    free(pages);
    free(taken);
    free(us);
    free(call_us);
}

int main(int argc, char **argv)
{
    int quick = peer_parse_quick(argc, argv);
    int reps = quick ? 3 : 9;
    size_t len = quick ? (64ul << 20) : (1ul << 30);
    size_t total = len / PEER_PAGE;
    fflush(NULL); /* nothing buffered may be duplicated into children */

    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) peer_die("mmap %zu bytes", len);
    if (madvise(p, len, MADV_NOHUGEPAGE) != 0) peer_die("madvise(NOHUGEPAGE)");
    memset(p, 0x5a, len); /* every page resident and private to the parent */
    for (size_t i = 0; i < total; i++) *(uint64_t *)(p + i * PEER_PAGE) = i;

    run("fork_server_random", 0, p, total, reps, len);
    run("fork_server_clustered", 1, p, total, reps, len);
    if (munmap(p, len) != 0) peer_die("munmap");
    return 0;
}
