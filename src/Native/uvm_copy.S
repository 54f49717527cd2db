/*
 * uvm_copy.S - the fallible primitives of libuvm (x86-64, System V ABI).
 *
 * Contract (see uvm.h for the public one):
 *   - Each instruction that touches caller memory (src/dst) is covered by an
 *     exception-table entry (EXTABLE below). Nothing else is: a fault anywhere
 *     else in this file (e.g. storing *out) is an ordinary crash.
 *   - On a claimed fault the handler (uvm_signal.c) resumes at the entry's fixup
 *     with %rax = fault address, %r9d = signo, %r10d = access, %r11d = si_code
 *     (uvm_extable.h). So no primitive keeps a value it needs after a fault in
 *     rax, r9, r10 or r11; every other register is as the faulting instruction
 *     left it.
 *   - Leaf functions: no stack use, no calls, no locks; thread-safe and
 *     async-signal-safe. DF is clear on entry (ABI), so string ops go forward.
 *
 * Exactness of uvm_copy / uvm_fill_zero:
 *   The fast path is a single `rep movsb` / `rep stosb` (ERMS/FSRM). When it
 *   faults, the CPU has updated rdi/rsi/rcx to an iteration boundary at or before
 *   the faulting byte, but fast-string mode does not promise that boundary is the
 *   faulting byte itself. So its fixup does not report: it finishes byte by byte
 *   from where the string op stopped until a byte faults (or all are done). The
 *   byte loop's own fixup reports: rcx = bytes not done, and the faulting byte is
 *   the one at rsi (read) or rdi (write), which is exactly si_addr. This is the
 *   scheme of Linux's copy_user fixups.
 */
#include "uvm.h"
#include "uvm_extable.h"

/* One exception-table entry: [from, to) -> fixup, as self-relative offsets. */
.macro EXTABLE from, to, fixup
	.pushsection .rodata.uvm_extable, "a"
	.balign 4
	.long \from - .
	.long \to - .
	.long \fixup - .
	.popsection
.endm

/* Store the handler's fault registers into *(\fault), unless \fault is NULL. */
.macro REPORT fault
	test	\fault, \fault
	jz	8f
	mov	%rax, 0(\fault)		/* addr */
	mov	%r9d, 8(\fault)		/* signo */
	mov	%r10d, 12(\fault)	/* access */
	mov	%r11d, 16(\fault)	/* code */
	movl	$0, 20(\fault)		/* reserved */
8:
.endm

.macro FUNC name
	.globl	\name
	.type	\name, @function
	.p2align 4
\name:
	.cfi_startproc
.endm

.macro ENDFUNC name
	.cfi_endproc
	.size	\name, . - \name
.endm

	.pushsection .rodata.uvm_extable, "a"
	.balign 4
	.globl	uvm_extable_begin
	.hidden	uvm_extable_begin
uvm_extable_begin:
	.popsection

	.text

/* uint64_t uvm_copy(void *dst rdi, const void *src rsi, uint64_t len rdx, struct uvm_fault *fault rcx) */
FUNC uvm_copy
	mov	%rcx, %r8		/* fault */
	mov	%rdx, %rcx		/* bytes not done */
.Lcopy_rep:
	rep movsb
.Lcopy_rep_end:
	xor	%eax, %eax
	ret
.Lcopy_tail:				/* rep movsb faulted: finish exactly */
	test	%rcx, %rcx
	jz	.Lcopy_done
.Lcopy_byte:
	movzbl	(%rsi), %eax
	movb	%al, (%rdi)
.Lcopy_byte_end:
	inc	%rsi
	inc	%rdi
	dec	%rcx
	jnz	.Lcopy_byte
.Lcopy_done:
	xor	%eax, %eax
	ret
.Lcopy_fault:				/* the byte at rsi or rdi faulted */
	REPORT	%r8
	mov	%rcx, %rax
	ret
ENDFUNC uvm_copy
	EXTABLE .Lcopy_rep, .Lcopy_rep_end, .Lcopy_tail
	EXTABLE .Lcopy_byte, .Lcopy_byte_end, .Lcopy_fault

/* uint64_t uvm_fill_zero(void *dst rdi, uint64_t len rsi, struct uvm_fault *fault rdx) */
FUNC uvm_fill_zero
	mov	%rsi, %rcx		/* bytes not done */
	xor	%eax, %eax
.Lfill_rep:
	rep stosb
.Lfill_rep_end:
	ret				/* rax = 0 */
.Lfill_tail:				/* rep stosb faulted: finish exactly */
	test	%rcx, %rcx
	jz	.Lfill_done
.Lfill_byte:
	movb	$0, (%rdi)
.Lfill_byte_end:
	inc	%rdi
	dec	%rcx
	jnz	.Lfill_byte
.Lfill_done:
	xor	%eax, %eax
	ret
.Lfill_fault:				/* the byte at rdi faulted */
	REPORT	%rdx
	mov	%rcx, %rax
	ret
ENDFUNC uvm_fill_zero
	EXTABLE .Lfill_rep, .Lfill_rep_end, .Lfill_tail
	EXTABLE .Lfill_byte, .Lfill_byte_end, .Lfill_fault

/*
 * int32_t uvm_loadN(const void *src rdi, uintN_t *out rsi, struct uvm_fault *fault rdx)
 * The load is the function's first instruction (tests rely on it: uvm_load8).
 */
.macro LOAD name, load, store
FUNC \name
1:	\load
2:	\store
	xor	%eax, %eax
	ret
ENDFUNC \name
	EXTABLE 1b, 2b, .Lfail_rdx
.endm

LOAD uvm_load8,  "movzbl (%rdi), %eax", "movb %al, (%rsi)"
LOAD uvm_load16, "movzwl (%rdi), %eax", "movw %ax, (%rsi)"
LOAD uvm_load32, "movl (%rdi), %eax",   "movl %eax, (%rsi)"
LOAD uvm_load64, "movq (%rdi), %rax",   "movq %rax, (%rsi)"

/* int32_t uvm_storeN(void *dst rdi, uintN_t val rsi, struct uvm_fault *fault rdx) */
.macro STORE name, store
FUNC \name
1:	\store
2:	xor	%eax, %eax
	ret
ENDFUNC \name
	EXTABLE 1b, 2b, .Lfail_rdx
.endm

STORE uvm_store8,  "movb %sil, (%rdi)"
STORE uvm_store16, "movw %si, (%rdi)"
STORE uvm_store32, "movl %esi, (%rdi)"
STORE uvm_store64, "movq %rsi, (%rdi)"

/*
 * int32_t uvm_casN(void *dst rdi, uintN_t expected rsi, uintN_t desired rdx,
 *                  uintN_t *observed rcx, struct uvm_fault *fault r8)
 * lock cmpxchg leaves the value it saw in rax whether or not it swapped.
 */
FUNC uvm_cas32
	mov	%esi, %eax
1:	lock cmpxchgl %edx, (%rdi)
2:	movl	%eax, (%rcx)
	xor	%eax, %eax
	ret
ENDFUNC uvm_cas32
	EXTABLE 1b, 2b, .Lfail_r8

FUNC uvm_cas64
	mov	%rsi, %rax
1:	lock cmpxchgq %rdx, (%rdi)
2:	movq	%rax, (%rcx)
	xor	%eax, %eax
	ret
ENDFUNC uvm_cas64
	EXTABLE 1b, 2b, .Lfail_r8

/* Shared fixups of the single-access primitives: report, return -1. */
	.p2align 4
	.type	uvm_fail, @function
uvm_fail:
	.cfi_startproc
.Lfail_rdx:
	REPORT	%rdx
	mov	$-1, %eax
	ret
.Lfail_r8:
	REPORT	%r8
	mov	$-1, %eax
	ret
	.cfi_endproc
	.size	uvm_fail, . - uvm_fail

	.pushsection .rodata.uvm_extable, "a"
	.globl	uvm_extable_end
	.hidden	uvm_extable_end
uvm_extable_end:
	.popsection

	.section .note.GNU-stack, "", @progbits
