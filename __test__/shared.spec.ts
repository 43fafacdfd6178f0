/**
 * Shared views: `SharedArrayBuffer`s over region memory, where the runtime has
 * `node_api_create_external_sharedarraybuffer` (recent Node 22, 24 and 26; not Node 20: there a
 * clear error). CI's node matrix runs this file on 22, 24 and 26, where the real tests run.
 */
import test from 'ava'
import { closeSync, openSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { GuestMemory, MemoryMapping, MemoryMappingArena, PAGE_SIZE, Protection, SharedMemory } from 'mapped-region'
import { tempDir } from './helpers.js'

const P = PAGE_SIZE
const RW = Protection.READ_WRITE

function supported(): boolean {
  using probe = MemoryMapping.anonymous(P)
  try {
    probe.sharedView(0, 8)
    return true
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_MMAP_UNSUPPORTED') return false
    throw e
  }
}
const has = supported()
const withShared = has ? test : test.skip
const without = has ? test.skip : test
const note = has ? '' : ` — skipped on Node ${process.versions.node}: no node_api_create_external_sharedarraybuffer`

without(`sharedView on a runtime without external SharedArrayBuffers is a clear error (Node ${process.versions.node})`, (t) => {
  using m = MemoryMapping.anonymous(P)
  t.throws(() => m.sharedView(0, 8), { code: 'ERR_MMAP_UNSUPPORTED', message: /node_api_create_external_sharedarraybuffer/ })
  t.is(m.pendingOperations, 0, 'nothing was pinned')
})

/** Collects garbage until `done()` holds (finalizers of shared buffers run when the runtime frees them). */
async function collectUntil(done: () => boolean): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    globalThis.gc?.()
    if (done()) return true
    await new Promise((r) => setTimeout(r, 5))
  }
  return false
}

withShared(`a shared view is the region's memory and pins its range until collected${note}`, async (t) => {
  using shm = SharedMemory.create('shared-view', 4 * P)
  const arena = MemoryMappingArena.reserve(8 * P)
  arena.addFdMapping(0, 4 * P, shm.fd, 0, RW)
  let sab: SharedArrayBuffer | undefined = arena.sharedView(P, P)
  t.true(sab instanceof SharedArrayBuffer)
  t.is(sab.byteLength, P)
  arena.writeU32(P + 4, 0xfeed)
  t.is(new Uint32Array(sab)[1], 0xfeed)
  new Uint32Array(sab)[2] = 9
  t.is(arena.readU32(P + 8), 9)
  t.is(arena.pendingOperations, 1)
  t.throws(() => arena.removeMapping(0, 2 * P), { code: 'ERR_MMAP_BUSY' })
  t.throws(() => arena.addAnonymous(P, P, RW), { code: 'ERR_MMAP_BUSY' })
  t.throws(() => arena.protect(P, P, Protection.READ), { code: 'ERR_MMAP_BUSY' })
  arena.addAnonymous(3 * P, P, RW) // elsewhere: free
  sab = undefined
  t.true(await collectUntil(() => arena.pendingOperations === 0), 'the pin is dropped once collected')
  arena.removeMapping(0, 2 * P)
  arena.close()
})

withShared(`only READ | WRITE memory that cannot vanish is shared${note}`, (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const path = join(tmp.dir, 'f')
  writeFileSync(path, Buffer.alloc(2 * P))
  const fd = openSync(path, 'r+')
  t.teardown(() => closeSync(fd))
  using file = MemoryMapping.fromFd(fd, 2 * P)
  t.throws(() => file.sharedView(0, P), { code: 'ERR_MMAP_ACCESS', message: /cannot vanish/ })
  using ro = MemoryMapping.anonymous(P, { protection: Protection.READ })
  t.throws(() => ro.sharedView(0, P), { code: 'ERR_MMAP_ACCESS' })
  using arena = MemoryMappingArena.reserve(4 * P)
  arena.addAnonymous(0, P, RW)
  t.throws(() => arena.sharedView(0, 2 * P), { code: 'ERR_MMAP_ACCESS' }, 'runs into a hole')
  t.throws(() => arena.sharedView(3 * P, 2 * P), { code: 'ERR_MMAP_OUT_OF_BOUNDS' })
  t.is(arena.pendingOperations, 0)
})

withShared(`Atomics across threads: N workers × M increments through shared views of one guest page = N·M${note}`, async (t) => {
  using ram = SharedMemory.create('shared-atomics', 4 * P)
  using guest = new GuestMemory([{ guestAddress: 0x1000_0000n, size: ram.size, backing: ram }])
  const sab = guest.sharedView(0x1000_0000n + BigInt(P), P)
  const N = 4
  const M = 20000
  const body = `
    const { parentPort, workerData } = require('node:worker_threads')
    const a = new Int32Array(workerData.sab)
    Atomics.wait(a, 1, 0) // the start signal
    for (let i = 0; i < workerData.m; i++) Atomics.add(a, 0, 1)
    parentPort.postMessage('done')
  `
  const workers = Array.from({ length: N }, () => new Worker(body, { eval: true, workerData: { sab, m: M } }))
  const done = workers.map(
    (w) =>
      new Promise((resolve, reject) => {
        w.once('message', resolve)
        w.once('error', reject)
      }),
  )
  await new Promise((r) => setTimeout(r, 100))
  const a = new Int32Array(sab)
  Atomics.store(a, 1, 1)
  Atomics.notify(a, 1)
  await Promise.all(done)
  await Promise.all(workers.map((w) => w.terminate()))
  t.is(Atomics.load(a, 0), N * M)
  t.is(guest.readU32Atomic(0x1000_0000 + P), N * M, 'the guest sees every increment')
})
