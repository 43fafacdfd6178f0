import { checkProtection, checkSeals } from './calls.js'
import { invalidArgType } from './errors.js'
import { native } from './native.js'

/**
 * The system page size in bytes. Offsets that start a kernel call must be multiples of it.
 * @example
 * arena.removeMapping(3 * PAGE_SIZE, PAGE_SIZE)
 */
export const PAGE_SIZE: number = native.pageSize()

/**
 * The bitwise OR of `bits`, each read once and checked as the argument it stands for: a number
 * (no `valueOf` is called), then the native rule of a protection or of seals (`check`).
 */
function bitwiseOr(name: string, bits: readonly unknown[], what: string, check: (value: number) => number): number {
  let out = 0
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]
    if (typeof b !== 'number') throw invalidArgType(`${name}[${i}]`, `of type number (${what})`, b)
    out |= check(b)
  }
  return out
}

declare const protectionBrand: unique symbol
declare const sealBrand: unique symbol

/**
 * A protection value: a combination of the {@link Protection} bits (0–7). A branded number: only
 * `Protection` members and `Protection.of(...)` make one, so a {@link Seal} (or a stray number)
 * passed as a protection is a type error. At run time it is the plain number.
 */
export type ProtectionFlags = number & {
  /** The brand (types only): what tells a protection from a seal or a plain number. */
  readonly [protectionBrand]: 'Protection'
}

/**
 * Seal bits for {@link SharedMemory.addSeals}: a branded number, made by {@link Seal} members and
 * `Seal.of(...)`, so that a {@link Protection} cannot be passed as seals. At run time, a number.
 */
export type SealFlags = number & {
  /** The brand (types only): what tells a seal from a protection or a plain number. */
  readonly [sealBrand]: 'Seal'
}

/**
 * Page protection bit flags. Every combination has a name; `Protection.of(a, b, …)` combines
 * members (`a | b` would be a plain `number`, which the API does not take).
 *
 * @example
 * arena.addFdMapping(0, PAGE_SIZE, fd, 0, Protection.READ_WRITE)
 * arena.protect(0, PAGE_SIZE, Protection.of(Protection.READ, Protection.EXEC))
 */
export const Protection = {
  /** No access: a reserved range. */
  NONE: 0 as ProtectionFlags,
  /** Readable. */
  READ: 1 as ProtectionFlags,
  /** Writable. */
  WRITE: 2 as ProtectionFlags,
  /** `READ | WRITE`. */
  READ_WRITE: 3 as ProtectionFlags,
  /** Executable. */
  EXEC: 4 as ProtectionFlags,
  /** `READ | EXEC`. */
  READ_EXEC: 5 as ProtectionFlags,
  /** `WRITE | EXEC`. */
  WRITE_EXEC: 6 as ProtectionFlags,
  /** `READ | WRITE | EXEC`. */
  READ_WRITE_EXEC: 7 as ProtectionFlags,
  /**
   * The combination of `flags` (their bitwise OR).
   * @param flags the protection bits to combine
   * @example
   * Protection.of(Protection.READ, Protection.EXEC) // Protection.READ_EXEC
   * @throws `ERR_INVALID_ARG_TYPE` (a flag that is not a number), `ERR_OUT_OF_RANGE` (not an integer
   * combination of `READ`, `WRITE` and `EXEC`, 0 to 7).
   */
  of(...flags: ProtectionFlags[]): ProtectionFlags {
    return bitwiseOr('flags', flags, 'Protection flags', checkProtection) as ProtectionFlags
  },
} as const

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
 * `memfd` seals for {@link SharedMemory.addSeals}; `Seal.of(a, b, …)` combines them.
 * @example
 * rom.addSeals(Seal.of(Seal.WRITE, Seal.GROW, Seal.SEAL)) // immutable from now on
 */
export const Seal = {
  /** No further seals can be added. */
  SEAL: 1 as SealFlags,
  /** The file cannot shrink (so mappings of it never `SIGBUS`). */
  SHRINK: 2 as SealFlags,
  /** The file cannot grow. */
  GROW: 4 as SealFlags,
  /** The contents cannot change (fails while writable shared mappings exist). */
  WRITE: 8 as SealFlags,
  /** No new writable mappings; existing ones keep working. */
  FUTURE_WRITE: 16 as SealFlags,
  /**
   * The combination of `seals` (their bitwise OR).
   * @param seals the seals to combine
   * @example
   * Seal.of(Seal.GROW, Seal.SHRINK)
   * @throws `ERR_INVALID_ARG_TYPE` (a seal that is not a number), `ERR_OUT_OF_RANGE` (not an integer
   * combination of the known seals).
   */
  of(...seals: SealFlags[]): SealFlags {
    return bitwiseOr('seals', seals, 'Seal flags', checkSeals) as SealFlags
  },
} as const

/** Raw advices refused because they turn memory into a trap (`MADV_HWPOISON`, `MADV_GUARD_INSTALL`). */
export const FORBIDDEN_ADVICE: readonly number[] = [100, 102]
