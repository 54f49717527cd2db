/*
 * uvm_copy.S - the fallible primitives of libuvm (x86-64, System V ABI).
 *
 * Contract (see uvm.h for the public one):
 *   - Each instruction that touches caller memory (src/dst) lies in the range of
 *     an exception-table entry (EXTABLE below); the ranges hold no other memory
 *     access. A fault anywhere else (e.g. storing *out) is an ordinary crash.
 *   - On a claimed fault the handler (uvm_signal.c) resumes at the entry's fixup
 *     with %rax = fault address, %r9d = signo, %r10d = access, %r11d = si_code
 *     (uvm_extable.h). So no primitive keeps a value it needs after a fault in
 *     rax, r9, r10 or r11; every other register is as the faulting instruction
 *     left it.
 *   - Leaf functions: no stack use, no calls, no locks; thread-safe and
 *     async-signal-safe. DF is clear on entry (ABI), so string ops go forward.
 *
 * Exactness of uvm_copy / uvm_fill_zero:
 *   Each has a few fast paths (below) and one byte loop. A fault in a fast path
 *   is never reported: its fixup is the byte loop, restarted from rdi/rsi/rcx,
 *   which the fast paths keep at a point where all the work before it is done.
 *   The byte loop runs until all bytes are done or one faults. Its own fixup
 *   reports: rcx = bytes not done, and the faulting byte is the one at rsi (read)
 *   or rdi (write), which is exactly si_addr. This is the scheme of Linux's
 *   copy_user fixups. (rep movsb stops at an iteration boundary at or before the
 *   faulting byte; fast-string mode does not promise it is the byte itself.)
 *   Because the fast paths store in ascending order, and only what they loaded,
 *   whatever they stored before a fault lies inside the exact prefix and is
 *   rewritten with the same bytes by the byte loop: past the prefix, dst is
 *   never written.
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

/*
 * Copy and fill take one of three paths by length; every fast path keeps
 * rdi/rsi/rcx at a point where all the work before it is done, so that its fixup
 * (the byte loop) can restart from there and stop exactly on the faulting byte:
 *   - len < 16: two overlapping loads, then two stores (1..3 bytes: the byte loop);
 *   - len <= UVM_REP_MIN: 16-byte SSE2 moves, 64 bytes per iteration, then one
 *     overlapping last 16. rdi/rsi/rcx stay at the start; the stores go in
 *     ascending order after their loads, so what was stored before a fault is
 *     a prefix of what the byte loop rewrites with the same bytes;
 *   - longer: rep movsb / rep stosb, which keep rdi/rsi/rcx at their progress.
 */
#ifndef UVM_REP_MIN
#define UVM_REP_MIN 1024
#endif

/* uint64_t uvm_copy(void *dst rdi, const void *src rsi, uint64_t len rdx, struct uvm_fault *fault rcx) */
FUNC uvm_copy
	mov	%rcx, %r8		/* fault */
	mov	%rdx, %rcx		/* bytes not done */
	cmp	$16, %rdx
	jb	.Lcopy_small
	cmp	$UVM_REP_MIN, %rdx
	ja	.Lcopy_rep

	lea	-16(%rdx), %r9		/* offset of the last 16 bytes */
	xor	%eax, %eax		/* offset */
	cmp	$64, %rdx
	jb	.Lcopy_16
	lea	-64(%rdx), %r10		/* last offset with 64 bytes left */
.Lcopy_sse:
	movdqu	(%rsi,%rax), %xmm0
	movdqu	16(%rsi,%rax), %xmm1
	movdqu	32(%rsi,%rax), %xmm2
	movdqu	48(%rsi,%rax), %xmm3
	movdqu	%xmm0, (%rdi,%rax)
	movdqu	%xmm1, 16(%rdi,%rax)
	movdqu	%xmm2, 32(%rdi,%rax)
	movdqu	%xmm3, 48(%rdi,%rax)
	add	$64, %rax
	cmp	%r10, %rax
	jbe	.Lcopy_sse
.Lcopy_16:
	cmp	%r9, %rax
	jae	.Lcopy_last16
	movdqu	(%rsi,%rax), %xmm0
	movdqu	%xmm0, (%rdi,%rax)
	add	$16, %rax
	jmp	.Lcopy_16
.Lcopy_last16:
	movdqu	(%rsi,%r9), %xmm0
	movdqu	%xmm0, (%rdi,%r9)
.Lcopy_sse_end:
	xor	%eax, %eax
	ret

.Lcopy_small:				/* len < 16 */
	cmp	$8, %edx
	jb	.Lcopy_small8
	mov	(%rsi), %rax
	mov	-8(%rsi,%rdx), %r9
	mov	%rax, (%rdi)
	mov	%r9, -8(%rdi,%rdx)
.Lcopy_small_end:
	xor	%eax, %eax
	ret
.Lcopy_small8:				/* len < 8 */
	cmp	$4, %edx
	jb	.Lcopy_tail
	movl	(%rsi), %eax
	movl	-4(%rsi,%rdx), %r9d
	movl	%eax, (%rdi)
	movl	%r9d, -4(%rdi,%rdx)
.Lcopy_small8_end:
	xor	%eax, %eax
	ret

.Lcopy_rep:
	rep movsb
.Lcopy_rep_end:
	xor	%eax, %eax
	ret

.Lcopy_tail:				/* len < 4, or a fast path faulted: finish exactly */
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
	EXTABLE .Lcopy_sse, .Lcopy_sse_end, .Lcopy_tail
	EXTABLE .Lcopy_small, .Lcopy_small_end, .Lcopy_tail
	EXTABLE .Lcopy_small8, .Lcopy_small8_end, .Lcopy_tail
	EXTABLE .Lcopy_rep, .Lcopy_rep_end, .Lcopy_tail
	EXTABLE .Lcopy_byte, .Lcopy_byte_end, .Lcopy_fault

/* uint64_t uvm_fill_zero(void *dst rdi, uint64_t len rsi, struct uvm_fault *fault rdx) */
FUNC uvm_fill_zero
	mov	%rsi, %rcx		/* bytes not done */
	xor	%eax, %eax
	cmp	$16, %rsi
	jb	.Lfill_small
	cmp	$UVM_REP_MIN, %rsi
	ja	.Lfill_rep

	pxor	%xmm0, %xmm0
	lea	-16(%rsi), %r9		/* offset of the last 16 bytes */
	cmp	$64, %rsi
	jb	.Lfill_16
	lea	-64(%rsi), %r10		/* last offset with 64 bytes left */
.Lfill_sse:
	movdqu	%xmm0, (%rdi,%rax)
	movdqu	%xmm0, 16(%rdi,%rax)
	movdqu	%xmm0, 32(%rdi,%rax)
	movdqu	%xmm0, 48(%rdi,%rax)
	add	$64, %rax
	cmp	%r10, %rax
	jbe	.Lfill_sse
.Lfill_16:
	cmp	%r9, %rax
	jae	.Lfill_last16
	movdqu	%xmm0, (%rdi,%rax)
	add	$16, %rax
	jmp	.Lfill_16
.Lfill_last16:
	movdqu	%xmm0, (%rdi,%r9)
.Lfill_sse_end:
	xor	%eax, %eax
	ret

.Lfill_small:				/* len < 16 */
	cmp	$8, %esi
	jb	.Lfill_small8
	movq	$0, (%rdi)
	movq	$0, -8(%rdi,%rsi)
.Lfill_small_end:
	ret				/* rax = 0 */
.Lfill_small8:				/* len < 8 */
	cmp	$4, %esi
	jb	.Lfill_tail
	movl	$0, (%rdi)
	movl	$0, -4(%rdi,%rsi)
.Lfill_small8_end:
	ret				/* rax = 0 */

.Lfill_rep:
	rep stosb
.Lfill_rep_end:
	ret				/* rax = 0 */

.Lfill_tail:				/* len < 4, or a fast path faulted: finish exactly */
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
	EXTABLE .Lfill_sse, .Lfill_sse_end, .Lfill_tail
	EXTABLE .Lfill_small, .Lfill_small_end, .Lfill_tail
	EXTABLE .Lfill_small8, .Lfill_small8_end, .Lfill_tail
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

/*
 * int32_t uvm_swapN(void *dst rdi, uintN_t val rsi, uintN_t *old rdx, struct uvm_fault *fault rcx)
 * xchg with a memory operand is locked (sequentially consistent) without a prefix; it
 * leaves the value it replaced in the register, stored to *old only after it succeeded.
 */
FUNC uvm_swap32
1:	xchgl	%esi, (%rdi)
2:	movl	%esi, (%rdx)
	xor	%eax, %eax
	ret
ENDFUNC uvm_swap32
	EXTABLE 1b, 2b, .Lfail_rcx

FUNC uvm_swap64
1:	xchgq	%rsi, (%rdi)
2:	movq	%rsi, (%rdx)
	xor	%eax, %eax
	ret
ENDFUNC uvm_swap64
	EXTABLE 1b, 2b, .Lfail_rcx

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
.Lfail_rcx:
	REPORT	%rcx
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
