/**
 * The Linux/x86 boot protocol (Documentation/arch/x86/boot.rst), 32-bit entry: the bzImage's
 * setup header, the boot parameters ("zero page") with the e820 memory map and the command line,
 * the kernel and initrd loaded straight into guest memory with `GuestMemory.loadFile`.
 */
import { openSync, closeSync, fstatSync, readSync } from 'node:fs'
import type { GuestMemory, GuestRegion } from 'mapped-region'
import { BOOT_PARAMS, CMDLINE, CMDLINE_MAX, KERNEL_AT, MAILBOX } from './layout.ts'

/** What the loader needs from a bzImage's setup header. */
export interface Kernel {
  /** The setup header, bytes 0x1f1 up to its end, copied into the boot parameters. */
  header: Buffer
  /** Bytes of real-mode setup code before the protected-mode kernel. */
  setupBytes: number
  /** Where the 32-bit entry is (the kernel is loaded there). */
  entry: number
  /** The highest address an initrd may end at. */
  initrdMax: number
  /** The longest command line the kernel takes. */
  cmdlineMax: number
}

/** Reads and checks a bzImage's setup header (protocol 2.06 or later, loaded high). */
export function readKernel(path: string): Kernel {
  const fd = openSync(path, 'r')
  try {
    const head = Buffer.alloc(0x1000)
    readSync(fd, head, 0, head.length, 0)
    if (head.toString('latin1', 0x202, 0x206) !== 'HdrS') throw new Error(`${path}: not a bzImage (no HdrS)`)
    const version = head.readUInt16LE(0x206)
    if (version < 0x206) throw new Error(`${path}: boot protocol ${version.toString(16)} is older than 2.06`)
    if ((head[0x211] & 0x01) === 0) throw new Error(`${path}: not a bzImage loaded high`)
    const sects = head[0x1f1] || 4
    const end = 0x202 + head[0x201]
    return {
      header: Buffer.from(head.subarray(0x1f1, end)),
      setupBytes: (sects + 1) * 512,
      entry: head.readUInt32LE(0x214),
      initrdMax: head.readUInt32LE(0x22c),
      cmdlineMax: Math.min(head.readUInt32LE(0x238), CMDLINE_MAX - 1),
    }
  } finally {
    closeSync(fd)
  }
}

const E820_RAM = 1
const E820_RESERVED = 2
/** The top of conventional memory: the EBDA and the BIOS area above it are not RAM. */
const LOW_RAM_END = 0x9fc00
const BIOS_END = 0x100000

/**
 * The e820 map of guest memory as `GuestMemory.regions()` lays it out: each region is RAM, less
 * the legacy hole below 1 MiB (the EBDA, the VGA window holding the mailbox page, the BIOS);
 * whatever lies between regions (an MMIO hole below 4 GiB) is simply not in the map.
 */
export function e820(regions: readonly GuestRegion[]): [bigint, bigint, number][] {
  const map: [bigint, bigint, number][] = []
  for (const r of regions) {
    const start = r.guestAddress
    const end = r.guestAddress + BigInt(r.size)
    if (start < BigInt(BIOS_END)) {
      if (start < BigInt(LOW_RAM_END)) map.push([start, BigInt(LOW_RAM_END) - start, E820_RAM])
      map.push([BigInt(LOW_RAM_END), BigInt(BIOS_END - LOW_RAM_END), E820_RESERVED])
      if (end > BigInt(BIOS_END)) map.push([BigInt(BIOS_END), end - BigInt(BIOS_END), E820_RAM])
    } else {
      map.push([start, end - start, E820_RAM])
    }
  }
  return map
}

/**
 * Loads `kernelPath` and `initrdPath` into `guest` and writes the boot parameters and the command
 * line; returns the 32-bit entry point (the boot parameters are at `BOOT_PARAMS`).
 */
export function load(guest: GuestMemory, kernelPath: string, initrdPath: string, cmdline: string): number {
  const kernel = readKernel(kernelPath)
  // The protected-mode kernel, straight from the file into guest memory at its entry.
  guest.loadFile(KERNEL_AT, kernelPath, { offset: kernel.setupBytes })
  // The initrd at the top of the highest RAM below the initrd limit, page aligned.
  const initrdSize = fstatSize(initrdPath)
  const ram = guest.regions()
  const top = ram.reduce((t, r) => Math.max(t, Math.min(Number(r.guestAddress) + r.size, kernel.initrdMax + 1)), 0)
  const initrdAt = Math.floor((top - initrdSize) / 4096) * 4096
  guest.loadFile(initrdAt, initrdPath)

  if (cmdline.length > kernel.cmdlineMax) throw new Error(`the command line is longer than ${kernel.cmdlineMax} bytes`)
  guest.write(CMDLINE, Buffer.from(`${cmdline}\0`, 'latin1'))

  const params = Buffer.alloc(4096)
  kernel.header.copy(params, 0x1f1)
  params.writeUInt16LE(0xffff, 0x1fa) // vid_mode: normal
  params[0x210] = 0xff // type_of_loader: undefined
  params[0x211] |= 0x80 // loadflags: CAN_USE_HEAP
  params.writeUInt16LE(0xfe00, 0x224) // heap_end_ptr
  params.writeUInt32LE(initrdAt, 0x218) // ramdisk_image
  params.writeUInt32LE(initrdSize, 0x21c) // ramdisk_size
  params.writeUInt32LE(CMDLINE, 0x228) // cmd_line_ptr
  const map = e820(ram)
  params[0x1e8] = map.length // e820_entries
  for (const [i, [addr, size, type]] of map.entries()) {
    params.writeBigUInt64LE(addr, 0x2d0 + i * 20)
    params.writeBigUInt64LE(size, 0x2d0 + i * 20 + 8)
    params.writeUInt32LE(type, 0x2d0 + i * 20 + 16)
  }
  guest.write(BOOT_PARAMS, params)
  if (MAILBOX < LOW_RAM_END) throw new Error('the mailbox must be outside e820 RAM')
  return kernel.entry
}

function fstatSize(path: string): number {
  const fd = openSync(path, 'r')
  try {
    return fstatSync(fd).size
  } finally {
    closeSync(fd)
  }
}
