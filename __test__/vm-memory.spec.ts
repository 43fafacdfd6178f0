/**
 * rust-vmm vm-memory's tests that apply to `GuestMemory`, ported (src/mmap/mod.rs, src/region.rs,
 * src/guest_memory.rs, src/bytes.rs). vm-memory's regions may be any size; ours are whole pages,
 * so every address and size is scaled: vm-memory's 0x400 is one page here (`U`), 0x200 half of
 * one. Each vm-memory test runs, as there, on anonymous memory and on file-backed memory
 * (`from_ranges_with_files`: one temporary file per region). Where the package differs from
 * vm-memory on purpose, the test says so and asserts our behaviour (see the README).
 */
import test from 'ava'
import { closeSync, openSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { GuestMemory, PAGE_SIZE, type GuestRegionSpec } from 'mapped-region'
import { tempDir } from './helpers.js'
import { viewTest } from './view-test.js'

/** vm-memory's 0x400. */
const U = PAGE_SIZE
const MAX = Number.MAX_SAFE_INTEGER

/** `from_ranges` and `from_ranges_with_files` for the same `(start, len)` list. */
function both(t: import('ava').ExecutionContext, ranges: [number, number][]): GuestMemory[] {
  const tmp = tempDir()
  const fds: number[] = []
  t.teardown(() => {
    for (const fd of fds) closeSync(fd)
    tmp.done()
  })
  const files: GuestRegionSpec[] = ranges.map(([start, len], i) => {
    const path = join(tmp.dir, `f${i}`)
    writeFileSync(path, Buffer.alloc(len))
    const fd = openSync(path, 'r+')
    fds.push(fd)
    return { guestAddress: start, size: len, backing: { fd, fdOffset: 0 } }
  })
  const anon = new GuestMemory(ranges.map(([start, len]) => ({ guestAddress: start, size: len, backing: 'anonymous' as const })))
  const file = new GuestMemory(files)
  t.teardown(() => {
    anon.close()
    file.close()
  })
  return [anon, file]
}

test('test_to_region_addr / test_get_host_address: a hole has no host address; offsets in a region add up', (t) => {
  for (const gm of both(t, [
    [0, U],
    [2 * U, U],
  ])) {
    t.throws(() => gm.translate(U + U / 2), { code: 'ERR_GUEST_ADDRESS' })
    const p0 = gm.translate(2 * U)
    const p1 = gm.translate(2 * U + U / 2)
    t.is(p0, gm.regions()[1].userspaceAddress)
    t.is(p1 - p0, BigInt(U / 2))
  }
})

test('test_check_range: ranges within, across contiguous regions, into a hole, past the end', (t) => {
  const [gm] = both(t, [
    [0, U],
    [2 * U, U],
    [3 * U, U],
  ])
  const covered = (addr: number, len: number) => {
    try {
      gm.read(addr, len)
      return true
    } catch (e) {
      if ((e as { code?: string }).code !== 'ERR_GUEST_ADDRESS' && (e as { code?: string }).code !== 'ERR_OUT_OF_RANGE') throw e
      return false
    }
  }
  t.true(covered(0, 0))
  t.true(covered(0, U / 2))
  t.true(covered(0, U))
  t.false(covered(0, 2 * U + U / 2))
  t.true(covered(2 * U, 2 * U - 1))
  t.true(covered(2 * U, 2 * U), 'across the two regions that follow each other')
  t.false(covered(2 * U, 2 * U + 1))
  t.false(covered(2 * U, 3 * U))
  t.false(covered(0, MAX))
})

viewTest('test_deref: what write() put there is what a view of the region shows', (t) => {
  for (const gm of both(t, [[0, U]])) {
    const sample = Buffer.from([1, 2, 3, 4, 5])
    gm.write(0, sample)
    t.deepEqual(Buffer.from(gm.view(0, 5)), sample)
  }
})

test('test_read_u64: objects at good addresses; past the end and across it refused (whole, on purpose)', (t) => {
  for (const gm of both(t, [
    [0, 4 * U],
    [4 * U, 4 * U],
  ])) {
    const val1 = 0xaa55_aa55_aa55_aa55n
    const val2 = 0x55aa_55aa_55aa_55aan
    const end = 8 * U
    t.throws(() => gm.writeU64(end + 1, val1), { code: 'ERR_GUEST_ADDRESS' })
    // vm-memory writes the 4 bytes that fit and reports PartialBuffer { expected: 8, completed: 4 };
    // this package refuses the whole write and changes nothing (never a half-changed guest).
    t.throws(() => gm.writeU64(end - 4, val1), { code: 'ERR_GUEST_ADDRESS' })
    t.is(gm.readU32(end - 4), 0, 'nothing of the refused write landed')
    gm.writeU64(0x500, val1)
    gm.writeU64(4 * U + 32, val2)
    t.is(gm.readU64(0x500), val1)
    t.is(gm.readU64(4 * U + 32), val2)
  }
})

test('write_and_read: bytes round-trip; a write past the end of the last region is refused whole (on purpose)', (t) => {
  for (const gm of both(t, [[4 * U, U]])) {
    const sample = Buffer.from([1, 2, 3, 4, 5])
    gm.write(4 * U, sample)
    const buf = Buffer.alloc(5)
    t.is(gm.readInto(4 * U, buf), 5)
    t.deepEqual(buf, sample)
    // vm-memory writes 1 byte at the last address and returns 1; this package refuses.
    t.throws(() => gm.write(5 * U - 1, sample), { code: 'ERR_GUEST_ADDRESS' })
    t.throws(() => gm.readInto(5 * U - 1, buf), { code: 'ERR_GUEST_ADDRESS' })
    gm.write(5 * U - 1, sample.subarray(0, 1))
    t.is(gm.readU8(5 * U - 1), 1, 'the last byte of the region')
  }
})

test('read_to_and_write_from_mem: reading from /dev/zero into guest memory (loadFile)', (t) => {
  for (const gm of both(t, [[4 * U, U]])) {
    const addr = 4 * U + 0x10
    gm.writeU32(addr, 0xffff_ffff)
    t.is(gm.loadFile(addr, '/dev/zero', { length: 4 }), 4)
    t.is(gm.readU32(addr), 0)
  }
})

test('test_access_cross_boundary: a write and a read across two regions that follow each other', (t) => {
  for (const gm of both(t, [
    [0, 4 * U],
    [4 * U, 4 * U],
  ])) {
    const sample = Buffer.from([1, 2, 3, 4, 5])
    gm.write(4 * U - 4, sample)
    const buf = Buffer.alloc(5)
    t.is(gm.readInto(4 * U - 4, buf), 5)
    t.deepEqual(buf, sample)
  }
})

test('test_zero_length_accesses: empty reads, writes and loads at a valid address', (t) => {
  const [gm] = both(t, [[4 * U, 4 * U]])
  gm.write(4 * U, Buffer.alloc(0))
  t.is(gm.readInto(4 * U, Buffer.alloc(0)), 0)
  t.is(gm.read(4 * U, 0).length, 0)
  t.is(gm.loadFile(4 * U, '/dev/zero', { length: 0 }), 0)
})

test('test_atomic_accesses (bytes::check_atomic_accesses): load, store, and a bad address refused', (t) => {
  const [gm] = both(t, [[4 * U, 4 * U]])
  const addr = 4 * U
  const bad = 8 * U
  t.is(gm.readU32Atomic(addr), 0)
  gm.writeU32Atomic(addr, 100)
  t.is(gm.readU32Atomic(addr), 100)
  t.throws(() => gm.readU32Atomic(bad), { code: 'ERR_GUEST_ADDRESS' })
  t.throws(() => gm.writeU32Atomic(bad, 100), { code: 'ERR_GUEST_ADDRESS' })
})

test('test_non_atomic_access: a value written across two regions reads back whole', (t) => {
  const [gm] = both(t, [
    [0, U],
    [U, U],
  ])
  for (const width of [2, 4, 8]) {
    const at = U - width / 2
    if (width === 2) gm.writeU16(at, 0xbeef)
    if (width === 4) gm.writeU32(at, 0xdead_beef)
    if (width === 8) gm.writeU64(at, 0x0102_0304_0506_0708n)
    const back = width === 2 ? gm.readU16(at) : width === 4 ? gm.readU32(at) : gm.readU64(at)
    t.is(back, width === 2 ? 0xbeef : width === 4 ? 0xdead_beef : 0x0102_0304_0506_0708n)
  }
})

test('region.rs: no regions, overlapping, unsorted (sorted here, on purpose) and valid region lists', (t) => {
  // vm-memory refuses an empty list (NoMemoryRegion); this package needs an address space for it
  // (regions can be hot-plugged later) and refuses an empty one.
  t.throws(() => new GuestMemory([]), { code: 'ERR_OUT_OF_RANGE' })
  using empty = new GuestMemory([], { addressSpace: 4 * U })
  t.deepEqual(empty.regions(), [])
  t.throws(
    () =>
      new GuestMemory([
        { guestAddress: 0, size: 2 * U, backing: 'anonymous' },
        { guestAddress: U, size: 2 * U, backing: 'anonymous' },
      ]),
    { code: 'ERR_GUEST_OVERLAP' },
  )
  // vm-memory refuses an unsorted list (UnsortedMemoryRegions); this package sorts it.
  using unsorted = new GuestMemory([
    { guestAddress: U, size: U, backing: 'anonymous' },
    { guestAddress: 0, size: U, backing: 'anonymous' },
  ])
  t.deepEqual(
    unsorted.regions().map((r) => [r.guestAddress, r.size]),
    [
      [0n, U],
      [BigInt(U), U],
    ],
  )
})

test('test_mmap_insert_region / test_mmap_remove_region / test_iter: hot-plug keeps the list sorted', (t) => {
  using gm = new GuestMemory(
    [
      { guestAddress: 0, size: U, backing: 'anonymous' },
      { guestAddress: 0x40 * U, size: U, backing: 'anonymous' },
    ],
    { addressSpace: 0x80 * U },
  )
  for (const start of [0x8 * U, 0x4 * U, 0xc * U]) gm.addRegion({ guestAddress: start, size: U, backing: 'anonymous' })
  t.throws(() => gm.addRegion({ guestAddress: 0xc * U, size: U, backing: 'anonymous' }), { code: 'ERR_GUEST_OVERLAP' })
  t.deepEqual(
    gm.regions().map((r) => Number(r.guestAddress) / U),
    [0, 4, 8, 12, 0x40],
  )
  for (const r of gm.regions()) t.is(r.size, U)
  // vm-memory's remove_region needs the exact start and size; this package takes the start.
  t.throws(() => gm.removeRegion(0x4 * U + 128), { code: 'ERR_GUEST_ADDRESS' })
  t.throws(() => gm.removeRegion(0x10 * U), { code: 'ERR_GUEST_ADDRESS' })
  gm.removeRegion(0x40 * U)
  t.deepEqual(
    gm.regions().map((r) => Number(r.guestAddress) / U),
    [0, 4, 8, 12],
  )
})

test('test_address_in_range / test_check_address / test_checked_offset: addresses in regions, not in holes', (t) => {
  const [gm] = both(t, [
    [0, U],
    [2 * U, U],
    [3 * U, U],
  ])
  const inRange = (addr: number) => {
    try {
      gm.translate(addr)
      return true
    } catch {
      return false
    }
  }
  t.true(inRange(U / 2))
  t.false(inRange(U + U / 2))
  t.true(inRange(2 * U + U / 2))
  t.false(inRange(4 * U))
  // checked_offset(base, offset): the address base + offset, if it is in a region.
  t.true(inRange(0 + U / 2))
  t.true(inRange(0 + 2 * U + U / 2))
  t.true(inRange(2 * U + 2 * U - 1))
  t.false(inRange(2 * U + 3 * U))
  t.false(inRange(U))
  t.true(inRange(U - 1))
})
