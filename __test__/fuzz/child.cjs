'use strict'
/**
 * The hostile-argument fuzzer's child: drives every public method of the package
 * with generated arguments — extreme numbers, wrong types, proxies, values of another
 * realm, detached / resizable / shared buffers, views of the region itself, and
 * getters and `valueOf` / `Symbol.toPrimitive` hooks that close, remove, overlay,
 * detach or grow things while the call runs — plus Node built-ins (Buffer#fill,
 * TypedArray#set, sort, Atomics …) over views with such hooks.
 *
 * Usage: node child.cjs <entry> <seed> <iterations>. Exits 0 and prints
 * `fuzz ok <seed> <ops>` when every call either returned or threw an error with a
 * documented `code`, and every successful write read back as written. Any other
 * exit — a crash, a hang (the parent's timeout), an assertion below — is a failure
 * that replays with the same seed. `MR_FUZZ_STATS=1` prints each operation's outcomes;
 * `MR_FUZZ_WHY=<code>` prints where each error with that code came from.
 */
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const vm = require('node:vm')
const { execFileSync } = require('node:child_process')

const [entry, seedArg, iterationsArg] = process.argv.slice(2)
const mr = require(entry)
const seed = Number(seedArg) >>> 0
const iterations = Number(iterationsArg)
const P = mr.PAGE_SIZE
const R = mr.Protection
// MR_FUZZ_TRACE=1: each operation (and hook) on stderr before it runs, for a crash's replay.
const trace = process.env.MR_FUZZ_TRACE === '1'

// mulberry32: small, seedable, good enough to pick cases.
let state = seed || 1
function rand() {
  state = (state + 0x6d2b79f5) >>> 0
  let t = state
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const int = (n) => Math.floor(rand() * n)
const pick = (list) => list[int(list.length)]
const chance = (p) => rand() < p

// ---------------------------------------------------------------------------
// The world the calls act on, rebuilt as things get closed.

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mr-fuzz-'))
// Relative paths the generators make up (a number as a string, '0') land in the scratch folder,
// never in the working tree.
process.chdir(dir)
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }))
const filePath = path.join(dir, 'file')
fs.writeFileSync(filePath, Buffer.alloc(16 * P, 0x11))
const fifoPath = path.join(dir, 'fifo')
try {
  execFileSync('mkfifo', [fifoPath])
} catch {}
const fileFd = fs.openSync(filePath, 'r+')
const roFd = fs.openSync(filePath, 'r')
// The child's stdin is a pipe (the parent spawns it so): an fd that cannot be mapped.
const pipeR = 0

const world = { shms: [], regions: [], guests: [], views: [] }
// Share handles handed out so far (attach takes them as they are, altered, or made up).
const handles = []

function freshShm() {
  const s = mr.SharedMemory.create(`fuzz${int(1000)}`, (1 + int(16)) * P, { seal: chance(0.7) })
  world.shms.push(s)
  return s
}
function freshArena() {
  // Mostly mapped: a memfd at [0, 16 pages), anonymous memory at [24, 32), holes between.
  const a = mr.MemoryMappingArena.reserve(40 * P)
  const s = mr.SharedMemory.create('fuzz-ram', 16 * P)
  a.addFdMapping(0, 16 * P, s.fd, 0, R.READ_WRITE)
  s.close()
  a.addAnonymous(24 * P, 8 * P, R.READ_WRITE)
  world.regions.push(a)
  return a
}
function freshMapping() {
  const m = mr.MemoryMapping.anonymous((1 + int(16)) * P)
  world.regions.push(m)
  return m
}
function freshGuest() {
  const shm = live(world.shms) ?? freshShm()
  const g = new mr.GuestMemory(
    [
      { guestAddress: 0, size: P * Math.min(4, shm.size / P), backing: shm },
      { guestAddress: 8 * P, size: 4 * P, backing: 'anonymous' },
    ],
    { addressSpace: 32 * P, trackDirty: pick([false, true, 'software']) },
  )
  world.guests.push(g)
  return g
}
function live(list) {
  const open = list.filter((x) => !x.closed)
  return open.length === 0 ? undefined : pick(open)
}
/** The region or guest memory the current operation works on: hooks mostly act on it. */
let current
let inMischief = false
function target(x) {
  if (!inMischief) current = x
  return x
}
function anyArena() {
  if (inMischief && current instanceof mr.MemoryMappingArena && !current.closed && chance(0.8)) return current
  return target(live(world.regions.filter((r) => r instanceof mr.MemoryMappingArena)) ?? freshArena())
}
function anyRegion() {
  if (inMischief && (current instanceof mr.MemoryMappingArena || current instanceof mr.MemoryMapping) && !current.closed && chance(0.8))
    return current
  return target(chance(0.8) ? anyArena() : (live(world.regions.filter((r) => r instanceof mr.MemoryMapping)) ?? freshMapping()))
}
function anyGuest() {
  if (inMischief && current instanceof mr.GuestMemory && !current.closed && chance(0.8)) return current
  return target(live(world.guests) ?? freshGuest())
}
function anyShm() {
  return live(world.shms) ?? freshShm()
}

// ---------------------------------------------------------------------------
// Mischief: what a hook does while a call (ours or a built-in's) is running.

let mischiefRan = false
const mischiefs = [
  () => anyRegion().close(),
  () => {
    const a = anyArena()
    a.removeMapping(int(Math.min(8, a.size / P)) * P, (1 + int(4)) * P)
  },
  () => {
    const g = anyGuest()
    g.arena.removeMapping(0, 4 * P)
  },
  () => {
    const a = anyArena()
    a.addAnonymous(int(Math.min(8, a.size / P)) * P, (1 + int(4)) * P, pick([R.NONE, R.READ, R.READ_WRITE]))
  },
  () => {
    const a = anyArena()
    const s = anyShm()
    a.addFdMapping(int(Math.min(8, a.size / P)) * P, P, s.fd, 0, pick([R.NONE, R.READ, R.READ_WRITE]))
  },
  () => anyGuest().close(),
  () => {
    const g = anyGuest()
    g.removeRegion(pick([0, 8 * P]))
  },
  () => anyShm().close(),
  () => {
    for (const b of userBuffers) if (chance(0.5)) detach(b.buffer)
  },
  () => {
    for (const b of userBuffers) if (b.buffer.resizable) b.buffer.resize(int(b.buffer.maxByteLength + 1))
  },
  () => globalThis.gc?.(),
  () => {
    const r = anyRegion()
    const v = r.view(0, P)
    world.views.push(v)
  },
]
/** Runs mischief, then answers `value`: the body of every hooked getter and valueOf. */
function hooked(value) {
  mischief()
  return value
}

function mischief() {
  mischiefRan = true
  if (inMischief) return
  inMischief = true
  const n = 1 + int(2)
  for (let i = 0; i < n; i++) {
    const which = int(mischiefs.length)
    if (trace) fs.writeSync(2, `  mischief ${which}\n`)
    try {
      mischiefs[which]()
    } catch {
      // Mischief may itself be refused; that is not what is being tested here.
    }
  }
  inMischief = false
}

function detach(buffer) {
  if (buffer instanceof ArrayBuffer && !buffer.resizable) {
    try {
      structuredClone(buffer, { transfer: [buffer] })
    } catch {}
  }
}

// ---------------------------------------------------------------------------
// Values.

const other = vm.createContext({})
const inOtherRealm = (code) => vm.runInContext(code, other)
const userBuffers = []

function numberish() {
  switch (int(14)) {
    case 0:
      return int(64) * P
    case 1:
      return int(4 * P)
    case 2:
      return pick([0, 1, -1, -0, 0.5, P - 1, P + 1])
    case 3:
      return pick([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])
    case 4:
      return pick([2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), Number.MAX_VALUE, Number.MIN_VALUE, 2 ** 40])
    case 5:
      return pick([0n, 4096n, -1n, 2n ** 63n, 2n ** 64n, BigInt(P) * 3n])
    case 6:
      return pick(['0', '4096', '', 'NaN'])
    case 7:
      return { valueOf: () => hooked(P) }
    case 8:
      return { [Symbol.toPrimitive]: () => hooked(0) }
    case 9:
      return pick([null, undefined, true, false, Symbol('x'), [], {}, () => 0])
    case 10:
      return new Proxy({}, { get: () => hooked(0) })
    case 11:
      return inOtherRealm('4096')
    default:
      return int(16) * P
  }
}

function makeBuffer() {
  const n = int(3 * P)
  let b
  switch (int(12)) {
    case 0:
      b = Buffer.alloc(n, int(256))
      break
    case 1:
      b = new Uint8Array(n).fill(int(256))
      break
    case 2:
      b = new DataView(new ArrayBuffer(n))
      break
    case 3:
      b = new ArrayBuffer(n)
      break
    case 4:
      b = new SharedArrayBuffer(n)
      break
    case 5:
      b = new Uint8Array(new ArrayBuffer(n, { maxByteLength: 2 * n + 8 }))
      break
    case 6:
      b = new Float64Array(n >> 3)
      break
    case 7:
      b = inOtherRealm(`new Uint8Array(${n})`)
      break
    case 8: {
      const a = new ArrayBuffer(n)
      b = new Uint8Array(a)
      detach(a)
      break
    }
    case 9: {
      // A view of a region itself.
      const r = anyRegion()
      try {
        b = r.view(int(2) * P, int(2 * P))
      } catch {
        b = Buffer.alloc(n)
      }
      break
    }
    case 10:
      b = new Proxy(new Uint8Array(n), {})
      break
    default:
      b = Object.create(Uint8Array.prototype)
  }
  if (ArrayBuffer.isView(b) && b.buffer instanceof ArrayBuffer) userBuffers.push(b)
  if (chance(0.15) && typeof b === 'object') {
    try {
      Object.defineProperty(b, 'byteLength', { get: () => hooked(int(2 * P)) })
    } catch {}
  }
  return b
}

/** An options bag or spec whose properties are plain, hooked getters, or traps. */
/** A share handle: one handed out, one altered, or one made up (forged, hooked, a proxy). */
function shareHandle() {
  const real = handles.length > 0 ? pick(handles) : undefined
  switch (int(6)) {
    case 0:
    case 1:
      return real ?? numberish()
    case 2:
      return real === undefined ? numberish() : { ...real, token: pick([real.token + 1, 0, numberish()]) }
    case 3:
      return bag({
        kind: pick(['MemoryMappingArena', 'MemoryMapping', 'GuestMemory', numberish()]),
        id: pick([1, 2, 2 ** 53, numberish()]),
        token: numberish(),
      })
    case 4:
      return real === undefined ? {} : bag({ ...real })
    default:
      return real === undefined ? null : { ...real, arena: pick([real.arena, numberish(), { ...real, kind: 'GuestMemory' }]) }
  }
}

function bag(fields) {
  const o = {}
  for (const [k, v] of Object.entries(fields)) {
    if (chance(0.2)) {
      let reads = 0
      Object.defineProperty(o, k, { get: () => hooked(reads++ === 0 ? v : numberish()), enumerable: true })
    } else o[k] = v
  }
  if (chance(0.1)) return new Proxy(o, { get: (t, k) => (chance(0.3) ? hooked(numberish()) : Reflect.get(t, k)) })
  return pick([o, o, o, undefined, null, 42, 'x'])
}

function protection() {
  return chance(0.8) ? pick([R.NONE, R.READ, R.WRITE, R.READ_WRITE, R.EXEC | R.READ]) : numberish()
}
function advice() {
  return chance(0.7) ? pick(Object.keys(mr.ADVICE)) : pick([0, 3, 4, 100, 102, 200, -1, 'bogus', '__proto__', numberish()])
}
function fd() {
  // A SharedMemory itself (open or closed) is an overlay's source too.
  return pick([anyShm().fd, anyShm(), pick(world.shms) ?? anyShm(), lookAlike(), fileFd, roFd, pipeR, 1, 2, 999, -1, 2 ** 31, numberish()])
}
/** One typed access (any width, plain or atomic) at `at`; a store reads back what it stored. */
function typed(target, at) {
  const value = () => (chance(0.8) ? int(256) : numberish())
  const big = () => (chance(0.8) ? BigInt(int(1 << 30)) * 3n : pick([-1n, 2n ** 64n, 2n ** 64n - 1n, 0n, numberish()]))
  const op = pick([
    () => target.readU8(at),
    () => target.readU16(at),
    () => target.readU32(at),
    () => target.readU64(at),
    () => target.readU32Atomic(at),
    () => target.readU64Atomic(at),
    () => target.compareExchangeU32(at, value(), value()),
    () => target.compareExchangeU64(at, big(), big()),
    () => {
      const v = value()
      target.writeU32(at, v)
      const back = target.readU32(at)
      if (back !== v) throw new Fatal(`writeU32(${at}, ${v}) read back ${back}`)
    },
    () => {
      const v = big()
      target.writeU64(at, v)
      const back = target.readU64(at)
      if (back !== v) throw new Fatal(`writeU64(${at}, ${v}) read back ${back}`)
    },
    () => target.writeU8(at, value()),
    () => target.writeU16(at, value()),
    () => target.writeU32Atomic(at, value()),
    () => target.writeU64Atomic(at, big()),
  ])
  return op()
}
/**
 * The target of the asynchronous operations that write memory (loads, diffs): a guest of private
 * anonymous memory seen by nothing else, so that their writes, which land some time before the
 * promise settles, cannot race a checked write's read-back elsewhere (a race there is the
 * documented behaviour, not a fault). Remade when closed; its arena is used for the region form.
 */
let asyncGuest
function asyncTarget() {
  if (asyncGuest === undefined || asyncGuest.closed || chance(0.02)) {
    asyncGuest = new mr.GuestMemory(
      [
        { guestAddress: 0, size: 8 * P, backing: 'anonymous' },
        { guestAddress: 8 * P, size: 4 * P, backing: 'anonymous' },
      ],
      { addressSpace: 32 * P, trackDirty: pick([false, true, 'software']) },
    )
  }
  return asyncGuest
}
const snapPath = path.join(dir, 'snapshot')
fs.writeFileSync(snapPath, Buffer.alloc(16 * P, 0x5a))
const pagerPath = path.join(dir, 'pager-source')
fs.writeFileSync(pagerPath, Buffer.alloc(16 * P, 0x3c))
/** The pager's source as an fd (the pager reads from its own duplicate). */
const pagerFd = fs.openSync(pagerPath, 'r')
let lastManifest
/**
 * A manifest: the last one a snapshot resolved to (they settle only after the loop, so mostly one
 * made here from a guest's regions, as a full snapshot's would be), intact or damaged, or junk.
 */
function manifest() {
  if (chance(0.1)) return pick([undefined, null, {}, { version: 1 }, numberish()])
  let m
  if (lastManifest !== undefined && chance(0.5)) m = JSON.parse(JSON.stringify(lastManifest))
  else {
    let fileOffset = 0
    const regions = []
    try {
      for (const r of anyGuest().regions()) {
        regions.push({
          guestAddress: Number(r.guestAddress),
          size: r.size,
          fileOffset,
          backing: 'anonymous',
          protection: r.readonly ? 1 : 3,
        })
        fileOffset += r.size
      }
    } catch {}
    m = { version: 1, pageSize: P, dirtyOnly: false, regions }
  }
  if (chance(0.3) && m.regions.length > 0) {
    const r = pick(m.regions)
    const key = pick(['guestAddress', 'size', 'fileOffset', 'protection', 'backing', 'dirtyPages'])
    r[key] = pick([numberish(), 'x', null, [[0, 1]], [[-1, 2]], undefined])
  }
  if (chance(0.1)) m.pageSize = numberish()
  if (chance(0.1)) m.dirtyOnly = !m.dirtyOnly
  return m
}
function loadSource() {
  return pick([filePath, fifoPath, dir, '/dev/zero', path.join(dir, 'none'), fd(), numberish()])
}
function loadOptions() {
  return bag({ offset: pick([0, int(16 * P), numberish()]), length: pick([undefined, int(4 * P), numberish()]) })
}
function backing() {
  return pick([
    anyShm(),
    'anonymous',
    bag({ fd: fd(), fdOffset: numberish(), shared: pick([undefined, true, false, numberish()]) }),
    new Proxy(anyShm(), {}),
    lookAlike(),
    numberish(),
  ])
}
/** An object that inherits from SharedMemory without being one (its getters refuse it). */
function lookAlike() {
  return pick([
    () => Object.create(mr.SharedMemory.prototype),
    () => Object.create(mr.SharedMemory.prototype, { fd: { value: fileFd, enumerable: true }, size: { value: P } }),
    () => Object.assign(Object.create(mr.SharedMemory.prototype), { fdOffset: 0 }),
  ])()
}
function spec() {
  return bag({
    guestAddress: pick([int(32) * P, BigInt(int(32) * P), numberish()]),
    size: pick([P, 2 * P, numberish()]),
    backing: backing(),
    protection: protection(),
  })
}

// ---------------------------------------------------------------------------
// Page streams (writePages / readPages): hostile guests, selections, targets and sources. Every
// stream given settles — a target drains, a source ends — so every promise does; numbers as fds
// are only this fuzzer's own files or invalid ones (a random fd could be a pipe nobody reads).

const { PassThrough, Readable, Writable } = require('node:stream')
const pagesPath = path.join(dir, 'pages')
const pagesFd = fs.openSync(pagesPath, 'w+')
const pagesReadFd = fs.openSync(pagesPath, 'r')

function pagesGuest() {
  return chance(0.85)
    ? anyGuest()
    : pick([() => ({}), () => Object.create(mr.GuestMemory.prototype), () => new Proxy(anyGuest(), {}), numberish])()
}
/** A BigUint64Array of `words` random words, or something that is not quite one. */
function pagesBitmap(words) {
  const a = new BigUint64Array(words)
  for (let i = 0; i < words; i++) a[i] = chance(0.5) ? BigInt(int(2 ** 30)) * BigInt(1 + int(4)) : 0n
  switch (int(10)) {
    case 0:
      return new Uint32Array(words * 2)
    case 1: {
      detach(a.buffer)
      return a
    }
    case 2:
      return new Proxy(a, {})
    case 3:
      return new BigUint64Array(new ArrayBuffer(words * 8, { maxByteLength: words * 16 + 8 }))
    case 4:
      return inOtherRealm(`new BigUint64Array(${words})`)
    case 5:
      return numberish()
    default:
      return a
  }
}
function pagesSelection() {
  if (chance(0.3)) return 'all'
  if (chance(0.2)) {
    try {
      return anyGuest().takeDirty()
    } catch {}
  }
  if (chance(0.1)) return pick([numberish(), 'some', new Proxy([], {}), [null]])
  const n = int(3)
  const list = []
  for (let i = 0; i < n; i++) {
    list.push(
      bag({
        guestAddress: pick([0n, BigInt(8 * P), 0, int(32) * P, numberish()]),
        size: pick([4 * P, 8 * P, 64 * P, numberish()]),
        bitmap: pagesBitmap(pick([1, 1, 2, 0])),
      }),
    )
  }
  return list
}
function pagesTarget() {
  return pick([
    () => new PassThrough().resume(),
    () =>
      new Writable({
        write: (_c, _e, done) =>
          chance(0.05) ? done(Object.assign(new Error('EPIPE'), { code: 'EPIPE', errno: -32, syscall: 'write' })) : done(),
      }).on('error', () => {}),
    () => {
      const w = new PassThrough()
      w.destroy()
      return w
    },
    () => new PassThrough({ objectMode: true }).resume(),
    () => pagesFd,
    () => roFd,
    () => pipeR,
    () => pick([-1, 0.5, Number.NaN, 2 ** 31, null, undefined, {}, '3', 3n]),
    () => Readable.from([]),
  ])()
}
/** Bytes that are, or almost are, a page stream. */
function pagesBytes() {
  if (chance(0.1)) return Buffer.from(Array.from({ length: int(64) }, () => int(256)))
  const parts = []
  const header = Buffer.from('MRPG\x01\x00\x00\x00', 'latin1')
  if (chance(0.1)) header[int(8)] = int(256)
  parts.push(header)
  const runs = int(4)
  for (let i = 0; i < runs; i++) {
    const len = pick([P, 2 * P, 1, 5, 0])
    const h = Buffer.alloc(12)
    h.writeBigUInt64LE(pick([0n, BigInt(P), BigInt(8 * P), BigInt(int(32) * P), BigInt(int(32 * P)), 2n ** 53n, 2n ** 64n - 1n]), 0)
    h.writeUInt32LE(len, 8)
    parts.push(h, Buffer.alloc(len, int(256)))
  }
  if (chance(0.8)) parts.push(Buffer.from([255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0]))
  const all = Buffer.concat(parts)
  return chance(0.15) ? all.subarray(0, int(all.length)) : all
}
function pagesSource() {
  return pick([
    () => Readable.from([pagesBytes()], { objectMode: false }),
    () => Readable.from([pagesBytes()], { objectMode: false }),
    () => Readable.from([pagesBytes()]),
    () => {
      const r = new PassThrough()
      r.destroy()
      return r
    },
    () => {
      const r = new PassThrough()
      r.on('data', () => {})
      r.end(pagesBytes())
      return r
    },
    () => pagesReadFd,
    () => roFd,
    () => pick([-1, 0.5, Number.NaN, 2 ** 31, null, undefined, {}, '3', 3n]),
  ])()
}
/**
 * A round trip between two guests of their own (nothing else touches them): what `readPages`
 * applied must be what `writePages` read, page for page, and nothing else may change.
 */
function pagesRoundTrip() {
  const make = () =>
    new mr.GuestMemory(
      [
        { guestAddress: 0, size: 8 * P, backing: 'anonymous' },
        { guestAddress: 12 * P, size: 4 * P, backing: 'anonymous' },
      ],
      { addressSpace: 16 * P },
    )
  const src = make()
  const dst = make()
  for (let p = 0; p < 16; p++) if (p < 8 || p >= 12) src.write(p * P, Buffer.alloc(P, 1 + int(255)))
  const bits = BigInt(int(256))
  const selection = chance(0.5)
    ? 'all'
    : [
        { guestAddress: 0n, size: 8 * P, bitmap: new BigUint64Array([bits]) },
        { guestAddress: BigInt(12 * P), size: 4 * P, bitmap: new BigUint64Array([bits & 15n]) },
      ]
  const sent = (p) => selection === 'all' || (p < 8 ? (bits >> BigInt(p)) & 1n : (bits >> BigInt(p - 12)) & 1n) === 1n
  const pipe = new PassThrough({ highWaterMark: pick([1, 1024, 16384]) })
  return Promise.all([mr.writePages(src, selection, pipe), mr.readPages(dst, pipe)])
    .then(([written, read]) => {
      if (written.runs !== read.runs || written.bytes !== read.bytes)
        throw new Error(`wrote ${JSON.stringify(written)}, read ${JSON.stringify(read)}`)
      for (let p = 0; p < 16; p++) {
        if (p >= 8 && p < 12) continue
        const want = sent(p) ? src.read(p * P, P) : Buffer.alloc(P)
        if (!dst.read(p * P, P).equals(want)) throw new Error(`page ${p} did not arrive as written`)
      }
    })
    .catch((e) => {
      console.error(`FAIL seed=${seed}: page round trip: ${e?.message}`)
      process.exit(3)
    })
    .finally(() => {
      src.close()
      dst.close()
    })
}

// ---------------------------------------------------------------------------
// Operations: every public method, and built-ins over views.

const asyncResults = []

/**
 * `of(...flags)` with generated flags: anything it returns must be an integer combination of
 * the known bits (0 to `max`), never a number made from a bad argument.
 */
function flagsOf(of, max) {
  const args = Array.from({ length: int(4) }, () =>
    chance(0.5) ? int(max + 1) : pick([numberish(), 1n, 'READ', null, undefined, {}, hookedNumber(1), [1]]),
  )
  const got = of(...args)
  if (!Number.isInteger(got) || got < 0 || got > max) throw new Fatal(`${of.name}(${args.map(String)}) returned ${got}`)
}
/** An object whose valueOf runs mischief: a flag builder must not call it. */
function hookedNumber(value) {
  return { valueOf: () => hooked(value) }
}

const { Worker } = require('node:worker_threads')
const WORKER_ENDS = ['terminate', 'exit', 'return', 'close-terminate']
const MAX_WORKERS = 12
let workersStarted = 0
/**
 * A worker that attaches `handle`, makes a view, and ends as `end` says; the main thread closes
 * `object` before it ends (`main-first`), after (`worker-first`) or leaves it to the fuzzer.
 */
function workerEnds(handle, end, order, object) {
  const w = new Worker(
    `
    const { parentPort: port, workerData: d } = require('node:worker_threads')
    const mr = require(${JSON.stringify(entry)})
    const kinds = { MemoryMappingArena: mr.MemoryMappingArena, MemoryMapping: mr.MemoryMapping, GuestMemory: mr.GuestMemory }
    let o
    try { o = kinds[d.handle.kind].attach(d.handle) } catch {}
    try { globalThis.keep = o && o.view(0, mr.PAGE_SIZE) } catch {}
    port.on('message', (how) => {
      if (how === 'exit') process.exit(0)
      if (how === 'return') return port.close()
      if (how === 'close-terminate' && o) o.close()
      port.postMessage('done')
    })
    port.postMessage('ready')
  `,
    { eval: true, workerData: { handle } },
  )
  return new Promise((resolve) => {
    const exited = new Promise((r) => w.once('exit', r))
    w.once('error', () => {})
    w.once('message', async () => {
      if (order === 'main-first') object.close()
      if (end === 'terminate') await w.terminate()
      else if (end === 'close-terminate') {
        w.postMessage(end)
        await new Promise((r) => w.once('message', r))
        await w.terminate()
      } else {
        w.postMessage(end)
        await exited
      }
      if (order === 'worker-first') object.close()
      resolve()
    })
    exited.then(resolve)
  })
}
// Shared views pin their ranges until collected: some are kept, most dropped at once.
const sharedViews = []
const ops = [
  [
    'reserve',
    () =>
      world.regions.push(
        mr.MemoryMappingArena.reserve(
          chance(0.9) ? int(64 * P) + 1 : numberish(),
          chance(0.8) ? undefined : bag({ align: pick([P, 2 << 20, 1 << 30, 3, 0, numberish()]) }),
        ),
      ),
  ],
  ['new arena', () => world.regions.push(new mr.MemoryMappingArena(numberish()))],
  [
    'anonymous',
    () => {
      // populate commits and faults in the whole size (correctly): a generated 4 GiB would spend
      // a minute in the kernel, so populated mappings stay small.
      const populate = chance(0.5)
      const size = chance(0.8) || populate ? (1 + int(16)) * P : numberish()
      world.regions.push(mr.MemoryMapping.anonymous(size, bag({ protection: protection(), populate, shared: chance(0.5) })))
    },
  ],
  [
    'fromFd',
    () =>
      world.regions.push(
        mr.MemoryMapping.fromFd(
          fd(),
          chance(0.8) ? (1 + int(20)) * P : numberish(),
          bag({ offset: pick([0, P, numberish()]), protection: protection(), shared: chance(0.5), checkEof: chance(0.5) }),
        ),
      ),
  ],
  [
    'fromFile',
    () =>
      world.regions.push(
        mr.MemoryMapping.fromFile(
          pick([filePath, fifoPath, dir, '/dev/zero', path.join(dir, 'none'), numberish()]),
          bag({ size: pick([undefined, P, numberish()]), protection: protection(), shared: chance(0.5) }),
        ),
      ),
  ],
  [
    'addFdMapping',
    () =>
      anyRegion().addFdMapping(
        numberish(),
        chance(0.7) ? (1 + int(4)) * P : numberish(),
        fd(),
        chance(0.7) ? int(8) * P : numberish(),
        protection(),
        chance(0.7) ? undefined : bag({ shared: chance(0.8) ? chance(0.5) : numberish() }),
      ),
  ],
  ['addAnonymous', () => anyArena().addAnonymous(numberish(), chance(0.7) ? (1 + int(4)) * P : numberish(), protection())],
  ['removeMapping', () => anyRegion().removeMapping(numberish(), numberish())],
  ['protect', () => anyArena().protect(chance(0.7) ? int(8) * P : numberish(), chance(0.7) ? (1 + int(4)) * P : numberish(), protection())],
  ['msync', () => anyRegion().msync(numberish(), numberish())],
  ['madvise', () => anyRegion().madvise(chance(0.7) ? int(8) * P : numberish(), chance(0.7) ? int(8 * P) : numberish(), advice())],
  [
    'mlock',
    () =>
      anyRegion().mlock(
        chance(0.7) ? int(8) * P : numberish(),
        chance(0.7) ? int(8 * P) : numberish(),
        chance(0.5) ? { onFault: chance(0.5) ? true : numberish() } : undefined,
      ),
  ],
  ['munlock', () => anyRegion().munlock(chance(0.7) ? int(8) * P : numberish(), chance(0.7) ? int(8 * P) : numberish())],
  ['discard', () => anyRegion().discard(chance(0.7) ? int(8) * P : numberish(), chance(0.7) ? int(8) * P : numberish())],
  ['msyncAsync', () => asyncResults.push(anyRegion().msyncAsync(numberish(), numberish()))],
  ['populateAsync', () => asyncResults.push(anyRegion().populateAsync(int(8) * P, int(4) * P, bag({ write: chance(0.5) })))],
  ['read', () => anyRegion().read(chance(0.8) ? int(8 * P) : numberish(), chance(0.8) ? int(2 * P) : numberish())],
  ['readInto', () => anyRegion().readInto(chance(0.8) ? int(8 * P) : numberish(), makeBuffer())],
  ['write', () => checkedWrite(anyRegion(), chance(0.85) ? int(8 * P) : numberish())],
  ['loadFile', () => anyRegion().loadFile(chance(0.8) ? int(8 * P) : numberish(), loadSource(), loadOptions())],
  [
    'loadFileAsync',
    () => asyncResults.push(asyncTarget().arena.loadFileAsync(chance(0.8) ? int(8 * P) : numberish(), loadSource(), loadOptions())),
  ],
  ['typed', () => typed(anyRegion(), chance(0.8) ? int(8 * P) : numberish())],
  [
    'sharedView',
    () => sharedViews.push(anyRegion().sharedView(chance(0.8) ? int(8) * P : numberish(), chance(0.8) ? int(2 * P) : numberish())),
  ],
  ['view', () => world.views.push(anyRegion().view(chance(0.8) ? int(8 * P) : numberish(), chance(0.8) ? int(2 * P) : numberish()))],
  ['close', () => anyRegion().close()],
  ['mappings', () => anyArena().mappings()],
  ['kernelMappingCount', () => anyArena().kernelMappingCount],
  ['address', () => anyRegion().address],
  ['pendingOperations', () => anyRegion().pendingOperations],
  ['dispose', () => anyRegion()[Symbol.dispose]()],
  [
    'shm create',
    () =>
      world.shms.push(
        mr.SharedMemory.create(
          pick(['a', '', 'n\0ul', 'x'.repeat(300), numberish()]),
          chance(0.8) ? (1 + int(8)) * P : numberish(),
          bag({ seal: chance(0.5), hugetlb: chance(0.9) ? chance(0.1) : pick(['2M', '1G', '4K', 1, numberish()]) }),
        ),
      ),
  ],
  ['shm fd', () => anyShm().fd],
  ['shm seals', () => anyShm().seals],
  ['shm addSeals', () => anyShm().addSeals(chance(0.7) ? pick([1, 2, 4, 16, 32 - 1]) : numberish())],
  ['shm close', () => anyShm().close()],
  [
    'guest new',
    () =>
      world.guests.push(
        new mr.GuestMemory(
          pick([[spec()], [spec(), spec()], [], numberish(), new Proxy([spec()], {})]),
          bag({
            addressSpace: pick([32 * P, numberish()]),
            align: pick([undefined, undefined, P, 2 << 20, numberish()]),
            trackDirty: pick([undefined, true, true, false, 'kernel', 'software', 'Kernel', '', numberish()]),
          }),
        ),
      ),
  ],
  ['guest addRegion', () => anyGuest().addRegion(spec())],
  ['guest removeRegion', () => anyGuest().removeRegion(pick([0, 8 * P, 0n, numberish()]))],
  ['guest translate', () => anyGuest().translate(pick([int(32) * P, BigInt(int(32 * P)), numberish()]))],
  ['guest read', () => anyGuest().read(pick([int(16 * P), BigInt(int(16 * P)), numberish()]), chance(0.8) ? int(2 * P) : numberish())],
  ['guest readInto', () => anyGuest().readInto(pick([int(16 * P), numberish()]), makeBuffer())],
  ['guest write', () => checkedWrite(anyGuest(), chance(0.85) ? int(16 * P) : numberish())],
  ['guest loadFile', () => anyGuest().loadFile(pick([int(16 * P), BigInt(int(16 * P)), numberish()]), loadSource(), loadOptions())],
  [
    'guest loadFileAsync',
    () => asyncResults.push(asyncTarget().loadFileAsync(pick([int(16 * P), numberish()]), loadSource(), loadOptions())),
  ],
  ['guest sharedView', () => sharedViews.push(anyGuest().sharedView(pick([int(16) * P, BigInt(int(16 * P)), numberish()]), int(2 * P)))],
  ['guest typed', () => typed(anyGuest(), pick([int(16 * P), BigInt(int(16 * P)), numberish()]))],
  [
    'guest markDirty',
    () => anyGuest().markDirty(pick([int(16 * P), BigInt(int(16 * P)), numberish()]), chance(0.8) ? int(4 * P) : numberish()),
  ],
  [
    'guest discard',
    () => anyGuest().discard(pick([int(16) * P, BigInt(int(16) * P), numberish()]), chance(0.8) ? int(4) * P : numberish()),
  ],
  ['guest takeDirty', () => anyGuest().takeDirty()],
  ['guest dirtyTracking', () => anyGuest().dirtyTracking],
  [
    'guest snapshot',
    () =>
      asyncResults.push(
        anyGuest()
          .snapshot(
            pick([snapPath, snapPath, fileFd, roFd, pipeR, dir, numberish()]),
            bag({ dirtyOnly: chance(0.5) ? chance(0.5) : numberish() }),
          )
          .then((m) => {
            lastManifest = m
          }),
      ),
  ],
  [
    'guest restore',
    () =>
      world.guests.push(
        mr.GuestMemory.restore(
          manifest(),
          pick([snapPath, snapPath, fileFd, dir, numberish()]),
          bag({
            trackDirty: pick([false, true, 'kernel', 'software', numberish()]),
            lazy: pick([undefined, true, false, 'file', 'pager', 'pager', 'PAGER', numberish()]),
          }),
        ),
      ),
  ],
  [
    // The pager's source is its own file (never mapped: truncating it cannot fault anything).
    'guest restore pager',
    () =>
      world.guests.push(
        mr.GuestMemory.restore(
          chance(0.3)
            ? { ...manifest(), version: 2, workingSet: pick([[], [[0, 1]], [[int(16) * P, int(4)]], 'x', [[1, 1]], numberish()]) }
            : manifest(),
          pick([pagerPath, pagerPath, pagerFd, dir, numberish()]),
          bag({
            lazy: 'pager',
            trackDirty: pick([undefined, false, true, 'kernel', 'software']),
            record: pick([undefined, true, false, numberish()]),
            addressSpace: pick([undefined, 32 * P, P, numberish()]),
            dontDump: pick([undefined, true, false]),
          }),
        ),
      ),
  ],
  ['guest workingSet', () => anyGuest().workingSet()],
  ['guest restoreFaults', () => anyGuest().restoreFaults],
  [
    'guest snapshot workingSet',
    () => asyncResults.push(anyGuest().snapshot(snapPath, bag({ workingSet: pick([true, false, numberish()]) }))),
  ],
  ['truncate pager source', () => fs.truncateSync(pagerPath, chance(0.5) ? 16 * P : int(17) * P)],
  [
    'guest restored',
    () => {
      const r = anyGuest().restored
      if (r !== undefined) asyncResults.push(r)
    },
  ],
  ['guest applyDiff', () => asyncResults.push(asyncTarget().applyDiff(manifest(), pick([snapPath, fileFd, numberish()])))],
  ['writePages', () => asyncResults.push(mr.writePages(pagesGuest(), pagesSelection(), pagesTarget()))],
  ['readPages', () => asyncResults.push(mr.readPages(pagesGuest(), pagesSource()))],
  ['pages round trip', () => asyncResults.push(pagesRoundTrip())],
  ['guest view', () => world.views.push(anyGuest().view(pick([int(16 * P), numberish()]), chance(0.8) ? int(2 * P) : numberish()))],
  ['guest regions', () => anyGuest().regions()],
  ['share', () => handles.push(anyRegion().share())],
  ['guest share', () => handles.push(anyGuest().share())],
  [
    'attach',
    () => {
      const h = shareHandle()
      const byKind = { MemoryMappingArena: mr.MemoryMappingArena, MemoryMapping: mr.MemoryMapping, GuestMemory: mr.GuestMemory }
      const kind = h !== null && typeof h === 'object' && !require('node:util').types.isProxy(h) ? h.kind : undefined
      const own = typeof kind === 'string' && Object.hasOwn(byKind, kind) ? byKind[kind] : undefined
      const attached =
        own !== undefined && chance(0.6)
          ? own.attach(h)
          : pick([() => mr.MemoryMappingArena.attach(h), () => mr.MemoryMapping.attach(h), () => mr.GuestMemory.attach(h)])()
      if (attached instanceof mr.GuestMemory) world.guests.push(attached)
      else world.regions.push(attached)
    },
  ],
  ['Protection.of', () => flagsOf(mr.Protection.of, 7)],
  ['Seal.of', () => flagsOf(mr.Seal.of, 31)],
  [
    'worker ends',
    () => {
      // A worker attaches the object and ends — terminated, process.exit() in it, a normal exit,
      // or close() then terminated at once — before or after the main thread's close().
      if (workersStarted >= MAX_WORKERS) return
      const object = chance(0.5) ? anyGuest() : anyRegion()
      const handle = object.share()
      workersStarted++
      asyncResults.push(workerEnds(handle, pick(WORKER_ENDS), pick(['main-first', 'worker-first', 'never']), object))
    },
  ],
  ['guest close', () => anyGuest().close()],
  [
    'guest create',
    () => world.guests.push(mr.GuestMemory.create(pick([[spec()], []]), bag({ addressSpace: pick([32 * P, numberish()]) }))),
  ],
  [
    'guest arena',
    () => {
      // The arena behind a guest, used directly: the guest's own checks must still hold.
      const a = anyGuest().arena
      pick([
        () => a.removeMapping(int(16) * P, P),
        () => a.addAnonymous(int(16) * P, P, protection()),
        () => a.close(),
        () => a.mappings(),
      ])()
    },
  ],
  [
    'guest properties',
    () => {
      const g = anyGuest()
      return [g.addressSpace, g.closed, g.arena.size]
    },
  ],
  ['guest dispose', () => anyGuest()[Symbol.dispose]()],
  ['shm dispose', () => anyShm()[Symbol.dispose]()],
  [
    'shm properties',
    () => {
      const x = anyShm()
      return [x.size, x.closed]
    },
  ],
  [
    'region properties',
    () => {
      const r = anyRegion()
      return [r.size, r.closed, r instanceof mr.MemoryMapping ? r.protection : r.kernelMappingCount]
    },
  ],
  ['mapCount', () => mr.mapCount()],
  ['builtin over a view', () => builtinOverView()],
]

/** Node and V8 built-ins that take a view's memory and may call back into JavaScript. */
function builtinOverView() {
  const r = anyRegion()
  const v = r.view(int(4) * P, 1 + int(2 * P))
  world.views.push(v)
  const hook = { valueOf: () => hooked(0x5a), [Symbol.toPrimitive]: undefined }
  const which = int(10)
  if (trace) fs.writeSync(2, `  builtin ${which} over [${v.byteOffset}, +${v.length}) of ${r.constructor.name}\n`)
  switch (which) {
    case 0:
      return v.fill({ valueOf: () => hooked(0x5a) })
    case 1:
      return v.fill({ valueOf: () => hooked(1) }, 0, v.length)
    case 2:
      return new Uint8Array(v.buffer, v.byteOffset, v.length).fill(hook)
    case 3:
      return v.set({
        length: 4,
        get 0() {
          return hooked(1)
        },
        1: 2,
        2: 3,
        3: 4,
      })
    case 4:
      return new Uint8Array(v.buffer, v.byteOffset, v.length).sort((a, b) => (chance(0.01) ? hooked(a - b) : a - b))
    case 5:
      return v.length >= 4 && v.byteOffset % 4 === 0
        ? Atomics.store(new Int32Array(v.buffer, v.byteOffset, v.length >> 2), 0, hook)
        : undefined
    case 6:
      return new DataView(v.buffer, v.byteOffset, v.length).setUint8(0, hook)
    case 7:
      return v.indexOf({ valueOf: () => hooked(7) })
    case 8:
      return Array.prototype.forEach.call(v.subarray(0, 8), () => {
        if (chance(0.3)) mischief()
      })
    default:
      return v.write(String(int(1000)), 0)
  }
}

/**
 * Writes at `at` of a region or guest memory, then — if no hook ran during the call —
 * reads back what was written.
 */
function checkedWrite(target, at) {
  const data = makeBuffer()
  const before = snapshot(data)
  mischiefRan = false
  target.write(at, data)
  if (!mischiefRan && before !== undefined && !target.closed) {
    const back = target.read(at, before.length)
    if (!back.equals(before)) throw new Fatal(`${target.constructor.name} write(${at}, ${before.length} bytes) read back differently`)
  }
}
/** The bytes of `data` as the package should see them, or undefined if it is not plain bytes. */
function snapshot(data) {
  try {
    if (data instanceof ArrayBuffer || data instanceof SharedArrayBuffer) return Buffer.from(new Uint8Array(data))
    if (ArrayBuffer.isView(data) && Object.getOwnPropertyDescriptor(data, 'byteLength') === undefined) {
      return Buffer.from(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
    }
  } catch {}
  return undefined
}

class Fatal extends Error {}

// ---------------------------------------------------------------------------
// The oracle for errors: every error the package throws carries a documented code.

const CODES = new Set([
  'ERR_INVALID_ARG_TYPE',
  'ERR_INVALID_ARG_VALUE',
  'ERR_OUT_OF_RANGE',
  'ERR_MMAP_UNALIGNED',
  'ERR_MMAP_OUT_OF_BOUNDS',
  'ERR_MMAP_ACCESS',
  'ERR_MMAP_BEYOND_EOF',
  'ERR_MMAP_CLOSED',
  'ERR_MMAP_UNSUPPORTED',
  'ERR_MMAP_BUSY',
  'ERR_MMAP_STALE_HANDLE',
  'ERR_MMAP_INVALID_HANDLE',
  'ERR_MMAP_NO_EXTERNAL',
  'ERR_GUEST_OVERLAP',
  'ERR_GUEST_ADDRESS',
  'ERR_RESTORE_INCOMPLETE',
])
function documented(e) {
  if (e === null || typeof e !== 'object' || typeof e.code !== 'string') return false
  if (CODES.has(e.code))
    return e.code === 'ERR_INVALID_ARG_TYPE' || e.code === 'ERR_INVALID_ARG_VALUE' ? e instanceof TypeError : e instanceof Error
  // A failed syscall (or Node's own fs error from fromFile): errno name, errno, syscall.
  return /^E[A-Z0-9]+$/.test(e.code) && typeof e.errno === 'number' && e.errno < 0 && typeof e.syscall === 'string'
}

let done = 0
const log = []
const stats = new Map()
function count(name, outcome) {
  const m = stats.get(name) ?? new Map()
  m.set(outcome, (m.get(outcome) ?? 0) + 1)
  stats.set(name, m)
}
for (let i = 0; i < iterations; i++) {
  const [name, op] = pick(ops)
  current = undefined
  if (trace) fs.writeSync(2, `op#${i} ${name}\n`)
  log.push(name)
  if (log.length > 20) log.shift()
  try {
    op()
    count(name, 'ok')
  } catch (e) {
    count(name, e?.code ?? e?.constructor?.name)
    if (process.env.MR_FUZZ_WHY !== undefined && process.env.MR_FUZZ_WHY === e?.code) console.error(name, e?.syscall, e?.message, e?.stack)
    if (e instanceof Fatal) {
      console.error(`FAIL seed=${seed} op#${i} ${name}: ${e.message}\nlast ops: ${log.join(', ')}`)
      process.exit(3)
    }
    // Built-ins throw their own errors over detached views (a TypeError without a
    // code, by design of the platform); only the package's errors are judged.
    if (name !== 'builtin over a view' && !documented(e)) {
      console.error(
        `FAIL seed=${seed} op#${i} ${name}: an error without a documented code: ${e?.constructor?.name}: ${e?.message} (code ${e?.code})\nlast ops: ${log.join(', ')}`,
      )
      process.exit(4)
    }
  }
  done++
  if (world.regions.length > 64) for (const r of world.regions.splice(0, 32)) r.close()
  if (world.views.length > 256) world.views.length = 0
  if (sharedViews.length > 8) sharedViews.length = 0
  if (userBuffers.length > 64) userBuffers.length = 0
  if (world.shms.length > 32) for (const x of world.shms.splice(0, 16)) x.close()
}

Promise.allSettled(asyncResults).then((results) => {
  for (const r of results) {
    if (r.status === 'rejected' && !documented(r.reason)) {
      console.error(`FAIL seed=${seed}: a rejection without a documented code: ${r.reason?.message}`)
      process.exit(4)
    }
  }
  // Let reclaims run, then close everything: nothing may crash on the way out.
  setImmediate(() => {
    for (const r of world.regions) r.close()
    for (const g of world.guests) g.close()
    asyncGuest?.close()
    for (const s of world.shms) s.close()
    globalThis.gc?.()
    if (process.env.MR_FUZZ_STATS) {
      for (const [name, m] of [...stats].sort()) console.log(name.padEnd(22), [...m].map(([k, v]) => `${k}:${v}`).join(' '))
    }
    setImmediate(() => console.log(`fuzz ok ${seed} ${done}`))
  })
})
