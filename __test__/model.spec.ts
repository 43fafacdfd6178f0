/**
 * Model-based test: random command sequences against a MemoryMappingArena and a
 * pure TypeScript model of it (which page holds which memfd page or private
 * anonymous memory with which protection, the bytes of each, which views are
 * alive). After every command the layout, the bytes read and the views'
 * detached state must match the model.
 *
 * Seeded and reproducible: MR_MODEL_SEED=<n> reruns a seed, MR_MODEL_RUNS=<n>
 * changes the number of sequences. A failure prints fast-check's seed, path and
 * the shrunk command sequence.
 */
import test from 'ava'
import fc from 'fast-check'
import { MemoryMappingArena, PAGE_SIZE, Protection, SharedMemory, type MappingInfo, type ProtectionFlags } from 'mapped-region'
import { mapsOverlapping, NO_EXTERNAL } from './helpers.js'

const P = PAGE_SIZE
const PAGES = 24
const FILE_PAGES = 12
const SEED = Number(process.env.MR_MODEL_SEED ?? 20261126)
const RUNS = Number(process.env.MR_MODEL_RUNS ?? 3000)
const MAX_COMMANDS = 200
const PROTS = [0, 1, 2, 3, 5, 7] as ProtectionFlags[]

type PageState = { kind: 'fd'; file: number; filePage: number; prot: number } | { kind: 'anonymous'; prot: number; data: Uint8Array } | null

interface Model {
  pages: PageState[]
  files: Uint8Array[]
  views: Array<{ start: number; end: number; detached: boolean }>
  closed: boolean
}

interface Real {
  arena: MemoryMappingArena
  shms: SharedMemory[]
  views: Buffer[]
}

let opsRun = 0

const pageSpan = (offset: number, size: number): [number, number] => [Math.floor(offset / P), Math.ceil((offset + size) / P)]

function allows(m: Model, offset: number, len: number, need: number): boolean {
  if (len === 0) return true
  const [a, b] = pageSpan(offset, len)
  for (let i = a; i < b; i++) {
    const p = m.pages[i]
    if (p === null || (p.prot & need) !== need) return false
  }
  return true
}

function byteAt(m: Model, addr: number): number {
  const p = m.pages[Math.floor(addr / P)]
  if (p === null) throw new Error('model: byte of a hole')
  return p.kind === 'fd' ? m.files[p.file][p.filePage * P + (addr % P)] : p.data[addr % P]
}

function setByte(m: Model, addr: number, value: number): void {
  const p = m.pages[Math.floor(addr / P)]
  if (p === null) throw new Error('model: byte of a hole')
  if (p.kind === 'fd') m.files[p.file][p.filePage * P + (addr % P)] = value
  else p.data[addr % P] = value
}

/** Replacing pages [a, b) detaches every view overlapping them. */
function replace(m: Model, a: number, b: number, make: (i: number) => PageState): void {
  for (const v of m.views) if (!v.detached && v.start < b * P && v.end > a * P && v.end > v.start) v.detached = true
  for (let i = a; i < b; i++) m.pages[i] = make(i)
}

function expectedLayout(m: Model, fds: number[]): MappingInfo[] {
  const out: MappingInfo[] = []
  for (let i = 0; i < PAGES; i++) {
    const p = m.pages[i]
    if (p === null) continue
    const last = out[out.length - 1]
    const prevPage = i > 0 ? m.pages[i - 1] : null
    const continues =
      last !== undefined &&
      prevPage !== null &&
      last.offset + last.size === i * P &&
      prevPage.prot === p.prot &&
      prevPage.kind === p.kind &&
      (p.kind === 'anonymous' || (prevPage.kind === 'fd' && prevPage.file === p.file && prevPage.filePage + 1 === p.filePage))
    if (continues) {
      last.size += P
    } else if (p.kind === 'fd') {
      out.push({ offset: i * P, size: P, kind: 'fd', protection: p.prot, fd: fds[p.file], fdOffset: p.filePage * P, shared: true })
    } else {
      out.push({ offset: i * P, size: P, kind: 'anonymous', protection: p.prot })
    }
  }
  return out
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
    return undefined
  } catch (e) {
    return (e as { code?: string }).code ?? String(e)
  }
}

/**
 * Entries merged by the documented rule (README, `mappings()`) (same kind and protection; for fds the same fd,
 * the same sharing and contiguous offsets). The arena may report finer pieces: it keeps apart what
 * the kernel keeps apart (e.g. anonymous memory faulted in on both sides), which the
 * model cannot predict; the kernel's own count is checked separately.
 */
function coalesce(entries: MappingInfo[]): MappingInfo[] {
  const out: MappingInfo[] = []
  for (const e of entries) {
    const last = out[out.length - 1]
    const continues =
      last !== undefined &&
      last.offset + last.size === e.offset &&
      last.kind === e.kind &&
      last.protection === e.protection &&
      (e.kind === 'anonymous' || (last.fd === e.fd && last.shared === e.shared && (last.fdOffset ?? 0) + last.size === e.fdOffset))
    if (continues) last.size += e.size
    else out.push({ ...e })
  }
  return out
}

let checks = 0

function check(m: Model, r: Real): void {
  if (m.closed) return
  const actual = coalesce(r.arena.mappings())
  // The budget's safety property: the count is never below the kernel's. (It can be
  // above: the kernel merges an anonymous PROT_NONE overlay into a neighbouring hole.)
  // Reading /proc/self/maps costs more than an operation: every 16th check.
  const kernel = checks++ % 16 === 0 ? mapsOverlapping(r.arena.address, r.arena.size).length : 0
  if (r.arena.kernelMappingCount < kernel) {
    throw new Error(`kernelMappingCount ${r.arena.kernelMappingCount}, /proc/self/maps has ${kernel} mappings in the arena`)
  }
  const expected = expectedLayout(
    m,
    r.shms.map((s) => s.fd),
  )
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(`layout differs:\n actual   ${JSON.stringify(actual)}\n expected ${JSON.stringify(expected)}`)
  }
  m.views.forEach((v, i) => {
    const buf = r.views[i]
    const isDetached = buf.byteLength === 0 && v.end > v.start
    if (isDetached !== v.detached) throw new Error(`view ${i} [${v.start}, ${v.end}) detached=${isDetached}, model says ${v.detached}`)
    if (!v.detached && v.end > v.start) {
      for (const at of [v.start, v.end - 1]) {
        if (buf[at - v.start] !== byteAt(m, at)) throw new Error(`view ${i} byte at ${at}: ${buf[at - v.start]} != model ${byteAt(m, at)}`)
      }
    }
  })
}

abstract class Cmd implements fc.Command<Model, Real> {
  check(m: Readonly<Model>): boolean {
    if (m.closed) return false
    opsRun++
    return true
  }
  abstract run(m: Model, r: Real): void
  abstract toString(): string
}

class AddFd extends Cmd {
  constructor(
    readonly page: number,
    readonly size: number,
    readonly file: number,
    readonly filePage: number,
    readonly prot: ProtectionFlags,
  ) {
    super()
  }
  run(m: Model, r: Real): void {
    const offset = this.page * P
    const [a, b] = pageSpan(offset, this.size)
    const fits = offset + this.size <= PAGES * P
    const inFile = this.filePage * P + this.size <= FILE_PAGES * P
    const code = codeOf(() => r.arena.addFdMapping(offset, this.size, r.shms[this.file].fd, this.filePage * P, this.prot))
    if (!fits) {
      expectCode(code, 'ERR_MMAP_OUT_OF_BOUNDS')
      return
    }
    if (!inFile) {
      expectCode(code, 'ERR_MMAP_BEYOND_EOF')
      return
    }
    expectCode(code, undefined)
    replace(m, a, b, (i) => ({ kind: 'fd', file: this.file, filePage: this.filePage + (i - a), prot: this.prot }))
    check(m, r)
  }
  toString(): string {
    return `addFdMapping(${this.page}p, ${this.size}, shm${this.file}, ${this.filePage}p, ${this.prot})`
  }
}

class AddAnon extends Cmd {
  constructor(
    readonly page: number,
    readonly size: number,
    readonly prot: ProtectionFlags,
  ) {
    super()
  }
  run(m: Model, r: Real): void {
    const offset = this.page * P
    const code = codeOf(() => r.arena.addAnonymous(offset, this.size, this.prot))
    if (offset + this.size > PAGES * P) {
      expectCode(code, 'ERR_MMAP_OUT_OF_BOUNDS')
      return
    }
    expectCode(code, undefined)
    const [a, b] = pageSpan(offset, this.size)
    replace(m, a, b, () => ({ kind: 'anonymous', prot: this.prot, data: new Uint8Array(P) }))
    check(m, r)
  }
  toString(): string {
    return `addAnonymous(${this.page}p, ${this.size}, ${this.prot})`
  }
}

class Remove extends Cmd {
  constructor(
    readonly page: number,
    readonly size: number,
  ) {
    super()
  }
  run(m: Model, r: Real): void {
    const offset = this.page * P
    const code = codeOf(() => r.arena.removeMapping(offset, this.size))
    if (offset + this.size > PAGES * P) {
      expectCode(code, 'ERR_MMAP_OUT_OF_BOUNDS')
      return
    }
    expectCode(code, undefined)
    const [a, b] = pageSpan(offset, this.size)
    replace(m, a, b, () => null)
    check(m, r)
  }
  toString(): string {
    return `removeMapping(${this.page}p, ${this.size})`
  }
}

class View extends Cmd {
  constructor(
    readonly offset: number,
    readonly len: number,
  ) {
    super()
  }
  run(m: Model, r: Real): void {
    let view: Buffer | undefined
    const code = codeOf(() => (view = r.arena.view(this.offset, this.len)))
    if (!allows(m, this.offset, this.len, Protection.READ_WRITE)) {
      expectCode(code, 'ERR_MMAP_ACCESS')
      return
    }
    if (NO_EXTERNAL) {
      // Without external buffers: the range's errors first, then this; no view to model.
      expectCode(code, 'ERR_MMAP_NO_EXTERNAL')
      return
    }
    expectCode(code, undefined)
    r.views.push(view as Buffer)
    m.views.push({ start: this.offset, end: this.offset + this.len, detached: false })
    check(m, r)
  }
  toString(): string {
    return `view(${this.offset}, ${this.len})`
  }
}

class ViewWrite extends Cmd {
  constructor(
    readonly index: number,
    readonly at: number,
    readonly value: number,
  ) {
    super()
  }
  check(m: Readonly<Model>): boolean {
    return m.views.length > 0 && super.check(m)
  }
  run(m: Model, r: Real): void {
    const i = this.index % m.views.length
    const v = m.views[i]
    const len = v.end - v.start
    const buf = r.views[i]
    if (len === 0) return
    const at = this.at % len
    buf[at] = this.value // a detached view ignores the write
    if (!v.detached) setByte(m, v.start + at, this.value)
    check(m, r)
  }
  toString(): string {
    return `views[${this.index}][${this.at}] = ${this.value}`
  }
}

/** `read`, or `readInto` a pre-filled target that a refused call must leave untouched. */
class Read extends Cmd {
  constructor(
    readonly offset: number,
    readonly len: number,
    readonly into = false,
  ) {
    super()
  }
  run(m: Model, r: Real): void {
    let got: Buffer | undefined
    const code = this.into
      ? codeOf(() => {
          got = Buffer.alloc(this.len, 0xa5)
          r.arena.readInto(this.offset, got)
        })
      : codeOf(() => (got = r.arena.read(this.offset, this.len)))
    if (!allows(m, this.offset, this.len, Protection.READ)) {
      expectCode(code, 'ERR_MMAP_ACCESS')
      if (this.into && got?.some((b) => b !== 0xa5)) throw new Error('a refused readInto changed its target')
      return
    }
    expectCode(code, undefined)
    for (let i = 0; i < this.len; i++) {
      const want = byteAt(m, this.offset + i)
      if (got?.[i] !== want) throw new Error(`read byte ${this.offset + i}: ${got?.[i]} != model ${want}`)
    }
    check(m, r)
  }
  toString(): string {
    return this.into ? `readInto(${this.offset}, Buffer(${this.len}))` : `read(${this.offset}, ${this.len})`
  }
}

class Write extends Cmd {
  constructor(
    readonly offset: number,
    readonly data: Uint8Array,
  ) {
    super()
  }
  run(m: Model, r: Real): void {
    const code = codeOf(() => r.arena.write(this.offset, this.data))
    if (!allows(m, this.offset, this.data.length, Protection.WRITE)) {
      expectCode(code, 'ERR_MMAP_ACCESS')
      return
    }
    expectCode(code, undefined)
    this.data.forEach((b, i) => {
      setByte(m, this.offset + i, b)
    })
    check(m, r)
  }
  toString(): string {
    return `write(${this.offset}, [${this.data.length} bytes])`
  }
}

class Msync extends Cmd {
  constructor(
    readonly page: number,
    readonly size: number,
  ) {
    super()
  }
  run(m: Model, r: Real): void {
    const code = codeOf(() => r.arena.msync(this.page * P, this.size))
    // msync over reserved holes succeeds: the reservation is a mapping too.
    expectCode(code, this.page * P + this.size > PAGES * P ? 'ERR_MMAP_OUT_OF_BOUNDS' : undefined)
    check(m, r)
  }
  toString(): string {
    return `msync(${this.page}p, ${this.size})`
  }
}

class Close extends Cmd {
  run(m: Model, r: Real): void {
    r.arena.close()
    for (const v of m.views) v.detached = true
    m.closed = true
    r.views.forEach((buf, i) => {
      if (buf.byteLength !== 0) throw new Error(`view ${i} still attached after close`)
    })
    expectCode(
      codeOf(() => r.arena.read(0, 1)),
      'ERR_MMAP_CLOSED',
    )
    expectCode(
      codeOf(() => r.arena.mappings()),
      'ERR_MMAP_CLOSED',
    )
  }
  toString(): string {
    return 'close()'
  }
}

function expectCode(actual: string | undefined, expected: string | undefined): void {
  if (actual !== expected) throw new Error(`expected ${expected ?? 'success'}, got ${actual ?? 'success'}`)
}

const page = fc.integer({ min: 0, max: PAGES - 1 })
const size = fc.oneof(
  fc.integer({ min: 1, max: 6 }).map((n) => n * P),
  fc.integer({ min: 1, max: 5 * P }),
)
const prot = fc.constantFrom(...PROTS)
const byteOffset = fc.integer({ min: 0, max: PAGES * P - 1 })
const shortLen = fc.integer({ min: 0, max: 2 * P })

const commands = fc.commands(
  [
    fc.oneof(
      {
        weight: 12,
        arbitrary: fc
          .tuple(page, size, fc.integer({ min: 0, max: 1 }), fc.integer({ min: 0, max: FILE_PAGES - 1 }), prot)
          .map((a): Cmd => new AddFd(...a)),
      },
      { weight: 6, arbitrary: fc.tuple(page, size, prot).map((a): Cmd => new AddAnon(...a)) },
      { weight: 8, arbitrary: fc.tuple(page, size).map((a): Cmd => new Remove(...a)) },
      {
        weight: 10,
        arbitrary: fc
          .tuple(byteOffset, shortLen)
          .filter(([o, l]) => o + l <= PAGES * P)
          .map((a): Cmd => new View(...a)),
      },
      { weight: 10, arbitrary: fc.tuple(fc.nat(), fc.nat(), fc.integer({ min: 1, max: 255 })).map((a): Cmd => new ViewWrite(...a)) },
      {
        weight: 12,
        arbitrary: fc
          .tuple(byteOffset, fc.integer({ min: 0, max: 600 }), fc.boolean())
          .filter(([o, l]) => o + l <= PAGES * P)
          .map((a): Cmd => new Read(...a)),
      },
      {
        weight: 12,
        arbitrary: fc
          .tuple(byteOffset, fc.uint8Array({ minLength: 1, maxLength: 300 }))
          .filter(([o, d]) => o + d.length <= PAGES * P)
          .map((a): Cmd => new Write(...a)),
      },
      { weight: 4, arbitrary: fc.tuple(page, fc.integer({ min: 0, max: 3 * P })).map((a): Cmd => new Msync(...a)) },
      { weight: 1, arbitrary: fc.constant<Cmd>(new Close()) },
    ),
  ],
  { maxCommands: MAX_COMMANDS, size: 'max' },
)

test('arena behaves like its model over 100,000+ random operations', (t) => {
  opsRun = 0
  fc.assert(
    fc.property(commands, (cmds) => {
      const shms = [SharedMemory.create('model-a', FILE_PAGES * P), SharedMemory.create('model-b', FILE_PAGES * P)]
      const arena = MemoryMappingArena.reserve(PAGES * P)
      const model: Model = {
        pages: Array.from({ length: PAGES }, () => null),
        files: shms.map(() => new Uint8Array(FILE_PAGES * P)),
        views: [],
        closed: false,
      }
      try {
        fc.modelRun(() => ({ model, real: { arena, shms, views: [] } }), cmds)
      } finally {
        arena.close()
        for (const s of shms) s.close()
      }
    }),
    { seed: SEED, numRuns: RUNS, verbose: 1 },
  )
  t.log(`seed ${SEED}: ${RUNS} sequences, ${opsRun} operations checked`)
  if (RUNS >= 1000) t.true(opsRun >= 100_000, `${opsRun} operations`)
  else t.pass()
})
