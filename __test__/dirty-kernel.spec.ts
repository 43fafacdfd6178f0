/**
 * Kernel dirty tracking (`trackDirty: true` / `'kernel'`): every writer seen, takes atomic with
 * respect to writers, one record for every thread, and what the kernel cannot see documented as
 * such. Linux 6.7 has what it needs; on an older kernel (the emulated arm64 machine's 6.1) the
 * tests check the refusal and the fallback instead.
 */
import { spawnSync } from 'node:child_process'
import {
  chmodSync,
  closeSync,
  constants as fsConstants,
  cpSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readlinkSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs'
import { release, tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import test from 'ava'
import { GuestMemory, MemoryMapping, PAGE_SIZE, Protection, SharedMemory, type SnapshotManifest } from 'mapped-region'
import { ENTRY, NO_EXTERNAL, NOBODY_CAN_RUN_NODE, ROOT, tempDir } from './helpers.js'
import { viewTest, viewTestSerial } from './view-test.js'

const P = PAGE_SIZE
const [major, minor] = release().split('.').map(Number)
/** Whether this kernel has userfaultfd's asynchronous write-protect and PAGEMAP_SCAN. */
const KERNEL_TRACKS = major > 6 || (major === 6 && minor >= 7)
const kernelTest = KERNEL_TRACKS ? test : test.skip
/** A kernel test whose subject includes views (skipped without external buffers). */
const kernelViewTest = KERNEL_TRACKS ? viewTest : test.skip
const kernelViewTestSerial = KERNEL_TRACKS ? viewTestSerial : test.skip

/** The dirty pages of each region, as page indexes, from `takeDirty()`. */
function dirtyPages(guest: GuestMemory): number[][] {
  return guest.takeDirty().map(({ bitmap, size }) => {
    const out: number[] = []
    for (let p = 0; p < size / P; p++) if ((bitmap[p >> 6] >> BigInt(p & 63)) & 1n) out.push(p)
    return out
  })
}

test('trackDirty: true is the kernel where it can track, else software; the modes and bad values', (t) => {
  const one = [{ guestAddress: 0, size: P, backing: 'anonymous' as const }]
  using auto = new GuestMemory(one, { trackDirty: true })
  using soft = new GuestMemory(one, { trackDirty: 'software' })
  using off = new GuestMemory(one)
  t.is(auto.dirtyTracking, KERNEL_TRACKS ? 'kernel' : 'software')
  t.is(soft.dirtyTracking, 'software')
  t.is(off.dirtyTracking, 'off')
  if (KERNEL_TRACKS) {
    using kernel = new GuestMemory(one, { trackDirty: 'kernel' })
    t.is(kernel.dirtyTracking, 'kernel')
  } else {
    t.throws(() => new GuestMemory(one, { trackDirty: 'kernel' }), { code: 'ERR_MMAP_UNSUPPORTED', message: /Linux 6\.7/ })
  }
  t.throws(() => new GuestMemory(one, { trackDirty: 'Kernel' as never }), { code: 'ERR_INVALID_ARG_VALUE' })
  t.throws(() => new GuestMemory(one, { trackDirty: 1 as never }), { code: 'ERR_INVALID_ARG_TYPE' })
  let reads = 0
  const options = {
    get trackDirty() {
      reads++
      return reads === 1 ? 'software' : 'kernel'
    },
  }
  using once = new GuestMemory(one, options as never)
  t.is(reads, 1, 'read once')
  t.is(once.dirtyTracking, 'software')
})

kernelViewTest('every writer is seen: methods, typed stores, atomics, loads, views, the kernel, a worker thread', async (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const file = join(tmp.dir, 'image')
  writeFileSync(file, Buffer.alloc(2 * P, 7))
  using ram = SharedMemory.create('dirty-kernel', 64 * P)
  using guest = new GuestMemory(
    [
      { guestAddress: 0, size: 64 * P, backing: ram },
      { guestAddress: 128 * P, size: 16 * P, backing: 'anonymous' },
    ],
    { trackDirty: 'kernel', addressSpace: 256 * P },
  )
  t.deepEqual(dirtyPages(guest), [[], []], 'clean at first')
  guest.write(P + 5, Buffer.alloc(2))
  guest.writeU32(BigInt(3 * P), 1)
  guest.writeU64Atomic(128 * P + 8, 1n)
  t.is(guest.loadFile(5 * P, file), 2 * P)
  t.deepEqual(dirtyPages(guest), [[1, 3, 5, 6], [0]])
  t.is(await guest.loadFileAsync(130 * P, file, { length: P }), P)
  const view = guest.view(10 * P, 4 * P)
  view[2 * P] = 1
  t.deepEqual(dirtyPages(guest), [[12], [2]], 'an async load (pread on the thread pool), and only the page written through a view')
  const worker = new Worker(
    `const { workerData } = require('node:worker_threads')
     const { GuestMemory } = require(workerData.entry)
     const guest = GuestMemory.attach(workerData.handle)
     guest.writeU16(20 * ${P}, 1)
     guest.close()`,
    { eval: true, workerData: { entry: ENTRY, handle: guest.share() } },
  )
  await new Promise((resolve) => worker.once('exit', resolve))
  t.deepEqual(dirtyPages(guest), [[20], []], 'a write from another thread')
  // Not seen, as documented: a write through another mapping of the same memfd.
  using other = MemoryMapping.fromFd(ram.fd, ram.size)
  other.write(30 * P, Buffer.from('x'))
  t.deepEqual(dirtyPages(guest), [[], []], 'another mapping of the memfd is not this memory’s mapping')
  guest.markDirty(30 * P, 1)
  t.deepEqual(dirtyPages(guest), [[30], []], 'so it is marked by hand')
})

kernelTest('a take is atomic with respect to a writer thread: every page written shows in one take or the next', async (t) => {
  const pages = 16384
  using guest = new GuestMemory([{ guestAddress: 0, size: pages * P, backing: 'anonymous' }], { trackDirty: 'kernel' })
  // [pages written, start]: the writer starts when this thread is taking.
  const progress = new Int32Array(new SharedArrayBuffer(8))
  const worker = new Worker(
    `const { workerData } = require('node:worker_threads')
     const { GuestMemory } = require(workerData.entry)
     const guest = GuestMemory.attach(workerData.handle)
     Atomics.wait(workerData.progress, 1, 0)
     for (let p = 0; p < ${pages}; p++) { guest.writeU8(p * ${P} + (p % 97), 1); Atomics.store(workerData.progress, 0, p + 1) }
     guest.close()`,
    { eval: true, workerData: { entry: ENTRY, handle: guest.share(), progress } },
  )
  const exited = new Promise((resolve) => worker.once('exit', resolve))
  const seen = new Uint8Array(pages)
  let takes = 0
  const take = () => {
    takes++
    for (const p of dirtyPages(guest)[0]) seen[p]++
  }
  take()
  Atomics.store(progress, 1, 1)
  Atomics.notify(progress, 1)
  // Takes as fast as they come, on this thread, while the writer writes on its own.
  while (Atomics.load(progress, 0) < pages) take()
  await exited
  take()
  t.log(`${takes} takes while a thread wrote ${pages} pages`)
  t.true(takes > 10, 'the takes raced the writer')
  t.is(seen.filter((n) => n === 1).length, pages, 'each page reported exactly once: none lost, none twice')
})

kernelTest('one record for every thread: takeDirty in a worker takes what the main thread wrote', async (t) => {
  using guest = new GuestMemory([{ guestAddress: 0, size: 8 * P, backing: 'anonymous' }], { trackDirty: true })
  guest.writeU8(2 * P, 1)
  const worker = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads')
     const { GuestMemory } = require(workerData.entry)
     const guest = GuestMemory.attach(workerData.handle)
     parentPort.postMessage({ mode: guest.dirtyTracking, words: guest.takeDirty().map((d) => d.bitmap[0].toString()) })
     guest.close()`,
    { eval: true, workerData: { entry: ENTRY, handle: guest.share() } },
  )
  const message = await new Promise((resolve) => worker.once('message', resolve))
  t.deepEqual(message, { mode: 'kernel', words: ['4'] })
  t.deepEqual(dirtyPages(guest), [[]], 'taken for all')
})

kernelTest('hot-plugged, removed and remapped regions; restored (private) memory; mlock', async (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  using guest = new GuestMemory([{ guestAddress: 0, size: 8 * P, backing: 'anonymous' }], {
    trackDirty: 'kernel',
    addressSpace: 64 * P,
  })
  guest.addRegion({ guestAddress: 16 * P, size: 2 * P, backing: 'anonymous' })
  t.deepEqual(dirtyPages(guest), [[], [0, 1]], 'a region plugged in is all dirty (no snapshot holds it)')
  guest.writeU8(17 * P, 1)
  t.deepEqual(dirtyPages(guest), [[], [1]], 'and tracked')
  guest.removeRegion(16 * P)
  t.deepEqual(dirtyPages(guest), [[]])
  // An overlay made through the arena, under a region: its memory is new (marked), and tracked.
  guest.arena.addAnonymous(3 * P, P, Protection.READ_WRITE)
  t.deepEqual(dirtyPages(guest), [[3]], 'mapped anew: marked')
  guest.writeU8(3 * P + 1, 1)
  t.deepEqual(dirtyPages(guest), [[3]], 'and its writes are seen')
  // mlock faults private pages in for writing (so does a populate for writing): the kernel
  // reports them as written once. Locked pages are tracked like any other afterwards.
  guest.arena.mlock(0, 8 * P)
  t.deepEqual(dirtyPages(guest), [[0, 1, 2, 3, 4, 5, 6, 7]], 'faulted in for writing by mlock')
  guest.writeU8(6 * P, 1)
  t.deepEqual(dirtyPages(guest), [[6]])
  guest.arena.munlock(0, 8 * P)
  // A restore's regions are private overlays of the snapshot file: tracked too.
  const full = await guest.snapshot(join(tmp.dir, 'vm.mem'))
  using restored = GuestMemory.restore(full, join(tmp.dir, 'vm.mem'), { trackDirty: 'kernel' })
  t.is(restored.dirtyTracking, 'kernel')
  t.deepEqual(dirtyPages(restored), [[]])
  restored.writeU8(5 * P, 2)
  t.deepEqual(dirtyPages(restored), [[5]])
  // A hole made through the arena inside a region, and a protection change: takes go on.
  guest.arena.removeMapping(2 * P, P)
  t.deepEqual(dirtyPages(guest), [[2]], 'a page removed under a region changed')
  guest.arena.protect(5 * P, P, Protection.READ)
  guest.writeU8(4 * P, 1)
  t.true(dirtyPages(guest)[0].includes(4), 'a protection change keeps the tracking')
  // A mapping the kernel will not track (a read-only file, shared): reported on every take, since
  // its writes could not be seen; replaced, it is tracked again.
  const ro = join(tmp.dir, 'ro')
  writeFileSync(ro, Buffer.alloc(P, 1))
  const fd = openSync(ro, 'r')
  t.teardown(() => closeSync(fd))
  guest.arena.addFdMapping(6 * P, P, fd, 0, Protection.READ, { shared: true })
  t.deepEqual(dirtyPages(guest), [[6]])
  t.deepEqual(dirtyPages(guest), [[6]], 'on every take')
  guest.arena.addAnonymous(6 * P, P, Protection.READ_WRITE)
  t.deepEqual(dirtyPages(guest), [[6]], 'mapped anew')
  t.deepEqual(dirtyPages(guest), [[]], 'tracked again')
})

kernelViewTest('diff snapshots from kernel tracking; a failed snapshot puts the pages back; discard is marked', async (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  using ram = SharedMemory.create('dirty-kernel-snap', 8 * P)
  using guest = new GuestMemory(
    [
      { guestAddress: 0, size: 8 * P, backing: ram },
      { guestAddress: 16 * P, size: 4 * P, backing: 'anonymous' },
    ],
    { trackDirty: 'kernel' },
  )
  guest.write(0, Buffer.alloc(8 * P, 1))
  const base = join(tmp.dir, 'vm.mem')
  const full = await guest.snapshot(base)
  const view = guest.view(2 * P, P)
  view.fill(2)
  guest.writeU32(17 * P, 3)
  // A snapshot that fails (a directory is no target) puts what it took back.
  await t.throwsAsync(guest.snapshot(tmp.dir, { dirtyOnly: true }))
  const diff = await guest.snapshot(base, { dirtyOnly: true })
  t.deepEqual(
    diff.regions.map((r) => r.dirtyPages),
    [[[2, 1]], [[1, 1]]],
  )
  const memory = (g: GuestMemory) => Buffer.concat([g.read(0, 8 * P), g.read(16 * P, 4 * P)])
  using restored = GuestMemory.restore(full, base)
  t.true(memory(restored).equals(memory(guest)), 'the diff was written into the full snapshot’s file')
  // Discarding shared memory is no write the kernel sees: it is marked.
  guest.discard(4 * P, P)
  t.deepEqual(dirtyPages(guest), [[4], []])
})

test('without the kernel’s tracking (before Linux 6.7, or a sandbox without userfaultfd) true falls back to software, which share() refuses', (t) => {
  using guest = new GuestMemory([{ guestAddress: 0, size: P, backing: 'anonymous' }], { trackDirty: 'software' })
  t.throws(() => guest.share(), { code: 'ERR_MMAP_UNSUPPORTED', message: /software/ })
})

// A user without privileges: the kernel refuses a plain userfaultfd (vm.unprivileged_userfaultfd
// is 0 here) and the tracker takes one for user-mode faults only, which sees every write all the
// same (the kernel resolves write-protect faults itself, in whatever mode they are taken).
const asNobody = KERNEL_TRACKS && NOBODY_CAN_RUN_NODE ? test : test.skip
asNobody('as a user without privileges (nobody): kernel tracking works, including a write by the kernel', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mr-nobody-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // A copy the user can read: the package's loader, its binary and the built facade.
  for (const f of ['index.js', 'package.json', ...readdirSync(ROOT).filter((n) => n.endsWith('.node'))]) cpSync(join(ROOT, f), join(dir, f))
  cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true })
  writeFileSync(join(dir, 'data'), Buffer.alloc(P, 5))
  chmodSync(dir, 0o755)
  const script = `
    const { GuestMemory } = require('${dir}/dist/index.js')
    const guest = new GuestMemory([{ guestAddress: 0, size: 8 * ${P}, backing: 'anonymous' }], { trackDirty: 'kernel' })
    guest.writeU8(${P}, 1)
    guest.loadFile(3 * ${P}, '${dir}/data')
    console.log(guest.dirtyTracking, guest.takeDirty()[0].bitmap[0].toString())`
  const r = spawnSync('su', ['nobody', '-s', '/bin/sh', '-c', `"${process.execPath}" -e "$0"`, script], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout.trim(), 'kernel 10', 'pages 1 and 3')
})

// Serial: it counts this process's descriptors.
kernelViewTestSerial(
  'after a change over a live view, a failed change and a close: takes go on, nothing is lost, no descriptor is kept',
  async (t) => {
    // The descriptors kernel tracking opens: a userfaultfd and /proc/self/pagemap.
    const fds = () =>
      readdirSync('/proc/self/fd').filter((f) => {
        try {
          return /userfaultfd|pagemap/.test(readlinkSync(`/proc/self/fd/${f}`))
        } catch {
          return false
        }
      }).length
    const before = fds()
    const guest = new GuestMemory([{ guestAddress: 0, size: 8 * P, backing: 'anonymous' }], { trackDirty: 'kernel' })
    guest.writeU8(P, 1)
    // A removal under a live view holds the range until the next turn, then maps it anew.
    const view = guest.view(4 * P, 2 * P)
    guest.arena.removeMapping(4 * P, 2 * P)
    t.is(view.length, 0)
    await new Promise((resolve) => setImmediate(resolve))
    t.deepEqual(dirtyPages(guest), [[1, 4, 5]], 'the write, and the pages mapped anew by the reclaim')
    // A change the kernel refuses (a pipe cannot be mapped): the range is reserved again.
    const tmp = tempDir()
    t.teardown(tmp.done)
    const fifo = join(tmp.dir, 'fifo')
    t.is(spawnSync('mkfifo', [fifo]).status, 0)
    const pipe = openSync(fifo, fsConstants.O_RDWR | fsConstants.O_NONBLOCK)
    t.throws(() => guest.arena.addFdMapping(6 * P, P, pipe, 0, Protection.READ_WRITE))
    closeSync(pipe)
    t.deepEqual(dirtyPages(guest), [[6]])
    guest.arena.addAnonymous(4 * P, 3 * P, Protection.READ_WRITE)
    t.deepEqual(dirtyPages(guest), [[4, 5, 6]])
    guest.writeU8(5 * P, 1)
    t.deepEqual(dirtyPages(guest), [[5]])
    // Discarding through the arena marks too.
    guest.arena.discard(7 * P, P)
    t.deepEqual(dirtyPages(guest), [[7]])
    guest.close()
    await new Promise((resolve) => setImmediate(resolve))
    t.is(fds(), before, 'the userfaultfd and pagemap descriptors go with the region')
  },
)

kernelTest('a region plugged in is all dirty however its adder ends; a take racing hot-plug of another size never throws', async (t) => {
  using guest = new GuestMemory([{ guestAddress: 0, size: 4 * P, backing: 'anonymous' }], {
    trackDirty: 'kernel',
    addressSpace: 256 * P,
  })
  const stop = new Int32Array(new SharedArrayBuffer(4))
  const worker = new Worker(
    `const { workerData } = require('node:worker_threads')
     const { GuestMemory } = require(workerData.entry)
     const guest = GuestMemory.attach(workerData.handle)
     for (let i = 0; Atomics.load(workerData.stop, 0) === 0; i++) {
       guest.addRegion({ guestAddress: 128 * ${P}, size: (i % 2 ? 16 : 32) * ${P}, backing: 'anonymous' })
       guest.removeRegion(128 * ${P})
     }
     guest.close()`,
    { eval: true, workerData: { entry: ENTRY, handle: guest.share(), stop } },
  )
  let takes = 0
  const deadline = Date.now() + 500
  while (Date.now() < deadline) {
    guest.writeU8(2 * P, 1)
    const taken = guest.takeDirty()
    takes++
    t.true(taken[0].bitmap[0] === 0b100n, 'the page written is in every take')
    for (const d of taken.slice(1)) {
      const pages = d.size / P
      t.is(d.bitmap[0] >> BigInt(pages), 0n, 'no bit beyond the region')
    }
    await new Promise((resolve) => setImmediate(resolve))
  }
  Atomics.store(stop, 0, 1)
  await new Promise((resolve) => worker.once('exit', resolve))
  t.log(`${takes} takes`)
  guest.addRegion({ guestAddress: 128 * P, size: 16 * P, backing: 'anonymous' })
  const plugged = dirtyPages(guest)[1]
  t.is(plugged.length, 16, 'plugged in: all dirty, marked in the call that mapped it')
})

// The kernel's tracking with a `lazy: 'pager'` restore: the pager's regions are reported whole by
// every take until the first take after the pager has ended, which tracks them and reports them
// whole once more; from then on page by page. When the pager ends is not in the tests' hands (a
// restore of a few MiB may be done before the second take): `Takes` checks the order whatever it.

/** The pager needs a full userfaultfd: root here (pager.spec.ts tests the refusal elsewhere). */
const pagerKernelTest = KERNEL_TRACKS && process.getuid?.() === 0 ? test : test.skip

const MiB = 1 << 20
/** Pages of the restored guest's two regions: 64 MiB read-write, 16 pages read-only. */
const PAGES = [(64 * MiB) / P, 16]

/** A guest (64 MiB at 0, page i holding i; 16 read-only pages at 128 MiB) snapshotted to a temporary file. */
async function pagerSnapshot(t: import('ava').ExecutionContext): Promise<{ dir: string; path: string; manifest: SnapshotManifest }> {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const path = join(tmp.dir, 'vm.mem')
  using g = new GuestMemory([
    { guestAddress: 0, size: 64 * MiB, backing: 'anonymous' },
    { guestAddress: 128 * MiB, size: 16 * P, backing: 'anonymous', protection: Protection.READ },
  ])
  for (let i = 0; i < PAGES[0]; i++) g.writeU32(i * P, i)
  const manifest = await g.snapshot(path)
  return { dir: tmp.dir, path, manifest: JSON.parse(JSON.stringify(manifest)) as SnapshotManifest }
}

/** Every page of each region, as `dirtyPages` lists them. */
const ALL = PAGES.map((n) => Array.from({ length: n }, (_, i) => i))

/**
 * The takes of a guest restored with the pager and the kernel's tracking, checked in order: every
 * take reports every page until the hand-over (the first take after the pager ended, itself
 * reporting every page); after it, exactly the pages written since the take before. The first
 * take that is not whole, or the first whole one after `restored` settled, proves the hand-over.
 */
class Takes {
  handedOver = false
  wholeAfterSettled = 0
  settled = false
  constructor(
    readonly t: import('ava').ExecutionContext,
    readonly guest: GuestMemory,
  ) {
    void guest.restored?.then(
      () => {
        this.settled = true
      },
      () => {
        this.settled = true
      },
    )
  }
  /** Takes, expecting exactly `written` once handed over; returns whether the take reported every page. */
  take(written: number[][], what: string): boolean {
    const settled = this.settled
    const got = dirtyPages(this.guest)
    const whole = JSON.stringify(got) === JSON.stringify(ALL)
    if (this.handedOver || !whole) {
      this.t.deepEqual(got, written, `${what}: exactly the pages written`)
      this.handedOver = true
    } else if (settled) {
      this.handedOver = true
    }
    if (whole && settled) this.wholeAfterSettled++
    return whole
  }
}

pagerKernelTest(
  "lazy: 'pager' with the kernel's tracking: all dirty while the pager runs, handed over by the take after it ends, then exact (views too)",
  async (t) => {
    const { path, manifest } = await pagerSnapshot(t)
    for (const trackDirty of ['kernel', true] as const) {
      using guest = GuestMemory.restore(manifest, path, { lazy: 'pager', trackDirty })
      const takes = new Takes(t, guest)
      t.is(guest.dirtyTracking, 'kernel', String(trackDirty))
      t.true(takes.take([[], []], 'first'), 'the first take reports every page of the pager’s regions')
      guest.writeU32(3 * P, 7)
      takes.take([[3], []], 'during the restore')
      await guest.restored
      takes.take([[], []], 'after the restore')
      guest.writeU32(10 * P, 1)
      guest.write(20 * P + P - 1, Buffer.from([1, 2]))
      if (!NO_EXTERNAL) guest.view(30 * P, P)[5] = 1
      takes.take([NO_EXTERNAL ? [10, 20, 21] : [10, 20, 21, 30], []], 'writes, a view')
      takes.take([[], []], 'nothing since')
      t.true(takes.handedOver, 'handed over by now')
      t.true(takes.wholeAfterSettled <= 1, 'at most one whole take after the restore ended')
      t.is(guest.readU32(3 * P), 7)
      t.is(guest.readU32(1000 * P), 1000)
    }
  },
)

pagerKernelTest(
  'a worker attached to a pager restore with the kernel’s tracking takes the hand-over; this thread then sees its writes exactly',
  async (t) => {
    const { path, manifest } = await pagerSnapshot(t)
    using guest = GuestMemory.restore(manifest, path, { lazy: 'pager', trackDirty: 'kernel' })
    t.deepEqual(dirtyPages(guest), ALL)
    const worker = new Worker(
      `const { workerData, parentPort } = require('node:worker_threads')
     const { GuestMemory } = require(workerData.entry)
     const guest = GuestMemory.attach(workerData.handle)
     guest.restored.then(() => {
       const counts = guest.takeDirty().map(({ bitmap }) => bitmap.reduce((n, w) => n + w.toString(2).split('1').length - 1, 0))
       guest.writeU32(3 * ${P}, 1)
       guest.writeU32(7 * ${P}, 1)
       guest.close()
       parentPort.postMessage(counts)
     })`,
      { eval: true, workerData: { entry: ENTRY, handle: guest.share() } },
    )
    const [counts] = await Promise.all([
      new Promise((resolve) => worker.once('message', resolve)),
      new Promise((resolve) => worker.once('exit', resolve)),
    ])
    // The worker's take is the hand-over (every page), unless this thread's first take was (the
    // pager may have ended before it): then nothing was written between.
    t.true(JSON.stringify(counts) === JSON.stringify(PAGES) || JSON.stringify(counts) === '[0,0]', `the worker's take: ${counts}`)
    t.log(`the worker's take reported ${counts} pages`)
    t.deepEqual(dirtyPages(guest), [[3, 7], []], 'then exactly the pages it wrote')
    await guest.restored
    t.deepEqual(dirtyPages(guest), [[], []])
  },
)

pagerKernelTest('no write is lost across the hand-over: a worker writes page after page while this thread takes', async (t) => {
  const { path, manifest } = await pagerSnapshot(t)
  using guest = GuestMemory.restore(manifest, path, { lazy: 'pager', trackDirty: 'kernel' })
  // The worker writes every 8th page once, in order: [writes begun, writes done].
  const writes = PAGES[0] / 8
  const progress = new Int32Array(new SharedArrayBuffer(8))
  const worker = new Worker(
    `const { workerData } = require('node:worker_threads')
     const { GuestMemory } = require(workerData.entry)
     const guest = GuestMemory.attach(workerData.handle)
     const p = workerData.progress
     for (let i = 0; i < ${writes}; i++) {
       Atomics.store(p, 0, i + 1)
       guest.writeU32(i * 8 * ${P} + 4, 0xfeed)
       Atomics.store(p, 1, i + 1)
       if (i % 4 === 3) Atomics.wait(p, 0, i + 1, 1)
     }
     guest.close()`,
    { eval: true, workerData: { entry: ENTRY, handle: guest.share(), progress } },
  )
  const exited = new Promise((resolve) => worker.once('exit', resolve))
  // Each take: the pages it reported, the writes done before it began, the writes begun when it returned.
  const takes: { pages: Set<number>; doneBefore: number; begunAfter: number }[] = []
  // This thread writes a page of its own (4 past one of the worker's) right before each take.
  const own: number[] = []
  while (Atomics.load(progress, 1) < writes) {
    const mine = ((takes.length % writes) * 8 + 4) % PAGES[0]
    guest.writeU32(mine * P, takes.length)
    own.push(mine)
    const doneBefore = Atomics.load(progress, 1)
    const pages = new Set(dirtyPages(guest)[0])
    takes.push({ pages, doneBefore, begunAfter: Atomics.load(progress, 0) })
    await new Promise((resolve) => setTimeout(resolve, 1))
  }
  await exited
  takes.push({ pages: new Set(dirtyPages(guest)[0]), doneBefore: writes, begunAfter: writes })
  let handOver = -1
  for (const [i, k] of takes.entries()) if (k.pages.size === PAGES[0]) handOver = i
  t.true(handOver >= 0, 'a take reported every page')
  t.true(
    takes.slice(0, handOver).every((k) => k.pages.size === PAGES[0]),
    'every take up to the hand-over reported every page',
  )
  t.true(
    takes.slice(handOver + 1).some((k) => k.pages.size > 0),
    `takes after the hand-over were exact and saw writes (the hand-over was take ${handOver} of ${takes.length})`,
  )
  // Write i, done before take k began, is reported by take k or by one before it that returned after write i began.
  for (let i = 0; i < writes; i++) {
    const k = takes.findIndex((x) => x.doneBefore > i)
    const seen = takes.slice(0, k + 1).some((x) => x.begunAfter > i && x.pages.has(i * 8))
    if (!seen) t.fail(`page ${i * 8} was written and no take reported it`)
  }
  for (const [i, k] of takes.entries()) if (i < own.length && !k.pages.has(own[i])) t.fail(`take ${i} missed the page written before it`)
  for (const k of takes.slice(handOver + 1)) {
    for (const p of k.pages) if (p % 8 !== 0 && p % 8 !== 4) t.fail(`page ${p} was never written but reported after the hand-over`)
  }
  for (let i = 0; i < writes; i++) if (guest.readU32(i * 8 * P + 4) !== 0xfeed) t.fail(`page ${i * 8} lost its write`)
  t.log(`${takes.length} takes, the hand-over at ${handOver}`)
})

pagerKernelTest('diff snapshots of a pager restore with the kernel’s tracking restore to the same bytes', async (t) => {
  const { dir, path, manifest } = await pagerSnapshot(t)
  const target = join(dir, 'diffs.mem')
  cpSync(path, target)
  using guest = GuestMemory.restore(manifest, path, { lazy: 'pager', trackDirty: 'kernel' })
  const whole = PAGES.map((n) => [[0, n]])
  guest.writeU32(5 * P, 0xaaaa)
  const first = await guest.snapshot(target, { dirtyOnly: true })
  t.deepEqual(
    first.regions.map((r) => r.dirtyPages),
    whole,
    'the first: every page',
  )
  await guest.restored
  guest.writeU32(6 * P, 0xbbbb)
  const second = await guest.snapshot(target, { dirtyOnly: true })
  const runs = second.regions.map((r) => r.dirtyPages)
  // The hand-over (every page once more), unless the first snapshot's take was it.
  t.true(JSON.stringify(runs) === JSON.stringify(whole) || JSON.stringify(runs) === JSON.stringify([[[6, 1]], []]), JSON.stringify(runs))
  guest.writeU32(7 * P, 0xcccc)
  guest.writeU32(100 * P, 0xdddd)
  const exact = await guest.snapshot(target, { dirtyOnly: true })
  t.deepEqual(
    exact.regions.map((r) => r.dirtyPages),
    [
      [
        [7, 1],
        [100, 1],
      ],
      [],
    ],
  )
  // The file, with every diff written over it, is the guest's memory.
  const full = { ...exact, dirtyOnly: false, regions: exact.regions.map(({ dirtyPages: _, ...r }) => r) }
  using copy = GuestMemory.restore(full, target, { lazy: false })
  t.true(copy.read(0, 64 * MiB).equals(guest.read(0, 64 * MiB)))
  t.true(copy.read(128 * MiB, 16 * P).equals(guest.read(128 * MiB, 16 * P)))
  t.is(copy.readU32(5 * P), 0xaaaa)
  t.is(copy.readU32(100 * P), 0xdddd)
})

pagerKernelTest(
  'a pager restore that ends incomplete (file truncated) still hands over; close() during one: takes are ERR_MMAP_CLOSED',
  async (t) => {
    const { dir, path, manifest } = await pagerSnapshot(t)
    const cut = join(dir, 'cut.mem')
    cpSync(path, cut)
    using guest = GuestMemory.restore(manifest, cut, { lazy: 'pager', trackDirty: 'kernel' })
    truncateSync(cut, MiB)
    await t.throwsAsync(guest.restored as Promise<void>, { code: 'ERR_RESTORE_INCOMPLETE' })
    t.deepEqual(dirtyPages(guest), ALL, 'the hand-over')
    guest.writeU32(300 * P, 1)
    t.deepEqual(dirtyPages(guest), [[300], []], 'then exact')
    const closed = GuestMemory.restore(manifest, path, { lazy: 'pager', trackDirty: 'kernel' })
    closed.close()
    await t.throwsAsync(closed.restored as Promise<void>, { code: 'ERR_MMAP_CLOSED' })
    t.throws(() => closed.takeDirty(), { code: 'ERR_MMAP_CLOSED' })
  },
)
