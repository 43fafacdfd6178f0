// The package on any runtime: overlays, views and detach, typed access, atomics, GuestMemory,
// async tasks, snapshots, a worker attaching an arena, finalizers and GC-driven release, errors
// with codes, shared views where the runtime has them. Run by scripts/runtimes.sh on Bun and
// Deno (`deno run -A --v8-flags=--expose-gc`), and by hand on Node (`node --expose-gc`).
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Worker } = require('node:worker_threads')
const h = require('./harness.cjs')
const { assert, mr, test, throwsCode, rejectsCode } = h
const { GuestMemory, MemoryMapping, MemoryMappingArena, PAGE_SIZE: P, Protection, SharedMemory } = mr
const RW = Protection.READ_WRITE

function tempDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'mr-rt-'))
}

test('overlays: fd and anonymous pieces, holes, mappings()', () => {
  const arena = MemoryMappingArena.reserve(16 * P)
  const ram = SharedMemory.create('rt-overlay', 4 * P)
  arena.addFdMapping(0, ram.size, ram.fd, 0, RW)
  arena.addAnonymous(8 * P, 2 * P, RW)
  arena.removeMapping(P, P)
  assert.deepEqual(
    arena.mappings().map((m) => [m.offset / P, m.size / P, m.kind]),
    [
      [0, 1, 'fd'],
      [2, 2, 'fd'],
      [8, 2, 'anonymous'],
    ],
  )
  arena.write(2 * P + 5, Buffer.from('overlay'))
  assert.equal(arena.read(2 * P + 5, 7).toString(), 'overlay')
  throwsCode(() => arena.read(P, 1), 'ERR_MMAP_ACCESS')
  assert.equal(typeof arena.address, 'bigint')
  arena.msync(0, P)
  arena.madvise(0, P, 'willneed')
  arena.close()
  ram.close()
  assert.equal(arena.closed, true)
})

test('views: zero-copy, detached by a change under them and by close()', () => {
  const arena = MemoryMappingArena.reserve(8 * P)
  const ram = SharedMemory.create('rt-views', 4 * P)
  arena.addFdMapping(0, ram.size, ram.fd, 0, RW)
  const a = arena.view(0, P)
  const b = arena.view(2 * P, 16)
  a.write('zero-copy')
  assert.equal(arena.read(0, 9).toString(), 'zero-copy')
  const u32 = new Uint32Array(a.buffer, a.byteOffset, 4)
  arena.removeMapping(0, P)
  assert.equal(a.length, 0, 'detached')
  assert.equal(u32.length, 0, 'every typed array over it too')
  assert.equal(b.length, 16, 'a view elsewhere stays')
  b[0] = 7
  assert.equal(arena.readU8(2 * P), 7)
  arena.close()
  assert.equal(b.length, 0, 'close() detaches the rest')
  ram.close()
})

test('views of a shared region: a change over them works (no self-deadlock in detach)', () => {
  const arena = MemoryMappingArena.reserve(8 * P)
  const ram = SharedMemory.create('rt-views-shared', 4 * P)
  arena.addFdMapping(0, ram.size, ram.fd, 0, RW)
  arena.share()
  const views = [arena.view(0, 64), arena.view(P, 64), arena.view(3 * P, 8)]
  arena.removeMapping(0, 2 * P)
  assert.deepEqual(
    views.map((v) => v.length),
    [0, 0, 8],
  )
  arena.close()
  ram.close()
})

test('typed access and atomics', () => {
  const m = MemoryMapping.anonymous(2 * P)
  m.writeU8(1, 0xab)
  m.writeU16(2, 0xbeef)
  m.writeU32(4, 0xdeadbeef)
  m.writeU64(8, 0x0123456789abcdefn)
  assert.equal(m.readU8(1), 0xab)
  assert.equal(m.readU16(2), 0xbeef)
  assert.equal(m.readU32(4), 0xdeadbeef)
  assert.equal(m.readU64(8), 0x0123456789abcdefn)
  assert.equal(m.read(4, 4).readUInt32LE(0), 0xdeadbeef, 'little-endian')
  m.writeU32Atomic(16, 5)
  assert.equal(m.compareExchangeU32(16, 5, 6), 5)
  assert.equal(m.compareExchangeU32(16, 5, 7), 6, 'no exchange: the current value')
  assert.equal(m.readU32Atomic(16), 6)
  m.writeU64Atomic(24, 1n << 60n)
  assert.equal(m.compareExchangeU64(24, 1n << 60n, 3n), 1n << 60n)
  assert.equal(m.readU64Atomic(24), 3n)
  throwsCode(() => m.readU32(2 * P - 2), 'ERR_MMAP_OUT_OF_BOUNDS')
  throwsCode(() => m.readU32Atomic(2), 'ERR_MMAP_UNALIGNED')
  m.close()
})

test('GuestMemory: regions, guest addresses, translate, dirty pages', () => {
  const ram = SharedMemory.create('rt-guest', 4 * P)
  const guest = new GuestMemory(
    [
      { guestAddress: 0, size: 4 * P, backing: ram },
      { guestAddress: 16 * P, size: 2 * P, backing: 'anonymous' },
    ],
    { trackDirty: true },
  )
  assert.deepEqual(
    guest.regions().map((r) => [r.guestAddress, r.size]),
    [
      [0n, 4 * P],
      [BigInt(16 * P), 2 * P],
    ],
  )
  guest.write(16 * P + 3, Buffer.from('guest'))
  assert.equal(guest.read(16 * P + 3, 5).toString(), 'guest')
  guest.writeU32(2 * P, 42)
  assert.equal(guest.readU32(BigInt(2 * P)), 42)
  assert.equal(typeof guest.translate(P), 'bigint')
  throwsCode(() => guest.read(8 * P, 1), 'ERR_GUEST_ADDRESS')
  const dirty = guest.takeDirty().map((d) => [d.guestAddress, [...d.bitmap].some((w) => w !== 0)])
  assert.deepEqual(dirty, [
    [0n, true],
    [BigInt(16 * P), true],
  ])
  guest.close()
  ram.close()
})

test('async tasks: msyncAsync, populateAsync, loadFileAsync; a close waits for them', async () => {
  const dir = tempDir()
  const file = path.join(dir, 'f')
  fs.writeFileSync(file, Buffer.alloc(2 * P, 9))
  const fd = fs.openSync(file, 'r+')
  const m = MemoryMapping.fromFd(fd, 2 * P)
  m.writeU8(0, 1)
  const sync = m.msyncAsync(0, 2 * P)
  assert.equal(m.pendingOperations, 1)
  await sync
  assert.equal(fs.readFileSync(file)[0], 1, 'written back')
  await m.populateAsync(0, 2 * P, { write: true })
  const anon = MemoryMapping.anonymous(4 * P)
  assert.equal(await anon.loadFileAsync(P, file, { length: 2 * P }), 2 * P)
  assert.equal(anon.readU8(P + 1), 9)
  assert.equal(anon.loadFile(0, fd, { length: 8 }), 8)
  const pending = m.msyncAsync(0, P)
  m.close()
  await pending
  await rejectsCode(m.msyncAsync(0, P), 'ERR_MMAP_CLOSED')
  anon.close()
  fs.closeSync(fd)
  fs.rmSync(dir, { recursive: true })
})

test('snapshots: full and dirty-only dumps, lazy restore, applyDiff', async () => {
  const dir = tempDir()
  const ram = SharedMemory.create('rt-snap', 4 * P)
  const guest = new GuestMemory(
    [
      { guestAddress: 0, size: 4 * P, backing: ram },
      { guestAddress: 8 * P, size: P, backing: 'anonymous' },
    ],
    { trackDirty: true },
  )
  guest.write(0, Buffer.alloc(4 * P, 1))
  guest.write(8 * P, Buffer.alloc(P, 2))
  const full = await guest.snapshot(path.join(dir, 'base'))
  assert.equal(fs.statSync(path.join(dir, 'base')).size, 5 * P)
  guest.write(2 * P, Buffer.from('after'))
  const diff = await guest.snapshot(path.join(dir, 'diff'), { dirtyOnly: true })
  assert.deepEqual(
    diff.regions.map((r) => r.dirtyPages),
    [[[2, 1]], []],
  )
  const restored = GuestMemory.restore(full, path.join(dir, 'base'))
  assert.equal(restored.read(2 * P, 5).toString('hex'), '0101010101')
  assert.equal(restored.readU8(8 * P), 2)
  assert.equal(await restored.applyDiff(diff, path.join(dir, 'diff')), P)
  assert.equal(restored.read(2 * P, 5).toString(), 'after')
  restored.close()
  guest.close()
  ram.close()
  fs.rmSync(dir, { recursive: true })
})

test('a worker attaches an arena: one reservation, changes seen by both threads', async () => {
  const ram = SharedMemory.create('rt-worker', 4 * P)
  const arena = MemoryMappingArena.reserve(16 * P)
  arena.addFdMapping(0, ram.size, ram.fd, 0, RW)
  arena.writeU32(P + 8, 0xabcd)
  const w = new Worker(path.join(__dirname, 'worker.cjs'), {
    workerData: { handle: arena.share(), entry: require.resolve(path.join(__dirname, '..', '..')) },
  })
  const messages = []
  const next = () =>
    new Promise((resolve, reject) => {
      if (messages.length > 0) return resolve(messages.shift())
      w.once('message', resolve)
      w.once('error', reject)
    })
  const first = await next()
  assert.equal(first.address, arena.address)
  assert.equal(first.value, 0xabcd)
  arena.removeMapping(0, P)
  w.postMessage('go')
  const second = await next()
  assert.equal(second.hole, 'ERR_MMAP_ACCESS')
  assert.equal(arena.readU32(12 * P), 77, 'the worker added a page')
  await w.terminate()
  arena.close()
  ram.close()
})

test('finalizers: a region only collected is unmapped, after its last view is gone', async () => {
  let address
  let view
  ;(() => {
    const m = MemoryMapping.anonymous(8 * P)
    address = m.address
    view = m.view(P, 16)
    view[0] = 1
  })()
  assert.ok(h.mappedAt(address))
  // The object goes; its view keeps the memory.
  for (let i = 0; i < 5; i++) {
    h.gc()
    await h.tick()
  }
  assert.ok(h.mappedAt(address), 'a live view keeps the memory mapped')
  assert.equal(view[0], 1)
  view = undefined
  assert.ok(await h.collectUntil(() => !h.mappedAt(address)), 'unmapped once the view was collected')
})

test('finalizers: 200 mappings each with a view, dropped together and collected (the Deno crash)', async () => {
  for (let round = 0; round < 3; round++) {
    ;(() => {
      for (let i = 0; i < 200; i++) MemoryMapping.anonymous(P).view(0, 64)[0] = i
    })()
    for (let i = 0; i < 4; i++) {
      h.gc()
      await h.tick()
    }
  }
  // Views collected while their object lives: its list is pruned, views still work.
  const m = MemoryMapping.anonymous(P)
  for (let i = 0; i < 500; i++) m.view(0, 8)
  h.gc()
  await h.tick()
  const v = m.view(0, 8)
  v[0] = 3
  assert.equal(m.readU8(0), 3)
  m.close()
  assert.equal(v.length, 0)
})

test('errors carry codes (and errno/syscall for kernel failures)', () => {
  const m = MemoryMapping.anonymous(P)
  throwsCode(() => m.read(P, 1), 'ERR_MMAP_OUT_OF_BOUNDS')
  throwsCode(() => m.read('0', 1), 'ERR_INVALID_ARG_TYPE')
  throwsCode(() => m.madvise(1, P, 'willneed'), 'ERR_MMAP_UNALIGNED')
  throwsCode(() => m.addFdMapping(0, P, 0, 0, Protection.READ), 'ERR_MMAP_UNSUPPORTED')
  m.close()
  throwsCode(() => m.read(0, 1), 'ERR_MMAP_CLOSED')
  throwsCode(() => MemoryMapping.fromFd(-1, P), 'ERR_OUT_OF_RANGE')
  const dir = tempDir()
  fs.writeFileSync(path.join(dir, 'short'), Buffer.alloc(P))
  const fd = fs.openSync(path.join(dir, 'short'), 'r')
  assert.throws(
    () => MemoryMappingArena.reserve(4 * P).addFdMapping(0, P, fd, 0, RW),
    (e) => e.code === 'EACCES' && e.syscall === 'mmap' && e.errno === -13,
  )
  throwsCode(() => MemoryMapping.fromFd(fd, 2 * P, { protection: Protection.READ }), 'ERR_MMAP_BEYOND_EOF')
  fs.closeSync(fd)
  fs.rmSync(dir, { recursive: true })
})

let sharedViews = true
try {
  MemoryMapping.anonymous(P).sharedView(0, 8)
} catch (e) {
  if (e.code !== 'ERR_MMAP_UNSUPPORTED') throw e
  sharedViews = false
}
test(
  'sharedView: a SharedArrayBuffer over region memory, pinning its range',
  async () => {
    const m = MemoryMapping.anonymous(P)
    const sab = m.sharedView(0, 16)
    assert.ok(sab instanceof SharedArrayBuffer)
    new Uint32Array(sab)[1] = 99
    assert.equal(m.readU32(4), 99)
    assert.equal(m.pendingOperations, 1, 'pinned')
    m.close()
    assert.equal(new Uint32Array(sab)[1], 99, 'still mapped while pinned')
  },
  sharedViews ? undefined : 'no node_api_create_external_sharedarraybuffer on this runtime',
)
test(
  'sharedView without external SharedArrayBuffers is a clear error',
  () => {
    const m = MemoryMapping.anonymous(P)
    throwsCode(() => m.sharedView(0, 8), 'ERR_MMAP_UNSUPPORTED', /node_api_create_external_sharedarraybuffer/)
    assert.equal(m.pendingOperations, 0)
    m.close()
  },
  sharedViews ? 'this runtime has external SharedArrayBuffers' : undefined,
)

h.run(__filename)
