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
import { guestError, invalidArgType, invalidArgValue, outOfRange } from './errors.js'
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
  /** Format version: 1. */
  version: 1
  /** The page size of the machine that wrote it; a restore needs the same. */
  pageSize: number
  /** Whether only the pages dirty since the last snapshot were written (a diff). */
  dirtyOnly: boolean
  /** The regions, sorted by guest address; the file holds them one after another. */
  regions: SnapshotRegion[]
}

/** Options of {@link GuestMemory.snapshot}. */
export interface SnapshotOptions {
  /**
   * Write only the pages dirty since the last snapshot or `takeDirty()` (needs `trackDirty`), at
   * the same file offsets as a full snapshot, leaving the rest of the file untouched. Default `false`.
   */
  dirtyOnly?: boolean
}

/** Options of {@link GuestMemory.restore}. */
export interface RestoreOptions extends GuestMemoryOptions {
  /**
   * Map the snapshot file copy-on-write and read pages on first touch (default `true`); `false`
   * reads every region into anonymous memory now.
   */
  lazy?: boolean
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
}

/** {@link GuestMemory.snapshot} of `guest`. */
export async function writeSnapshot(guest: GuestInternals, target: LoadSource, options: unknown): Promise<SnapshotManifest> {
  const o = v.options('options', options, ['dirtyOnly'])
  const dirtyOnly = v.bool('dirtyOnly', o.dirtyOnly, false)
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
  return { version: 1, pageSize: PAGE_SIZE, dirtyOnly, regions }
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
  const { lazy: lazyOption, ...o } = v.options('options', options, ['addressSpace', 'dontDump', 'align', 'trackDirty', 'lazy'])
  const lazy = v.bool('lazy', lazyOption, true)
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
      protection: lazy ? r.protection : Protection.READ_WRITE,
      backing: lazy ? { fd: f, fdOffset: r.fileOffset, shared: false } : 'anonymous',
    }))
    const [guest, internals] = build(specs, o as GuestMemoryOptions)
    if (lazy) return guest
    // Eager: anonymous memory read from the file now (no page marked: the restored memory is the
    // snapshot), then given the snapshot's protection.
    try {
      for (const r of m.regions) {
        guestLoadFile(internals.handle, r.guestAddress, f, r.fileOffset, r.size)
        if (r.protection !== Protection.READ_WRITE) internals.protect(r.guestAddress, r.protection)
      }
    } catch (e) {
      guest.close()
      throw e
    }
    return guest
  })
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
  const m = v.options(name, value, ['version', 'pageSize', 'dirtyOnly', 'regions'])
  if (m.version !== 1) throw invalidArgValue(`${name}.version`, 'must be 1 (the only format this version reads)', m.version)
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
  return { version: 1, pageSize: PAGE_SIZE, dirtyOnly, regions }
}
