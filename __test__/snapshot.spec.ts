import test from 'ava'
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { GuestMemory, MemoryMappingArena, PAGE_SIZE, Protection, SharedMemory, type SnapshotManifest } from 'mapped-region'
import { tempDir } from './helpers.js'
import { viewTest } from './view-test.js'

const P = PAGE_SIZE
const RW = Protection.READ_WRITE

/** A file of `pages` pages, page i filled with the byte i + 1, opened read-only. */
function pagedFile(t: import('ava').ExecutionContext, pages: number, mode = 'r'): { path: string; fd: number } {
  const tmp = tempDir()
  const path = join(tmp.dir, 'mem')
  writeFileSync(path, Buffer.concat(Array.from({ length: pages }, (_, i) => Buffer.alloc(P, i + 1))))
  const fd = openSync(path, mode)
  t.teardown(() => {
    closeSync(fd)
    tmp.done()
  })
  return { path, fd }
}

viewTest('private overlays: a read-only fd mapped READ_WRITE, writes stay in the process, the file never changes', (t) => {
  const { path, fd } = pagedFile(t, 4)
  const before = readFileSync(path)
  using arena = MemoryMappingArena.reserve(8 * P)
  t.throws(() => arena.addFdMapping(0, 4 * P, fd, 0, RW), { code: 'EACCES' }, 'shared, a read-only fd cannot be writable')
  arena.addFdMapping(0, 4 * P, fd, 0, RW, { shared: false })
  t.is(arena.readU8(P), 2, 'the file is there')
  arena.write(P, Buffer.from('private'))
  arena.writeU32(3 * P, 0xdead)
  t.is(arena.read(P, 7).toString(), 'private')
  t.deepEqual(readFileSync(path), before, 'the file never changed')
  t.deepEqual(
    arena.mappings().map((m) => [m.offset, m.size, m.kind, m.shared, m.fdOffset]),
    [[0, 4 * P, 'fd', false, 0]],
  )
  // madvise('dontneed') drops the private copy: the file's bytes reappear.
  arena.madvise(P, P, 'dontneed')
  t.is(arena.readU8(P), 2)
  t.is(arena.readU32(3 * P), 0xdead, 'other pages keep their private copy')
  // A view of a private overlay, detached by removal like any.
  const view = arena.view(0, P)
  t.is(view[0], 1)
  arena.removeMapping(0, P)
  t.is(view.length, 0)
  t.throws(() => arena.readU8(0), { code: 'ERR_MMAP_ACCESS' })
})

test('private and shared pieces never merge in mappings(); EOF and options are checked as for shared ones', (t) => {
  const { fd: ro } = pagedFile(t, 4)
  const { fd: rw } = pagedFile(t, 4, 'r+')
  using arena = MemoryMappingArena.reserve(16 * P)
  arena.addFdMapping(0, 2 * P, rw, 0, RW, { shared: false })
  arena.addFdMapping(2 * P, 2 * P, rw, 2 * P, RW, { shared: false })
  arena.addFdMapping(4 * P, P, rw, 4 * P - P, RW)
  t.deepEqual(
    arena.mappings().map((m) => [m.offset / P, m.size / P, m.shared]),
    [
      [0, 4, false],
      [4, 1, true],
    ],
    'contiguous private pieces of one fd are one entry; the shared one is not merged into them',
  )
  t.throws(() => arena.addFdMapping(8 * P, 2 * P, ro, 3 * P, RW, { shared: false }), { code: 'ERR_MMAP_BEYOND_EOF' })
  t.throws(() => arena.addFdMapping(8 * P, P, ro, 0, RW, { shared: 1 as never }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => arena.addFdMapping(8 * P, P, ro, 0, RW, { shraed: false } as never), { code: 'ERR_INVALID_ARG_VALUE' })
  t.deepEqual(arena.mappings().length, 2, 'nothing refused was mapped')
})

test('GuestMemory backing { fd, fdOffset, shared: false }: guest writes never reach the file', (t) => {
  const { path, fd } = pagedFile(t, 4)
  using guest = new GuestMemory([{ guestAddress: 0x10_0000, size: 2 * P, backing: { fd, fdOffset: 2 * P, shared: false } }])
  t.is(guest.readU8(0x10_0000), 3)
  guest.write(0x10_0000, Buffer.from('guest'))
  t.is(guest.read(0x10_0000, 5).toString(), 'guest')
  t.is(readFileSync(path)[2 * P], 3)
  t.is(guest.arena.mappings()[0].shared, false)
})

/** The dirty pages of each region, as page indexes, from `takeDirty()`. */
function dirtyPages(guest: GuestMemory): number[][] {
  return guest.takeDirty().map(({ bitmap, size }) => {
    const out: number[] = []
    for (let p = 0; p < size / P; p++) if ((bitmap[p >> 6] >> BigInt(p & 63)) & 1n) out.push(p)
    return out
  })
}

/** Whether the kernel tracks writes here (Linux 6.7+; the emulated arm64 machine runs 6.1). */
const KERNEL_TRACKS = (() => {
  using probe = new GuestMemory([{ guestAddress: 0, size: P, backing: 'anonymous' }], { trackDirty: true })
  return probe.dirtyTracking === 'kernel'
})()

for (const mode of KERNEL_TRACKS ? (['software', 'kernel'] as const) : (['software'] as const)) {
  viewTest(`dirty tracking (${mode}): every writing method sets the bits of the pages it touched; takeDirty returns and clears`, (t) => {
    const tmp = tempDir()
    t.teardown(tmp.done)
    const file = join(tmp.dir, 'image')
    writeFileSync(file, Buffer.alloc(3 * P, 9))
    using guest = new GuestMemory(
      [
        { guestAddress: 0, size: 4 * P, backing: 'anonymous' },
        { guestAddress: 4 * P, size: 130 * P, backing: 'anonymous' },
      ],
      { trackDirty: mode },
    )
    t.is(guest.dirtyTracking, mode)
    t.deepEqual(dirtyPages(guest), [[], []], 'clean at first')
    guest.write(P + 5, Buffer.alloc(2))
    guest.write(4 * P - 1, Buffer.alloc(2)) // across both regions
    guest.writeU32(4n * BigInt(P) + BigInt(70 * P), 1)
    guest.writeU64Atomic(4 * P + 129 * P, 1n)
    // Not replaced, still a store attempt: marked (a compare-exchange is a write access for the
    // CPU, so the kernel's tracking reports it too).
    guest.compareExchangeU32(2 * P, 5, 6)
    t.deepEqual(dirtyPages(guest), [
      [1, 2, 3],
      [0, 70, 129],
    ])
    t.deepEqual(dirtyPages(guest), [[], []], 'cleared by the take')
    t.is(guest.loadFile(4 * P + 10 * P, file), 3 * P)
    guest.markDirty(P, 1)
    const [bits0, bits1] = guest.takeDirty()
    t.is(bits0.guestAddress, 0n)
    t.is(bits1.guestAddress, BigInt(4 * P))
    t.is(bits1.bitmap.length, 3, '130 pages: three 64-bit words, as KVM_GET_DIRTY_LOG')
    t.is(bits0.bitmap[0], 0b10n)
    t.is(bits1.bitmap[0], 0b111n << 10n)
    let view: Buffer | undefined = guest.view(4 * P + 64 * P, 2 * P)
    if (mode === 'software') {
      // A writable view is dirty when made and while it lives.
      t.deepEqual(dirtyPages(guest), [[], [64, 65]])
      t.deepEqual(dirtyPages(guest), [[], [64, 65]], 'still alive: still dirty')
    } else {
      // The kernel sees what is written through it, and only that.
      t.deepEqual(dirtyPages(guest), [[], []], 'a view written nowhere')
      view[P + 3] = 1
      t.deepEqual(dirtyPages(guest), [[], [65]], 'the page written through the view')
      t.deepEqual(dirtyPages(guest), [[], []], 'and not again')
    }
    guest.removeRegion(4 * P)
    t.is(view.length, 0)
    view = undefined
    t.deepEqual(dirtyPages(guest), [[]], 'a detached view is forgotten')
    // Reads mark nothing; errors mark nothing.
    guest.read(0, 10)
    guest.readU64(8)
    t.throws(() => guest.write(3 * P, Buffer.alloc(2 * P)), { code: 'ERR_GUEST_ADDRESS' })
    t.deepEqual(dirtyPages(guest), [[]])
    // A region plugged in later is all dirty (no snapshot holds it yet).
    guest.addRegion({ guestAddress: 8 * P, size: 2 * P, backing: 'anonymous' })
    t.deepEqual(dirtyPages(guest), [[], [0, 1]])
  })
}

test('dirty tracking: a page written again after a take, a snapshot or a region change is marked again', async (t) => {
  // Writes to the page marked last skip the bitmap; every take and every change of the regions
  // must end that, or a page written after it would be missing from the next diff.
  const tmp = tempDir()
  t.teardown(tmp.done)
  using guest = new GuestMemory([{ guestAddress: 0, size: 4 * P, backing: 'anonymous' }], { trackDirty: true })
  guest.write(P + 1, Buffer.alloc(1))
  guest.write(P + 2, Buffer.alloc(1))
  t.deepEqual(dirtyPages(guest), [[1]])
  guest.write(P + 3, Buffer.alloc(1))
  t.deepEqual(dirtyPages(guest), [[1]], 'marked again after takeDirty')
  guest.write(P + 4, Buffer.alloc(1))
  const fd = openSync(join(tmp.dir, 'snap'), 'w+')
  t.teardown(() => closeSync(fd))
  await guest.snapshot(fd)
  guest.write(P + 5, Buffer.alloc(1))
  t.deepEqual(dirtyPages(guest), [[1]], 'marked again after a snapshot')
  guest.write(P + 6, Buffer.alloc(1))
  guest.removeRegion(0)
  guest.addRegion({ guestAddress: 0, size: 4 * P, backing: 'anonymous' })
  t.deepEqual(dirtyPages(guest), [[0, 1, 2, 3]], 'a region plugged in is all dirty')
  guest.write(P + 7, Buffer.alloc(1))
  t.deepEqual(dirtyPages(guest), [[1]], 'the new region’s bitmap is marked')
  guest.write(2 * P - 1, Buffer.alloc(2))
  guest.write(2 * P + 8, Buffer.alloc(1))
  t.deepEqual(dirtyPages(guest), [[1, 2]], 'a write across pages, then inside the second')
})

test('dirty tracking is off unless asked; takeDirty and markDirty then say so', (t) => {
  using guest = new GuestMemory([{ guestAddress: 0, size: P, backing: 'anonymous' }])
  t.throws(() => guest.takeDirty(), { code: 'ERR_MMAP_UNSUPPORTED', message: /trackDirty/ })
  t.throws(() => guest.markDirty(0, 1), { code: 'ERR_MMAP_UNSUPPORTED' })
  t.throws(() => new GuestMemory([{ guestAddress: 0, size: P, backing: 'anonymous' }], { trackDirty: 1 as never }), {
    code: 'ERR_INVALID_ARG_TYPE',
  })
})

test('snapshot, restore, diff: the restored memory equals the original at both points, byte for byte', async (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const base = join(tmp.dir, 'vm.mem')
  const diff = join(tmp.dir, 'vm.diff')
  using ram = SharedMemory.create('snap', 8 * P)
  using guest = new GuestMemory(
    [
      { guestAddress: 0, size: 8 * P, backing: ram },
      { guestAddress: 16 * P, size: 4 * P, backing: 'anonymous' },
      { guestAddress: 32 * P, size: P, backing: 'anonymous', protection: Protection.READ },
    ],
    { trackDirty: true },
  )
  const fill = (seed: number) => {
    for (let p = 0; p < 8; p++) guest.write(p * P, Buffer.alloc(P, seed + p))
    for (let p = 0; p < 4; p++) guest.write(16 * P + p * P, Buffer.alloc(P, seed + 100 + p))
  }
  const memory = () => Buffer.concat([guest.read(0, 8 * P), guest.read(16 * P, 4 * P), guest.read(32 * P, P)])
  fill(1)
  const full = await guest.snapshot(base)
  t.deepEqual(JSON.parse(JSON.stringify(full)), full, 'the manifest is plain JSON')
  t.deepEqual(
    full.regions.map((r) => [r.guestAddress, r.size, r.fileOffset, r.backing, r.protection]),
    [
      [0, 8 * P, 0, 'fd', RW],
      [16 * P, 4 * P, 8 * P, 'anonymous', RW],
      [32 * P, P, 12 * P, 'anonymous', Protection.READ],
    ],
  )
  t.is(readFileSync(base).length, 13 * P)
  const first = memory()
  t.deepEqual(dirtyPages(guest), [[], [], []], 'a snapshot clears the bits it wrote')
  // The guest runs again: two pages change.
  guest.write(3 * P + 7, Buffer.from('changed'))
  guest.writeU32(16 * P + 2 * P, 0xfeed)
  const second = memory()
  const d = await guest.snapshot(diff, { dirtyOnly: true })
  t.deepEqual(
    d.regions.map((r) => r.dirtyPages),
    [[[3, 1]], [[2, 1]], []],
  )
  // Restore the base: the memory at the first point.
  using a = GuestMemory.restore(full, base)
  const restored = () => Buffer.concat([a.read(0, 8 * P), a.read(16 * P, 4 * P), a.read(32 * P, P)])
  t.deepEqual(restored(), first)
  t.true(a.regions()[2].readonly, 'the protection came back')
  // Apply the diff: the memory at the second point.
  t.is(await a.applyDiff(d, diff), 2 * P)
  t.deepEqual(restored(), second)
  // Guest writes to a restored memory never reach the snapshot file.
  const fileBefore = readFileSync(base)
  a.write(0, Buffer.alloc(P, 0xee))
  t.deepEqual(readFileSync(base), fileBefore)
  // Or layer a diff into the file of the full snapshot it follows, and restore from that file.
  const layeredFile = join(tmp.dir, 'layered.mem')
  const fullAgain = await guest.snapshot(layeredFile)
  guest.write(5 * P, Buffer.alloc(1, 0x55))
  t.throws(() => guest.writeU8(32 * P - 1, 7), { code: 'ERR_GUEST_ADDRESS' }) // a hole: nothing marked
  const third = memory()
  const onto = await guest.snapshot(layeredFile, { dirtyOnly: true })
  t.deepEqual(
    onto.regions.map((r) => r.dirtyPages),
    [[[5, 1]], [], []],
  )
  t.is(readFileSync(layeredFile).length, 13 * P, 'the diff left the rest of the file as it was')
  using b = GuestMemory.restore(fullAgain, layeredFile)
  t.deepEqual(Buffer.concat([b.read(0, 8 * P), b.read(16 * P, 4 * P), b.read(32 * P, P)]), third)
})

test('a restore is lazy, checks the manifest against the file first, and refuses one that does not match', async (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const path = join(tmp.dir, 'vm.mem')
  using guest = new GuestMemory([{ guestAddress: 0, size: 4 * P, backing: 'anonymous' }])
  guest.write(0, Buffer.from('hello'))
  const m = await guest.snapshot(path)
  // A copy of the manifest, damaged by `patch` (plain JSON: any field may be set to anything).
  type Json = { regions: Record<string, unknown>[] } & Record<string, unknown>
  const bad = (patch: (x: Json) => void): SnapshotManifest => {
    const copy = JSON.parse(JSON.stringify(m)) as Json
    patch(copy)
    return copy as unknown as SnapshotManifest
  }
  t.throws(
    () =>
      GuestMemory.restore(
        bad((x) => (x.version = 3)),
        path,
      ),
    { code: 'ERR_INVALID_ARG_VALUE', message: /1 or 2/ },
  )
  t.throws(
    () =>
      GuestMemory.restore(
        bad((x) => (x.pageSize = 65536)),
        path,
      ),
    { code: 'ERR_INVALID_ARG_VALUE', message: /page size/ },
  )
  t.throws(
    () =>
      GuestMemory.restore(
        bad((x) => (x.regions[0].size = 8 * P)),
        path,
      ),
    { code: 'ERR_MMAP_BEYOND_EOF' },
    'the file is too short',
  )
  t.throws(
    () =>
      GuestMemory.restore(
        bad((x) => (x.regions[0].fileOffset = 1)),
        path,
      ),
    { code: 'ERR_MMAP_UNALIGNED' },
  )
  t.throws(
    () =>
      GuestMemory.restore(
        bad((x) => (x.regions[0].guestAddress = -P)),
        path,
      ),
    { code: 'ERR_OUT_OF_RANGE' },
  )
  t.throws(
    () =>
      GuestMemory.restore(
        bad((x) => x.regions.push({ ...x.regions[0], guestAddress: P, fileOffset: 0 })),
        path,
      ),
    { code: 'ERR_GUEST_OVERLAP' },
  )
  t.throws(
    () =>
      GuestMemory.restore(
        bad((x) => (x.regions[0].extra = 1)),
        path,
      ),
    { code: 'ERR_INVALID_ARG_VALUE' },
  )
  t.throws(
    () =>
      GuestMemory.restore(
        bad((x) => (x.regions[0].dirtyPages = [[0, 1]])),
        path,
      ),
    { code: 'ERR_INVALID_ARG_VALUE' },
  )
  t.throws(() => GuestMemory.restore(null as never, path), { code: 'ERR_INVALID_ARG_TYPE' })
  using restored = GuestMemory.restore(m, path)
  t.is(restored.read(0, 5).toString(), 'hello')
  t.is(restored.arena.mappings()[0].shared, false, 'a private overlay of the file')
  await t.throwsAsync(guest.snapshot(path, { dirtyOnly: true }), { code: 'ERR_MMAP_UNSUPPORTED' })
  await t.throwsAsync(
    restored.applyDiff(
      bad((x) => (x.regions[0].guestAddress = 8 * P)),
      path,
    ),
    { code: 'ERR_GUEST_ADDRESS' },
  )
})

test('a snapshot leases the regions until it settles; a failed one puts the dirty bits back', async (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  using guest = new GuestMemory([{ guestAddress: 0, size: 64 * P, backing: 'anonymous' }], { trackDirty: true, addressSpace: 128 * P })
  guest.write(0, Buffer.alloc(64 * P, 1))
  const pending = guest.snapshot(join(tmp.dir, 'a'))
  t.throws(() => guest.removeRegion(0), { code: 'ERR_MMAP_BUSY' })
  guest.addRegion({ guestAddress: 64 * P, size: P, backing: 'anonymous' }) // elsewhere: free
  await pending
  guest.write(3 * P, Buffer.alloc(1))
  await t.throwsAsync(guest.snapshot(0x7fff_fff0, { dirtyOnly: true }), { code: 'EBADF' })
  t.deepEqual(dirtyPages(guest), [[3], [0]], 'the failed diff lost nothing')
})

test('a snapshot into the file this memory was restored from is safe: never truncated, consistent', async (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const path = join(tmp.dir, 'vm.mem')
  using guest = new GuestMemory([{ guestAddress: 0, size: 8 * P, backing: 'anonymous' }])
  for (let p = 0; p < 8; p++) guest.write(p * P, Buffer.alloc(P, p + 1))
  const m = await guest.snapshot(path)
  using restored = GuestMemory.restore(m, path)
  restored.write(2 * P, Buffer.alloc(P, 0xaa)) // one page copied, the others still the file's
  const expected = restored.read(0, 8 * P)
  const again = await restored.snapshot(path) // into the very file behind its private overlays
  t.deepEqual(
    again.regions.map((r) => [r.guestAddress, r.size, r.fileOffset]),
    m.regions.map((r) => [r.guestAddress, r.size, r.fileOffset]),
  )
  t.deepEqual(restored.read(0, 8 * P), expected, 'every page still readable and as it was')
  t.is(readFileSync(path).length, 8 * P)
  using second = GuestMemory.restore(again, path)
  t.deepEqual(second.read(0, 8 * P), expected)
})

test('an eager restore ({ lazy: false }) reads everything into anonymous memory: atomics work, the file is no longer needed', async (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const path = join(tmp.dir, 'vm.mem')
  using guest = new GuestMemory([
    { guestAddress: 0, size: 4 * P, backing: 'anonymous' },
    { guestAddress: 8 * P, size: P, backing: 'anonymous', protection: Protection.READ },
  ])
  guest.write(0, Buffer.alloc(4 * P, 7))
  const m = await guest.snapshot(path)
  using lazy = GuestMemory.restore(m, path)
  t.throws(() => lazy.readU32Atomic(0), { code: 'ERR_MMAP_ACCESS' }, 'lazily restored memory is a file')
  using eager = GuestMemory.restore(m, path, { lazy: false })
  t.deepEqual(eager.read(0, 4 * P), guest.read(0, 4 * P))
  t.is(eager.readU32Atomic(0), 0x07070707)
  t.true(eager.regions()[1].readonly, 'the protection came back')
  t.throws(() => eager.write(8 * P, Buffer.alloc(1)), { code: 'ERR_MMAP_ACCESS' })
  t.is(eager.arena.mappings()[0].kind, 'anonymous')
  t.throws(() => GuestMemory.restore(m, path, { lazy: 1 as never }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => GuestMemory.restore(m, path, { lazy: 'no' as never }), { code: 'ERR_INVALID_ARG_VALUE', message: /'file' or 'pager'/ })
})
