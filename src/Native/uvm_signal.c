/*
 * uvm_signal.c - the SIGSEGV/SIGBUS handler of libuvm and its installation.
 *
 * Contract of the handler (uvm_on_fault):
 *   1. It CLAIMS a signal only if the kernel generated it for a fault
 *      (si_code > 0) and the saved RIP lies in an exception-table range of
 *      uvm_copy.S. Then it rewrites the saved registers per uvm_extable.h
 *      (RIP = fixup; rax, r9, r10, r11 = addr, signo, access, code), counts
 *      the claim and returns. The fixup runs after sigreturn, in normal context.
 *   2. Every other signal is FORWARDED to the action installed before
 *      uvm_install, as the kernel would have delivered it:
 *        - a handler with SA_SIGINFO: sa_sigaction(sig, info, ucontext), the
 *          original arguments;
 *        - a handler without SA_SIGINFO: sa_handler(sig);
 *        - SIG_DFL, or SIG_IGN for a kernel fault (ignoring it would re-execute
 *          the faulting instruction forever; the kernel itself forces SIG_DFL
 *          then): reset the disposition to SIG_DFL and, for a kernel fault,
 *          return so the instruction faults again and the process dies of the
 *          signal; for a user-sent signal (si_code <= 0, or the asynchronous
 *          BUS_MCEERR_AO), raise it again (it is delivered when the handler
 *          returns and unblocks it);
 *        - SIG_IGN for a user-sent signal: nothing.
 *      A previous action with SA_RESETHAND is reset to SIG_DFL on its first
 *      delivery, as the kernel would do.
 *   Async-signal-safety: the claim path reads the (constant) exception table and
 *   the ucontext, and does one relaxed atomic increment. The forward path adds
 *   one atomic increment, sigaction(2) and raise(3), both async-signal-safe.
 *   No allocation, no lock, no managed code, errno preserved.
 *
 * Installation (uvm_install): for SIGSEGV then SIGBUS, read the current action,
 * save it as "previous", then install uvm_on_fault with
 * SA_SIGINFO | SA_ONSTACK, plus SA_RESTART and SA_NODEFER if the previous action
 * had them, and the previous action's sa_mask (so the forwarded handler runs
 * with the mask it asked for). The alternate stack, if the thread has one, is
 * where the .NET runtime wants its own SIGSEGV handling to run (stack overflow).
 *
 * Preconditions the caller must keep:
 *   - A primitive must not run with SIGSEGV/SIGBUS blocked (e.g. inside another
 *     SIGSEGV handler without SA_NODEFER): the kernel then kills the process
 *     instead of delivering the signal.
 *   - Whoever installs a SIGSEGV/SIGBUS action after uvm_install must chain to
 *     ours, or the primitives stop being fallible.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#include "uvm.h"
#include "uvm_extable.h"

/* x86 page-fault error code bits (saved in REG_ERR). */
#define X86_PF_WRITE 0x2
#define X86_PF_INSTR 0x10

/* The actions installed before ours. Written before our handler is installed, then
 * only read, except the handler pointer of an SA_RESETHAND action (atomic exchange). */
static struct sigaction uvm_prev_segv;
static struct sigaction uvm_prev_bus;

static _Atomic uint64_t uvm_claimed;
static _Atomic uint64_t uvm_forwarded;

static pthread_mutex_t uvm_install_lock = PTHREAD_MUTEX_INITIALIZER;
static int uvm_installed; /* guarded by uvm_install_lock */

typedef void (*uvm_sigaction_fn)(int, siginfo_t *, void *);

static uintptr_t uvm_extable_target(const int32_t *field)
{
    return (uintptr_t)field + (uintptr_t)(intptr_t)*field;
}

/* The fixup for a faulting RIP, or 0 if RIP is not a primitive's faulting instruction. */
static uintptr_t uvm_extable_fixup(uintptr_t rip)
{
    uintptr_t end = (uintptr_t)uvm_extable_end;
    for (uintptr_t p = (uintptr_t)uvm_extable_begin; p < end; p += sizeof(struct uvm_extable_entry)) {
        const struct uvm_extable_entry *e = (const struct uvm_extable_entry *)p;
        if (rip >= uvm_extable_target(&e->from) && rip < uvm_extable_target(&e->to))
            return uvm_extable_target(&e->fixup);
    }
    return 0;
}

static int32_t uvm_access_of(const ucontext_t *uc)
{
    greg_t err = uc->uc_mcontext.gregs[REG_ERR];
    if (err & X86_PF_INSTR)
        return UVM_ACCESS_EXEC;
    return (err & X86_PF_WRITE) ? UVM_ACCESS_WRITE : UVM_ACCESS_READ;
}

static void uvm_forward(int sig, siginfo_t *info, void *context)
{
    struct sigaction *prev = sig == SIGBUS ? &uvm_prev_bus : &uvm_prev_segv;
    /* A fault re-executes when we return; an asynchronous machine-check report does not. */
    int refaults = info->si_code > 0 && !(sig == SIGBUS && info->si_code == BUS_MCEERR_AO);
    /* sa_handler shares its storage with sa_sigaction; SIG_DFL/SIG_IGN live there too. */
    void (*handler)(int) = (prev->sa_flags & SA_RESETHAND)
                               ? __atomic_exchange_n(&prev->sa_handler, SIG_DFL, __ATOMIC_RELAXED)
                               : __atomic_load_n(&prev->sa_handler, __ATOMIC_RELAXED);

    atomic_fetch_add_explicit(&uvm_forwarded, 1, memory_order_relaxed);

    if (handler == SIG_IGN && !refaults)
        return;
    if (handler == SIG_DFL || handler == SIG_IGN) {
        int saved_errno = errno;
        struct sigaction dfl = { .sa_handler = SIG_DFL };
        sigemptyset(&dfl.sa_mask);
        sigaction(sig, &dfl, NULL);
        if (!refaults)
            raise(sig);
        errno = saved_errno;
        return;
    }
    if (prev->sa_flags & SA_SIGINFO)
        ((uvm_sigaction_fn)(void (*)(void))handler)(sig, info, context); /* same union member */
    else
        handler(sig);
}

static void uvm_on_fault(int sig, siginfo_t *info, void *context)
{
    ucontext_t *uc = context;
    greg_t *regs = uc->uc_mcontext.gregs;

    if (info->si_code > 0) {
        uintptr_t fixup = uvm_extable_fixup((uintptr_t)regs[REG_RIP]);
        if (fixup != 0) {
            regs[REG_RAX] = (greg_t)(uintptr_t)info->si_addr;
            regs[REG_R9] = sig;
            regs[REG_R10] = uvm_access_of(uc);
            regs[REG_R11] = info->si_code;
            regs[REG_RIP] = (greg_t)fixup;
            atomic_fetch_add_explicit(&uvm_claimed, 1, memory_order_relaxed);
            return;
        }
    }
    uvm_forward(sig, info, context);
}

static int32_t uvm_install_one(int sig, struct sigaction *prev)
{
    struct sigaction old;
    struct sigaction act;

    if (sigaction(sig, NULL, &old) != 0)
        return -errno;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = uvm_on_fault;
    act.sa_mask = old.sa_mask;
    act.sa_flags = SA_SIGINFO | SA_ONSTACK | (old.sa_flags & (SA_RESTART | SA_NODEFER));
    /* The handler may run as soon as sigaction returns: publish prev first. */
    *prev = old;
    if (sigaction(sig, &act, NULL) != 0)
        return -errno;
    return 0;
}

UVM_API int32_t uvm_install(void)
{
    int32_t rc = 0;

    pthread_mutex_lock(&uvm_install_lock);
    if (!uvm_installed) {
        rc = uvm_install_one(SIGSEGV, &uvm_prev_segv);
        if (rc == 0) {
            rc = uvm_install_one(SIGBUS, &uvm_prev_bus);
            if (rc != 0)
                sigaction(SIGSEGV, &uvm_prev_segv, NULL); /* all or nothing */
        }
        uvm_installed = rc == 0;
    }
    pthread_mutex_unlock(&uvm_install_lock);
    return rc;
}

UVM_API uint64_t uvm_stat_claimed(void)
{
    return atomic_load_explicit(&uvm_claimed, memory_order_relaxed);
}

UVM_API uint64_t uvm_stat_forwarded(void)
{
    return atomic_load_explicit(&uvm_forwarded, memory_order_relaxed);
}
