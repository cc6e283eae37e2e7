/*
 * /init of the image's minimal initramfs (initrd-min): a static x86-64 program
 * of two system calls, no libc. It prints one line on the console and resets
 * the machine (reboot(2) with LINUX_REBOOT_CMD_RESTART; with reboot=k through
 * the i8042).
 *
 * Why it exists: on PVM hosts the kernel unpacks the initramfs at interpreted
 * ring 0 (minutes for the 2 MB busybox archive) and then cannot run user space
 * anyway (init's first `syscall` faults), so a VMM test there boots this 9 KB
 * archive: "Run /init as init process" only needs an executable /init. Under
 * TCG and hardware KVM it runs and prints NUBIS-LINUX-MIN-INIT.
 */
    .globl _start
    .text
_start:
    mov $1, %eax                /* write(1, msg, len) */
    mov $1, %edi
    lea msg(%rip), %rsi
    mov $(msg_end - msg), %edx
    syscall
    mov $169, %eax              /* reboot(MAGIC1, MAGIC2, CMD_RESTART, 0) */
    mov $0xfee1dead, %edi
    mov $672274793, %esi
    mov $0x01234567, %edx
    xor %r10d, %r10d
    syscall
1:  jmp 1b                      /* only if the reset failed */

    .section .rodata
msg:
    .ascii "NUBIS-LINUX-MIN-INIT\n"
msg_end:

    .section .note.GNU-stack, "", @progbits
