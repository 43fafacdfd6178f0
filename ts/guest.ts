import { types } from 'node:util'
import { PAGE_SIZE, Protection, type ProtectionFlags } from './constants.js'
import { guestError, invalidArgType, outOfRange, stateError, unaligned } from './errors.js'
import { native } from './native.js'
import { loadRequest, withFile, type LoadOptions, type LoadSource } from './load.js'
import { epochOf, handleOf, MemoryMappingArena } from './region.js'
import { sharedMemoryState, type SharedMemory } from './shm.js'
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
   * Alignment of the reserved address space (and so of every guest address in host memory): a
   * power of two >= `PAGE_SIZE`, e.g. `2 << 20` for 2 MiB huge-page backings; default `PAGE_SIZE`.
   * See {@link MemoryMappingArena.reserve}.
   */
  align?: number
}

interface Slot {
  /** The KVM slot number. */
  id: number
  start: number
  end: number
  protection: number
}

/**
 * A region spec as validated: every property of the caller's object read exactly
 * once (a getter could answer differently on a second read), and only this
 * snapshot used from then on.
 */
interface RegionSnapshot {
  start: number
  size: number
  protection: number
  backing: { fd: number; fdOffset: number | bigint; shared: boolean } | 'anonymous'
}

/**
 * More regions than this cannot be mapped anyway: each is a kernel mapping, and
 * `vm.max_map_count` defaults to 65530. The bound keeps a hostile array-like
 * (a proxy claiming 2^32 - 1 entries) from keeping the constructor busy.
 */
const MAX_REGIONS = 1 << 16

const { regionReadInto, regionWrite, regionLoadFile, regionLoadFileAsync, fileLoadLength, regionWindow, regionAtomicCheck } = native

/**
 * A guest address or size, narrowed to a safe integer: `GuestMemory` does arithmetic on
 * them to find regions (the address space is reserved in this process, so every valid
 * address is one). Values reaching the arena are checked there again.
 */
function gpa(name: string, value: unknown): number {
  if (typeof value === 'bigint') {
    if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) throw outOfRange(name, `>= 0 and <= ${Number.MAX_SAFE_INTEGER}`, `${value}n`)
    return Number(value)
  }
  if (typeof value !== 'number') throw invalidArgType(name, 'of type bigint or number', value)
  return index(name, value)
}

/** A size or length, narrowed to a safe integer for the same reason. */
function index(name: string, value: unknown): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value)
  if (!Number.isSafeInteger(value) || value < 0) throw outOfRange(name, 'a non-negative safe integer', value)
  return value
}

/** A whole number of pages: KVM memory slots are (the core's alignment rule). */
function pages(name: string, value: number): number {
  if (!native.isPageAligned(value)) throw unaligned(name, value, PAGE_SIZE)
  return value
}

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
  /** The arena's native handle: copies, checked here against the regions, go straight to it. */
  readonly #h: number
  readonly #dontDump: boolean
  /** Regions sorted by guest address. */
  #slots: Slot[] = []

  /**
   * Reserves the guest-physical address space and maps each region at its guest address.
   * @throws `ERR_GUEST_OVERLAP`, `ERR_MMAP_UNALIGNED` (address or size), `ERR_MMAP_BEYOND_EOF`
   * (a region larger than its memfd or file), `ERR_OUT_OF_RANGE`, `ERR_INVALID_ARG_TYPE`, and
   * the errors of `addFdMapping`.
   * @example
   * using guest = new GuestMemory([{ guestAddress: 0n, size: ram.size, backing: ram }], { addressSpace: 2 ** 32 })
   */
  constructor(regions: readonly GuestRegionSpec[], options?: GuestMemoryOptions) {
    super()
    if (!Array.isArray(regions)) throw invalidArgType('regions', 'an array', regions)
    const o = v.options('options', options, ['addressSpace', 'dontDump', 'align'])
    this.#dontDump = v.bool('dontDump', o.dontDump, true)
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
    for (let i = 1; i < sorted.length; i++) {
      const prev = sorted[i - 1]
      if (sorted[i].start < prev.start + prev.size) {
        throw guestError('ERR_GUEST_OVERLAP', `Guest regions at 0x${prev.start.toString(16)} and 0x${sorted[i].start.toString(16)} overlap`)
      }
    }
    this.#arena = MemoryMappingArena.reserve(space, o.align === undefined ? undefined : { align: o.align as number })
    this.#h = handleOf(this.#arena)
    try {
      for (const s of sorted) this.#map(s)
    } catch (e) {
      this.#arena.close()
      throw e
    }
  }

  /**
   * Same as `new GuestMemory(regions, options)`.
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
      return { start, size, protection, backing: { fd: shm.fd, fdOffset: 0, shared: true } }
    }
    // A proxy is refused: one around a SharedMemory would run its getters with the
    // proxy as receiver, and its traps could answer anything.
    if (b === null || typeof b !== 'object' || types.isProxy(b)) {
      throw invalidArgType(`${name}.backing`, "a SharedMemory, a plain { fd, fdOffset } or 'anonymous'", b)
    }
    const fdSpec = v.options(`${name}.backing`, b, ['fd', 'fdOffset', 'shared'])
    const fd = v.number(`${name}.backing.fd`, fdSpec.fd)
    const fdOffset = v.fdOffset(`${name}.backing.fdOffset`, fdSpec.fdOffset)
    const shared = v.bool(`${name}.backing.shared`, fdSpec.shared, true)
    return { start, size, protection, backing: { fd, fdOffset, shared } }
  }

  #map(s: RegionSnapshot): Slot {
    const b = s.backing
    if (b === 'anonymous') this.#arena.addAnonymous(s.start, s.size, s.protection)
    else this.#arena.addFdMapping(s.start, s.size, b.fd, b.fdOffset, s.protection, b.shared ? undefined : { shared: false })
    if (this.#dontDump) {
      try {
        this.#arena.madvise(s.start, s.size, 'dontdump')
      } catch (e) {
        this.#arena.removeMapping(s.start, s.size)
        throw e
      }
    }
    const used = new Set(this.#slots.map((x) => x.id))
    let id = 0
    while (used.has(id)) id++
    const slot = { id, start: s.start, end: s.start + s.size, protection: s.protection }
    const at = this.#slots.findIndex((x) => x.start > s.start)
    if (at < 0) this.#slots.push(slot)
    else this.#slots.splice(at, 0, slot)
    return slot
  }

  /** What KVM needs of a slot. */
  #describe(s: Slot, base: bigint): GuestRegion {
    return {
      slot: s.id,
      guestAddress: BigInt(s.start),
      size: s.end - s.start,
      userspaceAddress: base + BigInt(s.start),
      readonly: (s.protection & Protection.WRITE) === 0,
    }
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
    const base = this.#arena.address
    return this.#slots.map((s) => this.#describe(s, base))
  }

  /**
   * Hot-plugs a region (memory hot-plug, a DAX window); refused if it overlaps one.
   * @throws `ERR_GUEST_OVERLAP`, `ERR_MMAP_OUT_OF_BOUNDS` (outside the address space), and the
   * constructor's per-region errors.
   * @example
   * const slot = guest.addRegion({ guestAddress: 0x1_0000_0000n, size: dax.size, backing: dax })
   */
  addRegion(spec: GuestRegionSpec): GuestRegion {
    const s = GuestMemory.#check(spec, 'region')
    const clash = this.#slots.find((x) => x.start < s.start + s.size && x.end > s.start)
    if (clash !== undefined)
      throw guestError('ERR_GUEST_OVERLAP', `Guest region at 0x${s.start.toString(16)} overlaps the one at 0x${clash.start.toString(16)}`)
    return this.#describe(this.#map(s), this.#arena.address)
  }

  /**
   * Unplugs the region that starts at `guestAddress`; its range becomes a hole (views are detached).
   * @throws `ERR_GUEST_ADDRESS` (no region starts there), `ERR_MMAP_BUSY`.
   * @example
   * guest.removeRegion(0x1_0000_0000n)
   */
  removeRegion(guestAddress: bigint | number): void {
    const start = gpa('guestAddress', guestAddress)
    const index = this.#slots.findIndex((s) => s.start === start)
    if (index < 0) throw guestError('ERR_GUEST_ADDRESS', `No guest region starts at 0x${start.toString(16)}`)
    const slot = this.#slots[index]
    this.#arena.removeMapping(slot.start, slot.end - slot.start)
    this.#slots.splice(index, 1)
  }

  /**
   * Checks that `[addr, addr + len)` is covered by regions without a gap — one region, or
   * several that follow each other (vm-memory's `try_access` carries on into the next region
   * the same way; they are contiguous in host memory too, in one arena). `ERR_GUEST_ADDRESS`
   * for a range that starts in no region, touches a hole or runs past the last region.
   */
  #covered(addr: number, len: number): void {
    let i = this.#slotIndex(addr)
    if (i < 0) throw guestError('ERR_GUEST_ADDRESS', `Guest address 0x${addr.toString(16)} is in no region`)
    const end = addr + len
    while (this.#slots[i].end < end) {
      const next = this.#slots[i + 1]
      if (next === undefined || next.start !== this.#slots[i].end)
        throw guestError(
          'ERR_GUEST_ADDRESS',
          `Guest range [0x${addr.toString(16)}, +${len}) runs past the region ending at 0x${this.#slots[i].end.toString(16)} into no region`,
        )
      i++
    }
  }

  /** The index of the region that contains `addr`, or -1. */
  #slotIndex(addr: number): number {
    let lo = 0
    let hi = this.#slots.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      const s = this.#slots[mid]
      if (addr < s.start) hi = mid - 1
      else if (addr >= s.end) lo = mid + 1
      else return mid
    }
    return -1
  }

  /** The arena's window around `at`, cut to the region that contains it. */
  protected typedWindow(at: number): WindowAnswer {
    const slot = this.#slots[this.#slotIndex(at)]
    if (slot === undefined) return undefined
    const answer = regionWindow(this.#h, at)
    if (answer === undefined) return undefined
    const [start, length, buffer] = answer
    const lo = Math.max(start, slot.start)
    const hi = Math.min(start + length, slot.end)
    if (buffer === undefined) return [lo, hi - lo, undefined]
    const [memory, offset] = v.memoryOf(buffer)
    return [lo, hi - lo, new Uint8Array(memory, offset + lo - start, hi - lo)]
  }

  /** Regions come and go through the arena's changes: its counter is the guest's. */
  protected typedEpoch(): number {
    return epochOf(this.#arena)
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
    const addr = gpa('guestAddress', at)
    this.#covered(addr, width)
    regionAtomicCheck(this.#h, addr, width)
  }

  /**
   * The host (userspace) address of guest address `guestAddress`.
   * @throws `ERR_GUEST_ADDRESS` (in no region).
   * @example
   * guest.translate(0x1000n) // guest.arena.address + 0x1000n
   */
  translate(guestAddress: bigint | number): bigint {
    const addr = gpa('guestAddress', guestAddress)
    this.#covered(addr, 0)
    return this.#arena.address + BigInt(addr)
  }

  /**
   * A copy of `length` guest bytes at `guestAddress` (across regions that follow each other).
   * @throws `ERR_GUEST_ADDRESS` (touches a hole or runs past the last region), `ERR_MMAP_ACCESS`.
   * @example
   * const bootSector = guest.read(0x7c00n, 512)
   */
  read(guestAddress: bigint | number, length: number): Buffer {
    const addr = gpa('guestAddress', guestAddress)
    this.#covered(addr, index('length', length))
    return this.#arena.read(addr, length)
  }

  /**
   * Copies `target.byteLength` guest bytes at `guestAddress` into `target` (across regions
   * that follow each other): {@link read} without the allocation.
   * @returns the number of bytes copied.
   * @throws `ERR_GUEST_ADDRESS`, `ERR_MMAP_ACCESS`, `ERR_INVALID_ARG_TYPE`.
   * @example
   * const descriptor = Buffer.allocUnsafe(16)
   * guest.readInto(ringAddress + 16n * BigInt(index), descriptor)
   */
  readInto(guestAddress: bigint | number, target: ArrayBufferView | ArrayBuffer): number {
    const addr = gpa('guestAddress', guestAddress)
    const bytes = v.bytes('target', target)
    const length = v.byteLength(bytes)
    this.#covered(addr, length)
    regionReadInto(this.#h, addr, bytes)
    return length
  }

  /**
   * Copies `data` to `guestAddress` (across regions that follow each other).
   * @throws `ERR_GUEST_ADDRESS`, `ERR_MMAP_ACCESS`, `ERR_INVALID_ARG_TYPE`.
   * @example
   * guest.write(0x1000n, kernelImage)
   */
  write(guestAddress: bigint | number, data: ArrayBufferView | ArrayBuffer): void {
    const addr = gpa('guestAddress', guestAddress)
    const bytes = v.bytes('data', data)
    this.#covered(addr, v.byteLength(bytes))
    regionWrite(this.#h, addr, bytes)
  }

  /**
   * Reads a file straight into guest memory at `guestAddress` (`pread`, no intermediate
   * `Buffer`), across regions that follow each other: a kernel, an initrd, firmware.
   * @param file a path (opened read-only for the call) or an open fd (its position is unchanged).
   * @returns the bytes loaded: `length` (default the rest of the file), or fewer where the file ends.
   * @throws `ERR_GUEST_ADDRESS` (the range touches a hole or runs past the last region),
   * `ERR_MMAP_ACCESS` (a read-only region), and the errors of {@link MemoryMappingArena.loadFile}.
   * @example
   * const size = guest.loadFile(0x100_0000n, 'bzImage', { offset: setupBytes })
   */
  loadFile(guestAddress: bigint | number, file: LoadSource, options?: LoadOptions): number {
    const addr = gpa('guestAddress', guestAddress)
    const { fileOffset, length } = loadRequest(options)
    return withFile(file, (fd) =>
      regionLoadFile(this.#h, addr, v.number('fd', fd), fileOffset, this.#loadLength(addr, fd, fileOffset, length)),
    )
  }

  /**
   * {@link loadFile} on the libuv thread pool; the range stays as it is until the promise settles.
   * @throws (rejects with) the errors of {@link loadFile}.
   * @example
   * await guest.loadFileAsync(initrdAddress, 'initrd.img')
   */
  async loadFileAsync(guestAddress: bigint | number, file: LoadSource, options?: LoadOptions): Promise<number> {
    const addr = gpa('guestAddress', guestAddress)
    const { fileOffset, length } = loadRequest(options)
    return withFile(file, (fd) =>
      regionLoadFileAsync(this.#h, addr, v.number('fd', fd), fileOffset, this.#loadLength(addr, fd, fileOffset, length)),
    )
  }

  /** The length a load reads (the core's rule without one), checked to be covered by regions. */
  #loadLength(addr: number, fd: number, fileOffset: number, length: number | undefined): number {
    const len = length === undefined ? fileLoadLength(v.number('fd', fd), fileOffset) : index('length', length)
    this.#covered(addr, len)
    return len
  }

  /**
   * A zero-copy view of guest memory, across regions that follow each other if every one under
   * it is `READ | WRITE`; detached when any of them is removed (see {@link MemoryMappingArena.view}).
   * @throws `ERR_GUEST_ADDRESS`, `ERR_MMAP_ACCESS`.
   * @example
   * const ring = guest.view(0x10_0000n, 4096)
   */
  view(guestAddress: bigint | number, length: number): Buffer {
    const addr = gpa('guestAddress', guestAddress)
    this.#covered(addr, index('length', length))
    return this.#arena.view(addr, length)
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
