/**
 * Snapshots of guest memory: writing one (every region, or only the dirty pages), restoring a
 * GuestMemory from one, applying a diff over one, and the manifest that describes the file
 * (JSON-serialisable), read back and checked once before anything is mapped or read.
 * GuestMemory's `snapshot`, `restore` and `applyDiff` are these functions.
 */
import { fstatSync, constants as fsConstants } from 'node:fs'
import { fileCheckEof, guestLoadFile } from './calls.js'
import { PAGE_SIZE, Protection, type ProtectionFlags } from './constants.js'
import { type DirtyTracker, needTracking, pageRuns } from './dirty.js'
import { guestError, invalidArgType, invalidArgValue, outOfRange, stateError } from './errors.js'
import type { GuestMemoryOptions, GuestRegionSpec } from './guest.js'
import { type LoadSource, withFile } from './load.js'
import { guestRegions, regionFileIoAsync } from './calls.js'
import * as v from './validate.js'

/** One region of a {@link SnapshotManifest}. */
export interface SnapshotRegion {
  /** Guest-physical start address (a number: the manifest is plain JSON). */
  guestAddress: number
  /** Size in bytes. */
  size: number
  /** Where the region's first byte is in the snapshot file. */
  fileOffset: number
  /** What backed the region when it was dumped. */
  backing: 'anonymous' | 'fd'
  /** Its {@link Protection} bits (a restore maps it the same way). */
  protection: ProtectionFlags
  /**
   * For a diff (`dirtyOnly`): the pages written, as `[firstPage, count]` runs of pages from the
   * region's start. Absent in a full snapshot, which holds every page.
   */
  dirtyPages?: [number, number][]
}

/** What {@link GuestMemory.snapshot} resolves to; keep it next to the file (`JSON.stringify` it). */
export interface SnapshotManifest {
  /**
   * Format version: 1, or 2 for a manifest with a {@link workingSet} (a restore reads both; a
   * snapshot writes 1 unless asked to store a working set).
   */
  version: 1 | 2
  /** The page size of the machine that wrote it; a restore needs the same. */
  pageSize: number
  /** Whether only the pages dirty since the last snapshot were written (a diff). */
  dirtyOnly: boolean
  /** The regions, sorted by guest address; the file holds them one after another. */
  regions: SnapshotRegion[]
  /**
   * Version 2: the pages the guest touched first after a `lazy: 'pager', record: true` restore, as
   * `[guestAddress, pages]` runs in the order they were first touched ({@link GuestMemory.workingSet}):
   * a `lazy: 'pager'` restore of this manifest fetches them first.
   */
  workingSet?: [number, number][]
}

/** Options of {@link GuestMemory.snapshot}. */
export interface SnapshotOptions {
  /**
   * Write only the pages dirty since the last snapshot or `takeDirty()` (needs `trackDirty`), at
   * the same file offsets as a full snapshot, leaving the rest of the file untouched. Default `false`.
   */
  dirtyOnly?: boolean
  /**
   * Store this memory's recorded working set ({@link GuestMemory.workingSet}: needs a
   * `lazy: 'pager', record: true` restore) in the manifest, which is then version 2. Default `false`.
   */
  workingSet?: boolean
}

/** Options of {@link GuestMemory.restore}. */
export interface RestoreOptions extends GuestMemoryOptions {
  /**
   * How the regions get the snapshot's bytes:
   * - `'file'` (or `true`, the default): each region is a private (copy-on-write) mapping of the
   *   snapshot file, read by the kernel on first touch. Nothing happens up front and it works in
   *   every process, but the memory stays a file's (atomics refused, the file must stay as it is)
   *   for the guest's whole life.
   * - `'pager'`: each region is anonymous memory, registered with a userfaultfd; a thread of the
   *   package fills a page when anything first touches it (this thread, other threads, the kernel,
   *   a KVM guest) and fills the rest in the background, so that the memory ends as ordinary
   *   memory that no longer needs the file ({@link GuestMemory.restored}). Needs a userfaultfd that
   *   serves kernel-mode faults (root, `CAP_SYS_PTRACE`, `vm.unprivileged_userfaultfd=1` or access
   *   to `/dev/userfaultfd`): refused with `ERR_MMAP_UNSUPPORTED` otherwise. With `trackDirty`
   *   tracked by the kernel, every `takeDirty()` reports every page of the pager's regions until
   *   the first take after the pager has ended, which starts tracking them page by page.
   * - `false`: every region is anonymous memory read from the file now.
   *
   * `'file'` stays the default because it is the one that works everywhere at no cost up front;
   * `'pager'` needs privileges and a thread.
   */
  lazy?: boolean | 'file' | 'pager'
  /**
   * With `lazy: 'pager'`: record the order in which pages are first touched (faulted on) after the
   * restore, for {@link GuestMemory.workingSet} and `snapshot({ workingSet: true })`. Default `false`.
   */
  record?: boolean
}

/**
 * What the functions here use of a GuestMemory: handed to them by its own methods (the fields
 * are private to it), for the one call.
 */
export interface GuestInternals {
  /** The arena's native handle, for the guest entry points. */
  readonly handle: number
  /** Its dirty tracker; `undefined` when created without `trackDirty`. */
  readonly dirty: DirtyTracker | undefined
  /** Gives the region that starts at `start` the protection `protection`. */
  protect(start: number, protection: ProtectionFlags): void
  /**
   * Starts the pager of a `lazy: 'pager'` restore over `runs` (`guestAddress, size, fileOffset`
   * triples) from the file `fd`; sets the guest's `restored` promise.
   */
  startPager(fd: number, runs: Float64Array, record: boolean, first: Float64Array): void
  /** The recorded working set (see {@link GuestMemory.workingSet}); throws without one. */
  workingSet(): [number, number][]
}

/** {@link GuestMemory.snapshot} of `guest`. */
export async function writeSnapshot(guest: GuestInternals, target: LoadSource, options: unknown): Promise<SnapshotManifest> {
  const o = v.options('options', options, ['dirtyOnly', 'workingSet'])
  const dirtyOnly = v.bool('dirtyOnly', o.dirtyOnly, false)
  const workingSet = v.bool('workingSet', o.workingSet, false) ? guest.workingSet() : undefined
  if (dirtyOnly) needTracking(guest.dirty, 'snapshot({ dirtyOnly: true })')
  // The native table, read once: the regions written are the ones the manifest describes.
  const table = guestRegions(guest.handle)
  // Without tracking nothing is taken; with it, a snapshot clears the bits it covers.
  const taken = guest.dirty?.take(table)
  const regions: SnapshotRegion[] = []
  const runs: number[] = []
  let fileOffset = 0
  for (const [i, s] of table.entries()) {
    const size = s.size
    const start = s.guestAddress
    const region: SnapshotRegion = {
      guestAddress: start,
      size,
      fileOffset,
      backing: s.backing,
      protection: s.protection as ProtectionFlags,
    }
    if (dirtyOnly && taken !== undefined) {
      region.dirtyPages = pageRuns(taken.bitmaps[i], size / PAGE_SIZE)
      for (const [p, n] of region.dirtyPages) runs.push(start + p * PAGE_SIZE, n * PAGE_SIZE, fileOffset + p * PAGE_SIZE)
    } else {
      runs.push(start, size, fileOffset)
    }
    regions.push(region)
    fileOffset += size
  }
  try {
    await withFile(
      target,
      (fd) => regionFileIoAsync(guest.handle, fd, true, Float64Array.from(runs), fileOffset),
      // Never O_TRUNC: the file may be the very snapshot this memory was restored from (its
      // private overlays read the pages not yet written from it); truncating it would leave
      // those pages past the end of their file. Writing the memory back over it is safe: a page
      // not yet copied is the file's own bytes, a copied one is private. The file only grows.
      fsConstants.O_WRONLY | fsConstants.O_CREAT,
    )
  } catch (e) {
    taken?.putBack()
    throw e
  }
  if (workingSet !== undefined) return { version: 2, pageSize: PAGE_SIZE, dirtyOnly, regions, workingSet }
  return { version: 1, pageSize: PAGE_SIZE, dirtyOnly, regions }
}

/** A working set: `[guestAddress, pages]` runs (page-aligned addresses, at least one page each). */
function readRuns(name: string, value: unknown): [number, number][] {
  if (value === undefined) return []
  if (!Array.isArray(value)) throw invalidArgType(name, 'an array of [guestAddress, pages]', value)
  if (value.length > 1 << 20) throw outOfRange(`${name}.length`, `at most ${1 << 20}`, value.length)
  const runs: [number, number][] = []
  for (let k = 0; k < value.length; k++) {
    const run: unknown = value[k]
    if (!Array.isArray(run) || run.length !== 2) throw invalidArgType(`${name}[${k}]`, 'a [guestAddress, pages] pair', run)
    const at = pages(`${name}[${k}][0]`, integer(`${name}[${k}][0]`, run[0]))
    const n = integer(`${name}[${k}][1]`, run[1])
    if (n === 0) throw outOfRange(`${name}[${k}][1]`, 'greater than 0', n)
    runs.push([at, n])
  }
  return runs
}

/**
 * {@link GuestMemory.restore}: `build` constructs the GuestMemory over the regions given (the
 * caller's constructor) and hands over its internals, for an eager restore to fill it.
 */
export function restoreSnapshot<G extends { close(): void }>(
  manifest: unknown,
  source: LoadSource,
  options: unknown,
  build: (specs: GuestRegionSpec[], options: GuestMemoryOptions) => [G, GuestInternals],
): G {
  const m = readManifest(manifest)
  const {
    lazy: lazyOption,
    record: recordOption,
    ...o
  } = v.options('options', options, ['addressSpace', 'dontDump', 'align', 'trackDirty', 'lazy', 'record'])
  const mode = lazyMode(lazyOption)
  const record = v.bool('record', recordOption, false)
  if (record && mode !== 'pager')
    throw invalidArgValue('record', "is for lazy: 'pager' (only the pager sees the first touches)", recordOption)
  const lazy = mode === 'file'
  return withFile(source, (f) => {
    // Only a file with a size holds a snapshot: a character device (`/dev/zero` maps and
    // reads as anything but the snapshot), a FIFO, a socket or a directory is refused.
    const st = fstatSync(f)
    if (!st.isFile() && !st.isBlockDevice()) {
      const kind = st.isFIFO() ? 'a FIFO' : st.isDirectory() ? 'a directory' : st.isSocket() ? 'a socket' : 'a character device'
      throw invalidArgValue(
        'source',
        `must be a regular file or a block device holding the snapshot; it is ${kind}`,
        typeof source === 'number' ? source : String(source),
      )
    }
    for (const r of m.regions) fileCheckEof(f, r.fileOffset, r.size)
    const specs: GuestRegionSpec[] = m.regions.map((r) => ({
      guestAddress: r.guestAddress,
      size: r.size,
      protection: mode === 'false' ? Protection.READ_WRITE : r.protection,
      backing: lazy ? { fd: f, fdOffset: r.fileOffset, shared: false } : 'anonymous',
    }))
    const [guest, internals] = build(specs, o as GuestMemoryOptions)
    if (lazy) return guest
    if (mode === 'pager') {
      // Anonymous memory, nothing present yet, with the snapshot's protection: the pager fills it.
      try {
        internals.startPager(
          f,
          Float64Array.from(m.regions.flatMap((r) => [r.guestAddress, r.size, r.fileOffset])),
          record,
          Float64Array.from((m.workingSet ?? []).flat()),
        )
      } catch (e) {
        guest.close()
        throw e
      }
      return guest
    }
    // Eager: anonymous memory read from the file now (no page marked: the restored memory is the
    // snapshot), then given the snapshot's protection.
    try {
      for (const r of m.regions) {
        guestLoadFile(internals.handle, r.guestAddress, f, r.fileOffset, r.size)
        if (r.protection !== Protection.READ_WRITE) internals.protect(r.guestAddress, r.protection)
      }
      // The kernel's tracking saw those reads as writes: what they wrote is the snapshot.
      internals.dirty?.take(guestRegions(internals.handle))
    } catch (e) {
      guest.close()
      throw e
    }
    return guest
  })
}

/** The `lazy` option, read: `true` is `'file'`. */
function lazyMode(value: unknown): 'file' | 'pager' | 'false' {
  if (value === undefined || value === true || value === 'file') return 'file'
  if (value === false) return 'false'
  if (value === 'pager') return 'pager'
  if (typeof value !== 'string') throw invalidArgType('lazy', "a boolean, 'file' or 'pager'", value)
  throw invalidArgValue('lazy', "must be true, false, 'file' or 'pager'", value)
}

/**
 * A pager's progress, polled every few milliseconds (a status call never blocks): resolves when
 * every page is in, rejects with `ERR_RESTORE_INCOMPLETE` (naming the pages) when the source could
 * not supply some, with `ERR_MMAP_CLOSED` when the memory was closed first. The polling timer keeps
 * the event loop alive until then: a restore ends by itself. The promise is marked handled (no
 * unhandled rejection for a caller that never awaits it); awaiting it still rejects.
 */
export function pagerRestored(status: () => BigUint64Array): Promise<void> {
  const restored = new Promise<void>((resolve, reject) => {
    const tick = (): void => {
      let s: BigUint64Array
      try {
        s = status()
      } catch {
        reject(
          stateError('ERR_MMAP_CLOSED', 'The guest memory was closed before its restore completed: the pages not filled read as zeros'),
        )
        return
      }
      const kind = Number(s[0])
      if (kind === 1) {
        setTimeout(tick, 5)
      } else if (kind === 2 && s.length === 1) {
        resolve()
      } else if (kind === 2) {
        reject(incomplete(s))
      } else if (kind === 4) {
        reject(stateError('ERR_MMAP_CLOSED', `The pager stopped on an error (errno ${s[1]}): the pages not filled read as zeros`))
      } else {
        reject(
          stateError('ERR_MMAP_CLOSED', 'The guest memory was closed before its restore completed: the pages not filled read as zeros'),
        )
      }
    }
    setTimeout(tick, 1)
  })
  restored.catch(() => {})
  return restored
}

/** The error of a restore whose source could not supply the pages `s` lists (after its kind). */
function incomplete(s: BigUint64Array): Error {
  const pages: [number, number][] = []
  for (let i = 1; i + 1 < s.length; i += 2) pages.push([Number(s[i]), Number(s[i + 1])])
  const total = pages.reduce((sum, [, n]) => sum + n, 0)
  const named = pages
    .slice(0, 8)
    .map(([at, n]) => `0x${at.toString(16)} (${n} page${n === 1 ? '' : 's'})`)
    .join(', ')
  const err = new Error(
    `The snapshot file could not supply ${total} page${total === 1 ? '' : 's'} (truncated or unreadable during the restore), which hold zeros: at guest addresses ${named}${pages.length > 8 ? `, and ${pages.length - 8} more runs` : ''}`,
  ) as Error & { code: string; pages: [number, number][] }
  err.code = 'ERR_RESTORE_INCOMPLETE'
  err.pages = pages
  return err
}

/** {@link GuestMemory.applyDiff} to `guest`. */
export async function applyDiff(guest: GuestInternals, manifest: unknown, source: LoadSource): Promise<number> {
  const m = readManifest(manifest)
  const runs: number[] = []
  const table = guestRegions(guest.handle)
  for (const r of m.regions) {
    const s = table.find((x) => x.guestAddress === r.guestAddress)
    if (s === undefined || s.size !== r.size) {
      throw guestError(
        'ERR_GUEST_ADDRESS',
        `The diff's region at 0x${r.guestAddress.toString(16)} (${r.size} bytes) is not a region of this guest memory`,
      )
    }
    for (const [p, n] of r.dirtyPages ?? [[0, r.size / PAGE_SIZE]]) {
      runs.push(r.guestAddress + p * PAGE_SIZE, n * PAGE_SIZE, r.fileOffset + p * PAGE_SIZE)
      guest.dirty?.mark(r.guestAddress + p * PAGE_SIZE, n * PAGE_SIZE)
    }
  }
  return withFile(source, (fd) => regionFileIoAsync(guest.handle, fd, false, Float64Array.from(runs), 0))
}

const integer = v.safeInteger
const pages = v.wholePages

/**
 * Reads and checks a manifest, each property once: the version and page size, each region's
 * fields (whole pages, within the file's layout), sorted, non-overlapping in guest memory and in
 * the file, page runs inside their region. Returns a snapshot of it; the caller's object is not
 * read again. Whether the file is long enough is checked against the file (`fileCheckEof`).
 */
function readManifest(value: unknown, name = 'manifest'): SnapshotManifest {
  if (value === null || typeof value !== 'object') throw invalidArgType(name, 'a snapshot manifest object', value)
  const m = v.options(name, value, ['version', 'pageSize', 'dirtyOnly', 'regions', 'workingSet'])
  if (m.version !== 1 && m.version !== 2)
    throw invalidArgValue(`${name}.version`, 'must be 1 or 2 (the formats this version reads)', m.version)
  if (m.pageSize !== PAGE_SIZE) {
    throw invalidArgValue(
      `${name}.pageSize`,
      `must be this machine's page size (${PAGE_SIZE}): the snapshot was taken with another`,
      m.pageSize,
    )
  }
  const dirtyOnly = v.bool(`${name}.dirtyOnly`, m.dirtyOnly, false)
  const list = m.regions
  if (!Array.isArray(list)) throw invalidArgType(`${name}.regions`, 'an array', list)
  const count = list.length
  if (count > 1 << 16) throw outOfRange(`${name}.regions.length`, `at most ${1 << 16}`, count)
  const regions: SnapshotRegion[] = []
  for (let i = 0; i < count; i++) {
    const at = `${name}.regions[${i}]`
    const raw = list[i]
    if (raw === null || typeof raw !== 'object') throw invalidArgType(at, 'an object', raw)
    const r = v.options(at, raw, ['guestAddress', 'size', 'fileOffset', 'backing', 'protection', 'dirtyPages'])
    const guestAddress = pages(`${at}.guestAddress`, integer(`${at}.guestAddress`, r.guestAddress))
    const size = pages(`${at}.size`, integer(`${at}.size`, r.size))
    if (size === 0) throw outOfRange(`${at}.size`, 'greater than 0', size)
    const fileOffset = pages(`${at}.fileOffset`, integer(`${at}.fileOffset`, r.fileOffset))
    if (r.backing !== 'anonymous' && r.backing !== 'fd') throw invalidArgValue(`${at}.backing`, "must be 'anonymous' or 'fd'", r.backing)
    const protection = v.protection(r.protection, `${at}.protection`)
    const region: SnapshotRegion = { guestAddress, size, fileOffset, backing: r.backing, protection }
    if (r.dirtyPages !== undefined) {
      if (!dirtyOnly) throw invalidArgValue(`${at}.dirtyPages`, 'is only for a diff (dirtyOnly: true)', r.dirtyPages)
      if (!Array.isArray(r.dirtyPages)) throw invalidArgType(`${at}.dirtyPages`, 'an array of [firstPage, count]', r.dirtyPages)
      const runs: [number, number][] = []
      const total = size / PAGE_SIZE
      let next = 0
      for (let k = 0; k < r.dirtyPages.length; k++) {
        const run: unknown = r.dirtyPages[k]
        if (!Array.isArray(run) || run.length !== 2) throw invalidArgType(`${at}.dirtyPages[${k}]`, 'a [firstPage, count] pair', run)
        const first = integer(`${at}.dirtyPages[${k}][0]`, run[0])
        const n = integer(`${at}.dirtyPages[${k}][1]`, run[1])
        if (n === 0 || first < next || first + n > total) {
          throw invalidArgValue(
            `${at}.dirtyPages[${k}]`,
            `must be a sorted, non-empty run of pages inside the region (${total} pages)`,
            run,
          )
        }
        next = first + n
        runs.push([first, n])
      }
      region.dirtyPages = runs
    } else if (dirtyOnly) {
      throw invalidArgValue(`${at}.dirtyPages`, 'must list the pages a diff (dirtyOnly: true) holds', undefined)
    }
    const prev = regions[regions.length - 1]
    if (prev !== undefined) {
      if (guestAddress < prev.guestAddress + prev.size) {
        throw guestError(
          'ERR_GUEST_OVERLAP',
          `${at} at 0x${guestAddress.toString(16)} overlaps the region before it, or the regions are not sorted`,
        )
      }
      if (fileOffset < prev.fileOffset + prev.size) {
        throw invalidArgValue(`${at}.fileOffset`, 'overlaps the region before it in the file', fileOffset)
      }
    }
    regions.push(region)
  }
  if (m.version === 1) {
    if (m.workingSet !== undefined) throw invalidArgValue(`${name}.workingSet`, 'needs version 2', m.workingSet)
    return { version: 1, pageSize: PAGE_SIZE, dirtyOnly, regions }
  }
  return { version: 2, pageSize: PAGE_SIZE, dirtyOnly, regions, workingSet: readRuns(`${name}.workingSet`, m.workingSet) }
}
