import { native } from './native.js'

/**
 * The system page size in bytes. Offsets that start a kernel call must be multiples of it.
 * @example
 * arena.removeMapping(3 * PAGE_SIZE, PAGE_SIZE)
 */
export const PAGE_SIZE: number = native.pageSize()

/**
 * Page protection bit flags, combined with `|`.
 *
 * @example
 * arena.addFdMapping(0, PAGE_SIZE, fd, 0, Protection.READ | Protection.WRITE)
 */
export const Protection = {
  /** No access: a reserved range. */
  NONE: 0,
  /** Readable. */
  READ: 1,
  /** Writable. */
  WRITE: 2,
  /** Executable. */
  EXEC: 4,
  /** `READ | WRITE`. */
  READ_WRITE: 3,
} as const

/** A protection value: any combination of the {@link Protection} bits (0–7). */
export type ProtectionFlags = number

/**
 * The Linux `madvise(2)` advices by name. Destructive ones change what the memory
 * reads as: `dontneed` (private anonymous pages read as zero afterwards), `free`
 * (the kernel may zero the pages lazily), `remove` (frees the backing store: memfd
 * and file pages read as zero; this is how a guest balloon returns memory).
 * @example
 * arena.madvise(0, size, 'dontfork')       // by name
 * arena.madvise(0, size, ADVICE.willneed)  // or by number
 */
export const ADVICE = {
  /** No special treatment (`MADV_NORMAL`). */
  normal: 0,
  /** Expect random access: less readahead (`MADV_RANDOM`). */
  random: 1,
  /** Expect sequential access: aggressive readahead (`MADV_SEQUENTIAL`). */
  sequential: 2,
  /** Start reading the pages in (`MADV_WILLNEED`). */
  willneed: 3,
  /** Destructive: private anonymous pages read as zero afterwards. */
  dontneed: 4,
  /** Destructive: the kernel may discard the pages' contents lazily. */
  free: 8,
  /** Destructive: frees the backing store of shared/file memory; the range reads as zero. */
  remove: 9,
  /** Do not map the range into children after `fork` (`MADV_DONTFORK`); guest RAM usually wants this. */
  dontfork: 10,
  /** Undo `dontfork` (`MADV_DOFORK`). */
  dofork: 11,
  /** Let KSM merge identical pages (`MADV_MERGEABLE`). */
  mergeable: 12,
  /** Undo `mergeable` (`MADV_UNMERGEABLE`). */
  unmergeable: 13,
  /** Back the range with transparent huge pages where possible (`MADV_HUGEPAGE`). */
  hugepage: 14,
  /** No transparent huge pages here (`MADV_NOHUGEPAGE`). */
  nohugepage: 15,
  /** Leave the range out of core dumps (`MADV_DONTDUMP`). */
  dontdump: 16,
  /** Undo `dontdump` (`MADV_DODUMP`). */
  dodump: 17,
  /** Mark the pages as cold, first to reclaim (`MADV_COLD`). */
  cold: 20,
  /** Reclaim the pages now (`MADV_PAGEOUT`); contents are kept. */
  pageout: 21,
  /** Prefault the pages for reading (`MADV_POPULATE_READ`, Linux 5.14). */
  populate_read: 22,
  /** Prefault the pages for writing (`MADV_POPULATE_WRITE`, Linux 5.14). */
  populate_write: 23,
} as const

/** An `madvise` advice by name, see {@link ADVICE}. */
export type Advice = keyof typeof ADVICE

/**
 * `memfd` seals for {@link SharedMemory.addSeals}, combined with `|`.
 * @example
 * rom.addSeals(Seal.WRITE | Seal.GROW | Seal.SEAL) // immutable from now on
 */
export const Seal = {
  /** No further seals can be added. */
  SEAL: 1,
  /** The file cannot shrink (so mappings of it never `SIGBUS`). */
  SHRINK: 2,
  /** The file cannot grow. */
  GROW: 4,
  /** The contents cannot change (fails while writable shared mappings exist). */
  WRITE: 8,
  /** No new writable mappings; existing ones keep working. */
  FUTURE_WRITE: 16,
} as const

/** Raw advices refused because they turn memory into a trap (`MADV_HWPOISON`, `MADV_GUARD_INSTALL`). */
export const FORBIDDEN_ADVICE: readonly number[] = [100, 102]
