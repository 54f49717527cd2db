/*
 * signal_child.c - the child process of SignalChaining (UVm.Tests/Faults).
 *
 * Usage: signal_child LIBUVM MODE
 * Loads libuvm.so, optionally installs a "previous" SIGSEGV/SIGBUS action first, calls
 * uvm_install, proves a UVm primitive still recovers from a fault, then faults OUTSIDE the
 * primitives (or sends itself a signal). UVm must leave that fault to the previous action:
 * the fixture checks how the process ended (exit code or signal) and what it printed.
 *
 * Modes:
 *   default   no previous action: the process must die of SIGSEGV
 *   siginfo   previous SA_SIGINFO handler: it must get the fault's siginfo, exits 42
 *   plain     previous handler without SA_SIGINFO: it must run, exits 43
 *   fixing    previous SA_SIGINFO handler makes the page writable and returns: the faulting
 *             store must be retried and succeed, exit 0
 *   user      no previous action, kill(getpid(), SIGSEGV): must die of SIGSEGV
 *   bus       previous SA_SIGINFO SIGBUS handler, read past the end of a truncated memfd:
 *             it must get the SIGBUS, exits 44
 *   bus-dfl   no previous action, same read: the process must die of SIGBUS
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

struct uvm_fault {
    uint64_t addr;
    int32_t signo, access, code, reserved;
};
typedef int32_t (*uvm_install_fn)(void);
typedef uint64_t (*uvm_copy_fn)(void *, const void *, uint64_t, struct uvm_fault *);

static volatile char *bad_page;  /* PROT_NONE: touching it is a fault that is not UVm's */
static volatile char *bus_page;  /* a shared mapping of a memfd truncated to 0 */

static void say(const char *s)
{
    ssize_t ignored = write(1, s, strlen(s));
    (void)ignored;
}

static void prev_siginfo(int sig, siginfo_t *info, void *ctx)
{
    (void)ctx;
    if (sig == SIGSEGV && info->si_code > 0 && info->si_addr == (void *)bad_page) {
        say("previous SA_SIGINFO handler got the fault\n");
        _exit(42);
    }
    say("previous SA_SIGINFO handler got unexpected arguments\n");
    _exit(50);
}

static void prev_plain(int sig)
{
    say(sig == SIGSEGV ? "previous plain handler got SIGSEGV\n" : "previous plain handler got another signal\n");
    _exit(sig == SIGSEGV ? 43 : 51);
}

static void prev_fixing(int sig, siginfo_t *info, void *ctx)
{
    (void)ctx;
    if (sig != SIGSEGV || info->si_addr != (void *)bad_page)
        _exit(52);
    mprotect((void *)bad_page, 4096, PROT_READ | PROT_WRITE);
}

static void prev_bus(int sig, siginfo_t *info, void *ctx)
{
    (void)ctx;
    if (sig == SIGBUS && info->si_code > 0 && info->si_addr == (void *)bus_page) {
        say("previous SIGBUS handler got the fault\n");
        _exit(44);
    }
    _exit(53);
}

static void install_previous(int sig, void (*fn)(int, siginfo_t *, void *), void (*plain)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    if (fn) {
        sa.sa_sigaction = fn;
        sa.sa_flags = SA_SIGINFO;
    } else {
        sa.sa_handler = plain;
    }
    sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    const char *mode = argv[2];

    /* Dying of a signal is the expected outcome of some modes: no core dump. */
    struct rlimit none = { 0, 0 };
    setrlimit(RLIMIT_CORE, &none);
    prctl(PR_SET_DUMPABLE, 0);

    bad_page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int fd = memfd_create("signal-child", 0);
    if (bad_page == MAP_FAILED || fd < 0 || ftruncate(fd, 4096) != 0)
        return 3;
    bus_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (bus_page == MAP_FAILED || ftruncate(fd, 0) != 0)
        return 3;

    if (strcmp(mode, "siginfo") == 0)
        install_previous(SIGSEGV, prev_siginfo, NULL);
    else if (strcmp(mode, "plain") == 0)
        install_previous(SIGSEGV, NULL, prev_plain);
    else if (strcmp(mode, "fixing") == 0)
        install_previous(SIGSEGV, prev_fixing, NULL);
    else if (strcmp(mode, "bus") == 0)
        install_previous(SIGBUS, prev_bus, NULL);

    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        return 4;
    }
    uvm_install_fn install = (uvm_install_fn)dlsym(lib, "uvm_install");
    uvm_copy_fn copy = (uvm_copy_fn)dlsym(lib, "uvm_copy");
    if (!install || !copy || install() != 0)
        return 5;

    /* UVm's own faults are still UVm's. */
    char buf[16];
    struct uvm_fault f;
    if (copy(buf, (const void *)bad_page, sizeof buf, &f) != sizeof buf || f.addr != (uint64_t)(uintptr_t)bad_page
        || f.signo != SIGSEGV) {
        say("uvm_copy did not recover\n");
        return 6;
    }
    if (copy(buf, (const void *)bus_page, sizeof buf, &f) != sizeof buf || f.signo != SIGBUS) {
        say("uvm_copy did not recover from SIGBUS\n");
        return 6;
    }
    say("uvm_copy recovered\n");

    if (strcmp(mode, "user") == 0) {
        kill(getpid(), SIGSEGV);
        say("survived a user-sent SIGSEGV\n");
        return 7;
    }
    if (strncmp(mode, "bus", 3) == 0) {
        char c = bus_page[0];
        (void)c;
        say("survived the SIGBUS\n");
        return 7;
    }
    bad_page[0] = 1; /* not UVm's fault */
    if (bad_page[0] != 1)
        return 8;
    say("the faulting store was retried\n");
    return 0;
}
