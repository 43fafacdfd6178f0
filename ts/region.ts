import { openSync, closeSync, fstatSync, constants as fsConstants } from 'node:fs'
import type { MappingInfo } from '../index.js'
import { PAGE_SIZE, Protection, type Advice, type ProtectionFlags } from './constants.js'
import { types } from 'node:util'
import { invalidArgType, invalidArgValue, invalidHandle, outOfRange } from './errors.js'
import { loadRequest, withFile, type LoadOptions, type LoadSource } from './load.js'
import {
  regionReserve,
  regionAnonymous,
  regionFromFd,
  regionSize,
  regionAddress,
  regionClosed,
  regionClose,
  regionReclaim,
  regionMsync,
  regionMadvise,
  regionMlock,
  regionMunlock,
  regionDiscard,
  regionAddFdMapping,
  regionAddFdMappingBig,
  regionAddShmMapping,
  regionAddAnonymous,
  regionRemoveMapping,
  regionProtect,
  regionRead,
  regionReadInto,
  regionLoadFile,
  regionWrite,
  regionView,
  regionPending,
  regionKernelMappings,
  regionWindow,
  regionAtomicCheck,
  regionSharedView,
  regionShare,
  regionAttach,
  regionMsyncAsync,
  regionPopulateAsync,
  regionLoadFileAsync,
  regionMappings,
} from './calls.js'
import { TypedAccess, type TypedMemory, type WindowAnswer } from './typed.js'
import * as v from './validate.js'
import { sharedMemorySource, sharedMemoryState, type SharedMemory } from './shm.js'

export type { MappingInfo }

// The entry points come from ./calls.js (generated: each stores its number arguments in the
// scratch slots and calls the addon). Every one of them re-checks its arguments natively.

/**
 * What {@link MemoryMappingArena.share} and {@link MemoryMapping.share} return: a plain object
 * that `postMessage` and `structuredClone` copy as they are, for `attach()` in another thread
 * (or the same one). It names the region in this process; it grants nothing outside it.
 */
export interface ShareHandle {
  /** The class whose `attach()` takes it. */
  readonly kind: 'MemoryMappingArena' | 'MemoryMapping'
  /** The region's entry in the process's share table. */
  readonly id: number
  /** A random number that must come with `id` (a handle made up by hand is refused). */
  readonly token: number
  /** For a `MemoryMapping`: the protection it was made with. */
  readonly protection?: ProtectionFlags
}

/** @internal The properties of every kind of share handle (a handle of one kind passed to another's `attach` is `ERR_MMAP_INVALID_HANDLE`). */
export const HANDLE_KEYS = ['kind', 'id', 'token', 'protection', 'arena', 'dontDump'] as const

/**
 * @internal Reads a share handle once (each property once, a proxy refused) and checks its kind:
 * `[id, token, protection]`. The native side checks the id and token.
 */
export function readShareHandle(value: unknown, kind: string): [number, number, unknown] {
  if (value === null || typeof value !== 'object' || types.isProxy(value)) {
    throw invalidArgType('handle', `a share handle from ${kind}.prototype.share()`, value)
  }
  const h = v.options('handle', value, HANDLE_KEYS)
  if (h.kind !== kind) throw invalidHandle(`it is for ${typeof h.kind === 'string' ? h.kind : 'nothing'}, not for ${kind}.attach()`)
  if (h.arena !== undefined || h.dontDump !== undefined) throw invalidHandle('it has the properties of a GuestMemory handle')
  if (typeof h.id !== 'number' || typeof h.token !== 'number') throw invalidHandle('its id and token must be numbers')
  return [h.id, h.token, h.protection]
}

/**
 * What every region offers (crosvm's `MappedRegion`, plus copies and views).
 * Offsets that start a kernel call must be multiples of `PAGE_SIZE`; sizes need
 * not be (the call covers the pages they touch). Every method throws
 * `ERR_MMAP_CLOSED` once the region is closed.
 */
export interface MappedRegion extends Disposable, TypedMemory<number> {
  /** Size in bytes (whole pages for an arena). Readable after `close()`. */
  readonly size: number
  /**
   * Start address, for ioctls such as `KVM_SET_USER_MEMORY_REGION`.
   * @throws `ERR_MMAP_CLOSED` once closed.
   */
  readonly address: bigint
  /** Whether {@link close} was called. */
  readonly closed: boolean
  /**
   * Maps `size` bytes of `fd` from `fdOffset` at `offset` (`MAP_SHARED | MAP_FIXED`; with
   * `{ shared: false }`, `MAP_PRIVATE`: copy-on-write, the file never changes), replacing whatever
   * was there. Regular files and memfds shorter than `fdOffset + size` are refused (touching
   * pages past the end would `SIGBUS`). Views over the range are detached. A
   * {@link MemoryMapping} refuses, as in crosvm.
   * @param offset byte offset in the region
   * @param size size in bytes
   * @param fd an open file descriptor, or a {@link SharedMemory}: then its own private descriptor
   * is mapped, and while it is sealed against shrinking (the default) the range is checked
   * against what it knows, without asking the kernel (`fstat`) again — the faster form for
   * guest RAM. `mappings()` lists the SharedMemory's `fd` either way.
   * @param fdOffset offset in the file of the first byte, a multiple of `PAGE_SIZE` (a `bigint` beyond 2^53)
   * @param prot the {@link Protection} to map with
   * @param options the options: see {@link FdMappingOptions}
   * @throws `ERR_MMAP_UNSUPPORTED` on a {@link MemoryMapping}; `ERR_MMAP_UNALIGNED`,
   * `ERR_MMAP_OUT_OF_BOUNDS`, `ERR_OUT_OF_RANGE` (size 0), `ERR_MMAP_BEYOND_EOF`,
   * `ERR_MMAP_BUSY`, or the errno of `mmap` (`EBADF`, `EACCES`, `ENODEV`, `ENOMEM`…).
   * @example
   * arena.addFdMapping(0, ram.size, ram, 0, Protection.READ_WRITE) // a SharedMemory
   * arena.addFdMapping(0, ram.size, ram.fd, 0, Protection.READ_WRITE) // any fd
   * arena.addFdMapping(0, size, snapshotFd, 0, Protection.READ_WRITE, { shared: false }) // a restore
   */
  addFdMapping(
    offset: number,
    size: number,
    fd: number | SharedMemory,
    fdOffset: number | bigint,
    prot: ProtectionFlags,
    options?: FdMappingOptions,
  ): void
  /**
   * Replaces `[offset, offset + size)` by a reserved `PROT_NONE` range (removing a hole is a
   * no-op); views over it are detached. A {@link MemoryMapping} refuses.
   * @param offset byte offset in the region
   * @param size size in bytes
   * @throws `ERR_MMAP_UNSUPPORTED` on a {@link MemoryMapping}; `ERR_MMAP_UNALIGNED`,
   * `ERR_MMAP_OUT_OF_BOUNDS`, `ERR_OUT_OF_RANGE` (size 0), `ERR_MMAP_BUSY`.
   * @example
   * arena.removeMapping(160 << 20, 1 << 20) // an MMIO hole
   */
  removeMapping(offset: number, size: number): void
  /**
   * `msync(MS_SYNC)` over the pages touched by the range: dirty file pages reach the file.
   * @param offset byte offset in the region
   * @param size size in bytes
   * @throws `ERR_MMAP_UNALIGNED`, `ERR_MMAP_OUT_OF_BOUNDS`, or the errno of `msync`.
   * @example
   * disk.write(0, sector)
   * disk.msync(0, PAGE_SIZE)
   */
  msync(offset: number, size: number): void
  /**
   * `madvise` over the pages touched by the range; see {@link ADVICE} for which advices destroy contents.
   * @param offset byte offset in the region
   * @param size size in bytes
   * @param advice an {@link ADVICE} name, or a raw advice number
   * @throws `ERR_MMAP_UNALIGNED`, `ERR_MMAP_OUT_OF_BOUNDS`, `ERR_INVALID_ARG_VALUE` (unknown
   * name), `ERR_OUT_OF_RANGE` (refused raw advice), or the errno of `madvise`.
   * @example
   * arena.madvise(0, 64 << 20, 'willneed')
   * arena.madvise(balloonOffset, balloonSize, 'remove') // give memfd pages back
   */
  madvise(offset: number, size: number, advice: Advice | number): void
  /**
   * Locks the pages touched by the range in RAM (`mlock`): they are faulted in now and never
   * swapped out. With `onFault: true`, `mlock2(MLOCK_ONFAULT)`: each page is locked once first
   * touched, so locking guest RAM costs nothing up front. Limited by `RLIMIT_MEMLOCK`
   * (`ulimit -l`); the lock ends with {@link munlock}, a removal or `close()`.
   * @param offset byte offset in the region
   * @param size size in bytes
   * @param options `{ onFault }`: lock each page once first touched (`MLOCK_ONFAULT`) instead of now
   * @throws `ERR_MMAP_UNALIGNED`, `ERR_MMAP_OUT_OF_BOUNDS`, or the errno of `mlock`/`mlock2`
   * (`ENOMEM` past the limit, `EPERM`, `EAGAIN`; `ENOSYS` for `onFault` where the kernel, before
   * Linux 4.4, has no `mlock2`).
   * @example
   * ram.mlock(0, ram.size, { onFault: true }) // never swapped once touched
   */
  mlock(
    offset: number,
    size: number,
    options?: {
      /** Lock each page once first touched (`MLOCK_ONFAULT`) instead of faulting them all in now; default `false`. */
      onFault?: boolean
    },
  ): void
  /**
   * Unlocks the pages touched by the range (`munlock`).
   * @param offset byte offset in the region
   * @param size size in bytes
   * @throws `ERR_MMAP_UNALIGNED`, `ERR_MMAP_OUT_OF_BOUNDS`, or the errno of `munlock`.
   * @example
   * ram.munlock(0, ram.size)
   */
  munlock(offset: number, size: number): void
  /**
   * Discards the pages of the range, as each is backed (crosvm's `remove_range`, backing-aware): over shared
   * memory — a `SharedMemory`, shared anonymous memory, a file mapped shared — `MADV_REMOVE`
   * frees the backing store (a memfd's pages go back to the system; a file gets a hole punched,
   * `fallocate(PUNCH_HOLE | KEEP_SIZE)`: its size is unchanged, its blocks drop) and the range
   * reads as zeros; over private memory `MADV_DONTNEED` drops this process's pages: anonymous
   * memory reads as zeros, a private file mapping as the file again (its copy-on-write copies are
   * gone). In an arena each overlay piece under the range is discarded its own way. The mappings
   * stay: views and typed access see the memory as it now reads, nothing is detached.
   * Offset and size must both be multiples of `PAGE_SIZE` (no byte you did not name is lost
   * with its page); on a huge-page `SharedMemory`, discard whole huge pages.
   * @param offset byte offset in the region (page aligned)
   * @param size size in bytes (page aligned; 0 does nothing)
   * @throws `ERR_MMAP_UNALIGNED`, `ERR_MMAP_OUT_OF_BOUNDS`, `ERR_MMAP_ACCESS` (a hole in the
   * range, or memory mapped without `WRITE`: nothing is discarded), or the errno of `madvise`
   * (`EPERM`: a memfd sealed with `Seal.WRITE`/`Seal.FUTURE_WRITE`; `EOPNOTSUPP`: a file system
   * that cannot punch holes; `EINVAL`: locked pages) — an overlay before the failing one in an
   * arena is discarded already.
   * @example
   * ram.discard(balloonOffset, balloonSize) // a balloon inflated: give the pages back
   */
  discard(offset: number, size: number): void
  /**
   * `msync(MS_SYNC)` on the libuv thread pool; the event loop keeps going. Until the promise
   * settles the range stays mapped: overlays and removals over it are refused with
   * `ERR_MMAP_BUSY`, and `close()` defers the unmap until it settles.
   * @param offset byte offset in the region
   * @param size size in bytes
   * @throws (rejects with) the errors of {@link msync}.
   * @example
   * await disk.msyncAsync(0, disk.size)
   */
  msyncAsync(offset: number, size: number): Promise<void>
  /**
   * Prefaults the range (`MADV_POPULATE_READ`, or `_WRITE` with `write: true`) on the libuv thread
   * pool — e.g. gigabytes of guest RAM before a VM starts. Kernels before 5.14 lack these
   * advices; there each page is touched for reading instead. Lifetime rules as for {@link msyncAsync}.
   * @param offset byte offset in the region
   * @param size size in bytes
   * @param options the options: see {@link PopulateOptions}
   * @throws (rejects with) the errors of {@link madvise}.
   * @example
   * await arena.populateAsync(0, ram.size, { write: true })
   */
  populateAsync(offset: number, size: number, options?: PopulateOptions): Promise<void>
  /** Asynchronous operations still in flight. */
  readonly pendingOperations: number
  /**
   * A copy of `length` bytes at `offset` (any byte offset). Fault-safe: a page that
   * vanished under the mapping is `EFAULT`, not `SIGBUS`.
   * @param offset byte offset in the region
   * @param length length in bytes
   * @throws `ERR_MMAP_OUT_OF_BOUNDS`, `ERR_MMAP_ACCESS` (no `READ`, or a hole), `EFAULT`.
   * @example
   * const header = arena.read(0x7000, 64)
   */
  read(offset: number, length: number): Buffer
  /**
   * Copies `target.byteLength` bytes at `offset` (any byte offset) into `target`: the
   * allocation-free form of {@link read}, for hot loops and large copies (a fresh `Buffer`
   * of 1 MiB costs more than copying into it). Pass a `subarray` to fill part of a buffer.
   * Fault-safe like {@link read}. `target` may be a view of this very region; the copy then
   * behaves like `memmove`.
   * @param offset byte offset in the region
   * @param target the bytes to fill: any `ArrayBufferView` or `ArrayBuffer`
   * @returns the number of bytes copied, `target.byteLength`.
   * @throws `ERR_INVALID_ARG_TYPE` (not bytes), `ERR_MMAP_OUT_OF_BOUNDS`, `ERR_MMAP_ACCESS`
   * (no `READ`, or a hole), `EFAULT`.
   * @example
   * const sector = Buffer.allocUnsafe(512)
   * disk.readInto(lba * 512, sector)
   */
  readInto(offset: number, target: ArrayBufferView | ArrayBuffer): number
  /**
   * Copies `data` to `offset` (any byte offset); fault-safe like {@link read}.
   * @param offset byte offset in the region
   * @param data the bytes to copy: any `ArrayBufferView` or `ArrayBuffer`
   * @throws `ERR_INVALID_ARG_TYPE`, `ERR_MMAP_OUT_OF_BOUNDS`, `ERR_MMAP_ACCESS` (no `WRITE`, or a hole), `EFAULT`.
   * @example
   * arena.write(0x7000, Buffer.from('boot params'))
   */
  write(offset: number, data: ArrayBufferView | ArrayBuffer): void
  /**
   * Reads a file straight into the region at `offset` (any byte offset): `pread` into the
   * mapping, no intermediate `Buffer` — for kernels, initrds, firmware and disk images. The
   * range must be mapped `WRITE` without a hole (it is checked before anything is read).
   * @param file a path (opened read-only for the call) or an open fd (its position is unchanged).
   * @param offset byte offset in the region
   * @param options the options: see {@link LoadOptions}
   * @returns the bytes loaded: `length`, or fewer where the file ends.
   * @throws `ERR_INVALID_ARG_TYPE`, `ERR_MMAP_OUT_OF_BOUNDS`, `ERR_MMAP_ACCESS` (no `WRITE`, or
   * a hole), `ERR_INVALID_ARG_VALUE` (no `length` for a file of unknown size), the errors of
   * `fs.openSync` for a path, or the errno of `pread` (`EBADF`, `EISDIR`, `EFAULT` for a page
   * of the region that cannot be written, with `bytesCopied`).
   * @example
   * const loaded = ram.loadFile(0x20_0000, 'vmlinux.bin')
   */
  loadFile(offset: number, file: LoadSource, options?: LoadOptions): number
  /**
   * {@link loadFile} on the libuv thread pool; the range stays as it is until the promise settles
   * (changes over it are refused with `ERR_MMAP_BUSY`, `close()` defers the unmap).
   * @param offset byte offset in the region
   * @param file a path (opened read-only for the call) or an open fd (its position is unchanged)
   * @param options the options: see {@link LoadOptions}
   * @throws (rejects with) the errors of {@link loadFile}.
   * @example
   * await ram.loadFileAsync(initrdOffset, 'initrd.img')
   */
  loadFileAsync(offset: number, file: LoadSource, options?: LoadOptions): Promise<number>
  /**
   * A zero-copy `Buffer` over the range, which must be mapped `READ | WRITE`. It is
   * detached (length 0) when any part of its range is removed, overlaid again or the
   * region closed; it keeps the memory mapped while it lives.
   * @param offset byte offset in the region
   * @param length length in bytes
   * @throws `ERR_MMAP_OUT_OF_BOUNDS`, `ERR_MMAP_ACCESS`, `ERR_OUT_OF_RANGE` (longer than
   * `buffer.constants.MAX_LENGTH`), `ERR_MMAP_NO_EXTERNAL` (runtime forbids external buffers).
   * @example
   * const ring = new Uint32Array(arena.view(PAGE_SIZE, PAGE_SIZE).buffer)
   */
  view(offset: number, length: number): Buffer
  /**
   * A `SharedArrayBuffer` over the range — for `Atomics.wait`/`notify`, and to post to a worker
   * (where it shares the same memory). It can never be detached, so it *pins* the range until it
   * is garbage-collected in every thread that holds it: changes over the range are refused with
   * `ERR_MMAP_BUSY` meanwhile, `close()` leaves the memory mapped until then, and it counts among
   * {@link pendingOperations}. Only memory mapped `READ | WRITE` that cannot vanish (anonymous, or
   * a memfd sealed against shrinking) is handed out. Needs a runtime with
   * `node_api_create_external_sharedarraybuffer` (recent Node 22, 24 and 26; not Node 20).
   * @param offset byte offset in the region
   * @param length length in bytes
   * @throws `ERR_MMAP_UNSUPPORTED` (an older runtime), `ERR_MMAP_NO_EXTERNAL` (runtime forbids
   * external buffers), `ERR_MMAP_OUT_OF_BOUNDS`, `ERR_MMAP_ACCESS` (not `READ | WRITE`, a hole, or
   * memory that could vanish), `ERR_MMAP_CLOSED`.
   * @example
   * const doorbell = new Int32Array(ram.sharedView(ringOffset, PAGE_SIZE))
   * worker.postMessage(doorbell) // the worker Atomics.wait()s on it
   */
  sharedView(offset: number, length: number): SharedArrayBuffer
  /**
   * Detaches every view and unmaps; with asynchronous operations in flight the region is closed
   * at once but stays mapped until the last of them settles. Idempotent; never throws.
   * @example
   * arena.close()
   */
  close(): void
}

/** Options of {@link MappedRegion.addFdMapping}. */
export interface FdMappingOptions {
  /**
   * `MAP_SHARED` (writes reach the file); `false` maps `MAP_PRIVATE`: copy-on-write, writes stay
   * in this process, the file never changes, and a read-only fd may be mapped `READ_WRITE`.
   * Default `true`.
   */
  shared?: boolean
}

/** Options of {@link MappedRegion.populateAsync}. */
export interface PopulateOptions {
  /** Prefault for writing (`MADV_POPULATE_WRITE`: allocates private pages, breaks COW); default `false` (`MADV_POPULATE_READ`). */
  write?: boolean
}

/**
 * Shared implementation of {@link MemoryMapping} and {@link MemoryMappingArena}; not part of the
 * API (hidden from the docs, whose classes show its members as their own).
 * @hidden
 */
abstract class Region extends TypedAccess<number> implements MappedRegion {
  /** @internal The handle the `native.region*` entry points take; released when this object is collected. */
  protected readonly h: number
  #size = -1
  #reclaimScheduled = false
  /** Changes made so far: typed access keeps a "no window here" until the next one. */
  #epoch = 0

  /** @internal `create` makes the native region, owned by this object, and returns its handle. */
  protected constructor(create: (owner: object) => number) {
    super()
    this.h = create(this)
  }

  get size(): number {
    // Asked once, when first read (a region made and closed unread never asks).
    if (this.#size < 0) this.#size = regionSize(this.h)
    return this.#size
  }

  get address(): bigint {
    return regionAddress(this.h)
  }

  get closed(): boolean {
    return regionClosed(this.h)
  }

  /**
   * @internal After a change (or `close()`) that detached live views: the native side
   * keeps their memory accessible, because a built-in that called back into JavaScript
   * may still hold a view's pointer. On the next turn of the event loop no synchronous
   * frame can; then the memory gets what the change asked for.
   */
  protected afterChange(held: true | undefined): void {
    // No closure here: this runs on every overlay and removal, and a closure over
    // `this` would allocate a context on each call.
    this.#epoch++
    if (held === true && !this.#reclaimScheduled) this.#scheduleReclaim()
  }

  protected typedWindow(at: number): WindowAnswer {
    return regionWindow(this.h, at)
  }

  protected typedEpoch(): number {
    return this.#epoch
  }

  protected typedAddress(at: bigint): number {
    throw invalidArgType('offset', 'of type number', at)
  }

  protected typedCopyOut(at: unknown, target: Uint8Array): void {
    this.readInto(at as number, target)
  }

  protected typedCopyIn(at: unknown, data: Uint8Array): void {
    this.write(at as number, data)
  }

  protected typedAtomicCheck(at: unknown, width: 4 | 8): void {
    regionAtomicCheck(this.h, v.number('offset', at), width)
  }

  protected typedHandle(): number {
    return this.h
  }

  /**
   * @internal Shares the native region (see {@link MemoryMappingArena.share}); `[id, token]`.
   * Typed-access windows are gone from then on: the next access asks again (and gets none).
   */
  protected shareNative(): [number, number] {
    const [id, token] = regionShare(this.h)
    this.afterChange(undefined)
    return [id, token]
  }

  #scheduleReclaim(): void {
    this.#reclaimScheduled = true
    setImmediate(() => {
      this.#reclaimScheduled = false
      regionReclaim(this.h)
    }).unref()
  }

  addFdMapping(
    offset: number,
    size: number,
    fd: number | SharedMemory,
    fdOffset: number | bigint,
    prot: ProtectionFlags,
    options?: FdMappingOptions,
  ): void {
    const o = v.number('offset', offset)
    const s = v.number('size', size)
    // A SharedMemory maps its private descriptor (see `regionAddShmMapping`); a number is any fd.
    const source = typeof fd === 'number' ? undefined : sharedMemorySource(fd)
    const f = source === undefined ? v.number('fd', fd) : -1
    const off = v.fdOffset('fdOffset', fdOffset)
    const p = v.protection(prot, 'prot')
    // No options object (the hot path): shared, without reading anything.
    const shared = options === undefined ? true : v.bool('shared', v.options('options', options, ['shared']).shared, true)
    this.afterChange(
      typeof off === 'bigint'
        ? regionAddFdMappingBig(this.h, o, s, source === undefined ? f : (sharedMemoryState(fd)?.fd ?? -1), off, p, shared)
        : source === undefined
          ? regionAddFdMapping(this.h, o, s, f, off, p, shared)
          : regionAddShmMapping(this.h, o, s, source, off, p, shared),
    )
  }

  removeMapping(offset: number, size: number): void {
    this.afterChange(regionRemoveMapping(this.h, v.number('offset', offset), v.number('size', size)))
  }

  msync(offset: number, size: number): void {
    regionMsync(this.h, v.number('offset', offset), v.number('size', size))
  }

  madvise(offset: number, size: number, advice: Advice | number): void {
    regionMadvise(this.h, v.number('offset', offset), v.number('size', size), v.advice(advice))
  }

  mlock(offset: number, size: number, options?: { onFault?: boolean }): void {
    const o = v.options('options', options, ['onFault'])
    const onFault = v.bool('onFault', o.onFault, false)
    regionMlock(this.h, v.number('offset', offset), v.number('size', size), onFault)
  }

  munlock(offset: number, size: number): void {
    regionMunlock(this.h, v.number('offset', offset), v.number('size', size))
  }

  discard(offset: number, size: number): void {
    regionDiscard(this.h, v.number('offset', offset), v.number('size', size))
  }

  async msyncAsync(offset: number, size: number): Promise<void> {
    return regionMsyncAsync(this.h, v.number('offset', offset), v.number('size', size))
  }

  async populateAsync(offset: number, size: number, options?: PopulateOptions): Promise<void> {
    const o = v.options('options', options, ['write'])
    const write = v.bool('write', o.write, false)
    return regionPopulateAsync(this.h, v.number('offset', offset), v.number('size', size), write)
  }

  /** Asynchronous operations ({@link msyncAsync}, {@link populateAsync}) still in flight. */
  get pendingOperations(): number {
    return regionPending(this.h)
  }

  read(offset: number, length: number): Buffer {
    return regionRead(this.h, v.number('offset', offset), v.number('length', length))
  }

  readInto(offset: number, target: ArrayBufferView | ArrayBuffer): number {
    const bytes = v.bytes('target', target)
    regionReadInto(this.h, v.number('offset', offset), bytes)
    return v.byteLength(bytes)
  }

  write(offset: number, data: ArrayBufferView | ArrayBuffer): void {
    const bytes = v.bytes('data', data)
    regionWrite(this.h, v.number('offset', offset), bytes)
  }

  loadFile(offset: number, file: LoadSource, options?: LoadOptions): number {
    const o = v.number('offset', offset)
    const { fileOffset, length } = loadRequest(options)
    return withFile(file, (fd) => regionLoadFile(this.h, o, fd, fileOffset, length))
  }

  async loadFileAsync(offset: number, file: LoadSource, options?: LoadOptions): Promise<number> {
    const o = v.number('offset', offset)
    const { fileOffset, length } = loadRequest(options)
    return withFile(file, (fd) => regionLoadFileAsync(this.h, o, fd, fileOffset, length))
  }

  sharedView(offset: number, length: number): SharedArrayBuffer {
    return regionSharedView(this.h, v.number('offset', offset), v.number('length', length))
  }

  view(offset: number, length: number): Buffer {
    const o = v.number('offset', offset)
    return regionView(this.h, o, v.viewLength(length))
  }

  close(): void {
    this.afterChange(regionClose(this.h))
  }

  /** Same as `close()`, for `using` declarations. */
  [Symbol.dispose](): void {
    this.close()
  }
}

/**
 * Passed as `size` by {@link MemoryMappingArena.attach}, with the maker of the native handle as
 * `options`: only this module has it, so no caller of the constructor can.
 */
const ATTACHED: unique symbol = Symbol('attached')

/** Options of {@link MemoryMappingArena.reserve}. */
export interface ReserveOptions {
  /**
   * Where the reservation starts: a multiple of `align`, a power of two >= `PAGE_SIZE` (e.g.
   * `2 << 20` or `1 << 30`, so that huge-page backings can be overlaid at their alignment). The
   * excess reserved to align it is given back at once. Default `PAGE_SIZE`.
   */
  align?: number
}

/** Options of {@link MemoryMapping.anonymous}. */
export interface AnonymousOptions {
  /** {@link Protection} bits; default `READ_WRITE`. */
  protection?: ProtectionFlags
  /** Prefault the pages (`MAP_POPULATE`); default `false`. */
  populate?: boolean
  /** `MAP_SHARED` (shared with children after fork) instead of `MAP_PRIVATE`; default `false`. */
  shared?: boolean
}

/** Options of {@link MemoryMapping.fromFd}. */
export interface FdOptions {
  /** File offset, a multiple of `PAGE_SIZE`; default 0. */
  offset?: number
  /** {@link Protection} bits; default `READ_WRITE`. */
  protection?: ProtectionFlags
  /** Prefault the pages (`MAP_POPULATE`); default `false`. */
  populate?: boolean
  /** `MAP_SHARED` (writes reach the file) instead of `MAP_PRIVATE`; default `true`. */
  shared?: boolean
  /** For regular files: refuse a mapping past the end of the file (`ERR_MMAP_BEYOND_EOF`); default `true`. */
  checkEof?: boolean
}

/** Options of {@link MemoryMapping.fromFile}. */
export interface FileOptions {
  /** Bytes to map; default the rest of the file from `offset`. */
  size?: number
  /** File offset, a multiple of `PAGE_SIZE`; default 0. */
  offset?: number
  /** {@link Protection} bits; default `READ`. The file is opened writable only if `WRITE` is asked with `shared`. */
  protection?: ProtectionFlags
  /** `MAP_SHARED` instead of `MAP_PRIVATE`; default `true`. */
  shared?: boolean
}

/**
 * One mapping: anonymous memory, an fd or a file. Unmapped by `close()`, `using`,
 * or its finalizer once garbage-collected (and after its last view is gone).
 *
 * @example
 * using m = MemoryMapping.anonymous(1 << 20)
 * m.write(0, Buffer.from('hello'))
 * m.read(0, 5) // <Buffer 68 65 6c 6c 6f>
 */
export class MemoryMapping extends Region {
  /** The protection the mapping was made with. */
  readonly protection: ProtectionFlags

  private constructor(create: (owner: object) => number, prot: ProtectionFlags) {
    super(create)
    this.protection = prot
  }

  /**
   * A handle for {@link MemoryMapping.attach} in another thread; see
   * {@link MemoryMappingArena.share} for what sharing means (one mapping at the same address,
   * closed per object, views checked across objects, typed accesses without windows).
   * @returns the same handle every time.
   * @throws `ERR_MMAP_CLOSED`.
   * @example
   * worker.postMessage(ring.share())
   */
  share(): ShareHandle {
    const [id, token] = this.shareNative()
    return { kind: 'MemoryMapping', id, token, protection: this.protection }
  }

  /**
   * An object over the mapping a {@link share} handle names, in this thread (same `address`).
   * @param handle what `share()` returned (in any thread)
   * @throws as {@link MemoryMappingArena.attach} (`ERR_MMAP_INVALID_HANDLE` for an arena's handle).
   * @example
   * using ring = MemoryMapping.attach(message)
   */
  static attach(handle: ShareHandle): MemoryMapping {
    const [id, token, protection] = readShareHandle(handle, 'MemoryMapping')
    const prot = v.protection(protection, 'handle.protection')
    return new MemoryMapping((owner) => regionAttach(owner, id, token, false), prot)
  }

  /**
   * Maps `size` bytes of anonymous memory (zero-filled).
   * @param size size in bytes
   * @param options the options: see {@link AnonymousOptions}
   * @throws `ERR_INVALID_ARG_TYPE`, `ERR_OUT_OF_RANGE` (size 0, bad protection), `ENOMEM`.
   * @example
   * using scratch = MemoryMapping.anonymous(1 << 20, { populate: true })
   */
  static anonymous(size: number, options?: AnonymousOptions): MemoryMapping {
    const o = v.options('options', options, ['protection', 'populate', 'shared'])
    const s = v.number('size', size)
    const prot = o.protection === undefined ? Protection.READ_WRITE : v.protection(o.protection)
    const populate = v.bool('populate', o.populate, false)
    const shared = v.bool('shared', o.shared, false)
    return new MemoryMapping((owner) => regionAnonymous(owner, s, prot, populate, shared), prot)
  }

  /**
   * Maps `size` bytes of `fd` from `options.offset`. The fd may be closed afterwards.
   * @param fd an open file descriptor
   * @param size size in bytes
   * @param options the options: see {@link FdOptions}
   * @throws `ERR_MMAP_UNALIGNED` (offset), `ERR_MMAP_BEYOND_EOF` (a regular file too short,
   * unless `checkEof: false`), `EBADF`, `EACCES` (a read-only fd mapped writable and shared), `ENODEV`.
   * @example
   * using second = MemoryMapping.fromFd(shm.fd, shm.size)
   */
  static fromFd(fd: number, size: number, options?: FdOptions): MemoryMapping {
    const o = v.options('options', options, ['offset', 'protection', 'populate', 'shared', 'checkEof'])
    const f = v.number('fd', fd)
    const s = v.number('size', size)
    const offset = o.offset === undefined ? 0 : v.number('offset', o.offset)
    const prot = o.protection === undefined ? Protection.READ_WRITE : v.protection(o.protection)
    const populate = v.bool('populate', o.populate, false)
    const shared = v.bool('shared', o.shared, true)
    const checkEof = v.bool('checkEof', o.checkEof, true)
    return new MemoryMapping((owner) => regionFromFd(owner, f, s, offset, prot, populate, shared, checkEof), prot)
  }

  /**
   * Opens `path` (read-only unless `WRITE` is asked with `shared`), maps it, closes the fd.
   * @param path the file to map
   * @param options the options: see {@link FileOptions}
   * @throws the errors of `fs.openSync` (`ENOENT`, `EACCES`…), `ERR_OUT_OF_RANGE` (nothing
   * to map), and those of {@link MemoryMapping.fromFd}.
   * @example
   * using rom = MemoryMapping.fromFile('firmware.bin') // read-only, whole file
   */
  static fromFile(path: string | URL | Buffer, options?: FileOptions): MemoryMapping {
    const o = v.options('options', options, ['size', 'offset', 'protection', 'shared'])
    if (typeof path !== 'string' && !(path instanceof URL) && !Buffer.isBuffer(path)) {
      throw invalidArgType('path', 'of type string, URL or Buffer', path)
    }
    const offset = o.offset === undefined ? 0 : v.number('offset', o.offset)
    const prot = o.protection === undefined ? Protection.READ : v.protection(o.protection)
    const shared = v.bool('shared', o.shared, true)
    const size = o.size === undefined ? undefined : v.number('size', o.size)
    const access = (prot & Protection.WRITE) !== 0 && shared ? fsConstants.O_RDWR : fsConstants.O_RDONLY
    // O_NONBLOCK: opening a FIFO without a writer (or a device that waits for a
    // carrier) would otherwise block forever. It does not change how a file maps.
    const fd = openSync(path, access | fsConstants.O_NONBLOCK)
    try {
      const st = fstatSync(fd)
      if (!st.isFile() && !st.isBlockDevice() && !st.isCharacterDevice()) {
        const kind = st.isFIFO() ? 'a FIFO' : st.isDirectory() ? 'a directory' : st.isSocket() ? 'a socket' : 'not a file'
        throw invalidArgValue('path', `must name a regular file or a device that can be mapped; it is ${kind}`, String(path))
      }
      let length = size
      if (length === undefined) {
        const fileSize = st.size
        if (fileSize <= offset) throw outOfRange('size', `greater than 0 (the file has ${fileSize} bytes from offset ${offset})`, 0)
        length = fileSize - offset
      }
      const mapped = length
      return new MemoryMapping((owner) => regionFromFd(owner, fd, mapped, offset, prot, false, shared, true), prot)
    } finally {
      closeSync(fd)
    }
  }
}

/**
 * A reservation of address space (`PROT_NONE`, costs no memory) that fds and
 * anonymous memory are overlaid into at page granularity. Its layout is tracked:
 * see {@link mappings}.
 *
 * @example
 * using arena = MemoryMappingArena.reserve(1 << 30)
 * using ram = SharedMemory.create('ram', 64 << 20)
 * arena.addFdMapping(0, ram.size, ram.fd, 0, Protection.READ_WRITE)
 * arena.removeMapping(0, PAGE_SIZE) // a hole at guest page 0
 */
export class MemoryMappingArena extends Region {
  /**
   * Reserves `size` bytes, rounded up to whole pages (`PROT_NONE`, costs no memory).
   * @param size size in bytes
   * @param options the options: see {@link ReserveOptions}
   * @throws `ERR_INVALID_ARG_TYPE`, `ERR_OUT_OF_RANGE` (size 0; an `align` that is not a power
   * of two >= `PAGE_SIZE`), `ENOMEM` (no address space, or the process is at its map-count headroom).
   * @example
   * using arena = new MemoryMappingArena(2 ** 40) // 1 TiB of address space
   */
  constructor(size: number, options?: ReserveOptions) {
    super((size as unknown) === ATTACHED ? (options as unknown as (owner: object) => number) : MemoryMappingArena.#reserve(size, options))
  }

  static #reserve(size: number, options: ReserveOptions | undefined): (owner: object) => number {
    const s = v.number('size', size)
    const o = v.options('options', options, ['align'])
    const align = o.align === undefined ? PAGE_SIZE : v.number('align', o.align)
    return (owner) => regionReserve(owner, s, align)
  }

  /**
   * A handle for {@link MemoryMappingArena.attach} in another thread: post it to a worker
   * (`postMessage` copies it) and attach there to get an object over **this** reservation, at the
   * same address, with one layout behind one lock — an overlay or removal made through any of the
   * objects is seen by every thread's next call. Each object is closed on its own; the memory is
   * unmapped when the last one is closed or collected (and nothing else uses it).
   *
   * From the first `share()` on, views are checked across objects: a change over a live view of
   * another object (another thread's, which only that thread can detach) is refused with
   * `ERR_MMAP_BUSY` until that view is collected, detached by a change in its own thread, or its
   * object closed. Typed accesses stop using windows (they take the checked copy; atomics the
   * native checked atomic operation), so that no thread can touch memory another thread replaced.
   * @returns the same handle every time.
   * @throws `ERR_MMAP_CLOSED`.
   * @example
   * const worker = new Worker('./vcpu.js', { workerData: arena.share() })
   * // in the worker: using arena = MemoryMappingArena.attach(workerData)
   */
  share(): ShareHandle {
    const [id, token] = this.shareNative()
    return { kind: 'MemoryMappingArena', id, token }
  }

  /**
   * An object over the arena a {@link share} handle names, in this thread: same `address`, same
   * layout, owning the memory until closed or collected.
   * @param handle what `share()` returned (in any thread)
   * @throws `ERR_INVALID_ARG_TYPE`/`ERR_INVALID_ARG_VALUE` (not a handle's shape),
   * `ERR_MMAP_INVALID_HANDLE` (not a handle this process handed out, or a `MemoryMapping`'s),
   * `ERR_MMAP_STALE_HANDLE` (the arena was closed or collected in every thread).
   * @example
   * using arena = MemoryMappingArena.attach(workerData)
   */
  static attach(handle: ShareHandle): MemoryMappingArena {
    const [id, token] = readShareHandle(handle, 'MemoryMappingArena')
    const attach = (owner: object): number => regionAttach(owner, id, token, true)
    return new MemoryMappingArena(ATTACHED as unknown as number, attach as unknown as ReserveOptions)
  }

  /**
   * Reserves `size` bytes, rounded up to whole pages. Same as `new MemoryMappingArena(size, options)`.
   * @param size size in bytes
   * @param options the options: see {@link ReserveOptions}
   * @throws as the constructor.
   * @example
   * using arena = MemoryMappingArena.reserve(2 ** 32)
   * using huge = MemoryMappingArena.reserve(1 << 30, { align: 2 << 20 }) // for 2 MiB pages
   */
  static reserve(size: number, options?: ReserveOptions): MemoryMappingArena {
    return new MemoryMappingArena(size, options)
  }

  /**
   * Maps `size` bytes of private anonymous memory at `offset` (`MAP_FIXED | MAP_NORESERVE`),
   * replacing whatever was there; views over the range are detached.
   * @param offset byte offset in the region
   * @param size size in bytes
   * @param prot the {@link Protection} to map with
   * @throws `ERR_MMAP_UNALIGNED`, `ERR_MMAP_OUT_OF_BOUNDS`, `ERR_OUT_OF_RANGE` (size 0, bad
   * protection), `ERR_MMAP_BUSY`, `ENOMEM`.
   * @example
   * arena.addAnonymous(0, 1 << 20, Protection.READ_WRITE)
   */
  addAnonymous(offset: number, size: number, prot: ProtectionFlags): void {
    const o = v.number('offset', offset)
    const s = v.number('size', size)
    this.afterChange(regionAddAnonymous(this.h, o, s, v.protection(prot, 'prot')))
  }

  /**
   * Changes the protection of `[offset, offset + size)` in place (`mprotect`): contents and
   * backing are kept, `mappings()` follows. Views over the range are detached first when the
   * new protection lacks `READ | WRITE` (a view needs both); otherwise they stay valid.
   * @param offset byte offset in the region
   * @param size size in bytes
   * @param prot the {@link Protection} to map with
   * @throws `ERR_MMAP_UNALIGNED`, `ERR_MMAP_OUT_OF_BOUNDS`, `ERR_OUT_OF_RANGE` (size 0, bad
   * protection), `ERR_MMAP_ACCESS` (the range has a hole), `ERR_MMAP_BUSY` (an asynchronous
   * operation uses the range, or an fd overlay narrower than `READ | WRITE` made over live views
   * in this turn of the event loop is not yet shared), or the errno of `mprotect` (`EACCES`:
   * `WRITE` on an fd opened read-only).
   * @example
   * arena.protect(romOffset, romSize, Protection.READ) // firmware: read-only from now on
   */
  protect(offset: number, size: number, prot: ProtectionFlags): void {
    const o = v.number('offset', offset)
    const s = v.number('size', size)
    this.afterChange(regionProtect(this.h, o, s, v.protection(prot, 'prot')))
  }

  /**
   * Kernel mappings (VMAs) this arena occupies: its overlays plus the reserved holes
   * between them. Each counts against `vm.max_map_count`; see {@link mapCount}.
   * @throws `ERR_MMAP_CLOSED`.
   * @example
   * arena.kernelMappingCount // 3 after one overlay in the middle of a reservation
   */
  get kernelMappingCount(): number {
    return regionKernelMappings(this.h)
  }

  /**
   * The current layout, sorted by offset, in whole pages; holes are not listed; pieces the
   * kernel sees as one mapping are one entry.
   * @throws `ERR_MMAP_CLOSED`.
   * @example
   * for (const m of arena.mappings()) console.log(m.offset, m.size, m.kind, m.protection)
   */
  mappings(): MappingInfo[] {
    return regionMappings(this.h)
  }
}
