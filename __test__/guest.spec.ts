import test from 'ava'
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { GuestMemory, MemoryMapping, PAGE_SIZE, Protection, SharedMemory } from 'mapped-region'
import { tempDir } from './helpers.js'
import { viewTest } from './view-test.js'

const P = PAGE_SIZE
const MiB = 1 << 20

test('regions map where KVM expects them: userspaceAddress = base + guestAddress', (t) => {
  using ram = SharedMemory.create('ram', 4 * MiB)
  using guest = new GuestMemory(
    [
      { guestAddress: 0n, size: 2 * MiB, backing: ram },
      { guestAddress: 0x400000n, size: 2 * MiB, backing: { fd: ram.fd, fdOffset: 2 * MiB } },
      { guestAddress: 0x1000000, size: 64 * 1024, backing: 'anonymous', protection: Protection.READ },
    ],
    { addressSpace: 64 * MiB },
  )
  t.is(guest.addressSpace, 64 * MiB)
  const regions = guest.regions()
  t.deepEqual(
    regions.map((r) => [r.guestAddress, r.size]),
    [
      [0n, 2 * MiB],
      [0x400000n, 2 * MiB],
      [0x1000000n, 64 * 1024],
    ],
  )
  const base = guest.arena.address
  for (const r of regions) t.is(r.userspaceAddress, base + r.guestAddress)
  t.is(guest.translate(0x1234n), base + 0x1234n)
  t.is(guest.translate(0x400000), base + 0x400000n)
  // Both RAM regions are windows on one memfd: the second starts 2 MiB into it.
  guest.write(0x400010n, Buffer.from('high half'))
  t.is(guest.read(0x400010n, 9).toString(), 'high half')
  const into = Buffer.alloc(9)
  t.is(guest.readInto(0x400010n, into), 9)
  t.is(into.toString(), 'high half')
  using whole = MemoryMapping.fromFd(ram.fd, ram.size)
  t.is(whole.read(2 * MiB + 0x10, 9).toString(), 'high half')
  t.throws(() => guest.read(2 * MiB + 0x10, 1), { code: 'ERR_GUEST_ADDRESS' }, 'a hole between the regions')
  t.deepEqual(guest.read(0x1000000n, 4), Buffer.alloc(4))
  t.throws(() => guest.write(0x1000000n, Buffer.from('x')), { code: 'ERR_MMAP_ACCESS' })
})

viewTest('accesses may span regions that follow each other, never a hole (as vm-memory)', (t) => {
  using ram = SharedMemory.create('span', 2 * P)
  using guest = new GuestMemory([
    { guestAddress: 0, size: 2 * P, backing: 'anonymous' },
    { guestAddress: 2 * P, size: 2 * P, backing: ram },
    { guestAddress: 8 * P, size: P, backing: 'anonymous' },
  ])
  t.is(guest.read(2 * P - 4, 4).length, 4)
  // vm-memory's "cross-region write/read is ok": the copy carries on into the next region.
  guest.write(2 * P - 2, Buffer.from('abcd'))
  t.is(guest.read(2 * P - 2, 4).toString(), 'abcd')
  const into = Buffer.alloc(4)
  t.is(guest.readInto(2 * P - 2, into), 4)
  t.is(into.toString(), 'abcd')
  t.is(guest.read(0, 4 * P).length, 4 * P, 'first byte of the first region to the last of the second')
  const across = guest.view(2 * P - 2, 4)
  t.is(across.toString(), 'abcd')
  guest.removeRegion(2 * P)
  t.is(across.length, 0, 'removing one of the regions under a view detaches it')
  // A range that reaches a hole or runs past the last region is refused.
  t.throws(() => guest.read(2 * P - 4, 8), { code: 'ERR_GUEST_ADDRESS', instanceOf: RangeError })
  t.throws(() => guest.write(8 * P + P - 1, Buffer.from('ab')), { code: 'ERR_GUEST_ADDRESS' })
  t.throws(() => guest.readInto(2 * P - 1, Buffer.alloc(2)), { code: 'ERR_GUEST_ADDRESS' })
  t.throws(() => guest.readInto(0, 'ab' as unknown as Buffer), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => guest.view(2 * P - 1, 2), { code: 'ERR_GUEST_ADDRESS' })
  t.throws(() => guest.read(5 * P, 1), { code: 'ERR_GUEST_ADDRESS' })
  t.throws(() => guest.translate(4 * P), { code: 'ERR_GUEST_ADDRESS' })
  t.throws(() => guest.translate(9 * P), { code: 'ERR_GUEST_ADDRESS' })
  const v = guest.view(8 * P, P)
  v[0] = 7
  t.is(guest.read(8 * P, 1)[0], 7)
})

test('overlapping, unaligned and oversized regions are rejected', (t) => {
  using ram = SharedMemory.create('ram', 2 * P)
  t.throws(
    () =>
      new GuestMemory([
        { guestAddress: 0, size: 4 * P, backing: 'anonymous' },
        { guestAddress: 3 * P, size: P, backing: 'anonymous' },
      ]),
    { code: 'ERR_GUEST_OVERLAP', instanceOf: RangeError },
  )
  t.throws(() => new GuestMemory([{ guestAddress: 100, size: P, backing: 'anonymous' }]), { code: 'ERR_MMAP_UNALIGNED' })
  t.throws(() => new GuestMemory([{ guestAddress: 0, size: P + 1, backing: 'anonymous' }]), { code: 'ERR_MMAP_UNALIGNED' })
  t.throws(() => new GuestMemory([{ guestAddress: 0, size: 4 * P, backing: ram }]), { code: 'ERR_MMAP_BEYOND_EOF', instanceOf: RangeError })
  const { dir, done } = tempDir()
  t.teardown(done)
  const file = join(dir, 'rom')
  writeFileSync(file, Buffer.alloc(P))
  const fd = openSync(file, 'r')
  t.teardown(() => closeSync(fd))
  t.throws(() => new GuestMemory([{ guestAddress: 0, size: 2 * P, backing: { fd, fdOffset: 0 }, protection: Protection.READ }]), {
    code: 'ERR_MMAP_BEYOND_EOF',
  })
  t.throws(() => new GuestMemory([{ guestAddress: 0, size: 0, backing: 'anonymous' }]), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => new GuestMemory([{ guestAddress: -4096, size: P, backing: 'anonymous' }]), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => new GuestMemory([{ guestAddress: '0' as unknown as number, size: P, backing: 'anonymous' }]), {
    code: 'ERR_INVALID_ARG_TYPE',
  })
  t.throws(() => new GuestMemory([{ guestAddress: 0, size: P, backing: 'heap' as 'anonymous' }]), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => new GuestMemory([]), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => new GuestMemory([{ guestAddress: 4 * P, size: P, backing: 'anonymous' }], { addressSpace: 2 * P }), {
    code: 'ERR_OUT_OF_RANGE',
  })
})

viewTest('hot-plug and unplug at run time (memory hot-plug, a DAX window)', (t) => {
  using ram = SharedMemory.create('ram', 4 * P)
  using dax = SharedMemory.create('dax', 8 * P)
  using guest = new GuestMemory([{ guestAddress: 0, size: 4 * P, backing: ram }], { addressSpace: 1 * MiB })
  const added = guest.addRegion({ guestAddress: 0x80000n, size: 8 * P, backing: dax })
  t.is(added.userspaceAddress, guest.arena.address + 0x80000n)
  t.is(guest.regions().length, 2)
  guest.write(0x80000n, Buffer.from('dax'))
  const view = guest.view(0x80000n, 3)
  t.throws(() => guest.addRegion({ guestAddress: 0x80000n + BigInt(4 * P), size: 8 * P, backing: 'anonymous' }), {
    code: 'ERR_GUEST_OVERLAP',
  })
  t.throws(() => guest.addRegion({ guestAddress: 1 * MiB, size: P, backing: 'anonymous' }), { code: 'ERR_MMAP_OUT_OF_BOUNDS' })
  guest.removeRegion(0x80000n)
  t.is(view.length, 0, 'views of an unplugged region are detached')
  t.throws(() => guest.read(0x80000n, 1), { code: 'ERR_GUEST_ADDRESS' })
  t.throws(() => guest.removeRegion(0x80000n), { code: 'ERR_GUEST_ADDRESS' })
  t.deepEqual(
    guest.arena.mappings().map((m) => m.offset),
    [0],
  )
  // Plug it back: the data is still in the memfd.
  guest.addRegion({ guestAddress: 0x80000n, size: 8 * P, backing: dax })
  t.is(guest.read(0x80000n, 3).toString(), 'dax')
})

viewTest('close and dispose unmap; backings stay open', (t) => {
  using ram = SharedMemory.create('ram', P)
  const guest = GuestMemory.create([{ guestAddress: 0, size: P, backing: ram }])
  const v = guest.view(0, P)
  guest.close()
  guest.close()
  t.true(guest.closed)
  t.is(v.length, 0)
  t.throws(() => guest.read(0, 1), { code: 'ERR_MMAP_CLOSED' })
  t.true(ram.fd > 0)
})

/** The VmFlags of the kernel mapping that contains `address`, from /proc/self/smaps. */
function vmFlags(address: bigint): string[] {
  let inside = false
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line)
    if (range) inside = BigInt(`0x${range[1]}`) <= address && address < BigInt(`0x${range[2]}`)
    else if (inside && line.startsWith('VmFlags:')) return line.slice('VmFlags:'.length).trim().split(/\s+/)
  }
  return []
}

test('regions() carry a stable KVM slot and readonly; guest memory is left out of core dumps', (t) => {
  using rom = SharedMemory.create('rom', P)
  using guest = new GuestMemory(
    [
      { guestAddress: 0, size: 2 * P, backing: 'anonymous' },
      { guestAddress: 4 * P, size: P, backing: rom, protection: Protection.READ },
    ],
    { addressSpace: 16 * P },
  )
  t.deepEqual(
    guest.regions().map((r) => [r.slot, r.guestAddress, r.readonly]),
    [
      [0, 0n, false],
      [1, BigInt(4 * P), true],
    ],
  )
  const added = guest.addRegion({ guestAddress: 8 * P, size: P, backing: 'anonymous' })
  t.is(added.slot, 2)
  guest.removeRegion(0)
  t.is(guest.addRegion({ guestAddress: 12 * P, size: P, backing: 'anonymous' }).slot, 0, 'the lowest free slot is reused')
  t.deepEqual(
    guest.regions().map((r) => [r.slot, r.guestAddress]),
    [
      [1, BigInt(4 * P)],
      [2, BigInt(8 * P)],
      [0, BigInt(12 * P)],
    ],
  )
  for (const r of guest.regions()) t.true(vmFlags(r.userspaceAddress).includes('dd'), `region at ${r.guestAddress} is MADV_DONTDUMP`)
  using dumped = new GuestMemory([{ guestAddress: 0, size: P, backing: 'anonymous' }], { dontDump: false })
  t.false(vmFlags(dumped.regions()[0].userspaceAddress).includes('dd'))
  t.throws(() => new GuestMemory([], { dontDump: 1 as unknown as boolean, addressSpace: P }), { code: 'ERR_INVALID_ARG_TYPE' })
})
