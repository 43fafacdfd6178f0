/**
 * Dirty-page tracking for {@link GuestMemory}, behind one interface ({@link DirtyTracker}), in two
 * kinds: by the kernel ({@link KernelDirtyTracker}: every writer's writes, recorded natively with
 * the arena) and in software ({@link SoftwareDirtyTracker}: one bit per page of every region, set
 * by the writes GuestMemory makes). Both take in `KVM_GET_DIRTY_LOG`'s layout.
 */
import type { GuestRegionInfo } from '../index.js'
import { guestMarkDirty, guestTakeDirty } from './calls.js'
import { PAGE_SIZE } from './constants.js'
import { unsupported } from './errors.js'

/** One region's dirty pages, as {@link GuestMemory.takeDirty} returns them. */
export interface DirtyBitmap {
  /** The region's guest-physical start address. */
  guestAddress: bigint
  /** The region's size in bytes. */
  size: number
  /** Bit `i` of word `w` set: page `64w + i` of the region is dirty (`KVM_GET_DIRTY_LOG`'s layout). */
  bitmap: BigUint64Array
}

/**
 * What a GuestMemory created with `trackDirty` asks of its tracker. Addresses and lengths are
 * guest-physical safe integers, and every range passed to a `mark*` method is one the native
 * region table covers (checked, or written, just before). The tracker lives on one thread: a
 * tracking GuestMemory is never shared.
 */
export interface DirtyTracker {
  /**
   * Follows the regions of `table` (the native table, sorted by guest address): a region that
   * stays keeps its dirty pages, a new one starts clean. Called after every change of the regions.
   */
  sync(table: readonly GuestRegionInfo[]): void
  /**
   * A write through this object's mapping of `[addr, addr + len)` (nothing for `len` 0): marks
   * its pages dirty where the tracker does not see writes itself. Runs on every write.
   */
  mark(addr: number, len: number): void
  /**
   * The pages of `[addr, addr + len)` changed other than by a write through the mapping (marked by
   * hand, discarded, hot-plugged): marks them dirty, whatever the tracker sees by itself.
   */
  markChanged(addr: number, len: number): void
  /**
   * A writable view of `[addr, addr + len)` was handed out: its pages are dirty now and in every
   * take while it lives (attached).
   */
  markView(view: Buffer, addr: number, len: number): void
  /**
   * Takes the dirty pages of the regions of `table` (read once by the caller) and clears them:
   * one bitmap per region of `table`, in its order.
   */
  take(table: readonly GuestRegionInfo[]): TakenDirty
}

/** What {@link DirtyTracker.take} took. */
export interface TakenDirty {
  /** One bitmap per region, in `KVM_GET_DIRTY_LOG`'s layout (see {@link DirtyBitmap}). */
  readonly bitmaps: BigUint64Array[]
  /** Sets the taken pages dirty again, in the regions still there: a snapshot that failed must not lose them. */
  putBack(): void
}

/**
 * The {@link DirtyTracker} of the kernel: the arena's memory is registered with a userfaultfd in
 * asynchronous write-protect mode, and a take reads (and re-arms) the written pages with
 * `PAGEMAP_SCAN`, natively, under the arena's lock (see `crate/node/src/dirty.rs`). Every writer
 * is seen — this object, views, other threads, the kernel, KVM — so a write costs nothing here,
 * and the record is the arena's: every object over it, in any thread, takes from the same one.
 */
export class KernelDirtyTracker implements DirtyTracker {
  readonly #h: number

  /** @param handle the arena's native handle */
  constructor(handle: number) {
    this.#h = handle
  }

  sync(): void {}

  mark(): void {}

  markChanged(addr: number, len: number): void {
    if (len !== 0) guestMarkDirty(this.#h, addr, len)
  }

  markView(): void {}

  take(table: readonly GuestRegionInfo[]): TakenDirty {
    // The native table at the take: [guestAddress, size, ...bitmap] per region, in address order.
    const words = guestTakeDirty(this.#h)
    const taken = new Map<number, { size: number; bits: BigUint64Array }>()
    for (let at = 0; at < words.length; ) {
      const start = Number(words[at])
      const size = Number(words[at + 1])
      const n = Math.ceil(size / PAGE_SIZE / 64)
      taken.set(start, { size, bits: words.subarray(at + 2, at + 2 + n) })
      at += 2 + n
    }
    // `table` was read before the take: a region plugged in between (by another thread) is not in
    // it, and its pages are marked again; one that went, or came back with another size, is
    // reported whole.
    const bitmaps = table.map((r) => {
      const got = taken.get(r.guestAddress)
      if (got === undefined || got.size !== r.size) return allPages(r.size / PAGE_SIZE)
      taken.delete(r.guestAddress)
      return got.bits
    })
    for (const [start, { bits }] of taken) this.#markBack(start, bits)
    const putBack = (): void => {
      for (const [i, r] of table.entries()) this.#markBack(r.guestAddress, bitmaps[i])
    }
    return { bitmaps, putBack }
  }

  /**
   * Marks again the pages set in `bits`, of the region at `start`, in runs; where that region is
   * gone (removed by another thread meanwhile), so are its pages, and nothing is marked.
   */
  #markBack(start: number, bits: BigUint64Array): void {
    for (const [p, n] of pageRuns(bits, bits.length * 64)) {
      try {
        this.markChanged(start + p * PAGE_SIZE, n * PAGE_SIZE)
      } catch (e) {
        if ((e as { code?: unknown }).code !== 'ERR_GUEST_ADDRESS') throw e
      }
    }
  }
}

/** The runs `[firstPage, count]` of set bits among the first `pages` pages of a taken bitmap. */
export function pageRuns(taken: BigUint64Array, pages: number): [number, number][] {
  return bitRuns(new Uint32Array(taken.buffer, taken.byteOffset, taken.length * 2), pages)
}

/**
 * The runs `[firstBit, count]` of set bits among the first `bits` bits of `words` (bit `i` is bit
 * `i % 32` of word `i / 32`: `KVM_GET_DIRTY_LOG`'s layout on a little-endian machine).
 */
export function bitRuns(words: Uint32Array, bits: number): [number, number][] {
  const runs: [number, number][] = []
  let first = -1
  for (let w = 0; w * 32 < bits; w++) {
    const word = words[w]
    // Whole words at once where nothing changes: all clear outside a run, all set inside one.
    if ((word === 0 && first < 0) || (word === 0xffff_ffff && first >= 0 && w * 32 + 32 <= bits)) continue
    for (let b = 0; b < 32; b++) {
      const bit = w * 32 + b
      const set = bit < bits && ((word >>> b) & 1) !== 0
      if (set && first < 0) first = bit
      else if (!set && first >= 0) {
        runs.push([first, bit - first])
        first = -1
      }
    }
  }
  if (first >= 0) runs.push([first, bits - first])
  return runs
}

/** A bitmap with the first `pages` bits set. */
function allPages(pages: number): BigUint64Array {
  const bits = new BigUint64Array(Math.ceil(pages / 64))
  bits.fill(~0n)
  if (pages % 64 !== 0) bits[bits.length - 1] = (1n << BigInt(pages % 64)) - 1n
  return bits
}

/** The tracker, or `ERR_MMAP_UNSUPPORTED` for `operation` on a GuestMemory created without one. */
export function needTracking(tracker: DirtyTracker | undefined, operation: string): DirtyTracker {
  if (tracker === undefined) {
    throw unsupported(`${operation} needs dirty tracking: create the GuestMemory with { trackDirty: true }`)
  }
  return tracker
}

/**
 * `1 / PAGE_SIZE`: a page size is a power of two, so `offset * PAGE_INVERSE` is exactly
 * `offset / PAGE_SIZE`, and a multiplication costs a fraction of a division (this runs on every
 * write of a GuestMemory that tracks dirty pages).
 */
const PAGE_INVERSE = 1 / PAGE_SIZE

/** The page of `offset` (a non-negative safe integer). */
const pageOf = (offset: number): number => Math.floor(offset * PAGE_INVERSE)

/** The dirty bits of one region of the native table. */
interface DirtyRegion {
  start: number
  end: number
  /**
   * One bit per page, in 64-bit words (bit `i` of word `w` for page `64w + i`), stored as 32-bit
   * words so that `Atomics.or` sets them.
   */
  bits: Uint32Array
}

/** A writable view handed out: its pages stay dirty while it lives. */
interface LiveView {
  view: WeakRef<Buffer>
  start: number
  length: number
}

/** The {@link DirtyTracker} kept in software: a bitmap per region, set on each write. */
export class SoftwareDirtyTracker implements DirtyTracker {
  /**
   * The dirty bits of each region of the native table, sorted by guest address, rebuilt from the
   * table by {@link sync} (a region keeps its bits while it stays).
   */
  #regions: DirtyRegion[] = []
  /** Writable views handed out (their pages are dirty while they live). */
  #liveViews: LiveView[] = []
  /**
   * The guest range `[#markedFrom, #markedTo)` of the page whose dirty bit was set (or found set)
   * last: a write inside it marks nothing, as the bit is still set. Emptied by every take of the
   * bits and every sync (a region there may have a new bitmap). Only this thread takes the bits.
   */
  #markedFrom = 0
  #markedTo = 0

  sync(table: readonly GuestRegionInfo[]): void {
    const old = this.#regions
    this.#regions = table.map((r) => {
      const end = r.guestAddress + r.size
      const kept = old.find((d) => d.start === r.guestAddress && d.end === end)
      return kept ?? { start: r.guestAddress, end, bits: newBitmap(r.size / PAGE_SIZE) }
    })
    this.#markedTo = 0
  }

  mark(addr: number, len: number): void {
    // The common case of a write, answered here and nothing else (this runs on every write):
    // inside the page marked last.
    if (len !== 0 && (addr < this.#markedFrom || addr + len > this.#markedTo)) this.#markPages(addr, len)
  }

  /** {@link mark} outside the page marked last. */
  #markPages(addr: number, len: number): void {
    const first = this.#indexOf(addr)
    const d0 = this.#regions[first]
    if (d0 === undefined) return
    const from = addr - d0.start
    const p = pageOf(from)
    // Then one page of one region: a plain load when its bit is set already.
    if (from + len <= d0.end - d0.start && p === pageOf(from + len - 1)) {
      markPage(d0.bits, p)
      this.#markedFrom = d0.start + p * PAGE_SIZE
      this.#markedTo = this.#markedFrom + PAGE_SIZE
    } else this.#markRange(first, addr, len)
  }

  markChanged(addr: number, len: number): void {
    this.mark(addr, len)
  }

  markView(view: Buffer, addr: number, len: number): void {
    if (len === 0) return
    this.mark(addr, len)
    this.#liveViews.push({ view: new WeakRef(view), start: addr, length: len })
  }

  take(table: readonly GuestRegionInfo[]): TakenDirty {
    this.sync(table)
    this.#markLiveViews()
    this.#markedTo = 0
    const regions = this.#regions.slice()
    const bitmaps = regions.map((d) => takeBits(d.bits))
    const putBackInto = (): void => {
      for (const [i, d] of regions.entries()) if (this.#regions.includes(d)) putBack(d.bits, bitmaps[i])
    }
    return { bitmaps, putBack: putBackInto }
  }

  /** The index of the region that contains `addr`, or -1. */
  #indexOf(addr: number): number {
    const d = this.#regions
    let lo = 0
    let hi = d.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      if (addr < d[mid].start) hi = mid - 1
      else if (addr >= d[mid].end) lo = mid + 1
      else return mid
    }
    return -1
  }

  /** {@link mark} of a range over several pages or regions, from the region at `first`. */
  #markRange(first: number, addr: number, len: number): void {
    const end = addr + len
    for (let i = first; i < this.#regions.length; i++) {
      const d = this.#regions[i]
      if (d.start >= end) break
      setPages(d.bits, pageOf(Math.max(addr, d.start) - d.start), pageOf(Math.min(end, d.end) - 1 - d.start))
    }
  }

  /** Marks the pages of the writable views still alive (and attached); forgets the others. */
  #markLiveViews(): void {
    this.#liveViews = this.#liveViews.filter((l) => {
      const view = l.view.deref()
      if (view === undefined || view.length === 0) return false
      this.mark(l.start, l.length)
      return true
    })
  }
}

/** A bitmap for `pages` pages: 32-bit words, two per 64-bit word, shareable with workers. */
function newBitmap(pages: number): Uint32Array {
  return new Uint32Array(new SharedArrayBuffer(Math.ceil(pages / 64) * 8))
}

/**
 * Sets the bit of page `p`: an atomic OR, made only if the bit is not set yet (a hot page written
 * again costs a plain load, no locked instruction: `Atomics.load` here cost more than the write it
 * follows). Takes run on the same JavaScript thread as the writes they must see (a snapshot takes
 * its bits before its dump starts), so a bit read as set is still set and will be reported.
 */
function markPage(bits: Uint32Array, p: number): void {
  const w = p >>> 5
  const m = 1 << (p & 31)
  if ((bits[w] & m) === 0) Atomics.or(bits, w, m)
}

/** Sets the bits of pages `[first, last]` (inclusive), atomically. */
function setPages(bits: Uint32Array, first: number, last: number): void {
  for (let w = first >>> 5; w <= last >>> 5; w++) {
    const lo = w === first >>> 5 ? first & 31 : 0
    const hi = w === last >>> 5 ? last & 31 : 31
    const mask = hi === 31 ? ~0 << lo : ((1 << (hi + 1)) - 1) & (~0 << lo)
    Atomics.or(bits, w, mask)
  }
}

/** Takes the bits (atomically clearing them) into a fresh `BigUint64Array`. */
function takeBits(bits: Uint32Array): BigUint64Array {
  const out = new BigUint64Array(bits.length / 2)
  const words = new Uint32Array(out.buffer)
  for (let i = 0; i < bits.length; i++) if (bits[i] !== 0) words[i] = Atomics.exchange(bits, i, 0)
  return out
}

/** ORs taken bits back. */
function putBack(bits: Uint32Array, taken: BigUint64Array): void {
  const words = new Uint32Array(taken.buffer)
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) Atomics.or(bits, i, words[i])
}
