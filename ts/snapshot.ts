/**
 * Snapshots of guest memory: the manifest a dump resolves to (JSON-serialisable), read back
 * and checked when a snapshot is restored or a diff applied, and the runs of dirty pages a diff
 * lists.
 */
import { PAGE_SIZE, type ProtectionFlags } from './constants.js'
import { guestError, invalidArgType, invalidArgValue, outOfRange } from './errors.js'
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

/** The runs `[firstPage, count]` of set bits among the first `pages` pages of a taken bitmap. */
export function pageRuns(taken: BigUint64Array, pages: number): [number, number][] {
  const words = new Uint32Array(taken.buffer)
  const runs: [number, number][] = []
  let start = -1
  for (let p = 0; p <= pages; p++) {
    const set = p < pages && (words[p >>> 5] & (1 << (p & 31))) !== 0
    if (set && start < 0) start = p
    else if (!set && start >= 0) {
      runs.push([start, p - start])
      start = -1
    }
  }
  return runs
}

const integer = v.safeInteger
const pages = v.wholePages

/**
 * Reads and checks a manifest, each property once: the version and page size, each region's
 * fields (whole pages, within the file's layout), sorted, non-overlapping in guest memory and in
 * the file, page runs inside their region. Returns a snapshot of it; the caller's object is not
 * read again. Whether the file is long enough is checked against the file (`fileCheckEof`).
 */
export function readManifest(value: unknown, name = 'manifest'): SnapshotManifest {
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
