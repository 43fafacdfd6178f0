// Generated from crate/node/src/entries.rs by scripts/typings.mjs: never edited by hand.
// Each entry point takes its number arguments in the thread's scratch slots (see
// crate/node/src/scratch.rs) and the others through N-API: each function here stores
// the numbers, in order, then calls it.
import type * as Binding from '../index.js'
import { native } from './native.js'

// Taken off the exports, so that no other code reaches the slots through them.
const scratch: unknown = native.scratch
Reflect.deleteProperty(native, 'scratch')
if (!(scratch instanceof ArrayBuffer)) throw new Error('mapped-region: the scratch slots were taken before the package loaded')
const slots = new Float64Array(scratch)
/** A number as it is; anything else as NaN (refused natively), never converted. */
const n = (value: unknown): number => (typeof value === 'number' ? value : Number.NaN)
const raw: typeof Binding = native
const regionReserveRaw = raw.regionReserve
const regionAnonymousRaw = raw.regionAnonymous
const regionFromFdRaw = raw.regionFromFd
const regionAddressRaw = raw.regionAddress
const regionSizeRaw = raw.regionSize
const regionClosedRaw = raw.regionClosed
const regionCloseRaw = raw.regionClose
const regionReclaimRaw = raw.regionReclaim
const regionMsyncRaw = raw.regionMsync
const regionMadviseRaw = raw.regionMadvise
const regionMlockRaw = raw.regionMlock
const regionMunlockRaw = raw.regionMunlock
const regionAddFdMappingRaw = raw.regionAddFdMapping
const regionAddFdMappingBigRaw = raw.regionAddFdMappingBig
const regionAddShmMappingRaw = raw.regionAddShmMapping
const regionAddAnonymousRaw = raw.regionAddAnonymous
const regionProtectRaw = raw.regionProtect
const regionRemoveMappingRaw = raw.regionRemoveMapping
const regionDiscardRaw = raw.regionDiscard
const regionReadIntoRaw = raw.regionReadInto
const regionWriteRaw = raw.regionWrite
const regionLoadFileRaw = raw.regionLoadFile
const fileLoadLengthRaw = raw.fileLoadLength
const fileCheckEofRaw = raw.fileCheckEof
const checkProtectionRaw = raw.checkProtection
const checkSealsRaw = raw.checkSeals
const regionReadRaw = raw.regionRead
const regionViewRaw = raw.regionView
const regionWindowRaw = raw.regionWindow
const regionAtomicCheckRaw = raw.regionAtomicCheck
const regionSharedViewRaw = raw.regionSharedView
const regionShareRaw = raw.regionShare
const regionAttachRaw = raw.regionAttach
const regionAtomic32Raw = raw.regionAtomic32
const regionAtomic64Raw = raw.regionAtomic64
const guestAddRegionRaw = raw.guestAddRegion
const guestRemoveRegionRaw = raw.guestRemoveRegion
const guestProtectRaw = raw.guestProtect
const guestCoveredRaw = raw.guestCovered
const guestTranslateRaw = raw.guestTranslate
const guestReadRaw = raw.guestRead
const guestReadIntoRaw = raw.guestReadInto
const guestWriteRaw = raw.guestWrite
const guestDiscardRaw = raw.guestDiscard
const guestLoadFileRaw = raw.guestLoadFile
const guestWindowRaw = raw.guestWindow
const guestAtomicCheckRaw = raw.guestAtomicCheck
const regionMsyncAsyncRaw = raw.regionMsyncAsync
const regionPopulateAsyncRaw = raw.regionPopulateAsync
const regionLoadFileAsyncRaw = raw.regionLoadFileAsync
const regionFileIoAsyncRaw = raw.regionFileIoAsync
const regionMappingsRaw = raw.regionMappings
const guestRegionsRaw = raw.guestRegions
const guestTrackDirtyRaw = raw.guestTrackDirty
const guestPagerStartRaw = raw.guestPagerStart
const guestPagerRecordRaw = raw.guestPagerRecord
const guestPagerStatusRaw = raw.guestPagerStatus
const guestDirtyKernelRaw = raw.guestDirtyKernel
const guestMarkDirtyRaw = raw.guestMarkDirty
const guestTakeDirtyRaw = raw.guestTakeDirty
const regionPendingRaw = raw.regionPending
const regionKernelMappingsRaw = raw.regionKernelMappings

/**
 * A `PROT_NONE` reservation of `size` bytes starting at a multiple of
 * `align`, owned by `owner`; returns its handle.
 */
export function regionReserve(owner: object, size: number, align: number) {
  slots[0] = n(size)
  slots[1] = n(align)
  return regionReserveRaw(owner)
}

/**
 * Anonymous memory owned by `owner`; returns its handle.
 */
export function regionAnonymous(owner: object, size: number, protection: number, populate: boolean, shared: boolean) {
  slots[0] = n(size)
  slots[1] = n(protection)
  return regionAnonymousRaw(owner, populate, shared)
}

/**
 * A mapping of `fd` owned by `owner`; returns its handle.
 */
export function regionFromFd(owner: object, fd: number, size: number, offset: number, protection: number, populate: boolean, shared: boolean, checkEof: boolean) {
  slots[0] = n(fd)
  slots[1] = n(size)
  slots[2] = n(offset)
  slots[3] = n(protection)
  return regionFromFdRaw(owner, populate, shared, checkEof)
}

/**
 * The start address (`ERR_MMAP_CLOSED` once closed).
 */
export function regionAddress(handle: number) {
  slots[0] = n(handle)
  return regionAddressRaw()
}

/**
 * The size in bytes (whole pages for an arena).
 */
export function regionSize(handle: number) {
  slots[0] = n(handle)
  return regionSizeRaw()
}

/**
 * Whether the region is closed.
 */
export function regionClosed(handle: number) {
  slots[0] = n(handle)
  return regionClosedRaw()
}

/**
 * Detaches every view and unmaps (once nothing uses the memory). `true`
 * when the facade must call `regionReclaim` on the next turn of the event loop.
 */
export function regionClose(handle: number) {
  slots[0] = n(handle)
  return regionCloseRaw()
}

/**
 * Gives held ranges what their changes asked for; releases a deferred close.
 */
export function regionReclaim(handle: number) {
  slots[0] = n(handle)
  return regionReclaimRaw()
}

/**
 * `msync(MS_SYNC)`.
 */
export function regionMsync(handle: number, offset: number, size: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(size)
  return regionMsyncRaw()
}

/**
 * `madvise` with the Linux advice number.
 */
export function regionMadvise(handle: number, offset: number, size: number, advice: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(size)
  slots[3] = n(advice)
  return regionMadviseRaw()
}

/**
 * `mlock` (`mlock2(MLOCK_ONFAULT)` with `onFault`).
 */
export function regionMlock(handle: number, offset: number, size: number, onFault: boolean) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(size)
  return regionMlockRaw(onFault)
}

/**
 * `munlock`.
 */
export function regionMunlock(handle: number, offset: number, size: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(size)
  return regionMunlockRaw()
}

/**
 * An fd overlay (`MAP_SHARED`, or `MAP_PRIVATE` without `shared`). `true`
 * when the arena now holds ranges to reclaim.
 */
export function regionAddFdMapping(handle: number, offset: number, size: number, fd: number, fdOffset: number, protection: number, shared: boolean) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(size)
  slots[3] = n(fd)
  slots[4] = n(fdOffset)
  slots[5] = n(protection)
  return regionAddFdMappingRaw(shared)
}

/**
 * An fd overlay whose `fdOffset` is a BigInt beyond 2^53.
 */
export function regionAddFdMappingBig(handle: number, offset: number, size: number, fd: number, fdOffset: bigint, protection: number, shared: boolean) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(size)
  slots[3] = n(fd)
  slots[4] = n(protection)
  return regionAddFdMappingBigRaw(fdOffset, shared)
}

/**
 * An overlay of the `SharedMemory` registered as `source` (its private
 * descriptor; no `fstat` when the core knows its size: see
 * `MemoryMappingArena::plan_shm_overlay`).
 */
export function regionAddShmMapping(handle: number, offset: number, size: number, source: number, fdOffset: number, protection: number, shared: boolean) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(size)
  slots[3] = n(source)
  slots[4] = n(fdOffset)
  slots[5] = n(protection)
  return regionAddShmMappingRaw(shared)
}

/**
 * A private anonymous overlay.
 */
export function regionAddAnonymous(handle: number, offset: number, size: number, protection: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(size)
  slots[3] = n(protection)
  return regionAddAnonymousRaw()
}

/**
 * Changes the protection of a mapped range in place (`mprotect`).
 */
export function regionProtect(handle: number, offset: number, size: number, protection: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(size)
  slots[3] = n(protection)
  return regionProtectRaw()
}

/**
 * Replaces the range by reserved `PROT_NONE` space.
 */
export function regionRemoveMapping(handle: number, offset: number, size: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(size)
  return regionRemoveMappingRaw()
}

/**
 * Discards the pages of the range (offset and size page aligned; needs
 * `WRITE`): `MADV_REMOVE` over shared memory and files, `MADV_DONTNEED`
 * over private memory (the core's `discard`).
 */
export function regionDiscard(handle: number, offset: number, size: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(size)
  return regionDiscardRaw()
}

/**
 * Copies `target.length` bytes at `offset` into `target`.
 */
export function regionReadInto(handle: number, offset: number, target: Uint8Array) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  return regionReadIntoRaw(target)
}

/**
 * Copies `source` to `offset`.
 */
export function regionWrite(handle: number, offset: number, source: Uint8Array) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  return regionWriteRaw(source)
}

/**
 * Reads `fd` from `fileOffset` into `offset` (`pread`, no intermediate
 * buffer): `length` bytes, or without it the rest of the file. Returns
 * the bytes loaded (fewer where the file ends).
 */
export function regionLoadFile(handle: number, offset: number, fd: number, fileOffset: number, length: number | undefined) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(fd)
  slots[3] = n(fileOffset)
  return regionLoadFileRaw(length)
}

/**
 * How many bytes loading `fd` from `fileOffset` reads without a length:
 * the rest of the file (the core's rule).
 */
export function fileLoadLength(fd: number, fileOffset: number) {
  slots[0] = n(fd)
  slots[1] = n(fileOffset)
  return fileLoadLengthRaw()
}

/**
 * Refuses a mapping of `size` bytes of `fd` from `fdOffset` that reaches
 * past the end of the file (the core's end-of-file rule; a file of
 * unknown size passes). For checking a whole snapshot manifest before
 * anything is mapped.
 */
export function fileCheckEof(fd: number, fdOffset: number, size: number) {
  slots[0] = n(fd)
  slots[1] = n(fdOffset)
  slots[2] = n(size)
  return fileCheckEofRaw()
}

/**
 * Checks one protection argument (the rule every `protection` passes)
 * and returns it: what `Protection.of` combines.
 */
export function checkProtection(protection: number) {
  slots[0] = n(protection)
  return checkProtectionRaw()
}

/**
 * Checks one seal argument (the core's seal rule, as `addSeals` applies
 * it) and returns it: what `Seal.of` combines.
 */
export function checkSeals(seals: number) {
  slots[0] = n(seals)
  return checkSealsRaw()
}

/**
 * A new `Buffer` with a copy of `length` bytes at `offset`.
 */
export function regionRead(handle: number, offset: number, length: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(length)
  return regionReadRaw()
}

/**
 * A zero-copy `Buffer` over the range, detached when the memory under it changes.
 */
export function regionView(handle: number, offset: number, length: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(length)
  return regionViewRaw()
}

/**
 * The facade's window for typed access around `offset`:
 * `[start, length, buffer]`, `[start, length, undefined]` where memory
 * may not be touched directly, or `undefined` in a hole.
 */
export function regionWindow(handle: number, offset: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  return regionWindowRaw()
}

/**
 * Refuses an atomic access of `width` bytes at `offset` that may not be
 * made (bounds, natural alignment, memory that may be touched directly).
 */
export function regionAtomicCheck(handle: number, offset: number, width: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(width)
  return regionAtomicCheckRaw()
}

/**
 * A `SharedArrayBuffer` over the range (where the runtime can make one), pinning
 * it until collected: changes over it are `ERR_MMAP_BUSY` meanwhile.
 */
export function regionSharedView(handle: number, offset: number, length: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(length)
  return regionSharedViewRaw()
}

/**
 * Shares the region with other threads: `[id, token, isArena]` for
 * `regionAttach`. From now on views are recorded and no window is handed out.
 */
export function regionShare(handle: number) {
  slots[0] = n(handle)
  return regionShareRaw()
}

/**
 * A new handle, owned by `owner`, over the region shared as `id`/`token`
 * (in any thread); `arena` must match its kind.
 */
export function regionAttach(owner: object, id: number, token: number, arena: boolean) {
  slots[0] = n(id)
  slots[1] = n(token)
  return regionAttachRaw(owner, arena)
}

/**
 * A checked atomic 4-byte operation at `offset` (for memory without a
 * window): `op` 0 load, 1 store `value`, 2 compare `expected` and
 * exchange for `value`; returns the value loaded (or stored).
 */
export function regionAtomic32(handle: number, offset: number, op: number, value: number, expected: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(op)
  slots[3] = n(value)
  slots[4] = n(expected)
  return regionAtomic32Raw()
}

/**
 * As `regionAtomic32`, for 8 bytes (values as BigInts).
 */
export function regionAtomic64(handle: number, offset: number, op: number, value: bigint, expected: bigint) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(op)
  return regionAtomic64Raw(value, expected)
}

/**
 * Adds a guest region at `guestAddress` to the arena and its guest
 * table, under the arena's lock (refused where it overlaps one, before
 * anything is mapped; with `dontDump`, `MADV_DONTDUMP` on it, and
 * unmapped again if that fails): `kind` 0 anonymous memory, 1 `fd` from
 * `fdOffset` (`MAP_SHARED` or, without `shared`, private), 2 the
 * `SharedMemory` registered as `fd`. Returns its KVM slot, and `true`
 * when the arena now holds ranges to reclaim.
 */
export function guestAddRegion(handle: number, guestAddress: number, size: number, protection: number, kind: number, fd: number, fdOffset: bigint, shared: boolean, dontDump: boolean) {
  slots[0] = n(handle)
  slots[1] = n(guestAddress)
  slots[2] = n(size)
  slots[3] = n(protection)
  slots[4] = n(kind)
  slots[5] = n(fd)
  return guestAddRegionRaw(fdOffset, shared, dontDump)
}

/**
 * Removes the guest region that starts at `guestAddress` from the arena
 * and its guest table. `true` when the arena now holds ranges to reclaim.
 */
export function guestRemoveRegion(handle: number, guestAddress: number) {
  slots[0] = n(handle)
  slots[1] = n(guestAddress)
  return guestRemoveRegionRaw()
}

/**
 * Changes the protection of the guest region that starts at `guestAddress`.
 */
export function guestProtect(handle: number, guestAddress: number, protection: number) {
  slots[0] = n(handle)
  slots[1] = n(guestAddress)
  slots[2] = n(protection)
  return guestProtectRaw()
}

/**
 * Refuses a guest range that guest regions do not cover without a gap.
 */
export function guestCovered(handle: number, guestAddress: number, length: number) {
  slots[0] = n(handle)
  slots[1] = n(guestAddress)
  slots[2] = n(length)
  return guestCoveredRaw()
}

/**
 * The host address of `guestAddress` (`ERR_GUEST_ADDRESS` in no region).
 */
export function guestTranslate(handle: number, guestAddress: number) {
  slots[0] = n(handle)
  slots[1] = n(guestAddress)
  return guestTranslateRaw()
}

/**
 * A new `Buffer` with a copy of `length` guest bytes at `guestAddress`.
 */
export function guestRead(handle: number, guestAddress: number, length: number) {
  slots[0] = n(handle)
  slots[1] = n(guestAddress)
  slots[2] = n(length)
  return guestReadRaw()
}

/**
 * Copies `target.length` guest bytes at `guestAddress` into `target`.
 */
export function guestReadInto(handle: number, guestAddress: number, target: Uint8Array) {
  slots[0] = n(handle)
  slots[1] = n(guestAddress)
  return guestReadIntoRaw(target)
}

/**
 * Copies `source` to `guestAddress`.
 */
export function guestWrite(handle: number, guestAddress: number, source: Uint8Array) {
  slots[0] = n(handle)
  slots[1] = n(guestAddress)
  return guestWriteRaw(source)
}

/**
 * `regionDiscard` of `[guestAddress, guestAddress + size)`, which
 * regions that follow each other without a gap must cover.
 */
export function guestDiscard(handle: number, guestAddress: number, size: number) {
  slots[0] = n(handle)
  slots[1] = n(guestAddress)
  slots[2] = n(size)
  return guestDiscardRaw()
}

/**
 * Reads `length` bytes of `fd` from `fileOffset` into guest memory at
 * `guestAddress` (`pread`); returns the bytes loaded.
 */
export function guestLoadFile(handle: number, guestAddress: number, fd: number, fileOffset: number, length: number) {
  slots[0] = n(handle)
  slots[1] = n(guestAddress)
  slots[2] = n(fd)
  slots[3] = n(fileOffset)
  slots[4] = n(length)
  return guestLoadFileRaw()
}

/**
 * `regionWindow` around `guestAddress`, with the bounds of the guest
 * region there appended; `undefined` in no region or a hole.
 */
export function guestWindow(handle: number, guestAddress: number) {
  slots[0] = n(handle)
  slots[1] = n(guestAddress)
  return guestWindowRaw()
}

/**
 * Refuses an atomic access of `width` bytes at `guestAddress` outside
 * the guest regions, or one that may not be made (as `regionAtomicCheck`).
 */
export function guestAtomicCheck(handle: number, guestAddress: number, width: number) {
  slots[0] = n(handle)
  slots[1] = n(guestAddress)
  slots[2] = n(width)
  return guestAtomicCheckRaw()
}

/**
 * `msync(MS_SYNC)` of the pages of `[offset, offset + size)` on the libuv thread pool.
 */
export function regionMsyncAsync(handle: number, offset: number, size: number) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(size)
  return regionMsyncAsyncRaw()
}

/**
 * `MADV_POPULATE_READ`/`_WRITE` of the pages of `[offset, offset + size)`
 * on the libuv thread pool.
 */
export function regionPopulateAsync(handle: number, offset: number, size: number, write: boolean) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(size)
  return regionPopulateAsyncRaw(write)
}

/**
 * Reads `fd` from `fileOffset` into `offset` on the libuv thread pool:
 * `length` bytes, or without it the rest of the file; resolves to the
 * bytes loaded.
 */
export function regionLoadFileAsync(handle: number, offset: number, fd: number, fileOffset: number, length: number | undefined) {
  slots[0] = n(handle)
  slots[1] = n(offset)
  slots[2] = n(fd)
  slots[3] = n(fileOffset)
  return regionLoadFileAsyncRaw(length)
}

/**
 * A batch of file I/O on the libuv thread pool: `runs` is flat triples
 * (offset in the region, length, file offset). With `dump`, each run is
 * written to the file, which is then grown to at least `fileLen`;
 * otherwise each is read from the file, which must hold every byte of
 * every run. Resolves to the bytes moved.
 */
export function regionFileIoAsync(handle: number, fd: number, dump: boolean, runs: Float64Array, fileLen: number) {
  slots[0] = n(handle)
  slots[1] = n(fd)
  slots[2] = n(fileLen)
  return regionFileIoAsyncRaw(dump, runs)
}

/**
 * The layout of an arena.
 */
export function regionMappings(handle: number) {
  slots[0] = n(handle)
  return regionMappingsRaw()
}

/**
 * The regions of a guest memory's table, sorted by guest address.
 */
export function guestRegions(handle: number) {
  slots[0] = n(handle)
  return guestRegionsRaw()
}

/**
 * Tracks the writes to the guest regions with the kernel (userfaultfd
 * write-protect and `PAGEMAP_SCAN`), now and as regions come; refused
 * with the reason where the kernel or the process cannot.
 */
export function guestTrackDirty(handle: number) {
  slots[0] = n(handle)
  return guestTrackDirtyRaw()
}

/**
 * Starts the pager of a restore (`lazy: 'pager'`): fills the guest
 * ranges of `runs` (`guestAddress, size, fileOffset` triples, fresh
 * memory) from the file `fd` (duplicated: it may be closed after the
 * call), on faults and in the background, with a thread of its own;
 * `first` (`guestAddress, pages` pairs) is filled first, and `record`
 * records the pages first faulted on.
 */
export function guestPagerStart(handle: number, fd: number, runs: Float64Array, record: boolean, first: Float64Array) {
  slots[0] = n(handle)
  slots[1] = n(fd)
  return guestPagerStartRaw(runs, record, first)
}

/**
 * What the pager saw of the faults (see `State::pager_record`).
 */
export function guestPagerRecord(handle: number) {
  slots[0] = n(handle)
  return guestPagerRecordRaw()
}

/**
 * The pager's status (see `State::pager_status`).
 */
export function guestPagerStatus(handle: number) {
  slots[0] = n(handle)
  return guestPagerStatusRaw()
}

/**
 * Whether the kernel tracks the guest regions' writes.
 */
export function guestDirtyKernel(handle: number) {
  slots[0] = n(handle)
  return guestDirtyKernelRaw()
}

/**
 * Marks `[address, address + length)` (inside the guest regions)
 * changed, for the next take (kernel tracking).
 */
export function guestMarkDirty(handle: number, address: number, length: number) {
  slots[0] = n(handle)
  slots[1] = n(address)
  slots[2] = n(length)
  return guestMarkDirtyRaw()
}

/**
 * Takes the pages of every guest region written or marked since the
 * last take, and starts anew (kernel tracking): for each region, in
 * guest address order, its guest address, its size, then its bitmap
 * (`KVM_GET_DIRTY_LOG`'s layout, a word per 64 pages).
 */
export function guestTakeDirty(handle: number) {
  slots[0] = n(handle)
  return guestTakeDirtyRaw()
}

/**
 * Asynchronous operations still pending.
 */
export function regionPending(handle: number) {
  slots[0] = n(handle)
  return regionPendingRaw()
}

/**
 * Kernel mappings an arena occupies.
 */
export function regionKernelMappings(handle: number) {
  slots[0] = n(handle)
  return regionKernelMappingsRaw()
}
