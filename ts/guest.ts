import { types } from 'node:util'
import { Protection, type ProtectionFlags } from './constants.js'
import { type DirtyBitmap, type DirtyTracker, KernelDirtyTracker, needTracking, SoftwareDirtyTracker } from './dirty.js'
import { invalidArgType, invalidArgValue, invalidHandle, outOfRange, stateError, unsupported } from './errors.js'
import {
  guestAddRegion,
  guestRemoveRegion,
  guestProtect,
  guestCovered,
  guestTranslate,
  guestRead,
  guestReadInto,
  guestWrite,
  guestDiscard,
  guestLoadFile,
  guestWindow,
  guestAtomicCheck,
  fileLoadLength,
  regionReclaim,
  guestTrackDirty,
  guestDirtyKernel,
  regionLoadFileAsync,
  guestRegions,
  guestPagerStart,
  guestPagerStatus,
  guestPagerRecord,
} from './calls.js'
import type { GuestRegionInfo } from '../index.js'
import { loadRequest, withFile, type LoadOptions, type LoadSource } from './load.js'
import { HANDLE_KEYS, MemoryMappingArena, readShareHandle, type ShareHandle } from './region.js'
import { SharedMemory, sharedMemorySource, sharedMemoryState } from './shm.js'
import {
  applyDiff,
  type GuestInternals,
  pagerRestored,
  type RestoreOptions,
  restoreSnapshot,
  type SnapshotManifest,
  type SnapshotOptions,
  writeSnapshot,
} from './snapshot.js'
import { TypedAccess, type WindowAnswer } from './typed.js'
import * as v from './validate.js'

/** What backs a guest region: a {@link SharedMemory}, any fd at an offset, or private anonymous memory. */
export type GuestBacking =
  | SharedMemory
  | {
      /** Any mappable fd (a memfd, a file, a device). */
      fd: number
      /** Offset in the fd of the region's first byte, page aligned. */
      fdOffset: number | bigint
      /**
       * `MAP_SHARED` (default `true`); `false` maps the fd copy-on-write (`MAP_PRIVATE`): guest
       * writes stay in this process and never reach the file — how a snapshot is restored.
       */
      shared?: boolean
    }
  | 'anonymous'

/** A region of guest-physical memory, for {@link GuestMemory}. */
export interface GuestRegionSpec {
  /** Guest-physical start address, page aligned. */
  guestAddress: bigint | number
  /** Size in bytes, a multiple of `PAGE_SIZE`. */
  size: number
  /** What backs it. */
  backing: GuestBacking
  /** {@link Protection} bits; default `READ_WRITE`. */
  protection?: ProtectionFlags
}

/** One memory slot as KVM wants it (`KVM_SET_USER_MEMORY_REGION`). */
export interface GuestRegion {
  /**
   * The KVM memory slot number for `KVM_SET_USER_MEMORY_REGION`: stable for the region's
   * life; the lowest number free when it was added (a removed region's number is reused).
   */
  slot: number
  /** Guest-physical start address. */
  guestAddress: bigint
  /** Size in bytes. */
  size: number
  /** Where the region is mapped in this process: `userspace_addr` for KVM. */
  userspaceAddress: bigint
  /** Whether the guest may not write it (no `WRITE` protection): set `KVM_MEM_READONLY`. */
  readonly: boolean
}

/** Options of {@link GuestMemory}. */
export interface GuestMemoryOptions {
  /**
   * Size of the guest-physical address space to reserve (page aligned), so that
   * regions can be hot-plugged later. Default: the end of the highest region.
   */
  addressSpace?: number
  /**
   * Leave guest memory out of this process's core dumps (`MADV_DONTDUMP` on every region, as
   * crosvm and Cloud Hypervisor do): a crash of the VMM then does not write gigabytes of guest
   * RAM; default `true`.
   */
  dontDump?: boolean
  /**
   * Track the pages written (see {@link GuestMemory.takeDirty}); needed for
   * {@link GuestMemory.snapshot}'s `dirtyOnly`. `'kernel'`: the kernel records every writer's
   * writes — this object's, views', other threads', the guest's under KVM — at no cost per write
   * here (Linux 6.7+: userfaultfd write-protect and `PAGEMAP_SCAN`), or the constructor throws
   * `ERR_MMAP_UNSUPPORTED` saying why it cannot; `'software'`: one bit per page, set by every write
   * through this object; `true`: the kernel where it can, else software
   * ({@link GuestMemory.dirtyTracking} says which). Default `false`.
   */
  trackDirty?: boolean | 'kernel' | 'software'
  /**
   * Alignment of the reserved address space (and so of every guest address in host memory): a
   * power of two >= `PAGE_SIZE`, e.g. `2 << 20` for 2 MiB huge-page backings; default `PAGE_SIZE`.
   * See {@link MemoryMappingArena.reserve}.
   */
  align?: number
}

/**
 * A region spec as validated: every property of the caller's object read exactly
 * once (a getter could answer differently on a second read), and only this
 * snapshot used from then on.
 */
interface RegionSnapshot {
  start: number
  size: number
  protection: ProtectionFlags
  /** `source`: the SharedMemory itself, mapped through its own descriptor (no `fstat` per region). */
  backing: { fd: number; fdOffset: number | bigint; shared: boolean; source?: SharedMemory } | 'anonymous'
}

/**
 * More regions than this cannot be mapped anyway: each is a kernel mapping, and
 * `vm.max_map_count` defaults to 65530. The bound keeps a hostile array-like
 * (a proxy claiming 2^32 - 1 entries) from keeping the constructor busy.
 */
const MAX_REGIONS = 1 << 16

/**
 * What {@link GuestMemory.share} returns: a plain object that `postMessage` and
 * `structuredClone` copy as they are, for {@link GuestMemory.attach} in another thread.
 */
export interface GuestShareHandle {
  /** The class whose `attach()` takes it. */
  readonly kind: 'GuestMemory'
  /** The guest's arena. */
  readonly arena: ShareHandle
  /** Whether regions added get `MADV_DONTDUMP` (the option the guest was created with). */
  readonly dontDump: boolean
}

/** What {@link GuestMemory.attach} passes its constructor, after {@link ATTACHED}. */
interface Attached {
  arena: MemoryMappingArena
  dontDump: boolean
}

/**
 * Passed as `regions` by {@link GuestMemory.attach}, with an {@link Attached} as `options`: only
 * this module has it, so no caller of the constructor can.
 */
const ATTACHED: unique symbol = Symbol('attached')

/** `guestAddRegion`'s `kind` for each backing. */
enum Kind {
  Anonymous = 0,
  Fd = 1,
  SharedMemory = 2,
}

/** `trackDirty`, read once: `true` is the kernel where it can, else software. */
function trackingMode(value: unknown): 'auto' | 'kernel' | 'software' | 'off' {
  if (value === undefined || value === false) return 'off'
  if (value === true) return 'auto'
  if (value === 'kernel' || value === 'software') return value
  if (typeof value === 'string') throw invalidArgValue('options.trackDirty', "is 'kernel', 'software' or a boolean", value)
  throw invalidArgType('options.trackDirty', "a boolean, 'kernel' or 'software'", value)
}

/**
 * A guest address or size, narrowed to a safe integer: `GuestMemory` does arithmetic on
 * them to find regions (the address space is reserved in this process, so every valid
 * address is one). Values reaching the arena are checked there again.
 */
function gpa(name: string, value: unknown): number {
  if (typeof value === 'bigint') {
    const n = v.bigintIndex(value)
    if (n >= 0) return n
    throw outOfRange(name, `>= 0 and <= ${Number.MAX_SAFE_INTEGER}`, `${value}n`)
  }
  if (typeof value !== 'number') throw invalidArgType(name, 'of type bigint or number', value)
  return index(name, value)
}

/** A size or length, narrowed to a safe integer for the same reason. */
const index = v.safeInteger
/** What `pread` answers about the descriptor itself, before it transfers anything. */
const REFUSED_BY_PREAD = new Set(['EBADF', 'EISDIR', 'ESPIPE', 'EINVAL', 'ENXIO', 'EOVERFLOW'])

/**
 * How many bytes at the start of its range a load that threw `error` may have written: none for
 * a refusal (every `ERR_*` is decided before any I/O, and `pread` refuses an unreadable
 * descriptor at its first call), `bytesCopied` for a page that could not be written (`EFAULT`),
 * and the whole range for any other failure of the read (`EIO`…), which can follow reads that
 * wrote — a dirty bit too many is safe, one too few loses data in a diff snapshot.
 */
function loadWritten(error: unknown, len: number): number {
  const { code, bytesCopied } = error as { code?: unknown; bytesCopied?: unknown }
  if (typeof code !== 'string' || code.startsWith('ERR_') || REFUSED_BY_PREAD.has(code)) return 0
  if (code === 'EFAULT') return typeof bytesCopied === 'number' ? Math.min(bytesCopied, len) : len
  return len
}

/** Taken once: whether a prototype is in a value's chain, whatever the value's own properties say. */
const inheritsFrom = Object.prototype.isPrototypeOf

/** A whole number of pages: KVM memory slots are (the core's alignment rule). */
const pages = v.wholePages

/**
 * A guest-physical address space (rust-vmm's `GuestMemory`) over one
 * {@link MemoryMappingArena}: guest address `g` lives at `arena.address + g`, so
 * every region is one KVM memory slot. Accesses are checked against the regions: a
 * range may span regions that follow each other without a gap (as in vm-memory); one
 * that touches a hole or runs past the last region is refused with `ERR_GUEST_ADDRESS`.
 *
 * @example
 * using ram = SharedMemory.create('guest-ram', 64 << 20)
 * using guest = new GuestMemory([{ guestAddress: 0n, size: ram.size, backing: ram }])
 * guest.write(0x7000n, Buffer.from('boot params'))
 * for (const [slot, r] of guest.regions().entries()) kvmSetUserMemoryRegion(vm, slot, r)
 */
export class GuestMemory extends TypedAccess<bigint | number> implements Disposable {
  readonly #arena: MemoryMappingArena
  /**
   * The arena's native handle: its guest entry points check every guest address against the
   * region table kept with the arena (natively, under its lock), in the call that copies.
   */
  readonly #h: number
  readonly #dontDump: boolean
  /** With `trackDirty`: the dirty pages (see {@link dirtyTracking}). */
  #dirty: DirtyTracker | undefined
  /** Changes of the regions made through this object: with the arena's, its typed-access epoch. */
  #changes = 0
  #reclaimScheduled = false
  /** With a `lazy: 'pager'` restore: settles when every page is in (see {@link restored}). */
  #restored: Promise<void> | undefined

  /**
   * Reserves the guest-physical address space and maps each region at its guest address.
   * @param regions the guest regions
   * @param options the options: see {@link GuestMemoryOptions}
   * @throws `ERR_GUEST_OVERLAP`, `ERR_MMAP_UNALIGNED` (address or size), `ERR_MMAP_BEYOND_EOF`
   * (a region larger than its memfd or file), `ERR_OUT_OF_RANGE`, `ERR_INVALID_ARG_TYPE`, and
   * the errors of `addFdMapping`.
   * @example
   * using guest = new GuestMemory([{ guestAddress: 0n, size: ram.size, backing: ram }], { addressSpace: 2 ** 32 })
   */
  constructor(regions: readonly GuestRegionSpec[], options?: GuestMemoryOptions) {
    super()
    this.takeBigintAddresses()
    if ((regions as unknown) === ATTACHED) {
      const attached = options as unknown as Attached
      this.#arena = attached.arena
      this.#h = this.typedHandleOf(this.#arena)
      this.#dontDump = attached.dontDump
      this.#dirty = guestDirtyKernel(this.#h) ? new KernelDirtyTracker(this.#h) : undefined
      // Memory being restored by the arena's pager: this object's own promise of it.
      if (guestPagerStatus(this.#h)[0] !== 0n) {
        const h = this.#h
        this.#restored = pagerRestored(() => guestPagerStatus(h))
      }
      return
    }
    if (!Array.isArray(regions)) throw invalidArgType('regions', 'an array', regions)
    const o = v.options('options', options, ['addressSpace', 'dontDump', 'align', 'trackDirty'])
    this.#dontDump = v.bool('dontDump', o.dontDump, true)
    const tracking = trackingMode(o.trackDirty)
    const count: unknown = regions.length
    if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 0 || count > MAX_REGIONS) {
      throw outOfRange('regions.length', `at most ${MAX_REGIONS}`, count)
    }
    const specs: RegionSnapshot[] = []
    // Indexed reads, each once: holes of a sparse array read as undefined and are refused.
    for (let i = 0; i < count; i++) specs.push(GuestMemory.#check(regions[i], `regions[${i}]`))
    const end = specs.reduce((max, s) => Math.max(max, s.start + s.size), 0)
    const space = o.addressSpace === undefined ? end : pages('addressSpace', index('addressSpace', o.addressSpace))
    if (space === 0) throw outOfRange('addressSpace', 'greater than 0 (or at least one region)', space)
    if (space < end) throw outOfRange('addressSpace', `at least the end of the highest region (${end})`, space)
    const sorted = [...specs].sort((a, b) => a.start - b.start)
    this.#arena = MemoryMappingArena.reserve(space, o.align === undefined ? undefined : { align: o.align as number })
    this.#h = this.typedHandleOf(this.#arena)
    try {
      // The native table refuses an overlap (ERR_GUEST_OVERLAP) before mapping anything.
      for (const s of sorted) this.#map(s)
      this.#dirty = this.#startTracking(tracking)
    } catch (e) {
      this.#arena.close()
      throw e
    }
    this.#dirty?.sync(guestRegions(this.#h))
  }

  /** The tracker for `mode`, over the regions mapped so far (which start clean). */
  #startTracking(mode: 'auto' | 'kernel' | 'software' | 'off'): DirtyTracker | undefined {
    if (mode === 'off') return undefined
    if (mode !== 'software') {
      try {
        guestTrackDirty(this.#h)
        return new KernelDirtyTracker(this.#h)
      } catch (e) {
        // `true` falls back to software where the kernel or the process cannot track.
        if (mode === 'kernel' || (e as { code?: unknown }).code !== 'ERR_MMAP_UNSUPPORTED') throw e
      }
    }
    this.notifyStores()
    return new SoftwareDirtyTracker()
  }

  /**
   * How the pages written are tracked: `'kernel'` (every writer, recorded by the kernel, one record
   * for every object over this memory in any thread), `'software'` (the writes made through this
   * object), or `'off'` (created without `trackDirty`).
   */
  get dirtyTracking(): 'kernel' | 'software' | 'off' {
    if (this.#dirty === undefined) return 'off'
    return this.#dirty instanceof KernelDirtyTracker ? 'kernel' : 'software'
  }

  /**
   * Same as `new GuestMemory(regions, options)`.
   * @param regions the guest regions
   * @param options the options: see {@link GuestMemoryOptions}
   * @throws as the constructor.
   * @example
   * const guest = GuestMemory.create([{ guestAddress: 0, size: 1 << 20, backing: 'anonymous' }])
   */
  static create(regions: readonly GuestRegionSpec[], options?: GuestMemoryOptions): GuestMemory {
    return new GuestMemory(regions, options)
  }

  /** Reads and validates one region spec, each property once. */
  static #check(spec: unknown, name: string): RegionSnapshot {
    if (spec === null || typeof spec !== 'object') throw invalidArgType(name, 'an object', spec)
    const raw = v.options(name, spec, ['guestAddress', 'size', 'backing', 'protection'])
    const start = pages(`${name}.guestAddress`, gpa(`${name}.guestAddress`, raw.guestAddress))
    const size = pages(`${name}.size`, index(`${name}.size`, raw.size))
    const protection = raw.protection === undefined ? Protection.READ_WRITE : v.protection(raw.protection, `${name}.protection`)
    const b = raw.backing
    if (b === 'anonymous') return { start, size, protection, backing: 'anonymous' }
    const shm = sharedMemoryState(b)
    if (shm !== undefined) {
      if (shm.fd === undefined) throw stateError('ERR_MMAP_CLOSED', `${name}.backing: the SharedMemory is closed`)
      // A region larger than the memfd is refused by the overlay (ERR_MMAP_BEYOND_EOF).
      return { start, size, protection, backing: { fd: shm.fd, fdOffset: 0, shared: true, source: b as SharedMemory } }
    }
    // A proxy is refused: one around a SharedMemory would run its getters with the
    // proxy as receiver, and its traps could answer anything. So is an object that inherits
    // from SharedMemory without being one (its getters would be read as `fd`).
    if (b === null || typeof b !== 'object' || types.isProxy(b) || inheritsFrom.call(SharedMemory.prototype, b)) {
      throw invalidArgType(`${name}.backing`, "a SharedMemory, a plain { fd, fdOffset } or 'anonymous'", b)
    }
    const fdSpec = v.options(`${name}.backing`, b, ['fd', 'fdOffset', 'shared'])
    const fd = v.number(`${name}.backing.fd`, fdSpec.fd)
    const rawOffset = v.fdOffset(`${name}.backing.fdOffset`, fdSpec.fdOffset)
    // A number is checked here: `#map` hands it on as a bigint, and `BigInt(0.5)` would throw a
    // RangeError without a code (found by the fuzzer).
    const fdOffset = typeof rawOffset === 'number' ? index(`${name}.backing.fdOffset`, rawOffset) : rawOffset
    const shared = v.bool(`${name}.backing.shared`, fdSpec.shared, true)
    return { start, size, protection, backing: { fd, fdOffset, shared } }
  }

  /** Maps a region and records it in the native table, in one call; returns its slot. */
  #map(s: RegionSnapshot): number {
    const b = s.backing
    const source = b === 'anonymous' || b.source === undefined ? undefined : sharedMemorySource(b.source)
    const kind = b === 'anonymous' ? Kind.Anonymous : source === undefined ? Kind.Fd : Kind.SharedMemory
    const fd = b === 'anonymous' ? -1 : (source ?? b.fd)
    const fdOffset = b === 'anonymous' ? 0n : BigInt(b.fdOffset)
    const [slot, held] = guestAddRegion(
      this.#h,
      s.start,
      s.size,
      s.protection,
      kind,
      fd,
      fdOffset,
      b !== 'anonymous' && b.shared,
      this.#dontDump,
    )
    this.#afterChange(held)
    return slot
  }

  /**
   * After a change of the regions: typed access forgets its misses, and ranges the arena holds
   * get what the change asked for on the next turn of the event loop (as the arena's own changes
   * do). A change that adds or removes a region also syncs the dirty tracker (its caller does,
   * with the table it reads).
   */
  #afterChange(held: boolean | undefined): void {
    this.#changes++
    if (held === true && !this.#reclaimScheduled) {
      this.#reclaimScheduled = true
      setImmediate(() => {
        this.#reclaimScheduled = false
        regionReclaim(this.#h)
      }).unref()
    }
  }

  /** What KVM needs of a region. */
  #describe(r: GuestRegionInfo, base: bigint): GuestRegion {
    return {
      slot: r.slot,
      guestAddress: BigInt(r.guestAddress),
      size: r.size,
      userspaceAddress: base + BigInt(r.guestAddress),
      readonly: (r.protection & Protection.WRITE) === 0,
    }
  }

  /**
   * A handle for {@link GuestMemory.attach} in another thread (a vCPU or device worker): posted
   * there (`postMessage` copies it), it gives an object over **this** guest memory — the same
   * arena at the same host addresses (so `regions()[i].userspaceAddress` is the same in every
   * thread) and one table of regions, kept natively with the arena under its lock:
   * `addRegion`/`removeRegion` made through any object are seen by every object's next call. Each object is closed on its own; the memory is unmapped
   * when the last one is closed or collected. Views follow {@link MemoryMappingArena.share}'s
   * rule: a change over another object's live view is `ERR_MMAP_BUSY`.
   * @returns a new handle each time (naming the same memory).
   * The kernel's dirty tracking is shared with it: one record, taken by `takeDirty()` in any thread.
   * @throws `ERR_MMAP_CLOSED`; `ERR_MMAP_UNSUPPORTED` with dirty tracking in software (its bits are
   * this object's: track the VMM's writes in the thread that snapshots).
   * @example
   * const vcpu = new Worker('./vcpu.js', { workerData: guest.share() })
   */
  share(): GuestShareHandle {
    if (this.#dirty instanceof SoftwareDirtyTracker) {
      throw unsupported(
        "share() of a GuestMemory whose dirty pages are tracked in software: they are kept per object (the kernel's tracking, trackDirty: 'kernel', is shared)",
      )
    }
    const arena = this.#arena.share()
    return { kind: 'GuestMemory', arena, dontDump: this.#dontDump }
  }

  /**
   * An object over the guest memory a {@link share} handle names, in this thread.
   * @param handle what `share()` returned (in any thread)
   * @throws `ERR_INVALID_ARG_TYPE`/`ERR_INVALID_ARG_VALUE` (not a handle's shape),
   * `ERR_MMAP_INVALID_HANDLE`, `ERR_MMAP_STALE_HANDLE` (closed or collected in every thread).
   * @example
   * using guest = GuestMemory.attach(workerData)
   */
  static attach(handle: GuestShareHandle): GuestMemory {
    if (handle === null || typeof handle !== 'object' || types.isProxy(handle)) {
      throw invalidArgType('handle', 'a share handle from GuestMemory.prototype.share()', handle)
    }
    const h = v.options('handle', handle, HANDLE_KEYS)
    if (h.kind !== 'GuestMemory')
      throw invalidHandle(`it is for ${typeof h.kind === 'string' ? h.kind : 'nothing'}, not for GuestMemory.attach()`)
    if (h.id !== undefined || h.token !== undefined || h.protection !== undefined)
      throw invalidHandle("it has a region handle's properties")
    const dontDump = v.bool('handle.dontDump', h.dontDump, true)
    // The arena's handle is read once, here; only that snapshot is passed on.
    const [id, token] = readShareHandle(h.arena, 'MemoryMappingArena')
    const arena = MemoryMappingArena.attach({ kind: 'MemoryMappingArena', id, token })
    const attached: Attached = { arena, dontDump }
    return new GuestMemory(ATTACHED as unknown as GuestRegionSpec[], attached as unknown as GuestMemoryOptions)
  }

  /**
   * For memory restored with `lazy: 'pager'`: a promise that resolves when every page is in and
   * the snapshot file is no longer needed (it is closed: it may be deleted or changed from then
   * on). It rejects with `ERR_RESTORE_INCOMPLETE` when the file could not supply some pages (it was
   * truncated or failed to read during the restore): those pages hold zeros, the error's `pages`
   * lists them as `[guestAddress, count]` runs, and every access to them went on without a signal
   * and without waiting. It rejects with `ERR_MMAP_CLOSED` when the memory is closed (by its last
   * holder, in any thread) before the restore completed; the pager stops then. It never rejects
   * unhandled. An object made by {@link attach} over such memory has its own (settled the same
   * way; it rejects with `ERR_MMAP_CLOSED` once that object is closed, while the pager goes on for
   * the others). `undefined` for memory not restored with the pager (`lazy: 'file'` memory needs
   * the file for its whole life; `lazy: false` memory never needs it after `restore`).
   * @example
   * using guest = GuestMemory.restore(manifest, 'vm.mem', { lazy: 'pager' })
   * runVcpus(guest) // faults are served while the rest is fetched
   * await guest.restored
   * unlinkSync('vm.mem')
   */
  get restored(): Promise<void> | undefined {
    return this.#restored
  }

  /**
   * With a `lazy: 'pager', record: true` restore: the pages first touched since the restore — by
   * anything: this thread, other threads' attached objects, the kernel, the guest under KVM — as
   * `[guestAddress, pages]` runs in the order of the first touches (from any object over this
   * memory, in any thread). Only touches that had to wait for the file are seen: a page the
   * background prefetch placed before anything touched it is not in the list (the prefetch fills
   * pages in address order, after a stored working set). Pass `workingSet: true` to
   * {@link snapshot} to store it, so the next `lazy: 'pager'` restore of that manifest fetches
   * those pages first.
   * @throws `ERR_MMAP_UNSUPPORTED` for memory not restored that way; `ERR_MMAP_CLOSED`.
   * @example
   * using guest = GuestMemory.restore(manifest, 'vm.mem', { lazy: 'pager', record: true })
   * bootGuest(guest)
   * const next = await guest.snapshot('vm2.mem', { workingSet: true })
   */
  workingSet(): [guestAddress: number, pages: number][] {
    const r = guestPagerRecord(this.#h)
    if (r.length === 0 || r[0] === 0n) {
      throw unsupported("workingSet() of memory not restored with { lazy: 'pager', record: true }")
    }
    const runs: [number, number][] = []
    for (let i = 2; i + 1 < r.length; i += 2) runs.push([Number(r[i]), Number(r[i + 1])])
    return runs
  }

  /**
   * With a `lazy: 'pager'` restore: how many touches so far had to wait for a page to be read from
   * the file (a touch of a page the prefetch had placed costs nothing); `undefined` otherwise.
   * @throws `ERR_MMAP_CLOSED`.
   */
  get restoreFaults(): number | undefined {
    const r = guestPagerRecord(this.#h)
    return r.length === 0 ? undefined : Number(r[1])
  }

  /** The arena behind the guest memory (guest address = offset). */
  get arena(): MemoryMappingArena {
    return this.#arena
  }

  /** Size of the reserved guest-physical address space. */
  get addressSpace(): number {
    return this.#arena.size
  }

  /**
   * The regions, sorted by guest address, with what each KVM memory slot needs.
   * @throws `ERR_MMAP_CLOSED`.
   * @example
   * for (const [slot, r] of guest.regions().entries()) setUserMemoryRegion(vm, slot, r.guestAddress, r.size, r.userspaceAddress)
   */
  regions(): GuestRegion[] {
    const table = guestRegions(this.#h)
    const base = this.#arena.address
    return table.map((r) => this.#describe(r, base))
  }

  /**
   * Hot-plugs a region (memory hot-plug, a DAX window); refused if it overlaps one.
   * @param spec the region to add
   * @throws `ERR_GUEST_OVERLAP`, `ERR_MMAP_OUT_OF_BOUNDS` (outside the address space), and the
   * constructor's per-region errors.
   * @example
   * const slot = guest.addRegion({ guestAddress: 0x1_0000_0000n, size: dax.size, backing: dax })
   */
  addRegion(spec: GuestRegionSpec): GuestRegion {
    const s = GuestMemory.#check(spec, 'region')
    const slot = this.#map(s)
    if (this.#dirty !== undefined) {
      this.#dirty.sync(guestRegions(this.#h))
      // A region plugged in after the last snapshot is in none of it: all its pages are new (with
      // the kernel's tracking, marked natively in the call that maps it).
      this.#dirty.mark(s.start, s.size)
    }
    const info: GuestRegionInfo = { slot, guestAddress: s.start, size: s.size, protection: s.protection, backing: 'anonymous' }
    return this.#describe(info, this.#arena.address)
  }

  /**
   * Unplugs the region that starts at `guestAddress`; its range becomes a hole (views are detached).
   * @param guestAddress a guest-physical address (`bigint` or `number`)
   * @throws `ERR_GUEST_ADDRESS` (no region starts there), `ERR_MMAP_BUSY`.
   * @example
   * guest.removeRegion(0x1_0000_0000n)
   */
  removeRegion(guestAddress: bigint | number): void {
    const start = gpa('guestAddress', guestAddress)
    this.#afterChange(guestRemoveRegion(this.#h, start))
    this.#dirty?.sync(guestRegions(this.#h))
  }

  /**
   * Marks `[guestAddress, guestAddress + length)` dirty by hand — memory written by something
   * this object does not see (a device thread writing through its own view, a DMA engine).
   * @param guestAddress a guest-physical address (`bigint` or `number`)
   * @param length length in bytes
   * @throws `ERR_GUEST_ADDRESS`, `ERR_MMAP_UNSUPPORTED` (created without `trackDirty`).
   * @example
   * guest.markDirty(bufferAddress, bytesWritten)
   */
  markDirty(guestAddress: bigint | number, length: number): void {
    const dirty = needTracking(this.#dirty, 'markDirty')
    const addr = gpa('guestAddress', guestAddress)
    const len = index('length', length)
    guestCovered(this.#h, addr, len)
    dirty.markChanged(addr, len)
  }

  /**
   * The pages written since the last `takeDirty()` or snapshot, and clears them: one entry per
   * region, `bitmap` bit `i` of word `w` for page `64w + i` — the layout of `KVM_GET_DIRTY_LOG`.
   * Tracked by the kernel ({@link dirtyTracking} `'kernel'`): every writer's pages (the guest
   * under KVM, views, other threads), taken for every object over this memory, atomically with
   * respect to writers. In software: the pages written through this object (OR KVM's log in for
   * the guest's), and those of a writable view still alive (it could be written at any time).
   * @throws `ERR_MMAP_UNSUPPORTED` (created without `trackDirty`).
   * @example
   * for (const { guestAddress, bitmap } of guest.takeDirty()) send(guestAddress, bitmap)
   */
  takeDirty(): DirtyBitmap[] {
    const dirty = needTracking(this.#dirty, 'takeDirty')
    const table = guestRegions(this.#h)
    const { bitmaps } = dirty.take(table)
    return table.map((r, i) => ({ guestAddress: BigInt(r.guestAddress), size: r.size, bitmap: bitmaps[i] }))
  }

  /**
   * Writes guest memory to `target` (a path, created if needed and never truncated — it may be
   * the snapshot this memory was restored from — or an fd)
   * on the libuv thread pool and resolves to the manifest that describes the file: the regions
   * one after another, each at `fileOffset`. With `dirtyOnly: true` (needs `trackDirty`) only the
   * pages dirty since the last snapshot or `takeDirty()` are written, at the same offsets, and
   * the rest of the file is left untouched — a diff to layer over a full snapshot (write it into
   * the same file, or apply it with {@link applyDiff}). A snapshot clears the dirty bits it wrote
   * (a failed one puts them back). The regions stay mapped until it settles: changes over them
   * are refused with `ERR_MMAP_BUSY`, as for `msyncAsync`.
   * @param target the snapshot file: a path (opened write-only, created if needed, never
   * truncated) or an open fd; it must take `pwrite` (a FIFO or a `/proc` file fails with the
   * kernel's errno, e.g. `ESPIPE`)
   * @param options the options: see {@link SnapshotOptions}
   * @throws (rejects with) `ERR_MMAP_UNSUPPORTED` (`dirtyOnly` without tracking), `ERR_MMAP_ACCESS`
   * (a region without `READ`), the errors of `fs.openSync`, or the errno of `pwrite` (`ENOSPC`…).
   * @example
   * const manifest = await guest.snapshot('vm.mem')
   * writeFileSync('vm.json', JSON.stringify(manifest))
   */
  async snapshot(target: LoadSource, options?: SnapshotOptions): Promise<SnapshotManifest> {
    return writeSnapshot(this.#internals(), target, options)
  }

  /**
   * Builds guest memory from a snapshot, lazily: each region is a private (copy-on-write)
   * overlay of the snapshot file, so nothing is read up front (a page is read when first
   * touched) and guest writes never reach the file. Such memory is a file's: copies are
   * fault-safe, and atomic access is refused there (a file can be truncated). With
   * `{ lazy: false }` every region is anonymous memory read from the file now (time and memory
   * in proportion to its size), on which atomics work and which no longer depends on the file. The manifest is checked against itself and
   * against the file before anything is mapped (`ERR_INVALID_ARG_VALUE`, also for a source that
   * is not a regular file or a block device — a character device such as `/dev/zero`, a FIFO, a
   * directory; `ERR_MMAP_UNALIGNED`, `ERR_GUEST_OVERLAP`, `ERR_MMAP_BEYOND_EOF` for a file too short). The file may be closed or
   * deleted afterwards. A diff manifest restores only over the full snapshot it was layered on
   * (the same file); see {@link applyDiff}.
   * @param source the snapshot file: a path (opened read-only) or an fd.
   * @param manifest what {@link GuestMemory.snapshot} resolved to (as read back from JSON)
   * @param options the options: see {@link RestoreOptions}
   * @throws as described, and the errors of the constructor.
   * @example
   * using guest = GuestMemory.restore(JSON.parse(readFileSync('vm.json', 'utf8')), 'vm.mem', { trackDirty: true })
   */
  static restore(manifest: SnapshotManifest, source: LoadSource, options?: RestoreOptions): GuestMemory {
    return restoreSnapshot(manifest, source, options, (specs, o) => {
      const guest = new GuestMemory(specs, o)
      return [guest, guest.#internals()]
    })
  }

  /**
   * Applies a diff snapshot (`dirtyOnly`) to this guest memory: reads the pages it holds from
   * `source` into the regions, on the thread pool, and resolves to the bytes read. Every region of
   * the diff must be a region here (same address and size). Restoring a full snapshot and
   * applying the diffs taken after it, in order, gives the memory of the last one. With tracking,
   * the pages are marked dirty.
   * @param manifest what {@link GuestMemory.snapshot} resolved to (as read back from JSON)
   * @param source the snapshot file: a path (opened read-only) or an fd
   * @throws (rejects with) `ERR_GUEST_ADDRESS` (a region that does not match), the manifest's
   * errors as for {@link restore}, `ERR_MMAP_BEYOND_EOF` (a file too short), `ERR_MMAP_ACCESS`.
   * @example
   * await guest.applyDiff(JSON.parse(readFileSync('vm.diff.json', 'utf8')), 'vm.diff')
   */
  async applyDiff(manifest: SnapshotManifest, source: LoadSource): Promise<number> {
    return applyDiff(this.#internals(), manifest, source)
  }

  /** What the snapshot functions use of this object (see `snapshot.ts`). */
  #internals(): GuestInternals {
    return {
      handle: this.#h,
      dirty: this.#dirty,
      protect: (start, protection) => this.#afterChange(guestProtect(this.#h, start, protection)),
      workingSet: () => this.workingSet(),
      startPager: (fd, runs, record, first) => {
        guestPagerStart(this.#h, fd, runs, record, first)
        const h = this.#h
        this.#restored = pagerRestored(() => guestPagerStatus(h))
      },
    }
  }

  /** The arena's window around `at`, cut to the region that contains it. */
  protected typedWindow(at: number): WindowAnswer {
    const answer = guestWindow(this.#h, at)
    if (answer === undefined) return undefined
    const [start, length, buffer, regionStart, regionEnd] = answer
    const lo = Math.max(start, regionStart)
    const hi = Math.min(start + length, regionEnd)
    if (buffer === undefined) return [lo, hi - lo, undefined]
    const [memory, offset] = v.memoryOf(buffer)
    return [lo, hi - lo, new Uint8Array(memory, offset + lo - start, hi - lo)]
  }

  /** Regions come and go through the arena's changes and this object's: both counters are the guest's. */
  protected typedEpoch(): number {
    return this.typedEpochOf(this.#arena) + this.#changes
  }

  protected typedAddress(at: bigint): number {
    return gpa('guestAddress', at)
  }

  protected typedCopyOut(at: unknown, target: Uint8Array): void {
    this.readInto(at as number, target)
  }

  protected typedCopyIn(at: unknown, data: Uint8Array): void {
    this.write(at as number, data)
  }

  protected typedAtomicCheck(at: unknown, width: 4 | 8): void {
    guestAtomicCheck(this.#h, gpa('guestAddress', at), width)
  }

  protected typedHandle(): number {
    return this.#h
  }

  /** A typed store succeeded: its pages are dirty (called only while tracking). */
  protected override typedStored(at: unknown, width: number): void {
    this.#dirty?.mark(typeof at === 'bigint' ? v.bigintIndex(at) : (at as number), width)
  }

  /**
   * The host (userspace) address of guest address `guestAddress`.
   * @param guestAddress a guest-physical address (`bigint` or `number`)
   * @throws `ERR_GUEST_ADDRESS` (in no region).
   * @example
   * guest.translate(0x1000n) // guest.arena.address + 0x1000n
   */
  translate(guestAddress: bigint | number): bigint {
    return guestTranslate(this.#h, gpa('guestAddress', guestAddress))
  }

  /**
   * A copy of `length` guest bytes at `guestAddress` (across regions that follow each other).
   * @param guestAddress a guest-physical address (`bigint` or `number`)
   * @param length length in bytes
   * @throws `ERR_GUEST_ADDRESS` (touches a hole or runs past the last region), `ERR_MMAP_ACCESS`.
   * @example
   * const bootSector = guest.read(0x7c00n, 512)
   */
  read(guestAddress: bigint | number, length: number): Buffer {
    return guestRead(this.#h, gpa('guestAddress', guestAddress), index('length', length))
  }

  /**
   * Copies `target.byteLength` guest bytes at `guestAddress` into `target` (across regions
   * that follow each other): {@link read} without the allocation.
   * @param guestAddress a guest-physical address (`bigint` or `number`)
   * @param target the bytes to fill: any `ArrayBufferView` or `ArrayBuffer`
   * @returns the number of bytes copied.
   * @throws `ERR_GUEST_ADDRESS`, `ERR_MMAP_ACCESS`, `ERR_INVALID_ARG_TYPE`.
   * @example
   * const descriptor = Buffer.allocUnsafe(16)
   * guest.readInto(ringAddress + 16n * BigInt(index), descriptor)
   */
  readInto(guestAddress: bigint | number, target: ArrayBufferView | ArrayBuffer): number {
    // A number goes as it is: the native side converts it (a non-negative safe integer). A
    // bigint is narrowed here, inline (a number returned from a call V8 did not inline would be
    // boxed), and `+ 0` keeps both branches numbers; anything else gets gpa's error.
    const addr = typeof guestAddress === 'number' ? guestAddress + 0 : typeof guestAddress === 'bigint' ? v.bigintIndex(guestAddress) : -1
    if (addr < 0 && typeof guestAddress !== 'number') gpa('guestAddress', guestAddress)
    const bytes = v.bytes('target', target)
    guestReadInto(this.#h, addr, bytes)
    return v.byteLength(bytes)
  }

  /**
   * Copies `data` to `guestAddress` (across regions that follow each other).
   * @param guestAddress a guest-physical address (`bigint` or `number`)
   * @param data the bytes to copy: any `ArrayBufferView` or `ArrayBuffer`
   * @throws `ERR_GUEST_ADDRESS`, `ERR_MMAP_ACCESS`, `ERR_INVALID_ARG_TYPE`.
   * @example
   * guest.write(0x1000n, kernelImage)
   */
  write(guestAddress: bigint | number, data: ArrayBufferView | ArrayBuffer): void {
    // As for readInto; once the copy succeeded, `addr` is a valid guest address to mark.
    const addr = typeof guestAddress === 'number' ? guestAddress + 0 : typeof guestAddress === 'bigint' ? v.bigintIndex(guestAddress) : -1
    if (addr < 0 && typeof guestAddress !== 'number') gpa('guestAddress', guestAddress)
    const bytes = v.bytes('data', data)
    guestWrite(this.#h, addr, bytes)
    this.#dirty?.mark(addr, v.byteLength(bytes))
  }

  /**
   * Discards the guest pages of `[guestAddress, guestAddress + size)` — a balloon's pages, memory
   * a guest freed — across regions that follow each other, each as it is backed (see
   * {@link MemoryMappingArena.discard}): a `SharedMemory` region's pages are freed and read as
   * zeros, an anonymous region reads as zeros, a private file region (a restored snapshot) reads
   * as its file again, a shared file region gets a hole. The regions stay (slots unchanged, no
   * `KVM_SET_USER_MEMORY_REGION` needed; views see the change). With `trackDirty` the pages are
   * marked dirty: their contents changed. A refused call (an `ERR_*` code) marks nothing; one the
   * kernel failed (an errno) marks the whole range, part of which may be discarded.
   * @param guestAddress a guest-physical address (`bigint` or `number`, page aligned)
   * @param size size in bytes (page aligned)
   * @throws `ERR_GUEST_ADDRESS` (the range touches a hole or runs past the last region),
   * `ERR_MMAP_UNALIGNED`, `ERR_MMAP_ACCESS` (a region without `WRITE`), or the errno of `madvise`.
   * @example
   * guest.discard(0x4000_0000n, 64 << 20) // balloon inflated by 64 MiB
   */
  discard(guestAddress: bigint | number, size: number): void {
    const addr = gpa('guestAddress', guestAddress)
    const len = index('size', size)
    try {
      guestDiscard(this.#h, addr, len)
    } catch (e) {
      if ((e as { syscall?: unknown }).syscall !== undefined) this.#dirty?.mark(addr, len)
      throw e
    }
    // In software; the kernel's tracking is marked natively, in the call that discards.
    this.#dirty?.mark(addr, len)
  }

  /**
   * Reads a file straight into guest memory at `guestAddress` (`pread`, no intermediate
   * `Buffer`), across regions that follow each other: a kernel, an initrd, firmware.
   * @param file a path (opened read-only for the call) or an open fd (its position is unchanged).
   * @param guestAddress a guest-physical address (`bigint` or `number`)
   * @param options the options: see {@link LoadOptions}
   * @returns the bytes loaded: `length` (default the rest of the file), or fewer where the file ends.
   * @throws `ERR_GUEST_ADDRESS` (the range touches a hole or runs past the last region),
   * `ERR_MMAP_ACCESS` (a read-only region), and the errors of {@link MemoryMappingArena.loadFile}.
   * @example
   * const size = guest.loadFile(0x100_0000n, 'bzImage', { offset: setupBytes })
   */
  loadFile(guestAddress: bigint | number, file: LoadSource, options?: LoadOptions): number {
    const addr = gpa('guestAddress', guestAddress)
    const { fileOffset, length } = loadRequest(options)
    return withFile(file, (fd) => {
      const len = this.#loadLength(fd, fileOffset, length)
      let loaded: number
      try {
        loaded = guestLoadFile(this.#h, addr, fd, fileOffset, len)
      } catch (e) {
        // A refused load (an ERR_* code: checked before any I/O) wrote nothing and marks nothing.
        // One that met a page it could not write (EFAULT) wrote `bytesCopied` bytes before it; a
        // failed read of the file itself (EIO) may have come after some pages: all are marked.
        const written = loadWritten(e, len)
        if (written > 0) this.#dirty?.mark(addr, written)
        throw e
      }
      this.#dirty?.mark(addr, len)
      return loaded
    })
  }

  /**
   * {@link loadFile} on the libuv thread pool; the range stays as it is until the promise settles.
   * @param guestAddress a guest-physical address (`bigint` or `number`)
   * @param file a path (opened read-only for the call) or an open fd (its position is unchanged)
   * @param options the options: see {@link LoadOptions}
   * @throws (rejects with) the errors of {@link loadFile}.
   * @example
   * await guest.loadFileAsync(initrdAddress, 'initrd.img')
   */
  async loadFileAsync(guestAddress: bigint | number, file: LoadSource, options?: LoadOptions): Promise<number> {
    const addr = gpa('guestAddress', guestAddress)
    const { fileOffset, length } = loadRequest(options)
    return withFile(file, (fd) => {
      const len = this.#loadLength(fd, fileOffset, length)
      guestCovered(this.#h, addr, len)
      const done = regionLoadFileAsync(this.#h, addr, fd, fileOffset, len)
      // Marked now: the pages are written at some point before the promise settles.
      this.#dirty?.mark(addr, len)
      return done
    })
  }

  /** The length a load reads (the core's rule without one). */
  #loadLength(fd: number, fileOffset: number, length: number | undefined): number {
    return length === undefined ? fileLoadLength(fd, fileOffset) : index('length', length)
  }

  /**
   * A zero-copy view of guest memory, across regions that follow each other if every one under
   * it is `READ | WRITE`; detached when any of them is removed (see {@link MemoryMappingArena.view}).
   * @param guestAddress a guest-physical address (`bigint` or `number`)
   * @param length length in bytes
   * @throws `ERR_GUEST_ADDRESS`, `ERR_MMAP_ACCESS`.
   * @example
   * const ring = guest.view(0x10_0000n, 4096)
   */
  view(guestAddress: bigint | number, length: number): Buffer {
    const addr = gpa('guestAddress', guestAddress)
    const len = index('length', length)
    guestCovered(this.#h, addr, len)
    const view = this.#arena.view(addr, len)
    // Every view is writable (it needs READ | WRITE): dirty now, and while it lives.
    this.#dirty?.markView(view, addr, len)
    return view
  }

  /**
   * A `SharedArrayBuffer` over guest memory (inside one region or regions that follow each other);
   * see {@link MemoryMappingArena.sharedView} for how it pins the range. With tracking, its pages
   * are marked dirty now (it can be written from any thread: mark them again, or keep them in
   * every diff, as long as it lives).
   * @param guestAddress a guest-physical address (`bigint` or `number`)
   * @param length length in bytes
   * @throws `ERR_GUEST_ADDRESS`, and the errors of {@link MemoryMappingArena.sharedView}.
   * @example
   * const ring = new Int32Array(guest.sharedView(0x10_0000n, 4096))
   */
  sharedView(guestAddress: bigint | number, length: number): SharedArrayBuffer {
    const addr = gpa('guestAddress', guestAddress)
    const len = index('length', length)
    guestCovered(this.#h, addr, len)
    const buffer = this.#arena.sharedView(addr, len)
    this.#dirty?.mark(addr, len)
    return buffer
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#arena.closed
  }

  /**
   * Unmaps the guest memory (backings such as a SharedMemory stay open). Idempotent.
   * @example
   * guest.close()
   */
  close(): void {
    this.#arena.close()
  }

  /** Same as `close()`, for `using` declarations. */
  [Symbol.dispose](): void {
    this.close()
  }
}
