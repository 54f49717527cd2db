/*
 * uvm.h - the native fault bridge of UVm (libuvm.so), Linux x86-64 only.
 *
 * What lives here, and nothing else:
 *   - fallible memory primitives (copy, fill-zero, 1/2/4/8-byte load and store,
 *     32/64-bit compare-exchange) that return an error instead of crashing when
 *     the memory they touch faults (SIGSEGV or SIGBUS), and
 *   - the SIGSEGV/SIGBUS handler that makes that possible.
 *
 * How a fault is recovered (the model is Linux's copy_from_user and gVisor's
 * safecopy):
 *   Every instruction of a primitive that may touch caller memory is listed in an
 *   exception table (uvm_copy.S): faulting-instruction range -> fixup address.
 *   When the kernel delivers SIGSEGV/SIGBUS for a fault (si_code > 0) and the
 *   saved RIP lies in one of those ranges, the handler rewrites the saved RIP to
 *   the fixup and passes the fault address, signal, access kind and si_code in
 *   saved registers. After sigreturn the fixup runs in ordinary context: it fills
 *   *fault and returns the primitive's failure value. The handler does nothing
 *   else: no allocation, no lock, no libc call, no managed code.
 *   Every other SIGSEGV/SIGBUS is forwarded to the action that was installed
 *   before uvm_install (e.g. the .NET runtime's, which turns null dereferences
 *   into NullReferenceException): see uvm_signal.c for the exact rules.
 *
 * Contract shared by all primitives:
 *   - They are fallible only after uvm_install() has returned 0. Before that a
 *     fault is handled by whatever handler is installed (usually: the process dies).
 *   - They must not run with SIGSEGV/SIGBUS blocked (e.g. inside another SIGSEGV
 *     handler without SA_NODEFER): the kernel kills the process on such a fault.
 *   - `fault` may be NULL (the details are then dropped). It is written ONLY when
 *     the primitive faults; on success it is left untouched.
 *   - Output pointers (`out`, `observed`) and `fault` itself must be valid memory:
 *     only the accesses to `src`/`dst` are fallible.
 *   - All primitives are thread-safe and async-signal-safe (they are plain loads
 *     and stores plus the fixup path; they take no lock).
 *   - A fault is reported, never resolved: the caller decides what to do (e.g.
 *     populate the page and call again for the remaining bytes).
 *   - fault->addr is the si_addr the kernel reported. For page faults that is the
 *     exact first inaccessible byte. For a general-protection fault (a
 *     non-canonical address) the kernel reports addr 0 and code SI_KERNEL (128).
 */
#ifndef UVM_H
#define UVM_H

#define UVM_ACCESS_READ 0
#define UVM_ACCESS_WRITE 1
#define UVM_ACCESS_EXEC 2

#ifndef __ASSEMBLER__

#include <stdint.h>

#define UVM_API __attribute__((visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

/* What the faulting access was. 24 bytes; filled only when a primitive faults. */
struct uvm_fault {
    uint64_t addr;     /* faulting address (siginfo si_addr) */
    int32_t signo;     /* SIGSEGV or SIGBUS */
    int32_t access;    /* UVM_ACCESS_READ / _WRITE / _EXEC, from the x86 page-fault
                          error code (bit 1 = write, bit 4 = instruction fetch) */
    int32_t code;      /* siginfo si_code: SEGV_MAPERR, SEGV_ACCERR, BUS_ADRERR, ... */
    int32_t reserved;  /* always 0 */
};

/*
 * Installs the SIGSEGV and SIGBUS handlers, chaining to the actions installed
 * before. Thread-safe and idempotent: the first successful call installs, later
 * calls return 0 and change nothing. Returns 0 or -errno (then nothing is
 * installed and the call may be retried). Not async-signal-safe.
 * Call it after the runtime has installed its own handlers.
 */
UVM_API int32_t uvm_install(void);

/*
 * Copies len bytes from src to dst, in ascending address order. The ranges must
 * not overlap. Returns the number of bytes NOT copied: 0 means all done. When it
 * returns r > 0, exactly the first len - r bytes were copied, byte len - r is the
 * first byte that faulted (of src for a read fault, of dst for a write fault),
 * fault->addr is its address and the bytes of dst past the prefix are unchanged.
 */
UVM_API uint64_t uvm_copy(void *dst, const void *src, uint64_t len, struct uvm_fault *fault);

/* Zeroes len bytes at dst. Returns bytes NOT zeroed, with the same exactness as uvm_copy. */
UVM_API uint64_t uvm_fill_zero(void *dst, uint64_t len, struct uvm_fault *fault);

/*
 * Single loads: one access of the given width (unaligned allowed). Return 0 and
 * store the value in *out, or -1 if the access faulted (*out untouched). For an
 * unaligned access that straddles a page, fault->addr is the first byte the
 * kernel reports as inaccessible.
 */
UVM_API int32_t uvm_load8(const void *src, uint8_t *out, struct uvm_fault *fault);
UVM_API int32_t uvm_load16(const void *src, uint16_t *out, struct uvm_fault *fault);
UVM_API int32_t uvm_load32(const void *src, uint32_t *out, struct uvm_fault *fault);
UVM_API int32_t uvm_load64(const void *src, uint64_t *out, struct uvm_fault *fault);

/* Single stores: 0 ok, -1 faulted (nothing was stored). */
UVM_API int32_t uvm_store8(void *dst, uint8_t val, struct uvm_fault *fault);
UVM_API int32_t uvm_store16(void *dst, uint16_t val, struct uvm_fault *fault);
UVM_API int32_t uvm_store32(void *dst, uint32_t val, struct uvm_fault *fault);
UVM_API int32_t uvm_store64(void *dst, uint64_t val, struct uvm_fault *fault);

/*
 * Atomic compare-exchange (lock cmpxchg, sequentially consistent). dst must be
 * naturally aligned. Returns 0 and stores in *observed the value seen before the
 * operation (== expected iff the swap happened), or -1 if the access faulted
 * (*observed untouched, memory unchanged). The access is a write even when the
 * comparison fails, so a read-only page always faults.
 */
UVM_API int32_t uvm_cas32(void *dst, uint32_t expected, uint32_t desired, uint32_t *observed,
                          struct uvm_fault *fault);
UVM_API int32_t uvm_cas64(void *dst, uint64_t expected, uint64_t desired, uint64_t *observed,
                          struct uvm_fault *fault);

/*
 * Atomic exchange (xchg, sequentially consistent). dst must be naturally aligned.
 * Returns 0 and stores in *old the value replaced by val, or -1 if the access
 * faulted (*old untouched, memory unchanged). The access is a write, so a
 * read-only page always faults. An atomic store is a swap whose old value is
 * dropped.
 */
UVM_API int32_t uvm_swap32(void *dst, uint32_t val, uint32_t *old, struct uvm_fault *fault);
UVM_API int32_t uvm_swap64(void *dst, uint64_t val, uint64_t *old, struct uvm_fault *fault);

/* Faults claimed by UVm's handler so far (relaxed atomic counter, process-wide). */
UVM_API uint64_t uvm_stat_claimed(void);
/* Signals forwarded to the previously installed action so far (relaxed atomic counter). */
UVM_API uint64_t uvm_stat_forwarded(void);

#ifdef __cplusplus
}
#endif

#endif /* !__ASSEMBLER__ */
#endif /* UVM_H */
