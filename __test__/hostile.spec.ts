/**
 * The safety promise under attack: one test (or more) per class of the adversarial
 * review. Whatever could crash runs in a child process, so that a crash is a failed
 * assertion with the child's output, not a dead test runner.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import vm from 'node:vm'
import { GuestMemory, MemoryMapping, MemoryMappingArena, PAGE_SIZE, Protection, Seal, SharedMemory } from 'mapped-region'
import { type ChildResult, mapsOverlapping, NO_EXTERNAL, runChild, tempDir, tempFile } from './helpers.js'
import { viewTest } from './view-test.js'

const P = PAGE_SIZE

function survived(t: import('ava').ExecutionContext, r: ChildResult, marker: string): void {
  t.is(r.signal, null, `child killed by ${r.signal}\n${r.stdout}${r.stderr}`)
  t.is(r.status, 0, r.stdout + r.stderr)
  t.true(r.stdout.includes(marker), r.stdout + r.stderr)
}

// 1. The map-count budget holds against the kernel's real count.

test('1. advices that split mappings are refused within the headroom; Node keeps running and mapCount() works (in a child)', (t) => {
  const r = runChild(
    `
    const P = mr.PAGE_SIZE
    const before = mr.mapCount()
    const pages = 2 * before.limit
    const m = mr.MemoryMapping.anonymous(pages * P)
    let i = 0, refused
    // 'dontfork' on every other page splits the mapping; nothing in any layout changes.
    for (;; i++) {
      try { m.madvise(2 * i * P, P, 'dontfork') } catch (e) { refused = e; break }
    }
    const c = mr.mapCount()
    if (refused.code !== 'ENOMEM') throw new Error('refused with ' + refused.code)
    if (c.limit - c.process < c.headroom - 16) throw new Error('only ' + (c.limit - c.process) + ' mappings left')
    // The runtime still has room: grow the JS heap and make new arrays.
    const junk = []
    for (let k = 0; k < 2000; k++) junk.push(new Float64Array(8192))
    m.close()
    console.log('refused within the headroom after ' + i + ' advices; ' + (c.limit - c.process) + ' left')
  `,
    120_000,
  )
  survived(t, r, 'refused within the headroom')
})

test('1. populating more memory than the machine has is ENOMEM at once, not the OOM killer (in a child)', (t) => {
  // With vm.overcommit_memory = 1 the kernel refuses nothing: there the OOM killer is the
  // documented outcome, and the child would only be killed.
  if (readFileSync('/proc/sys/vm/overcommit_memory', 'utf8').trim() === '1') {
    t.pass('vm.overcommit_memory is 1: the kernel does not refuse oversized commitments here')
    return
  }
  const r = runChild(`
    for (const shared of [false, true]) {
      let code
      try { mr.MemoryMapping.anonymous(2 ** 40, { populate: true, shared }) } catch (e) { code = e.code }
      if (code !== 'ENOMEM') throw new Error('populate 1 TiB: ' + code)
    }
    const m = mr.MemoryMapping.anonymous(2 ** 40) // not populated: address space only
    if (m.size !== 2 ** 40) throw new Error('size')
    console.log('ENOMEM at once')
  `)
  survived(t, r, 'ENOMEM at once')
})

test('1. an fd number closed and reused for the same file: kernelMappingCount stays the kernel count', (t) => {
  const { path } = tempFile(t, Buffer.alloc(64 * P, 1))
  using arena = MemoryMappingArena.reserve(80 * P)
  for (let i = 0; i < 64; i++) {
    const fd = openSync(path, 'r')
    arena.addFdMapping(i * P, P, fd, i * P, Protection.READ)
    closeSync(fd)
  }
  t.is(arena.kernelMappingCount, mapsOverlapping(arena.address, arena.size).length)
  t.true(arena.mappings().length > 1, 'pieces of separate opens are not one entry')
})

// 2. Repair needs no fd: a failed overlay under EMFILE leaves no hole and a true layout.

test('2. a failed MAP_FIXED under EMFILE: no hole inside the arena, the layout matches the kernel (in a child)', (t) => {
  const r = runChild(
    `
    const fs = require('node:fs'), net = require('node:net'), os = require('node:os'), path = require('node:path')
    const P = mr.PAGE_SIZE
    // A Unix-domain socket cannot be mapped (a TCP socket can: zero-copy receive).
    const where = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mr-sock-')), 's')
    const server = net.createServer().listen(where, () => {
      const sock = server._handle.fd
      const arena = mr.MemoryMappingArena.reserve(16 * P)
      arena.addAnonymous(0, 8 * P, mr.Protection.READ_WRITE)
      arena.write(0, Buffer.alloc(8 * P, 7))
      // Take every free fd.
      const held = []
      for (;;) { try { held.push(fs.openSync('/dev/null', 'r')) } catch { break } }
      let err
      try { arena.addFdMapping(2 * P, 4 * P, sock, 0, mr.Protection.READ) } catch (e) { err = e }
      for (const fd of held) fs.closeSync(fd)
      if (err === undefined) throw new Error('mapping a socket succeeded')
      // Every byte the layout says is mapped can be read; the rest is refused.
      for (const m of arena.mappings()) arena.read(m.offset, m.size)
      const base = arena.address, end = base + BigInt(arena.size)
      const lines = fs.readFileSync('/proc/self/maps', 'utf8').trim().split('\\n').map((l) => l.split(' ')[0].split('-').map((h) => BigInt('0x' + h)))
      let cursor = base
      for (const [a, b] of lines) { if (b <= cursor || a >= end) continue; if (a > cursor) throw new Error('hole inside the arena'); cursor = b }
      if (cursor < end) throw new Error('hole at the end of the arena')
      console.log('repaired: ' + err.code + ', ' + arena.mappings().length + ' entries')
      server.close()
    })
  `,
    60_000,
    { maxFds: 64 },
  )
  survived(t, r, 'repaired:')
})

// 3. JavaScript that runs while a Node built-in holds a view's pointer.

for (const change of [
  'close',
  'remove',
  'anonymous NONE',
  'anonymous READ',
  'fd READ',
  'protect READ',
  'mapping close',
  'overlay RW, then remove',
  'overlay RW, then close',
  'overlay one page READ, then remove the next',
]) {
  viewTest(
    `3. Buffer#fill whose valueOf does "${change}" under the view: no crash, memory changes as asked on the next turn (in a child)`,
    (t) => {
      const r = runChild(`
      const fs = require('node:fs')
      const P = mr.PAGE_SIZE, R = mr.Protection
      const change = ${JSON.stringify(change)}
      const shm = mr.SharedMemory.create('fill', 4 * P)
      const region = change === 'mapping close' ? mr.MemoryMapping.fromFd(shm.fd, 4 * P) : mr.MemoryMappingArena.reserve(16 * P)
      if (change !== 'mapping close') region.addFdMapping(0, 4 * P, shm.fd, 0, R.READ_WRITE)
      const view = region.view(0, 4 * P)
      view.fill({ valueOf() {
        if (change === 'close' || change === 'mapping close') region.close()
        else if (change === 'remove') region.removeMapping(0, 4 * P)
        else if (change === 'anonymous NONE') region.addAnonymous(0, 4 * P, R.NONE)
        else if (change === 'anonymous READ') region.addAnonymous(0, 4 * P, R.READ)
        else if (change === 'fd READ') region.addFdMapping(0, 4 * P, shm.fd, 0, R.READ)
        else if (change === 'protect READ') region.protect(0, 4 * P, R.READ)
        else if (change.startsWith('overlay one page')) {
          // The first change detaches the view but covers only its first page; the
          // second, with no view left, removes a page the built-in still writes.
          region.addFdMapping(0, P, shm.fd, 0, R.READ)
          region.removeMapping(P, 3 * P)
        } else if (change.startsWith('overlay RW')) {
          // The first change leaves the memory writable; the second must still
          // know that the built-in's pointer may be in use there.
          region.addAnonymous(0, 4 * P, R.READ_WRITE)
          if (change.endsWith('remove')) region.removeMapping(0, 4 * P)
          else region.close()
        }
        return 0xab
      } })
      if (view.length !== 0) throw new Error('view not detached')
      setImmediate(() => {
        if (!region.closed) {
          // Reclaimed: the protection asked for, as the kernel sees it.
          const addr = region.address
          // The mapping that holds the region's first page (a PROT_NONE one may have merged with
          // a neighbour of the same kind below it, so it need not start there).
          const line = fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter(Boolean).find((l) => {
            const [lo, hi] = l.split(' ')[0].split('-').map((x) => BigInt('0x' + x))
            return lo <= addr && addr < hi
          }) ?? ''
          const perms = line.split(' ')[1]
          const want = { remove: '---p', 'anonymous NONE': '---p', 'anonymous READ': 'r--p', 'fd READ': 'r--s', 'protect READ': 'r--s', 'overlay RW, then remove': '---p', 'overlay one page READ, then remove the next': 'r--s' }[change]
          if (perms !== want) throw new Error('after reclaim: ' + line + ', want ' + want)
          if (change === 'fd READ') {
            // The bytes the built-in wrote after the change went to a private copy, not the file.
            const b = region.read(0, 8)
            if (b.some((x) => x === 0xab)) throw new Error('the old pointer wrote into the file')
          }
        }
        console.log('survived ' + change)
      })
    `)
      survived(t, r, `survived ${change}`)
    },
  )
}

test('3. a device mapping that faults on every page (shared /dev/zero at an offset): copies are EFAULT, views refused (in a child)', (t) => {
  const r = runChild(`
    const fs = require('node:fs')
    const P = mr.PAGE_SIZE
    const zero = fs.openSync('/dev/zero', 'r+')
    const m = mr.MemoryMapping.fromFd(zero, P, { offset: 2 ** 32 })
    const arena = mr.MemoryMappingArena.reserve(4 * P)
    arena.addFdMapping(0, P, zero, 2 ** 32, mr.Protection.READ_WRITE)
    for (const region of [m, arena]) {
      let code
      try { region.read(0, 4) } catch (e) { code = e.code }
      if (code !== 'EFAULT') throw new Error('read: ' + code)
      code = undefined
      try { region.view(0, 16).fill(1) } catch (e) { code = e.code }
      if (code !== 'ERR_MMAP_ACCESS') throw new Error('view: ' + code)
    }
    console.log('no view over a device')
  `)
  survived(t, r, 'no view over a device')
})

// 4. Opening never blocks.

test('4. fromFile on a FIFO without a writer, a directory: a clear error at once (in a child)', (t) => {
  const { dir, done } = tempDir()
  t.teardown(done)
  const fifo = join(dir, 'fifo')
  execFileSync('mkfifo', [fifo])
  mkdirSync(join(dir, 'd'))
  const r = runChild(
    `
    for (const p of [${JSON.stringify(fifo)}, ${JSON.stringify(join(dir, 'd'))}]) {
      try { mr.MemoryMapping.fromFile(p); throw new Error('mapped ' + p) } catch (e) {
        if (e.code !== 'ERR_INVALID_ARG_VALUE') throw e
        console.log(e.message)
      }
    }
    console.log('no block')
  `,
    20_000,
  )
  survived(t, r, 'no block')
  t.regex(r.stdout, /it is a FIFO/)
  t.regex(r.stdout, /it is a directory/)
})

// 5. The fallback copy path copies like memmove.

viewTest('5. with the SIGBUS guard unavailable, overlapping readInto/write through a view behave like memmove (in a child)', (t) => {
  const { path } = tempFile(t, Buffer.from(Array.from({ length: 4 * P }, (_, i) => i % 251)))
  const r = runChild(`
    const fs = require('node:fs')
    const P = mr.PAGE_SIZE
    const fd = fs.openSync(${JSON.stringify(path)}, 'r+')
    const arena = mr.MemoryMappingArena.reserve(8 * P)
    arena.addFdMapping(0, 4 * P, fd, 0, mr.Protection.READ_WRITE) // a plain file: fault-safe copies
    const want = Buffer.from(arena.read(0, 4 * P)) // the first guarded copy installs the guard
    process.on('SIGBUS', () => {}) // libuv's handler replaces it: every copy takes the syscall path
    arena.readInto(0, arena.view(100, 2 * P)) // target overlaps source, after it
    want.copy(want, 100, 0, 2 * P)
    arena.write(50, arena.view(300, 2 * P)) // source overlaps target, after it
    want.copy(want, 50, 300, 300 + 2 * P)
    if (!arena.read(0, 4 * P).equals(want)) throw new Error('bytes differ from memmove')
    console.log('memmove on the syscall path')
  `)
  survived(t, r, 'memmove on the syscall path')
})

// 6. A failed write changes nothing when the failure can be known before copying.

test('6. a write over a page truncated away before the call changes nothing; EFAULT says bytesCopied (in a child)', (t) => {
  const { path } = tempFile(t, Buffer.alloc(2 * P, 1))
  for (const guard of [true, false]) {
    const r = runChild(`
      const fs = require('node:fs')
      const P = mr.PAGE_SIZE
      const fd = fs.openSync(${JSON.stringify(path)}, 'r+')
      fs.ftruncateSync(fd, 2 * P); fs.writeSync(fd, Buffer.alloc(2 * P, 1), 0, 2 * P, 0)
      const arena = mr.MemoryMappingArena.reserve(4 * P)
      arena.addFdMapping(0, 2 * P, fd, 0, mr.Protection.READ_WRITE)
      arena.read(0, 1) // installs the guard; a SIGBUS listener then replaces it
      if (${!guard}) process.on('SIGBUS', () => {})
      fs.ftruncateSync(fd, P)
      let err
      try { arena.write(P - 8, Buffer.alloc(16, 9)) } catch (e) { err = e }
      if (err?.code !== 'EFAULT' || err.bytesCopied !== 0 || err.errno !== -14) throw new Error('got ' + err?.code + ' ' + err?.bytesCopied)
      if (!arena.read(P - 8, 8).equals(Buffer.alloc(8, 1))) throw new Error('the page before the missing one changed')
      console.log('unchanged: ' + err.message)
    `)
    survived(t, r, 'unchanged:')
  }
})

// 7. A sealed memfd mapped past its end never takes a plain copy.

test('7. a sealed memfd mapped past its end (checkEof: false): read, readInto and write past the end are EFAULT (in a child)', (t) => {
  const r = runChild(`
    const P = mr.PAGE_SIZE
    const shm = mr.SharedMemory.create('past-end', P)
    const m = mr.MemoryMapping.fromFd(shm.fd, 3 * P, { checkEof: false })
    const codes = []
    for (const f of [() => m.read(P, 8), () => m.readInto(2 * P, Buffer.alloc(8)), () => m.write(P + 1, Buffer.alloc(8))]) {
      try { f(); codes.push('ok') } catch (e) { codes.push(e.code) }
    }
    if (codes.join() !== 'EFAULT,EFAULT,EFAULT') throw new Error(codes.join())
    console.log('EFAULT past the end')
  `)
  survived(t, r, 'EFAULT past the end')
})

// 8. Each argument is read once.

/** A value whose `key` answers `first` on the first read and `then` on every later one. */
function twoFaced<T extends object>(base: T, key: string, first: unknown, then: unknown): T {
  let reads = 0
  return Object.defineProperty({ ...base }, key, { get: () => (reads++ === 0 ? first : then), enumerable: true })
}

test('8. region specs with getters that change their answer: no overlap, no copy into a hole', (t) => {
  using ram = SharedMemory.create('twofaced', 8 * P)
  using guest = new GuestMemory([{ guestAddress: 0, size: 2 * P, backing: 'anonymous' }], { addressSpace: 16 * P })
  guest.write(0, Buffer.from('keep'))
  // size says 1 page when checked, 8 pages (over the existing region) if read again.
  const spec = twoFaced({ guestAddress: 2 * P, backing: ram } as Record<string, unknown>, 'size', P, 8 * P)
  guest.addRegion(spec as never)
  t.deepEqual(
    guest.regions().map((r) => [r.guestAddress, r.size]),
    [
      [0n, 2 * P],
      [BigInt(2 * P), P],
    ],
  )
  t.is(guest.read(0, 4).toString(), 'keep')
  const moved = twoFaced({ size: P, backing: 'anonymous' } as Record<string, unknown>, 'guestAddress', 8 * P, 0)
  guest.addRegion(moved as never)
  t.is(guest.read(0, 4).toString(), 'keep')
  // A Uint8Array with an own byteLength getter: the copy is checked with the real length
  // (3 pages from page 1 run past the regions at [0, 3P) into the hole).
  const data = new Uint8Array(3 * P)
  Object.defineProperty(data, 'byteLength', { get: () => 1 })
  t.throws(() => guest.write(P, data), { code: 'ERR_GUEST_ADDRESS' })
  t.throws(() => guest.readInto(P, data), { code: 'ERR_GUEST_ADDRESS' })
  t.is(guest.read(0, 4).toString(), 'keep')
})

test('8. option bags are read once', (t) => {
  const opts = twoFaced({} as Record<string, unknown>, 'protection', Protection.READ, 99)
  using m = MemoryMapping.anonymous(P, opts as never)
  t.is(m.protection, Protection.READ)
})

// 9. Argument shapes: each gets the documented behaviour.

test('9. buffers of another realm are accepted; detached, proxied and fake ones are refused with a code', (t) => {
  using m = MemoryMapping.anonymous(P)
  const foreign = vm.runInNewContext(
    '({ ab: new ArrayBuffer(8), sab: new SharedArrayBuffer(8), u8: new Uint8Array([1, 2, 3]), dv: new DataView(new ArrayBuffer(4)) })',
  )
  new Uint8Array(foreign.ab).set([5, 6])
  m.write(0, foreign.ab)
  t.deepEqual([...m.read(0, 2)], [5, 6])
  m.write(0, foreign.u8)
  t.deepEqual([...m.read(0, 3)], [1, 2, 3])
  t.is(m.readInto(0, foreign.sab), 8)
  t.is(m.readInto(0, foreign.dv), 4)

  const detachedAb = new ArrayBuffer(8)
  const overDetached = [new Uint8Array(detachedAb), new DataView(detachedAb), new Uint16Array(detachedAb)]
  structuredClone(detachedAb, { transfer: [detachedAb] })
  for (const bad of [detachedAb, ...overDetached]) {
    t.throws(() => m.write(0, bad as never), { code: 'ERR_INVALID_ARG_VALUE', instanceOf: TypeError })
    t.throws(() => m.readInto(0, bad as never), { code: 'ERR_INVALID_ARG_VALUE', instanceOf: TypeError })
  }
  // A detached view of a region is refused too, not copied as 0 bytes (where views exist).
  if (!NO_EXTERNAL) {
    const a = MemoryMappingArena.reserve(2 * P)
    a.addAnonymous(0, P, Protection.READ_WRITE)
    const view = a.view(0, 16)
    a.close()
    t.throws(() => m.write(0, view), { code: 'ERR_INVALID_ARG_VALUE' })
  }

  const fake = Object.create(Uint8Array.prototype)
  for (const bad of [
    new Proxy(new Uint8Array(4), {}),
    fake,
    { byteLength: 4, buffer: new ArrayBuffer(4) },
    new Proxy(new ArrayBuffer(4), {}),
  ]) {
    t.throws(() => m.write(0, bad as never), { code: 'ERR_INVALID_ARG_TYPE', instanceOf: TypeError })
  }
  // An empty buffer is fine and copies nothing.
  t.is(m.readInto(0, new Uint8Array(0)), 0)
})

test('9. region arrays: holes, proxies that lie about their length, and non-objects get codes', (t) => {
  // biome-ignore lint/suspicious/noSparseArray: the hole is the point
  const sparse = [, { guestAddress: 0, size: P, backing: 'anonymous' }]
  t.throws(() => new GuestMemory(sparse as never), { code: 'ERR_INVALID_ARG_TYPE' })
  const huge = new Proxy([], { get: (target, key) => (key === 'length' ? 2 ** 32 - 1 : Reflect.get(target, key)) })
  t.throws(() => new GuestMemory(huge as never), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => new GuestMemory([{ guestAddress: 0, size: P, backing: new Proxy({}, {}) }] as never), { code: 'ERR_INVALID_ARG_TYPE' })
  using shm = SharedMemory.create('proxied', P)
  t.throws(() => new GuestMemory([{ guestAddress: 0, size: P, backing: new Proxy(shm, {}) }] as never), { code: 'ERR_INVALID_ARG_TYPE' })
})

// 10. Closing closes only what is ours.

test('10. shm.close() after user code closed shm.fd and the number was reused: the other file stays open (in a child)', (t) => {
  const r = runChild(`
    const fs = require('node:fs')
    const shm = mr.SharedMemory.create('reuse', 4096)
    const fd = shm.fd
    fs.closeSync(fd)
    const other = fs.openSync('/dev/null', 'r')
    if (other !== fd) throw new Error('the number was not reused: ' + other + ' vs ' + fd)
    shm.close()
    fs.fstatSync(other) // EBADF if shm.close() closed it
    try { fs.closeSync(other) } catch (e) { throw new Error('the reused fd was closed: ' + e.code) }
    console.log('the reused fd survived')
  `)
  survived(t, r, 'the reused fd survived')
})

test("10. seals of a SharedMemory whose fd was closed by someone else are EBADF, not another file's", (t) => {
  const shm = SharedMemory.create('seals', P)
  closeSync(shm.fd)
  const { dir, done } = tempDir()
  t.teardown(done)
  const other = openSync(join(dir, 'x'), 'w')
  t.teardown(() => closeSync(other))
  ftruncateSync(other, 0)
  t.throws(() => shm.seals, { code: 'EBADF' })
  t.throws(() => shm.addSeals(Seal.SEAL), { code: 'EBADF' })
  shm.close()
})

// 11. The newest capabilities (issue 28): refused loads, views over pages already gone, flag
// builders, look-alike backings, and what the README says of edge cases. (The last holder being
// a worker is in threads.spec.ts.)

test('11. a loadFile refused before reading changes no dirty bit; one that faults part-way keeps what it wrote marked', (t) => {
  const { path } = tempFile(t, Buffer.alloc(4 * P, 7))
  using guest = new GuestMemory(
    [
      { guestAddress: 0, size: 4 * P, backing: 'anonymous', protection: Protection.READ },
      { guestAddress: 4 * P, size: 4 * P, backing: 'anonymous' },
    ],
    { trackDirty: true },
  )
  guest.takeDirty()
  const dirty = () => guest.takeDirty().map((r) => r.bitmap[0])
  t.throws(() => guest.loadFile(0, path), { code: 'ERR_MMAP_ACCESS' })
  t.deepEqual(dirty(), [0n, 0n], 'a refused load marks nothing')
  t.throws(() => guest.loadFile(4 * P, 999_999, { length: P }), { code: 'EBADF' })
  t.deepEqual(dirty(), [0n, 0n], 'a load the descriptor refused marks nothing')
  t.is(guest.loadFile(4 * P, path, { length: 2 * P }), 2 * P)
  t.deepEqual(dirty(), [0n, 0b11n], 'a load marks what it loaded')
})

test('11. a loadFile that meets a truncated page keeps the pages it wrote marked (in a child)', (t) => {
  const r = runChild(`
    const fs = require('node:fs'), os = require('node:os'), path = require('node:path')
    const P = mr.PAGE_SIZE
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mr-')), file = path.join(dir, 'backing')
    const src = path.join(dir, 'src')
    fs.writeFileSync(file, Buffer.alloc(4 * P)); fs.writeFileSync(src, Buffer.alloc(4 * P, 9))
    const fd = fs.openSync(file, 'r+')
    const guest = new mr.GuestMemory([{ guestAddress: 0, size: 4 * P, backing: { fd, fdOffset: 0 } }], { trackDirty: true })
    guest.takeDirty()
    fs.ftruncateSync(fd, 2 * P)
    let err
    try { guest.loadFile(0, src) } catch (e) { err = e }
    console.log('code', err && err.code, err && err.bytesCopied)
    console.log('bits', guest.takeDirty()[0].bitmap[0].toString(2))
    fs.rmSync(dir, { recursive: true })
  `)
  t.is(r.status, 0, r.stdout + r.stderr)
  t.regex(r.stdout, new RegExp(`code EFAULT ${2 * P}\\b`), r.stdout + r.stderr)
  t.regex(r.stdout, /bits 11\n/, 'the two pages written stay marked, the two it could not write are not')
})

viewTest(
  '11. view() over pages of a file or an unsealed memfd that are already truncated is ERR_MMAP_BEYOND_EOF, not a SIGBUS (in a child)',
  (t) => {
    const r = runChild(`
    const fs = require('node:fs'), os = require('node:os'), path = require('node:path')
    const P = mr.PAGE_SIZE, RW = mr.Protection.READ_WRITE
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mr-')), file = path.join(dir, 'f')
    fs.writeFileSync(file, Buffer.alloc(4 * P, 1))
    const fd = fs.openSync(file, 'r+')
    const out = []
    const code = (f) => { try { const v = f(); return 'made ' + v.length } catch (e) { return e.code } }
    // An arena overlay of a file, and of an unsealed memfd.
    const arena = mr.MemoryMappingArena.reserve(16 * P)
    arena.addFdMapping(0, 4 * P, fd, 0, RW)
    const shm = mr.SharedMemory.create('unsealed', 4 * P, { seal: false })
    arena.addFdMapping(8 * P, 4 * P, shm.fd, 0, RW)
    const m = mr.MemoryMapping.fromFd(fd, 4 * P)
    fs.ftruncateSync(fd, 2 * P)
    fs.ftruncateSync(shm.fd, P)
    out.push(code(() => arena.view(0, 2 * P)))        // backed: allowed
    out.push(code(() => arena.view(0, 3 * P)))        // its third page is gone
    out.push(code(() => arena.view(P, 4)))            // one byte of a backed page
    out.push(code(() => arena.view(8 * P, P)))
    out.push(code(() => arena.view(8 * P, P + 1)))
    out.push(code(() => m.view(0, 2 * P)))
    out.push(code(() => m.view(3 * P, 8)))
    // A lazily restored GuestMemory whose snapshot file was truncated.
    ;(async () => {
      const guest = new mr.GuestMemory([{ guestAddress: 0, size: 4 * P, backing: 'anonymous' }])
      const snap = path.join(dir, 'snap')
      const manifest = await guest.snapshot(snap)
      const restored = mr.GuestMemory.restore(manifest, snap)
      fs.truncateSync(snap, P)
      out.push(code(() => restored.view(0, P)))
      out.push(code(() => restored.view(0, 2 * P)))
      console.log(out.join(' '))
      // Had a view been made, touching it would have been SIGBUS: we are still here.
      console.log('alive')
    })()
  `)
    t.is(r.signal, null, r.stdout + r.stderr)
    t.is(r.status, 0, r.stdout + r.stderr)
    const BEYOND = 'ERR_MMAP_BEYOND_EOF'
    t.regex(
      r.stdout,
      new RegExp(`made ${2 * P} ${BEYOND} made 4 made ${P} ${BEYOND} made ${2 * P} ${BEYOND} made ${P} ${BEYOND}\\n`),
      r.stdout + r.stderr,
    )
    t.regex(r.stdout, /alive/)
  },
)

test('11. Protection.of and Seal.of check their arguments: type, integer, known bits; valueOf is never called', (t) => {
  for (const of of [Protection.of, Seal.of] as ((...a: unknown[]) => number)[]) {
    let called = false
    const hostile = {
      valueOf() {
        called = true
        return 1
      },
    }
    t.throws(() => of('READ'), { code: 'ERR_INVALID_ARG_TYPE', instanceOf: TypeError })
    t.throws(() => of(1n), { code: 'ERR_INVALID_ARG_TYPE', instanceOf: TypeError })
    t.throws(() => of(hostile), { code: 'ERR_INVALID_ARG_TYPE' })
    t.false(called, 'valueOf was called')
    t.throws(() => of(undefined), { code: 'ERR_INVALID_ARG_TYPE' })
    for (const bad of [1.5, Number.NaN, -1, 2 ** 32 + 1, Number.POSITIVE_INFINITY]) {
      t.throws(() => of(bad), { code: 'ERR_OUT_OF_RANGE', instanceOf: RangeError }, String(bad))
    }
    t.throws(() => of(1, 1.5), { code: 'ERR_OUT_OF_RANGE' })
    t.is(of(), 0)
  }
  t.throws(() => Protection.of(8 as never), { code: 'ERR_OUT_OF_RANGE' })
  t.is(Protection.of(Protection.READ, Protection.EXEC), Protection.READ_EXEC)
  t.throws(() => Seal.of(32 as never), { code: 'ERR_OUT_OF_RANGE' })
  t.is(Seal.of(Seal.GROW, Seal.SHRINK), 6 as never)
})

test('11. a look-alike SharedMemory as a region backing is ERR_INVALID_ARG_TYPE, in new GuestMemory and addRegion', (t) => {
  const fake = Object.create(SharedMemory.prototype) as SharedMemory
  const spec = { guestAddress: 0, size: P, backing: fake }
  t.throws(() => new GuestMemory([spec]), { code: 'ERR_INVALID_ARG_TYPE', instanceOf: TypeError })
  using guest = new GuestMemory([], { addressSpace: 4 * P })
  t.throws(() => guest.addRegion(spec), { code: 'ERR_INVALID_ARG_TYPE', instanceOf: TypeError })
  // A subclass-like object with its own fd is still a look-alike: its prototype says SharedMemory.
  const withFd = Object.create(SharedMemory.prototype, { fd: { value: 0, enumerable: true } })
  t.throws(() => guest.addRegion({ guestAddress: 0, size: P, backing: withFd }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.deepEqual(guest.regions(), [])
})

test('11. a region backing whose fdOffset is a fraction, negative, NaN or Infinity is ERR_OUT_OF_RANGE, in new GuestMemory and addRegion (found by the fuzzer)', (t) => {
  const { fd } = tempFile(t, Buffer.alloc(2 * P))
  using guest = new GuestMemory([], { addressSpace: 4 * P })
  for (const fdOffset of [5e-324, 0.5, -P, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
    const spec = { guestAddress: 0, size: P, backing: { fd, fdOffset } }
    t.throws(() => new GuestMemory([spec]), { code: 'ERR_OUT_OF_RANGE', instanceOf: RangeError })
    t.throws(() => guest.addRegion(spec), { code: 'ERR_OUT_OF_RANGE', instanceOf: RangeError })
  }
  t.deepEqual(guest.regions(), [])
})

test('11. GuestMemory.restore refuses a source that is not a regular file or block device: /dev/zero, a FIFO, a directory', async (t) => {
  using guest = new GuestMemory([{ guestAddress: 0, size: P, backing: 'anonymous' }])
  const { dir, done } = tempDir()
  t.teardown(done)
  const manifest = await guest.snapshot(join(dir, 'snap'))
  t.notThrows(() => GuestMemory.restore(manifest, join(dir, 'snap')).close())
  const fifo = join(dir, 'fifo')
  execFileSync('mkfifo', [fifo])
  for (const source of ['/dev/zero', fifo, dir]) {
    t.throws(() => GuestMemory.restore(manifest, source), { code: 'ERR_INVALID_ARG_VALUE', instanceOf: TypeError }, source)
  }
  const fd = openSync('/dev/zero', 'r')
  t.teardown(() => closeSync(fd))
  t.throws(() => GuestMemory.restore(manifest, fd), { code: 'ERR_INVALID_ARG_VALUE' })
})
