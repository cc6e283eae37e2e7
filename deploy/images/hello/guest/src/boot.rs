//! The CPL0 part of the guest: the PVH entry stub and the trap handlers.
//!
//! Everything that runs at ring 0 lives in this file, written in assembly
//! without SSE, and is kept to a few dozen instructions per path: under a
//! PVM-backed KVM ring-0 code is interpreted (~5,000x slower than native) and
//! cannot execute SSE or `int3`. The stub
//!
//! 1. saves the PVH `hvm_start_info` pointer (`%ebx`),
//! 2. loads a static GDT (ring-0 and ring-3 64-bit segments, one TSS), the
//!    prebuilt identity-mapped page tables (first 4 GiB, 2 MiB pages, USER
//!    bit set, the top GiB uncached for MMIO), enables PAE, long mode, SSE
//!    (CR4.OSFXSR/OSXMMEXCPT, CR0.MP, !CR0.EM),
//! 3. fills in the TSS descriptor base, `ltr`, `lidt` (the IDT itself is
//!    filled by ring 3, see `sys::init_idt`), and
//! 4. `iretq`s to `rust_main` at CPL3 with interrupts disabled.
//!
//! Ring 3 reaches ring 0 through `int 0x80`: a DPL3 interrupt gate on
//! hardware KVM and TCG; under PVM the `int` raises #UD instead, and the #UD
//! handler recognises the `cd 80` bytes and runs the same service. See
//! [`crate::sys`] for the operations. CPU exceptions taken at CPL3 are
//! bounced back to ring 3 (`fault_entry`) to be reported; an exception at
//! CPL0 triple-faults, i.e. resets the VM. Nothing here copies or zeroes
//! memory (guest RAM starts zeroed).

use core::arch::global_asm;

/// Selector of the ring-0 code segment.
pub const KERNEL_CS: u16 = 0x08;
/// Vector of the ring-3 -> ring-0 service gate.
pub const SERVICE_VECTOR: usize = 0x80;
/// Vector the LAPIC timer interrupt is delivered to.
pub const TIMER_VECTOR: u8 = 0x40;
/// Vector device interrupts (virtio-net) are routed to.
pub const DEVICE_VECTOR: u8 = 0x41;

extern "C" {
    /// Physical address of the PVH `hvm_start_info` (saved by the stub).
    pub static pvh_start_info: u32;
    /// The IDT (256 16-byte gates, zeroed at boot, filled by ring 3).
    pub static mut idt_table: [u64; 512];
    /// First of 32 exception stubs, each 16 bytes apart (vector n at +16n).
    pub fn exception_stubs();
    /// Handler for external interrupts (LAPIC EOI, return).
    pub fn irq_handler();
    /// Handler for the `int 0x80` service gate.
    pub fn service_handler();
}

global_asm!(
    r#"
    .set CR0_PE, 1 << 0
    .set CR0_MP, 1 << 1
    .set CR0_EM, 1 << 2
    .set CR0_NE, 1 << 5
    .set CR0_PG, 1 << 31
    .set CR4_PAE, 1 << 5
    .set CR4_OSFXSR, 1 << 9
    .set CR4_OSXMMEXCPT, 1 << 10
    .set MSR_EFER, 0xC0000080
    .set EFER_LME, 1 << 8
    .set SEL_KCODE, 0x08
    .set SEL_KDATA, 0x10
    .set SEL_UDATA, 0x18 | 3
    .set SEL_UCODE, 0x20 | 3
    .set SEL_TSS, 0x28

    /* ---- PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18) ---- */
    .section .note.Xen, "a"
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4

    /* ---- 32-bit entry: flat protected mode, paging off, %ebx = start info ---- */
    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    movl %ebx, pvh_start_info
    lgdt gdt_ptr
    movl %cr4, %eax
    orl $(CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT), %eax
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl %cr0, %eax
    andl $~CR0_EM, %eax
    orl $(CR0_PE | CR0_MP | CR0_NE | CR0_PG), %eax
    movl %eax, %cr0
    ljmp $SEL_KCODE, $start64

    .code64
start64:
    movw $SEL_KDATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movq $kernel_stack_top, %rsp
    /* TSS descriptor base (the TSS lies below 4 GiB). */
    movl $tss, %eax
    movw %ax, gdt_tss + 2
    shrl $16, %eax
    movb %al, gdt_tss + 4
    movb %ah, gdt_tss + 7
    movw $SEL_TSS, %ax
    ltr %ax
    lidt idt_ptr
    /* Enter ring 3: SS, RSP, RFLAGS (IF=0), CS, RIP. */
    pushq $SEL_UDATA
    pushq $(user_stack_top - 8)
    pushq $0x2
    pushq $SEL_UCODE
    pushq $rust_main
    iretq

    /* ---- exception stubs: 32 x 16 bytes; push a dummy error code where the CPU does not ---- */
    .text
    .balign 16
    .global exception_stubs
exception_stubs:
    .irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
    .if \vec == 6
    jmp invalid_opcode
    .elseif (\vec == 8) || (\vec >= 10 && \vec <= 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    .else
    pushq $0
    .endif
    pushq $\vec
    jmp fault_common
    .endr

    /* #UD. Under PVM a ring-3 `int 0x80` arrives here (at the `int`) instead of
       through its gate: treat `cd 80` at the faulting RIP as the service call. */
invalid_opcode:
    testq $3, 8(%rsp)
    jz 1f
    pushq %rcx
    movq 8(%rsp), %rcx
    cmpw $0x80cd, (%rcx)
    popq %rcx
    jne 1f
    addq $2, (%rsp)
    jmp service_handler
1:  pushq $0
    pushq $6
    jmp fault_common

    /* Stack: vector, error, RIP, CS, RFLAGS, RSP, SS. */
fault_common:
    testq $3, 24(%rsp)
    jz kernel_fault
    /* Fault at CPL3: resume ring 3 in fault_entry(vector, error, rip, cr2) on the fault stack. */
    popq %rdi
    popq %rsi
    popq %rdx
    movq %cr2, %rcx
    pushq $fault_entry
    movq $(fault_stack_top - 8), %rax
    movq %rax, 24(%rsp)
    andq $~0x100, 16(%rsp)
    iretq
kernel_fault:
    lidt zero_idt_ptr
    ud2

    /* ---- external interrupts: acknowledge at the LAPIC, return ---- */
    .balign 16
    .global irq_handler
irq_handler:
    pushq %rax
    movq $0xfee000b0, %rax
    movl $0, (%rax)
    popq %rax
    iretq

    /* ---- int 0x80 service gate (DPL3). %rax = op, %rdi/%rsi = arguments, result in %rax.
       Clobbers %rcx, %rdx, %rsi, %rdi. ---- */
    .balign 16
    .global service_handler
service_handler:
    cmpq $1, %rax
    je 1f
    cmpq $2, %rax
    je 2f
    cmpq $3, %rax
    je 3f
    cmpq $4, %rax
    je 4f
    cmpq $5, %rax
    je 5f
    cmpq $6, %rax
    je 6f
    movq $-1, %rax
    iretq
1:  /* write(%rdi = bytes, %rsi = len) to COM1 */
    /* A byte loop: PVM's ring-0 emulation does not handle `rep outsb`. */
    movw $0x3f8, %dx
    testq %rsi, %rsi
    jz 8f
7:  movb (%rdi), %al
    outb %al, %dx
    incq %rdi
    decq %rsi
    jnz 7b
8:  xorl %eax, %eax
    iretq
2:  /* outb(%rdi = port, %rsi = value) */
    movl %edi, %edx
    movl %esi, %eax
    outb %al, %dx
    xorl %eax, %eax
    iretq
3:  /* inb(%rdi = port) -> %rax */
    movl %edi, %edx
    xorl %eax, %eax
    inb %dx, %al
    iretq
4:  /* idle: wait for the next interrupt */
    sti
    hlt
    cli
    xorl %eax, %eax
    iretq
5:  /* wrmsr(%rdi = msr, %rsi = value) */
    movl %edi, %ecx
    movl %esi, %eax
    movq %rsi, %rdx
    shrq $32, %rdx
    wrmsr
    xorl %eax, %eax
    iretq
6:  /* reset by triple fault: no IDT, undefined opcode */
    lidt zero_idt_ptr
    ud2

    /* ---- data ---- */
    .section .data.pagetables, "aw"
    .balign 4096
pml4:
    .quad pdpt + 0x7
    .fill 511, 8, 0
pdpt:
    .quad pd0 + 0x7
    .quad pd1 + 0x7
    .quad pd2 + 0x7
    .quad pd3 + 0x7
    .fill 508, 8, 0
    /* 2 MiB pages: present, writable, user, PS. The top GiB (MMIO, LAPIC, IOAPIC) uncached. */
pd0:
    .set pt_i, 0
    .rept 512
    .quad (pt_i << 21) | 0x87
    .set pt_i, pt_i + 1
    .endr
pd1:
    .rept 512
    .quad (pt_i << 21) | 0x87
    .set pt_i, pt_i + 1
    .endr
pd2:
    .rept 512
    .quad (pt_i << 21) | 0x87
    .set pt_i, pt_i + 1
    .endr
pd3:
    .rept 512
    .quad (pt_i << 21) | 0x9f
    .set pt_i, pt_i + 1
    .endr

    .data
    .balign 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff /* 0x08 ring-0 code, 64-bit */
    .quad 0x00cf92000000ffff /* 0x10 ring-0 data */
    .quad 0x00cff2000000ffff /* 0x18 ring-3 data */
    .quad 0x00affa000000ffff /* 0x20 ring-3 code, 64-bit */
gdt_tss:
    .quad 0x0000890000000067 /* 0x28 TSS (base filled in at boot) */
    .quad 0
gdt_end:
    .balign 8
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt
    .balign 8
idt_ptr:
    .word 4095
    .quad idt_table
    .balign 8
zero_idt_ptr:
    .word 0
    .quad 0
    .balign 16
tss:
    .long 0
    .quad kernel_stack_top /* rsp0 */
    .quad 0
    .quad 0
    .quad 0
    .quad 0, 0, 0, 0, 0, 0, 0 /* ist1..7 */
    .quad 0
    .word 0
    .word 104 /* I/O bitmap beyond the limit: no port access from ring 3 */
    .global pvh_start_info
    .balign 4
pvh_start_info:
    .long 0

    .bss
    .balign 4096
    .global idt_table
idt_table:
    .skip 4096
    .balign 16
    .skip 16384
kernel_stack_top:
    .skip 16384
fault_stack_top:
    .skip 262144
user_stack_top:
    "#,
    options(att_syntax)
);
