/*
 * uvm_extable.h - the private contract between the handler (uvm_signal.c) and the
 * fallible primitives (uvm_copy.S). Not part of the public API.
 *
 * Exception table
 *   uvm_copy.S emits one entry per potentially-faulting instruction range into
 *   the section .rodata.uvm_extable, between the symbols uvm_extable_begin and
 *   uvm_extable_end. Each field is a 32-bit offset relative to the field's own
 *   address (position independent, no relocations):
 *       target(field) = (uintptr_t)&field + field
 *   An entry claims a fault when  target(from) <= RIP < target(to), and then the
 *   handler resumes at target(fixup).
 *
 * Handler -> fixup register convention (written into the saved ucontext):
 *       %rax = fault address (si_addr)
 *       %r9d = signal number (SIGSEGV or SIGBUS)
 *       %r10d = access (UVM_ACCESS_READ / _WRITE / _EXEC)
 *       %r11d = si_code
 *   Every other register keeps the value it had at the faulting instruction, so
 *   a primitive may keep nothing it needs after a fault in rax, r9, r10 or r11.
 */
#ifndef UVM_EXTABLE_H
#define UVM_EXTABLE_H

#ifndef __ASSEMBLER__
#include <stdint.h>

struct uvm_extable_entry {
    int32_t from;  /* first faulting instruction */
    int32_t to;    /* one past the last faulting instruction */
    int32_t fixup; /* where to resume */
};

extern const struct uvm_extable_entry uvm_extable_begin[] __attribute__((visibility("hidden")));
extern const struct uvm_extable_entry uvm_extable_end[] __attribute__((visibility("hidden")));
#endif

#endif /* UVM_EXTABLE_H */
