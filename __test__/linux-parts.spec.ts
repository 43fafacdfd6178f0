/**
 * The Linux example's parts that need no kernel to test (examples/linux): the 16550 UART as the
 * 8250 driver probes and drives it, the e820 map from `GuestMemory.regions()`, the boot
 * parameters, the initramfs archive, and the userspace emulation of the instructions this host
 * cannot emulate. The boot itself is `npm run test:linux`.
 */
import test from 'ava'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GuestMemory, PAGE_SIZE } from 'mapped-region'
import { e820, load } from '../examples/linux/boot.ts'
import { emulate, QUIRK_FLAGS, type QuirkMachine } from '../examples/linux/host-quirks.ts'
import { initramfs } from '../examples/linux/initramfs.ts'
import { BOOT_PARAMS, CMDLINE, KERNEL_AT, MAILBOX } from '../examples/linux/layout.ts'
import { InputRing, Uart } from '../examples/linux/uart.ts'

function uart() {
  const out: number[] = []
  let pulses = 0
  const input = new InputRing()
  const u = new Uart(
    (b) => out.push(b),
    () => pulses++,
    input,
  )
  return { u, out, input, pulses: () => pulses }
}

test('the UART answers the 8250 probe: scratch register, FIFO bits, loopback modem status', (t) => {
  const { u } = uart()
  u.write(7, 0xa5)
  t.is(u.read(7), 0xa5)
  u.write(2, 0x01) // FCR: enable FIFOs
  t.is(u.read(2) & 0xc0, 0xc0, 'a 16550A')
  u.write(4, 0x1a) // MCR: loopback | OUT2 | RTS
  t.is(u.read(6) & 0xf0, 0x90, 'loopback maps RTS to CTS and OUT2 to DCD')
  u.write(0, 0x55)
  t.true((u.read(5) & 0x01) !== 0, 'a looped-back byte is ready')
  t.is(u.read(0), 0x55)
  u.write(4, 0x0b)
  t.is(u.read(6), 0xb0)
  u.write(3, 0x80) // DLAB
  u.write(0, 0x01)
  u.write(1, 0x00)
  t.is(u.read(0), 0x01, 'the divisor latch')
  u.write(3, 0x03)
  t.is(u.read(5) & 0x60, 0x60, 'the transmitter is always empty')
})

test('the UART transmits and interrupts: THRE when enabled and after each byte, acknowledged by reading IIR', (t) => {
  const { u, out, pulses } = uart()
  t.is(u.read(2) & 0x0f, 0x01, 'no interrupt pending')
  u.write(1, 0x02) // IER: THRE
  t.is(pulses(), 1, 'enabling it with the register empty raises it at once')
  t.is(u.read(2) & 0x0f, 0x02)
  t.is(u.read(2) & 0x0f, 0x01, 'reading IIR acknowledged it')
  u.write(0, 0x41)
  t.deepEqual(out, [0x41])
  t.is(pulses(), 2, 'an edge per new interrupt')
  t.is(u.read(2) & 0x0f, 0x02)
  u.write(1, 0x00)
  u.write(0, 0x42)
  t.is(pulses(), 2, 'no interrupt while disabled')
})

test('the UART receives from the input ring: data ready, the RDA interrupt, the IER mirrored for the console thread', (t) => {
  const { u, input, pulses } = uart()
  u.write(1, 0x01) // IER: RDA
  t.is(input.interruptEnable, 0x01)
  t.is(input.push(Buffer.from('ls\n')), 3)
  u.poll() // the vCPU thread's next exit
  t.is(pulses(), 1)
  t.is(u.read(2) & 0x0f, 0x04)
  const got: number[] = []
  while ((u.read(5) & 0x01) !== 0) got.push(u.read(0))
  t.is(Buffer.from(got).toString(), 'ls\n')
  t.is(u.read(2) & 0x0f, 0x01)
  // The ring holds what fits; a byte shifted frees its slot.
  t.is(input.push(Buffer.alloc(InputRing.SIZE + 10)), InputRing.SIZE)
  t.is(input.shift(), 0)
  t.is(input.push(Buffer.from([1, 2])), 1)
})

test('e820 from GuestMemory.regions(): RAM less the legacy hole below 1 MiB, holes between regions left out', (t) => {
  using guest = new GuestMemory(
    [
      { guestAddress: 0n, size: 64 << 20, backing: 'anonymous' },
      { guestAddress: 0x1_0000_0000n, size: 16 << 20, backing: 'anonymous' },
    ],
    { addressSpace: 0x1_0100_0000 },
  )
  t.deepEqual(e820(guest.regions()), [
    [0n, 0x9fc00n, 1],
    [0x9fc00n, 0x100000n - 0x9fc00n, 2],
    [0x100000n, BigInt((64 << 20) - 0x100000), 1],
    [0x1_0000_0000n, BigInt(16 << 20), 1],
  ])
  t.true(MAILBOX >= 0x9fc00 && MAILBOX < 0x100000, 'the mailbox is outside e820 RAM')
})

test('load(): the kernel and initrd straight into guest memory, boot parameters with the header, e820 and command line', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mr-linux-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // A minimal bzImage: 4 setup sectors + the boot sector, the header fields the loader reads.
  const setup = Buffer.alloc(5 * 512)
  setup[0x1f1] = 4
  setup[0x201] = 0x6a // header end: 0x26c
  setup.write('HdrS', 0x202, 'latin1')
  setup.writeUInt16LE(0x20f, 0x206)
  setup[0x211] = 0x01 // LOADED_HIGH
  setup.writeUInt32LE(KERNEL_AT, 0x214)
  setup.writeUInt32LE(0x7fffffff, 0x22c)
  setup.writeUInt32LE(2047, 0x238)
  const body = Buffer.alloc(3 * PAGE_SIZE, 0x90)
  writeFileSync(join(dir, 'vmlinuz'), Buffer.concat([setup, body]))
  writeFileSync(join(dir, 'initrd'), Buffer.alloc(5000, 0x77))
  using guest = new GuestMemory([{ guestAddress: 0n, size: 32 << 20, backing: 'anonymous' }])
  const entry = load(guest, join(dir, 'vmlinuz'), join(dir, 'initrd'), 'console=ttyS0')
  t.is(entry, KERNEL_AT)
  t.true(guest.read(KERNEL_AT, body.length).equals(body), 'the protected-mode kernel, past the setup sectors')
  const p = guest.read(BOOT_PARAMS, 4096)
  t.is(p.toString('latin1', 0x202, 0x206), 'HdrS')
  t.is(p[0x210], 0xff)
  t.is(p[0x211] & 0x81, 0x81)
  t.is(p.readUInt32LE(0x228), CMDLINE)
  t.is(guest.read(CMDLINE, 14).toString('latin1'), 'console=ttyS0\0')
  const initrdAt = p.readUInt32LE(0x218)
  t.is(p.readUInt32LE(0x21c), 5000)
  t.is(initrdAt % 4096, 0)
  t.true(initrdAt + 5000 <= 32 << 20, 'at the top of RAM')
  t.true(guest.read(initrdAt, 5000).equals(Buffer.alloc(5000, 0x77)))
  t.is(p[0x1e8], 3, 'e820 entries')
  t.throws(() => load(guest, join(dir, 'initrd'), join(dir, 'initrd'), ''), { message: /not a bzImage/ })
})

test('the initramfs is a newc archive with busybox, its sh link and /init', (t) => {
  const archive = initramfs(Buffer.from('BUSYBOX'))
  const names: string[] = []
  for (let at = 0; at < archive.length; ) {
    t.is(archive.toString('latin1', at, at + 6), '070701')
    const field = (i: number) => Number.parseInt(archive.toString('latin1', at + 6 + i * 8, at + 14 + i * 8), 16)
    const size = field(6)
    const nameSize = field(11)
    const name = archive.toString('latin1', at + 110, at + 110 + nameSize - 1)
    names.push(name)
    const dataAt = at + 110 + nameSize + ((4 - ((110 + nameSize) % 4)) % 4)
    if (name === 'init') t.regex(archive.toString('latin1', dataAt, dataAt + size), /devmem 0xa0000 32/)
    at = dataAt + size + ((4 - (size % 4)) % 4)
    if (name === 'TRAILER!!!') break
  }
  t.deepEqual(names, ['bin', 'dev', 'proc', 'sys', 'tmp', 'bin/busybox', 'bin/sh', 'init', 'TRAILER!!!'])
})

test('host quirks: one clearcpuid list; int3 raises #BP past it, fwait is stepped over, ldmxcsr reads its operand', (t) => {
  t.is(QUIRK_FLAGS.filter((f) => f.startsWith('clearcpuid=')).length, 1, 'the kernel reads only the last clearcpuid=')
  using guest = new GuestMemory([{ guestAddress: 0n, size: 1 << 20, backing: 'anonymous' }])
  const calls: string[] = []
  const regs = Array.from({ length: 18 }, () => 0n)
  const machine: QuirkMachine = {
    regs: () => regs.slice(),
    setRip: (rip) => {
      calls.push(`rip ${rip.toString(16)}`)
      regs[16] = rip
    },
    translate: (address) => (address < 1n << 20n ? address : null), // identity, for the test
    setMxcsr: (v) => calls.push(`mxcsr ${v.toString(16)}`),
    injectException: (v) => calls.push(`exception ${v}`),
  }
  const at = (rip: number, code: number[]) => {
    regs[16] = BigInt(rip)
    guest.write(rip, Buffer.from([...code, ...Array(15).fill(0x90)]))
    calls.length = 0
    return emulate(machine, guest)
  }
  t.is(at(0x1000, [0xcc]), 'int3')
  t.deepEqual(calls, ['rip 1001', 'exception 3'])
  t.is(at(0x2000, [0x9b]), 'fwait')
  t.deepEqual(calls, ['rip 2001'])
  // ldmxcsr 0x8(%rsp): 0f ae 54 24 08
  regs[6] = 0x3000n // rsp (kvm_regs order)
  guest.writeU32(0x3008, 0x1f80)
  t.is(at(0x4000, [0x0f, 0xae, 0x54, 0x24, 0x08]), 'ldmxcsr')
  t.deepEqual(calls, ['mxcsr 1f80', 'rip 4005'])
  // ldmxcsr disp32(%rip): 0f ae 15 <disp32> — relative to the next instruction
  guest.writeU32(0x5007 + 0x100, 0x1fa0)
  t.is(at(0x5000, [0x0f, 0xae, 0x15, 0x00, 0x01, 0x00, 0x00]), 'ldmxcsr')
  t.deepEqual(calls, ['mxcsr 1fa0', 'rip 5007'])
  // ldmxcsr (%r12) with REX.B: 41 0f ae 14 24
  regs[12] = 0x6000n
  guest.writeU32(0x6000, 0x1f81)
  t.is(at(0x7000, [0x41, 0x0f, 0xae, 0x14, 0x24]), 'ldmxcsr')
  t.deepEqual(calls, ['mxcsr 1f81', 'rip 7005'])
  t.is(at(0x8000, [0x0f, 0x0b]), undefined, 'ud2 is not ours: a real failure')
})
