/**
 * Where things go in the Linux example's guest-physical memory (the Linux boot protocol's
 * conventional spots, below the kernel's 16 MiB load address or at the top of RAM).
 */

/** Guest RAM: one region at guest address 0. */
export const RAM_SIZE = 256 << 20
/** The boot parameters ("zero page") the 32-bit entry gets in `esi`. */
export const BOOT_PARAMS = 0x7000
/** The kernel command line. */
export const CMDLINE = 0x20000
/** Room for the command line. */
export const CMDLINE_MAX = 4096
/** Where the protected-mode kernel is loaded: the boot protocol's `code32_start` default. */
export const KERNEL_AT = 0x100000
/**
 * A mailbox page the host and the guest's `/init` share: the host writes `MAILBOX_MAGIC` at its
 * start, `/init` reads it with `devmem` and writes `MAILBOX_REPLY` 4 bytes further. It is left out
 * of the e820 RAM (the VGA hole), so `/dev/mem` may reach it under `CONFIG_STRICT_DEVMEM`.
 */
export const MAILBOX = 0xa0000
export const MAILBOX_MAGIC = 0x6d617070 // 'mapp'
export const MAILBOX_REPLY = 0x600dcafe
/** What `/init` prints first: the test looks for it. */
export const INIT_MARKER = 'MAPPED-REGION-INIT'
