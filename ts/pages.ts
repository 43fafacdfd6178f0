/**
 * Guest pages as a byte stream: {@link writePages} writes page runs of a {@link GuestMemory} to a
 * stream or a file descriptor, {@link readPages} applies them to another one — live migration's
 * pre-copy rounds (every page, then the pages {@link GuestMemory.takeDirty} names), or guest
 * memory sent down a pipe. One call writes, or reads, one page stream:
 *
 * | bytes | what |
 * |---|---|
 * | 4 | the magic `MRPG` |
 * | 2 | the format version, 1 (u16, little-endian) |
 * | 2 | flags, 0 (u16; a reader refuses any it does not know) |
 * | 12 + n, repeated | a run: its guest-physical address (u64), its length n > 0 (u32), then its n bytes |
 * | 12 | the end: address 2^64 - 1, length 0 |
 *
 * Integers are little-endian. A writer's runs are whole pages, at most 256 KiB each (a longer run
 * is split); a reader takes any run that lies in its guest's regions. Streams follow one another
 * on one connection: a reader consumes its stream up to the end marker and not one byte more.
 */
import { read as fsRead, write as fsWrite } from 'node:fs'
import { constants as osConstants } from 'node:os'
import { Readable, Writable } from 'node:stream'
import { types } from 'node:util'
import { PAGE_SIZE } from './constants.js'
import { bitRuns, type DirtyBitmap } from './dirty.js'
import { guestError, invalidArgType, invalidArgValue, outOfRange, type MappedRegionError } from './errors.js'
import { GuestMemory, type GuestRegion } from './guest.js'
import * as v from './validate.js'

/**
 * Which pages {@link writePages} writes: `'all'` — every page of every region — or the pages set
 * in bitmaps as {@link GuestMemory.takeDirty} returns them (each entry's region must be in the
 * guest memory written from).
 */
export type PageSelection = 'all' | readonly DirtyBitmap[]

/**
 * Where {@link writePages} writes: a `Writable` stream (a `net.Socket`, a pipe's or a file's
 * stream, a `PassThrough`…), or a file descriptor (written with `fs.write` on the thread pool,
 * from its current position: a regular file, or a pipe or socket in blocking mode).
 */
export type PageSink = Writable | number

/**
 * Where {@link readPages} reads from: a `Readable` stream in paused mode (no `'data'` listener;
 * bytes, not objects or strings), or a file descriptor (read with `fs.read` on the thread pool,
 * from its current position).
 */
export type PageSource = Readable | number

/** What {@link writePages} wrote, or {@link readPages} applied. */
export interface PageStreamSummary {
  /** Runs in the stream. */
  runs: number
  /** Guest bytes they carry (for a writer: whole pages). */
  bytes: number
}

const MAGIC = 0x4750524d // 'MRPG' read as a little-endian u32
const VERSION = 1
const HEADER = 8
const RUN_HEADER = 12
/** The longest run a writer puts in one frame, and the most a reader asks of its source at once. */
const MAX_RUN = 256 * 1024
/** The end marker's address: 2^64 - 1, as two u32 halves. */
const END = 0xffff_ffff
/** Selections longer than this are refused: no guest memory has more regions (`vm.max_map_count`). */
const MAX_BITMAPS = 1 << 16

// The GuestMemory methods used, taken once: an object's own properties cannot stand in for them.
const guestRegions = GuestMemory.prototype.regions
const guestReadInto = GuestMemory.prototype.readInto
const guestWrite = GuestMemory.prototype.write

/**
 * Writes the pages `selection` names, read from `guest`, to `target` as one page stream (see the
 * module's description for the format), honouring backpressure: a stream is written no faster
 * than it drains, an fd one write at a time. Pages are read as they are when their run is
 * written (with a running guest, a later round sends what changed since its `takeDirty()`).
 * Nothing is written before every argument is checked and every run is found in the guest's
 * regions; an error later (the guest closed or a region removed meanwhile, the target failing)
 * leaves a stream without its end marker, which a reader refuses as truncated.
 * @param guest the guest memory to read
 * @param selection `'all'`, or the bitmaps `guest.takeDirty()` returned
 * @param target a `Writable` stream or a file descriptor; it is not ended or closed
 * @returns once the end marker has been handed to the target (for a stream: its write callback
 * ran), the runs and bytes written.
 * @throws (rejects) `ERR_INVALID_ARG_TYPE`; `ERR_INVALID_ARG_VALUE` (a bitmap of the wrong length
 * or with bits past its region's pages, a destroyed or ended stream, an object-mode stream);
 * `ERR_MMAP_UNALIGNED`, `ERR_OUT_OF_RANGE`; `ERR_GUEST_ADDRESS` (a selected page outside the
 * guest's regions); `ERR_MMAP_CLOSED`; the errors of `readInto`, and the target's own.
 * @example
 * guest.takeDirty()                                   // from here on, writes are tracked
 * await writePages(guest, 'all', socket)              // round 0, while the vCPU runs
 * await writePages(guest, guest.takeDirty(), socket)  // the pages written since
 */
export async function writePages(guest: GuestMemory, selection: PageSelection, target: PageSink): Promise<PageStreamSummary> {
  const g = guestArg(guest)
  const table = tableOf(g)
  const runs = selection === 'all' ? allRuns(table) : selectedRuns(selectionArg(selection), table)
  const sink = typeof target === 'number' ? new FdSink(fdArg('target', target)) : new StreamSink(writableArg(target))
  try {
    const header = sink.frame(HEADER)
    header.writeUInt32LE(MAGIC, 0)
    header.writeUInt16LE(VERSION, 4)
    header.writeUInt16LE(0, 6)
    await sink.write(header)
    let bytes = 0
    for (let i = 0; i < runs.length; i += 2) {
      const addr = runs[i]
      const len = runs[i + 1]
      const frame = sink.frame(RUN_HEADER + len)
      writeRunHeader(frame, addr, len)
      guestReadInto.call(g, addr, frame.subarray(RUN_HEADER))
      await sink.write(frame)
      bytes += len
    }
    const end = sink.frame(RUN_HEADER)
    end.writeUInt32LE(END, 0)
    end.writeUInt32LE(END, 4)
    end.writeUInt32LE(0, 8)
    await sink.write(end, true)
    return { runs: runs.length / 2, bytes }
  } finally {
    sink.release()
  }
}

/**
 * Reads one page stream from `source` and applies its runs to `guest` with `guest.write`, each
 * as it arrives (a GuestMemory with `trackDirty` marks them), stopping right after the end marker:
 * what follows on the source is left for the next reader. Each run is checked against the guest's
 * regions before its bytes are read. On an error the source is left where it was found (a run
 * may be applied in part): close it.
 * @param guest the guest memory to write
 * @param source a paused `Readable` stream, or a file descriptor
 * @returns the runs and bytes applied.
 * @throws (rejects) `ERR_INVALID_ARG_TYPE`; `ERR_INVALID_ARG_VALUE` (not a page stream, another
 * version, unknown flags, an empty run, a stream that ends before the end marker — "truncated" —,
 * a destroyed or object-mode stream); `ERR_GUEST_ADDRESS` (a run outside the guest's regions);
 * `ERR_MMAP_CLOSED`, `ERR_MMAP_ACCESS` (a read-only region); the source's own errors.
 * @example
 * const { bytes } = await readPages(guest, socket)   // one round, as the source wrote it
 */
export async function readPages(guest: GuestMemory, source: PageSource): Promise<PageStreamSummary> {
  const g = guestArg(guest)
  const table = tableOf(g)
  const input = typeof source === 'number' ? new FdSource(fdArg('source', source)) : new StreamSource(readableArg(source))
  try {
    const header = await input.take(HEADER, 'the stream header')
    if (header.readUInt32LE(0) !== MAGIC) {
      throw invalidArgValue('source', `is not a page stream: it starts with 0x${header.toString('hex', 0, 4)}, not "MRPG"`, source)
    }
    const version = header.readUInt16LE(4)
    if (version !== VERSION) throw invalidArgValue('source', `is a page stream of version ${version}; this one reads ${VERSION}`, source)
    const flags = header.readUInt16LE(6)
    if (flags !== 0)
      throw invalidArgValue('source', `is a page stream with flags 0x${flags.toString(16)}, which this version does not know`, source)
    let runs = 0
    let bytes = 0
    for (;;) {
      const run = await input.take(RUN_HEADER, `the header of run ${runs}`)
      const low = run.readUInt32LE(0)
      const high = run.readUInt32LE(4)
      const len = run.readUInt32LE(8)
      if (len === 0) {
        if (low === END && high === END) return { runs, bytes }
        throw invalidArgValue('source', `has an empty run (${runs}) that is not the end marker`, source)
      }
      // Above 2^53 no region can be: the guest's addresses are reserved in this process.
      const addr = high < 0x20_0000 ? high * 0x1_0000_0000 + low : -1
      if (addr < 0 || !covered(table, addr, len)) {
        throw guestError(
          'ERR_GUEST_ADDRESS',
          `Run ${runs} of the page stream, 0x${(BigInt(high) << 32n) | BigInt(low)}n + ${len} bytes, is not inside the guest's regions`,
        )
      }
      for (let done = 0; done < len; ) {
        const piece = await input.take(Math.min(MAX_RUN, len - done), `the bytes of run ${runs}`)
        guestWrite.call(g, addr + done, piece)
        done += piece.length
      }
      runs++
      bytes += len
    }
  } finally {
    input.release()
  }
}

/** Writes a run header (address, length) at the start of `frame`. */
function writeRunHeader(frame: Buffer, addr: number, len: number): void {
  frame.writeUInt32LE(addr % 0x1_0000_0000, 0)
  frame.writeUInt32LE(Math.floor(addr / 0x1_0000_0000), 4)
  frame.writeUInt32LE(len, 8)
}

// ---------------------------------------------------------------------------------------------
// Arguments, each read once.

function guestArg(value: unknown): GuestMemory {
  if (!(value instanceof GuestMemory) || types.isProxy(value)) throw invalidArgType('guest', 'a GuestMemory', value)
  return value
}

/** The guest's regions as `[start, end)` pairs of safe integers, sorted: read once per call. */
function tableOf(g: GuestMemory): number[] {
  let regions: GuestRegion[]
  try {
    regions = guestRegions.call(g)
  } catch (e) {
    // An object that only inherits from GuestMemory.prototype has none of its private state.
    if (e instanceof TypeError && (e as MappedRegionError).code === undefined) throw invalidArgType('guest', 'a GuestMemory', g)
    throw e
  }
  const table: number[] = []
  for (const r of regions) table.push(Number(r.guestAddress), Number(r.guestAddress) + r.size)
  return table
}

/** Whether `[addr, addr + len)` lies in regions that follow each other without a gap. */
function covered(table: readonly number[], addr: number, len: number): boolean {
  const end = addr + len
  let at = addr
  for (let i = 0; i < table.length && at < end; i += 2) {
    if (table[i + 1] <= at) continue
    if (table[i] > at) return false
    at = table[i + 1]
  }
  return at >= end
}

/** Every region, in runs of at most MAX_RUN bytes: `[addr, len, addr, len…]`. */
function allRuns(table: readonly number[]): number[] {
  const runs: number[] = []
  for (let i = 0; i < table.length; i += 2) split(runs, table[i], table[i + 1] - table[i])
  return runs
}

/** Appends `[addr, len)` to `runs` as runs of at most MAX_RUN bytes. */
function split(runs: number[], addr: number, len: number): void {
  for (let done = 0; done < len; done += MAX_RUN) runs.push(addr + done, Math.min(MAX_RUN, len - done))
}

/** One checked entry of a selection: its region's start and pages, and a copy of its bits. */
interface Selected {
  start: number
  pages: number
  words: Uint32Array
}

function selectionArg(value: unknown): Selected[] {
  const expected = "'all' or an array of dirty bitmaps (what GuestMemory.takeDirty() returns)"
  if (!Array.isArray(value) || types.isProxy(value)) throw invalidArgType('selection', expected, value)
  const count = value.length
  if (count > MAX_BITMAPS) throw outOfRange('selection.length', `at most ${MAX_BITMAPS}`, count)
  const out: Selected[] = []
  for (let i = 0; i < count; i++) {
    const name = `selection[${i}]`
    const raw: unknown = value[i]
    if (raw === null || typeof raw !== 'object') throw invalidArgType(name, 'a dirty bitmap object', raw)
    const o = v.options(name, raw, ['guestAddress', 'size', 'bitmap'])
    const start = v.wholePages(`${name}.guestAddress`, address(`${name}.guestAddress`, o.guestAddress))
    const size = v.wholePages(`${name}.size`, v.safeInteger(`${name}.size`, o.size))
    if (size === 0) throw outOfRange(`${name}.size`, 'greater than 0', size)
    if (v.typedArrayKind(o.bitmap) !== 'BigUint64Array') throw invalidArgType(`${name}.bitmap`, 'a BigUint64Array', o.bitmap)
    const pages = size / PAGE_SIZE
    const bits = v.bytes(`${name}.bitmap`, o.bitmap)
    const length = v.byteLength(bits)
    if (length !== Math.ceil(pages / 64) * 8) {
      throw invalidArgValue(
        `${name}.bitmap`,
        `must have ${Math.ceil(pages / 64)} words, one bit per page of the region (${pages} pages)`,
        o.bitmap,
      )
    }
    // A copy: the caller's array may change while the stream is written.
    const words = new Uint32Array(new Uint8Array(bits).buffer)
    const last = pages >>> 5
    if (last < words.length && words[last] >>> (pages & 31) !== 0) {
      throw invalidArgValue(`${name}.bitmap`, `has bits set past the region's ${pages} pages`, o.bitmap)
    }
    for (let w = last + 1; w < words.length; w++) {
      if (words[w] !== 0) throw invalidArgValue(`${name}.bitmap`, `has bits set past the region's ${pages} pages`, o.bitmap)
    }
    out.push({ start, pages, words })
  }
  return out
}

/** A guest address, `bigint` or `number`, narrowed to a safe integer. */
function address(name: string, value: unknown): number {
  if (typeof value === 'bigint') {
    const n = v.bigintIndex(value)
    if (n < 0) throw outOfRange(name, `>= 0 and <= ${Number.MAX_SAFE_INTEGER}`, `${value}n`)
    return n
  }
  if (typeof value !== 'number') throw invalidArgType(name, 'of type bigint or number', value)
  return v.safeInteger(name, value)
}

/**
 * The runs of set bits of every selected bitmap, in runs of at most MAX_RUN bytes, each checked
 * to lie in the guest's regions (`ERR_GUEST_ADDRESS` before anything is written).
 */
function selectedRuns(selection: readonly Selected[], table: readonly number[]): number[] {
  const runs: number[] = []
  for (const { start, pages, words } of selection) {
    for (const [first, count] of bitRuns(words, pages)) addRun(runs, table, start + first * PAGE_SIZE, count * PAGE_SIZE)
  }
  return runs
}

function addRun(runs: number[], table: readonly number[], addr: number, len: number): void {
  if (!covered(table, addr, len)) {
    throw guestError('ERR_GUEST_ADDRESS', `The selected pages at 0x${addr.toString(16)} (${len} bytes) are not inside the guest's regions`)
  }
  split(runs, addr, len)
}

function fdArg(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 0 || value > 0x7fff_ffff) throw outOfRange(name, 'a file descriptor (an integer >= 0)', value)
  return value
}

function writableArg(value: unknown): Writable {
  if (!(value instanceof Writable) || types.isProxy(value)) throw invalidArgType('target', 'a Writable stream or a file descriptor', value)
  if (value.destroyed || value.writableEnded) throw invalidArgValue('target', 'is a stream already destroyed or ended', value)
  if (value.writableObjectMode) throw invalidArgValue('target', 'is an object-mode stream (it takes bytes here)', value)
  return value
}

function readableArg(value: unknown): Readable {
  if (!(value instanceof Readable) || types.isProxy(value)) throw invalidArgType('source', 'a Readable stream or a file descriptor', value)
  if (value.destroyed) throw invalidArgValue('source', 'is a stream already destroyed', value)
  if (value.readableObjectMode || value.readableEncoding !== null) {
    throw invalidArgValue('source', 'is an object-mode stream, or one that decodes strings (setEncoding): it must give bytes', value)
  }
  if (value.readableFlowing === true) throw invalidArgValue('source', "is flowing (a 'data' listener takes its bytes): pause it", value)
  return value
}

// ---------------------------------------------------------------------------------------------
// Targets and sources.

interface Sink {
  /** A buffer of `size` bytes for the next frame. */
  frame(size: number): Buffer
  /** Hands `frame` over; with `last`, resolves once the target has taken it. */
  write(frame: Buffer, last?: boolean): Promise<void>
  release(): void
}

/**
 * A stream: each frame is a buffer of its own (a stream may hold on to what it was given — a
 * `PassThrough` hands the very buffer to its reader — so none is reused), written no faster than
 * the stream drains.
 */
class StreamSink implements Sink {
  readonly #stream: Writable
  #failure: Error | undefined
  #wake: (() => void) | undefined
  readonly #onError = (e: Error): void => this.#fail(e)
  readonly #onClose = (): void => this.#fail(invalidArgValue('target', 'closed before the page stream was written', this.#stream))
  readonly #onDrain = (): void => this.#wakeUp()

  constructor(stream: Writable) {
    this.#stream = stream
    stream.on('error', this.#onError)
    stream.on('close', this.#onClose)
    stream.on('drain', this.#onDrain)
  }

  frame(size: number): Buffer {
    return Buffer.allocUnsafe(size)
  }

  async write(frame: Buffer, last = false): Promise<void> {
    this.#check()
    if (last) {
      await new Promise<void>((resolve, reject) => {
        this.#stream.write(frame, (e) => (e ? reject(e) : resolve()))
      })
      return
    }
    if (this.#stream.write(frame)) return
    while (this.#stream.writableNeedDrain) {
      await new Promise<void>((resolve) => {
        this.#wake = resolve
      })
      this.#check()
    }
  }

  #fail(e: Error): void {
    this.#failure ??= e
    this.#wakeUp()
  }

  #wakeUp(): void {
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
  }

  #check(): void {
    if (this.#failure !== undefined) throw this.#failure
  }

  release(): void {
    this.#stream.off('error', this.#onError)
    this.#stream.off('close', this.#onClose)
    this.#stream.off('drain', this.#onDrain)
  }
}

/** An fd: one buffer, reused (each write completes before the next frame is read into it). */
class FdSink implements Sink {
  readonly #fd: number
  #buffer = Buffer.allocUnsafeSlow(RUN_HEADER + MAX_RUN)

  constructor(fd: number) {
    this.#fd = fd
  }

  frame(size: number): Buffer {
    return this.#buffer.subarray(0, size)
  }

  async write(frame: Buffer): Promise<void> {
    for (let done = 0; done < frame.length; ) {
      done += await new Promise<number>((resolve, reject) => {
        fsWrite(this.#fd, frame, done, frame.length - done, null, (e, n) => (e ? reject(systemError(e, 'write')) : resolve(n)))
      })
    }
  }

  release(): void {
    this.#buffer = Buffer.alloc(0)
  }
}

interface Source {
  /** The next `size` bytes; `what` names them for the error if the source ends first. */
  take(size: number, what: string): Promise<Buffer>
  release(): void
}

/** A paused stream, read with `read(size)`: never more than asked, so what follows stays in it. */
class StreamSource implements Source {
  readonly #stream: Readable
  #failure: Error | undefined
  #ended = false
  #wake: (() => void) | undefined
  #taken = 0
  readonly #onReadable = (): void => this.#wakeUp()
  readonly #onEnd = (): void => {
    this.#ended = true
    this.#wakeUp()
  }
  readonly #onError = (e: Error): void => {
    this.#failure ??= e
    this.#wakeUp()
  }
  readonly #onClose = (): void => {
    this.#ended = true
    this.#wakeUp()
  }

  constructor(stream: Readable) {
    this.#stream = stream
    this.#ended = stream.readableEnded
    stream.on('readable', this.#onReadable)
    stream.on('end', this.#onEnd)
    stream.on('error', this.#onError)
    stream.on('close', this.#onClose)
  }

  async take(size: number, what: string): Promise<Buffer> {
    for (;;) {
      if (this.#failure !== undefined) throw this.#failure
      const chunk: unknown = this.#stream.read(size)
      if (chunk !== null) {
        if (!Buffer.isBuffer(chunk)) throw invalidArgValue('source', 'gave something other than bytes', this.#stream)
        if (chunk.length < size) throw truncated(this.#stream, this.#taken + chunk.length, what)
        this.#taken += size
        return chunk
      }
      if (this.#ended || this.#stream.destroyed) throw truncated(this.#stream, this.#taken, what)
      await new Promise<void>((resolve) => {
        this.#wake = resolve
      })
    }
  }

  #wakeUp(): void {
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
  }

  release(): void {
    this.#stream.off('readable', this.#onReadable)
    this.#stream.off('end', this.#onEnd)
    this.#stream.off('error', this.#onError)
    this.#stream.off('close', this.#onClose)
  }
}

/** An fd, read with `fs.read` into one buffer, reused: exact counts, so nothing is read past the end marker. */
class FdSource implements Source {
  readonly #fd: number
  #buffer = Buffer.allocUnsafeSlow(MAX_RUN)
  #taken = 0

  constructor(fd: number) {
    this.#fd = fd
  }

  async take(size: number, what: string): Promise<Buffer> {
    const out = this.#buffer.subarray(0, size)
    for (let done = 0; done < size; ) {
      const n = await new Promise<number>((resolve, reject) => {
        fsRead(this.#fd, out, done, size - done, null, (e, count) => (e ? reject(systemError(e, 'read')) : resolve(count)))
      })
      if (n === 0) throw truncated(this.#fd, this.#taken + done, what)
      done += n
    }
    this.#taken += size
    return out
  }

  release(): void {
    this.#buffer = Buffer.alloc(0)
  }
}

/**
 * A failed `fs` call's error in Node's shape — `code`, a negative `errno`, `syscall` — as every
 * failed syscall of this package is: Deno 2.9's `fs.write` gives only the `code`.
 */
function systemError(e: NodeJS.ErrnoException, syscall: string): NodeJS.ErrnoException {
  const errno = typeof e.code === 'string' ? (osConstants.errno as Record<string, number | undefined>)[e.code] : undefined
  if (typeof e.errno !== 'number' && errno !== undefined) {
    e.errno = -errno
    e.syscall ??= syscall
  }
  return e
}

/** `ERR_INVALID_ARG_VALUE`: `source` ended `at` bytes into the page stream, before `what`. */
function truncated(source: unknown, at: number, what: string): MappedRegionError {
  return invalidArgValue('source', `is truncated: it ended ${at} bytes into the page stream, before the end of ${what}`, source)
}
