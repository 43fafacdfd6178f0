/**
 * Typed little-endian access without allocation (`readU8`…`writeU64`, and atomic 4- and 8-byte
 * loads, stores and compare-exchanges), shared by every region and `GuestMemory`.
 *
 * The fast path is a `DataView` (or, for atomics, a `Uint32Array`/`BigUint64Array`) over a
 * *window*: a view the native side made over memory that may be touched directly — mapped
 * `READ | WRITE` and unable to vanish (anonymous memory, a memfd sealed against shrinking), the
 * core's `AnyRegion::window`. Windows are detached like any view when memory under them changes
 * (a removal, an overlay, a protection without `READ | WRITE`, `close()`); an access through a
 * detached one throws inside V8 and is retried here on the slow path. They are never handed to
 * user code, and only touched by built-ins called with checked numbers (nothing can call back
 * into JavaScript while they run), so a detached window never leaves memory held.
 *
 * The slow path is the checked copy (`readInto`/`write` of 1–8 bytes through a scratch buffer),
 * with its errors: used for memory without a window (a file someone could truncate, read-only
 * memory, a device), for an access across a window's edge, and for every refused access (the
 * copy throws its error). Atomics have no copy: the native `atomicCheck` throws why one is
 * refused (bounds, alignment, memory that may not be touched directly); one that may be made
 * where there is no window (a region shared with other threads hands out none: another thread
 * could change memory under it) is the core's checked atomic operation, under the region's lock.
 */
import { invalidArgType, outOfRange } from './errors.js'
import { regionAtomic32, regionAtomic64 } from './calls.js'
import { bigintIndex, memoryOf } from './validate.js'

/** The operations of the native atomics (`regionAtomic32/64`). */
const LOAD = 0
const STORE = 1
const CAS = 2

/** A window answer of the native side: see {@link TypedAccess.typedWindow}. */
export type WindowAnswer = readonly [number, number, Uint8Array | undefined] | undefined

const EMPTY = new ArrayBuffer(0)
const NO_VIEW = new DataView(EMPTY)
const NO_U32 = new Uint32Array(EMPTY)
const NO_U64 = new BigUint64Array(EMPTY)
const MAX_U64 = (1n << 64n) - 1n

// Scratch for the slow path: one 8-byte buffer, a Uint8Array per width and a DataView.
// Nothing re-enters between filling and reading it (the checked copies run no user code).
const SCRATCH = new ArrayBuffer(8)
const S1 = new Uint8Array(SCRATCH, 0, 1)
const S2 = new Uint8Array(SCRATCH, 0, 2)
const S4 = new Uint8Array(SCRATCH, 0, 4)
const S8 = new Uint8Array(SCRATCH, 0, 8)
const SV = new DataView(SCRATCH)
const SCRATCH_BY_WIDTH = { 1: S1, 2: S2, 4: S4, 8: S8 } as const

function u8(value: unknown): number {
  if (typeof value !== 'number') throw invalidArgType('value', 'of type number', value)
  if ((value & 0xff) !== value) throw outOfRange('value', '>= 0 and <= 255 (an integer)', value)
  return value
}
function u16(value: unknown): number {
  if (typeof value !== 'number') throw invalidArgType('value', 'of type number', value)
  if ((value & 0xffff) !== value) throw outOfRange('value', '>= 0 and <= 65535 (an integer)', value)
  return value
}
function u32(name: string, value: unknown): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value)
  if (value >>> 0 !== value) throw outOfRange(name, '>= 0 and <= 4294967295 (an integer)', value)
  return value
}
function u64(name: string, value: unknown): bigint {
  if (typeof value !== 'bigint') throw invalidArgType(name, 'of type bigint', value)
  if (value < 0n || value > MAX_U64) throw outOfRange(name, '>= 0n and <= 2n ** 64n - 1n', `${value}n`)
  return value
}

/** A window the native side made, with the typed arrays over it. */
interface Window {
  start: number
  length: number
  view: DataView
  u32: Uint32Array
  u64: BigUint64Array
  /** When it was last made current (for eviction). */
  used: number
}

/** No window: an access never fits in it. */
const NO_WINDOW: Window = { start: 0, length: 0, view: NO_VIEW, u32: NO_U32, u64: NO_U64, used: 0 }

/**
 * Windows kept per object: one per mapping a device loop touches (a guest region, an overlay), so
 * that accesses alternating between them switch windows instead of asking for new ones. A window
 * is an external buffer as long as its mapping (up to 1 GiB), which the engine counts against its
 * heap: making one per switch makes it collect without pause.
 */
const MAX_WINDOWS = 64
/**
 * With every window kept, a new one replaces the least recently used only if that one has not
 * been used for this many slow-path lookups; until then the access takes the checked copy. So an
 * access pattern over more mappings than {@link MAX_WINDOWS} (random accesses over thousands of
 * overlays) makes no window per access, and a working set that moves on still gets its windows.
 */
const WINDOW_AGE = 4 * MAX_WINDOWS
/** Ranges without a window kept per object (until its memory next changes); beyond, none is asked for. */
const MAX_MISSES = 64

/**
 * The typed accesses of a region (byte offsets) or a `GuestMemory` (guest addresses),
 * over its windows: their base class, so that an access is one method call. Offsets are
 * checked by the window test itself: `rel >>> 0 === rel` holds only for an integer in
 * `[0, 2^32)`, and a window is at most 1 GiB. A bigint address (where the subclass takes one)
 * is converted by {@link bigintIndex} (without allocating) before the same test. Not exported from
 * the package: its subclasses are.
 * @hidden
 */
export abstract class TypedAccess<At> implements TypedMemory<At> {
  /**
   * The current window (or {@link NO_WINDOW}). Switching stores this one reference: a window's
   * fields are written once, when it is made (a start beyond 2^30 is a heap number, and writing
   * one into a field on every switch would allocate).
   */
  #w: Window = NO_WINDOW
  /** The windows kept, at most {@link MAX_WINDOWS}; they never overlap. */
  #windows: Window[] = []
  #tick = 0
  /** Ranges `[start, start + length)` found without a window, flattened; valid in {@link #missEpoch}. */
  #misses: number[] = []
  #missEpoch = -1
  /** Whether every store is reported to {@link typedStored} (a `GuestMemory` tracking dirty pages). */
  #notify = false
  /** Whether bigint addresses are taken (as guest addresses below 2^53). */
  #bigints = false

  /**
   * The native answer around `at` (a non-negative safe integer): `[start, length, buffer]`,
   * `[start, length, undefined]` where memory may not be touched directly, `undefined` in a hole.
   * The buffer is `length` bytes over `[start, start + length)`.
   */
  protected abstract typedWindow(at: number): WindowAnswer
  /** Changes whenever the memory may have changed: a "no window here" is kept until then. */
  protected abstract typedEpoch(): number
  /** A bigint address as a number (a guest address narrowed), or the error a bigint gets. */
  protected abstract typedAddress(at: bigint): number
  /** The checked copy out, with every error of `readInto`. */
  protected abstract typedCopyOut(at: unknown, target: Uint8Array): void
  /** The checked copy in, with every error of `write`. */
  protected abstract typedCopyIn(at: unknown, data: Uint8Array): void
  /** Throws the error an atomic access of `width` bytes at `at` gets; returns if it may be made. */
  protected abstract typedAtomicCheck(at: unknown, width: 4 | 8): void
  /** The native handle whose offsets are this object's addresses (for the native atomics). */
  protected abstract typedHandle(): number
  /** The address of the last {@link #atomic} as a number (checked once it returns -1). */
  #nativeAt = 0

  /**
   * The native handle of `memory`, for an object of the facade built over another one (a
   * `GuestMemory` over its arena): its guest entry points take the arena's handle.
   */
  protected typedHandleOf(memory: TypedAccess<unknown>): number {
    return memory.typedHandle()
  }

  /** The typed-access epoch of `memory` (see {@link typedHandleOf}): its changes expire this one's misses too. */
  protected typedEpochOf(memory: TypedAccess<unknown>): number {
    return memory.typedEpoch()
  }

  /** From now on, report every store that succeeded to {@link typedStored}. */
  protected notifyStores(): void {
    this.#notify = true
  }

  /**
   * From now on, take bigint addresses on the fast path: those in `[0, 2^53)` are the numbers
   * {@link typedAddress} would give; any other goes to it (and gets its error).
   */
  protected takeBigintAddresses(): void {
    this.#bigints = true
  }

  /** After a store of `width` bytes at `at` (valid: it succeeded), once {@link notifyStores} was called. */
  protected typedStored(_at: unknown, _width: number): void {}

  /**
   * A bigint address as a number: its value where bigints are taken and it is below 2^53
   * ({@link bigintIndex}), else what {@link typedAddress} answers (its error).
   */
  #address(at: bigint): number {
    const n = this.#bigints ? bigintIndex(at) : -1
    return n >= 0 ? n : this.typedAddress(at)
  }

  /** The window offset of `[at, at + width)`, or -1 when it is not inside the current window. */
  #at(at: unknown, width: number): number {
    if (typeof at !== 'number') return -1
    const w = this.#w
    const rel = at - w.start
    return rel >>> 0 === rel && rel + width <= w.length ? rel : -1
  }

  /** Makes `w` the current window. */
  #use(w: Window): void {
    w.used = ++this.#tick
    this.#w = w
  }

  /** The current window was found detached: forgets it. */
  #drop(): void {
    const i = this.#windows.indexOf(this.#w)
    if (i >= 0) this.#windows.splice(i, 1)
    this.#w = NO_WINDOW
  }

  /** The index of the window of `windows` (sorted by start) that starts last at or before `at` (-1: none). */
  #findIn(windows: Window[], at: number): number {
    let lo = 0
    let hi = windows.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      if (windows[mid].start <= at) lo = mid + 1
      else hi = mid - 1
    }
    return hi
  }

  /**
   * The window offset of `[at, at + width)` (`at` a number or bigint address, as passed: it is
   * converted here, so that no caller passes a heap number on), making the window that holds it
   * current — a kept one, or one asked for — or -1 where no window holds it (the access takes the
   * checked copy). A kept window found detached (its memory changed) is forgotten. A bigint where
   * this class takes none gets {@link typedAddress}'s error.
   */
  #locate(at: unknown, width: number): number {
    // `at + 0` makes every branch a float64 result: a bigint's number merged with the tagged `at`
    // itself would be boxed (a heap number per call).
    const a = typeof at === 'number' ? at + 0 : typeof at === 'bigint' ? (this.#bigints ? bigintIndex(at) : this.typedAddress(at)) : -1
    let w = this.#w
    let rel = a - w.start
    if (rel >>> 0 === rel && rel + width <= w.length) return rel
    if (!Number.isSafeInteger(a) || a < 0) return -1
    this.#tick++
    // The kept window that starts last at or before `a`.
    const windows = this.#windows
    let lo = 0
    let hi = windows.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      if (windows[mid].start <= a) lo = mid + 1
      else hi = mid - 1
    }
    if (hi >= 0) {
      w = windows[hi]
      rel = a - w.start
      if (rel < w.length) {
        // A detached window's arrays have length 0 (a window is at least a page).
        if (w.u32.length !== 0) {
          this.#use(w)
          return rel + width <= w.length ? rel : -1
        }
        windows.splice(hi, 1)
      }
    }
    // `at` (tagged) is passed on, not `a`: a number beyond 2^30 would be boxed for the call.
    return this.#refill(at, width) ? a - this.#w.start : -1
  }

  /** Whether `at` lies in a range found without a window since the memory last changed. */
  #missed(at: number, epoch: number): boolean {
    if (epoch !== this.#missEpoch) {
      this.#misses.length = 0
      this.#missEpoch = epoch
      return false
    }
    const m = this.#misses
    for (let i = 0; i < m.length; i += 2) if (at >= m[i] && at - m[i] < m[i + 1]) return true
    return false
  }

  /**
   * The index of the kept window a new one may replace (the least recently used, if unused for
   * {@link WINDOW_AGE} lookups), -1 if none may be replaced, or `MAX_WINDOWS` while there is room.
   */
  #room(): number {
    const windows = this.#windows
    if (windows.length < MAX_WINDOWS) return MAX_WINDOWS
    let oldest = 0
    for (let i = 1; i < windows.length; i++) if (windows[i].used < windows[oldest].used) oldest = i
    return this.#tick - windows[oldest].used > WINDOW_AGE ? oldest : -1
  }

  /**
   * Asks for a window around `address` (a number or bigint that {@link #locate} found to be a
   * non-negative safe integer); whether it covers `[address, address + width)`.
   * Asks nothing where the answer is known to be "none", or where there is no room to keep it: the
   * access then takes the checked copy, which allocates nothing.
   */
  #refill(address: unknown, width: number): boolean {
    const at = typeof address === 'number' ? address + 0 : bigintIndex(address as bigint)
    const epoch = this.typedEpoch()
    if (this.#missed(at, epoch) || this.#misses.length >= 2 * MAX_MISSES) return false
    const room = this.#room()
    return room >= 0 && this.#ask(at, width, room)
  }

  /**
   * {@link #refill}'s native question, kept apart so that the refill's common answers (a known
   * miss, no room) stay small enough to be compiled inline with the access.
   */
  #ask(at: number, width: number, room: number): boolean {
    const answer = this.typedWindow(at)
    if (answer === undefined) return false
    const [start, length, buffer] = answer
    if (buffer === undefined) {
      this.#misses.push(start, length)
      return false
    }
    if (room < MAX_WINDOWS) this.#windows.splice(room, 1)
    // Windows start on a page (of a region that starts on one): the typed arrays are aligned.
    const [memory, offset] = memoryOf(buffer)
    const w: Window = {
      start,
      length,
      view: new DataView(memory, offset, length),
      u32: new Uint32Array(memory, offset, length >>> 2),
      u64: new BigUint64Array(memory, offset, Math.floor(length / 8)),
      used: 0,
    }
    // Kept windows it overlaps were detached by the change that made it possible: forgotten.
    const windows = this.#windows.filter((x) => x.start >= start + length || x.start + x.length <= start)
    windows.splice(this.#findIn(windows, start) + 1, 0, w)
    this.#windows = windows
    this.#use(w)
    return at + width <= start + length
  }

  // Each access is its fast path only (small enough for V8 to inline into the caller's loop);
  // everything else is in #readSlow/#writeSlow.

  /**
   * The slow path of a load: leaves the `width` bytes at `at` in the scratch buffer, read through
   * the window that holds them (switched to or asked for) where there is one, or by the checked
   * copy (which throws what a read gets). A window found detached is forgotten and asked for again.
   */
  #readSlow(at: unknown, width: 1 | 2 | 4 | 8): void {
    for (let attempt = 0; attempt < 2; attempt++) {
      const rel = this.#locate(at, width)
      if (rel < 0) break
      const view = this.#w.view
      try {
        if (width === 1) SV.setUint8(0, view.getUint8(rel))
        else if (width === 2) SV.setUint16(0, view.getUint16(rel, true), true)
        else if (width === 4) SV.setUint32(0, view.getUint32(rel, true), true)
        else SV.setBigUint64(0, view.getBigUint64(rel, true), true)
        return
      } catch {
        this.#drop()
      }
    }
    this.typedCopyOut(at, SCRATCH_BY_WIDTH[width])
  }

  /** The slow path of a store of the checked `value`: through a window (as for a load), or the checked copy. */
  #writeSlow(at: unknown, width: 1 | 2 | 4 | 8, value: number | bigint): void {
    for (let attempt = 0; attempt < 2; attempt++) {
      const rel = this.#locate(at, width)
      if (rel < 0) break
      const view = this.#w.view
      try {
        if (width === 1) view.setUint8(rel, value as number)
        else if (width === 2) view.setUint16(rel, value as number, true)
        else if (width === 4) view.setUint32(rel, value as number, true)
        else view.setBigUint64(rel, value as bigint, true)
        if (this.#notify) this.typedStored(at, width)
        return
      } catch {
        this.#drop()
      }
    }
    if (width === 1) SV.setUint8(0, value as number)
    else if (width === 2) SV.setUint16(0, value as number, true)
    else if (width === 4) SV.setUint32(0, value as number, true)
    else SV.setBigUint64(0, value as bigint, true)
    this.typedCopyIn(at, SCRATCH_BY_WIDTH[width])
    if (this.#notify) this.typedStored(at, width)
  }

  readU8(at: At): number {
    const w = this.#w
    // Each branch its own subtraction: a bigint's number is never merged with a tagged one (boxed).
    const rel = typeof at === 'number' ? at - w.start : typeof at === 'bigint' && this.#bigints ? bigintIndex(at) - w.start : -1
    if (rel >>> 0 === rel && rel + 1 <= w.length) {
      try {
        return w.view.getUint8(rel)
      } catch {
        this.#drop()
      }
    }
    this.#readSlow(at, 1)
    return SV.getUint8(0)
  }

  readU16(at: At): number {
    const w = this.#w
    // Each branch its own subtraction: a bigint's number is never merged with a tagged one (boxed).
    const rel = typeof at === 'number' ? at - w.start : typeof at === 'bigint' && this.#bigints ? bigintIndex(at) - w.start : -1
    if (rel >>> 0 === rel && rel + 2 <= w.length) {
      try {
        return w.view.getUint16(rel, true)
      } catch {
        this.#drop()
      }
    }
    this.#readSlow(at, 2)
    return SV.getUint16(0, true)
  }

  readU32(at: At): number {
    const w = this.#w
    // Each branch its own subtraction: a bigint's number is never merged with a tagged one (boxed).
    const rel = typeof at === 'number' ? at - w.start : typeof at === 'bigint' && this.#bigints ? bigintIndex(at) - w.start : -1
    if (rel >>> 0 === rel && rel + 4 <= w.length) {
      try {
        return w.view.getUint32(rel, true)
      } catch {
        this.#drop()
      }
    }
    this.#readSlow(at, 4)
    return SV.getUint32(0, true)
  }

  readU64(at: At): bigint {
    const w = this.#w
    // Each branch its own subtraction: a bigint's number is never merged with a tagged one (boxed).
    const rel = typeof at === 'number' ? at - w.start : typeof at === 'bigint' && this.#bigints ? bigintIndex(at) - w.start : -1
    if (rel >>> 0 === rel && rel + 8 <= w.length) {
      try {
        return w.view.getBigUint64(rel, true)
      } catch {
        this.#drop()
      }
    }
    this.#readSlow(at, 8)
    return SV.getBigUint64(0, true)
  }

  writeU8(at: At, value: unknown): void {
    const v = u8(value)
    const w = this.#w
    // Each branch its own subtraction: a bigint's number is never merged with a tagged one (boxed).
    const rel = typeof at === 'number' ? at - w.start : typeof at === 'bigint' && this.#bigints ? bigintIndex(at) - w.start : -1
    if (rel >>> 0 === rel && rel + 1 <= w.length) {
      try {
        w.view.setUint8(rel, v)
        if (this.#notify) this.typedStored(at, 1)
        return
      } catch {
        this.#drop()
      }
    }
    this.#writeSlow(at, 1, v)
  }

  writeU16(at: At, value: unknown): void {
    const v = u16(value)
    const w = this.#w
    // Each branch its own subtraction: a bigint's number is never merged with a tagged one (boxed).
    const rel = typeof at === 'number' ? at - w.start : typeof at === 'bigint' && this.#bigints ? bigintIndex(at) - w.start : -1
    if (rel >>> 0 === rel && rel + 2 <= w.length) {
      try {
        w.view.setUint16(rel, v, true)
        if (this.#notify) this.typedStored(at, 2)
        return
      } catch {
        this.#drop()
      }
    }
    this.#writeSlow(at, 2, v)
  }

  writeU32(at: At, value: unknown): void {
    const v = u32('value', value)
    const w = this.#w
    // Each branch its own subtraction: a bigint's number is never merged with a tagged one (boxed).
    const rel = typeof at === 'number' ? at - w.start : typeof at === 'bigint' && this.#bigints ? bigintIndex(at) - w.start : -1
    if (rel >>> 0 === rel && rel + 4 <= w.length) {
      try {
        w.view.setUint32(rel, v, true)
        if (this.#notify) this.typedStored(at, 4)
        return
      } catch {
        this.#drop()
      }
    }
    this.#writeSlow(at, 4, v)
  }

  writeU64(at: At, value: unknown): void {
    const v = u64('value', value)
    const w = this.#w
    // Each branch its own subtraction: a bigint's number is never merged with a tagged one (boxed).
    const rel = typeof at === 'number' ? at - w.start : typeof at === 'bigint' && this.#bigints ? bigintIndex(at) - w.start : -1
    if (rel >>> 0 === rel && rel + 8 <= w.length) {
      try {
        w.view.setBigUint64(rel, v, true)
        if (this.#notify) this.typedStored(at, 8)
        return
      } catch {
        this.#drop()
      }
    }
    this.#writeSlow(at, 8, v)
  }

  /**
   * The window offset of an atomic access; or, once the access is checked to be allowed where
   * no window is handed out, -1 with the address in `#nativeAt` (for the native atomics).
   */
  #atomic(at: unknown, width: 4 | 8): number {
    const a = typeof at === 'number' ? at : typeof at === 'bigint' && this.#bigints ? bigintIndex(at) : -1
    const rel = this.#at(a, width)
    this.#nativeAt = a
    if (rel >= 0 && rel % width === 0) return rel
    if (typeof at === 'bigint') return this.#atomic(this.#address(at), width)
    this.typedAtomicCheck(at, width)
    return this.#locate(at, width)
  }

  readU32Atomic(at: At): number {
    const rel = this.#atomic(at, 4)
    if (rel < 0) return regionAtomic32(this.typedHandle(), this.#nativeAt, LOAD, 0, 0)
    try {
      return Atomics.load(this.#w.u32, rel >>> 2)
    } catch {
      this.#drop()
      return this.readU32Atomic(at)
    }
  }

  readU64Atomic(at: At): bigint {
    const rel = this.#atomic(at, 8)
    if (rel < 0) return regionAtomic64(this.typedHandle(), this.#nativeAt, LOAD, 0n, 0n)
    try {
      return Atomics.load(this.#w.u64, rel / 8)
    } catch {
      this.#drop()
      return this.readU64Atomic(at)
    }
  }

  writeU32Atomic(at: At, value: unknown): void {
    const v = u32('value', value)
    const rel = this.#atomic(at, 4)
    if (rel < 0) {
      regionAtomic32(this.typedHandle(), this.#nativeAt, STORE, v, 0)
      if (this.#notify) this.typedStored(this.#nativeAt, 4)
      return
    }
    try {
      Atomics.store(this.#w.u32, rel >>> 2, v)
      if (this.#notify) this.typedStored(this.#nativeAt, 4)
    } catch {
      this.#drop()
      this.writeU32Atomic(at, v)
    }
  }

  writeU64Atomic(at: At, value: unknown): void {
    const v = u64('value', value)
    const rel = this.#atomic(at, 8)
    if (rel < 0) {
      regionAtomic64(this.typedHandle(), this.#nativeAt, STORE, v, 0n)
      if (this.#notify) this.typedStored(this.#nativeAt, 8)
      return
    }
    try {
      Atomics.store(this.#w.u64, rel / 8, v)
      if (this.#notify) this.typedStored(this.#nativeAt, 8)
    } catch {
      this.#drop()
      this.writeU64Atomic(at, v)
    }
  }

  compareExchangeU32(at: At, expected: unknown, replacement: unknown): number {
    const e = u32('expected', expected)
    const r = u32('replacement', replacement)
    const rel = this.#atomic(at, 4)
    if (rel < 0) {
      const old = regionAtomic32(this.typedHandle(), this.#nativeAt, CAS, r, e)
      if (this.#notify) this.typedStored(this.#nativeAt, 4)
      return old
    }
    try {
      const old = Atomics.compareExchange(this.#w.u32, rel >>> 2, e, r)
      if (this.#notify) this.typedStored(this.#nativeAt, 4)
      return old
    } catch {
      this.#drop()
      return this.compareExchangeU32(at, e, r)
    }
  }

  compareExchangeU64(at: At, expected: unknown, replacement: unknown): bigint {
    const e = u64('expected', expected)
    const r = u64('replacement', replacement)
    const rel = this.#atomic(at, 8)
    if (rel < 0) {
      const old = regionAtomic64(this.typedHandle(), this.#nativeAt, CAS, r, e)
      if (this.#notify) this.typedStored(this.#nativeAt, 8)
      return old
    }
    try {
      const old = Atomics.compareExchange(this.#w.u64, rel / 8, e, r)
      if (this.#notify) this.typedStored(this.#nativeAt, 8)
      return old
    } catch {
      this.#drop()
      return this.compareExchangeU64(at, e, r)
    }
  }
}

/**
 * Typed little-endian access, on every region (`At` = a byte offset) and on `GuestMemory`
 * (`At` = a guest address). No call allocates a `Buffer`; the checks and errors are those of
 * `read` (for loads) and `write` (for stores): `ERR_MMAP_OUT_OF_BOUNDS`, `ERR_MMAP_ACCESS`,
 * `ERR_MMAP_CLOSED`, `ERR_GUEST_ADDRESS` on a `GuestMemory`, `EFAULT` from the fault-safe copy;
 * a value out of range is `ERR_OUT_OF_RANGE`, one of the wrong type `ERR_INVALID_ARG_TYPE`.
 * Any byte offset works for the plain forms; an access across the end of a mapping continues
 * into the next one as `read`/`write` do.
 *
 * The atomic forms (sequentially consistent, as `Atomics`) are for rings and flags shared with a
 * guest or another process: they need a naturally aligned offset (`ERR_MMAP_UNALIGNED`) and
 * memory that may be touched directly — mapped `READ | WRITE` and unable to vanish, i.e.
 * anonymous memory or a memfd sealed against shrinking (`ERR_MMAP_ACCESS` otherwise: a file
 * someone could truncate would turn an atomic access into `SIGBUS`).
 */
export interface TypedMemory<At> {
  /**
   * The byte at `at`.
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @throws the errors of `read`.
   * @example
   * const status = ram.readU8(0x7000)
   */
  readU8(at: At): number
  /**
   * The little-endian `u16` at `at`.
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @throws the errors of `read`.
   * @example
   * const flags = ram.readU16(descriptor + 12)
   */
  readU16(at: At): number
  /**
   * The little-endian `u32` at `at`.
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @throws the errors of `read`.
   * @example
   * const length = ram.readU32(descriptor + 8)
   */
  readU32(at: At): number
  /**
   * The little-endian `u64` at `at`, as a `bigint`.
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @throws the errors of `read`.
   * @example
   * const address = ram.readU64(descriptor)
   */
  readU64(at: At): bigint
  /**
   * Stores the byte `value` (an integer 0–255) at `at`.
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @param value the value to store
   * @throws the errors of `write`; `ERR_OUT_OF_RANGE` (value).
   * @example
   * ram.writeU8(0x7000, 1)
   */
  writeU8(at: At, value: number): void
  /**
   * Stores `value` (an integer 0–65535) little-endian at `at`.
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @param value the value to store
   * @throws the errors of `write`; `ERR_OUT_OF_RANGE` (value).
   * @example
   * ram.writeU16(usedRing + 2, usedIndex)
   */
  writeU16(at: At, value: number): void
  /**
   * Stores `value` (an integer 0–2^32-1) little-endian at `at`.
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @param value the value to store
   * @throws the errors of `write`; `ERR_OUT_OF_RANGE` (value).
   * @example
   * ram.writeU32(0x7000, 0xdeadbeef)
   */
  writeU32(at: At, value: number): void
  /**
   * Stores the `bigint` `value` (0–2^64-1) little-endian at `at`.
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @param value the value to store
   * @throws the errors of `write`; `ERR_OUT_OF_RANGE` (value), `ERR_INVALID_ARG_TYPE` (not a bigint).
   * @example
   * ram.writeU64(pageTable, 0x1000n | 3n)
   */
  writeU64(at: At, value: bigint): void
  /**
   * Atomically loads the `u32` at `at` (a multiple of 4).
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @throws the errors of `read`; `ERR_MMAP_UNALIGNED`; `ERR_MMAP_ACCESS` (memory that may not be touched directly).
   * @example
   * const head = shared.readU32Atomic(0)
   */
  readU32Atomic(at: At): number
  /**
   * Atomically loads the `u64` at `at` (a multiple of 8).
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @throws as {@link readU32Atomic}.
   * @example
   * const sequence = shared.readU64Atomic(8)
   */
  readU64Atomic(at: At): bigint
  /**
   * Atomically stores the `u32` `value` at `at` (a multiple of 4).
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @param value the value to store
   * @throws as {@link readU32Atomic}; `ERR_OUT_OF_RANGE` (value).
   * @example
   * shared.writeU32Atomic(4, tail)
   */
  writeU32Atomic(at: At, value: number): void
  /**
   * Atomically stores the `u64` `value` at `at` (a multiple of 8).
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @param value the value to store
   * @throws as {@link readU32Atomic}; `ERR_OUT_OF_RANGE` (value).
   * @example
   * shared.writeU64Atomic(8, sequence + 1n)
   */
  writeU64Atomic(at: At, value: bigint): void
  /**
   * Atomically replaces the `u32` at `at` (a multiple of 4) by `replacement` if it equals
   * `expected`; returns the value that was there (equal to `expected` when it was replaced).
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @param expected the value the memory must hold for the exchange
   * @param replacement the value stored when it does
   * @throws as {@link readU32Atomic}; `ERR_OUT_OF_RANGE` (expected, replacement).
   * @example
   * const won = shared.compareExchangeU32(LOCK, 0, 1) === 0
   */
  compareExchangeU32(at: At, expected: number, replacement: number): number
  /**
   * Atomically replaces the `u64` at `at` (a multiple of 8) by `replacement` if it equals
   * `expected`; returns the value that was there.
   * @param at a byte offset (a guest address on `GuestMemory`)
   * @param expected the value the memory must hold for the exchange
   * @param replacement the value stored when it does
   * @throws as {@link readU32Atomic}; `ERR_OUT_OF_RANGE` (expected, replacement).
   * @example
   * shared.compareExchangeU64(8, seen, seen + 1n)
   */
  compareExchangeU64(at: At, expected: bigint, replacement: bigint): bigint
}
