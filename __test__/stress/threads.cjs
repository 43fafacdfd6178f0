'use strict'
// Concurrency stress of the binding, run by scripts/tsan.sh under ThreadSanitizer (an addon
// built with -Zsanitizer=thread): three workers attach to one arena and one guest memory and
// overlay, remove, copy, CAS, view, attach/close and hot-plug at once with the main thread.
// Usage: node threads.cjs <package entry>. Prints `stress done <owned>` (mapCount().owned once
// everything is closed and collected: 0).
const { Worker, isMainThread, workerData, parentPort } = require('node:worker_threads')
const entry = isMainThread ? process.argv[2] : workerData.entry
const mr = require(entry)
const P = mr.PAGE_SIZE
const RW = mr.Protection.READ_WRITE
const ROUNDS = Number(process.env.ROUNDS ?? 200)
function work(a, g, k) {
  for (let i = 0; i < ROUNDS; i++) {
    const page = k * 8 + (i % 8)
    try {
      a.addAnonymous(page * P, P, RW)
    } catch (e) {
      if (e.code !== 'ERR_MMAP_BUSY') throw e
    }
    try {
      a.writeU32(page * P, i)
      a.compareExchangeU32(page * P, i, i + 1)
    } catch (e) {
      if (!['ERR_MMAP_ACCESS'].includes(e.code)) throw e
    }
    let v
    try {
      v = a.view(((k + 1) % 4) * 8 * P, P)
    } catch (e) {
      if (e.code !== 'ERR_MMAP_ACCESS') throw e
    }
    try {
      a.removeMapping(page * P, P)
    } catch (e) {
      if (e.code !== 'ERR_MMAP_BUSY') throw e
    }
    // Touched after the other threads' changes: a view is never left over replaced memory.
    if (v !== undefined && v.length > 0) v[0] ^= 1
    v = undefined
    try {
      g.addRegion({ guestAddress: (100 + k * 50 + (i % 50)) * P, size: P, backing: 'anonymous' })
    } catch (e) {
      if (e.code !== 'ERR_GUEST_OVERLAP') throw e
    }
    try {
      g.removeRegion((100 + k * 50 + ((i + 25) % 50)) * P)
    } catch (e) {
      if (e.code !== 'ERR_GUEST_ADDRESS') throw e
    }
    g.regions()
    if (i % 50 === 0) {
      const b = mr.MemoryMappingArena.attach(a.share())
      b.view(0, 0)
      b.close()
    }
  }
}
if (isMainThread) {
  const arena = mr.MemoryMappingArena.reserve(64 * P)
  const guest = new mr.GuestMemory([{ guestAddress: 0, size: P, backing: 'anonymous' }], { addressSpace: 512 * P })
  const ah = arena.share(),
    gh = guest.share()
  const ws = [1, 2, 3].map((k) => new Worker(__filename, { workerData: { ah, gh, k, entry } }))
  work(arena, guest, 0)
  Promise.all(
    ws.map(
      (w) =>
        new Promise((res, rej) => {
          w.on('message', res)
          w.on('error', rej)
        }),
    ),
  ).then(async () => {
    await Promise.all(ws.map((w) => w.terminate()))
    arena.close()
    guest.close()
    for (let i = 0; i < 20; i++) {
      globalThis.gc?.()
      await new Promise((r) => setTimeout(r, 20))
    }
    console.log('stress done', mr.mapCount().owned)
  })
} else {
  const a = mr.MemoryMappingArena.attach(workerData.ah)
  const g = mr.GuestMemory.attach(workerData.gh)
  work(a, g, workerData.k)
  parentPort.postMessage('ok')
}
