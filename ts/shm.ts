import type { SealFlags } from './constants.js'
import { native, type NativeSharedMemory } from './native.js'
import { invalidArgType, invalidArgValue, stateError } from './errors.js'
import * as v from './validate.js'

/**
 * @internal For {@link GuestMemory}: the fd (undefined once closed) and size of a
 * real `SharedMemory`, read from its private state; `undefined` for anything else.
 */
export let sharedMemoryState: (value: unknown) => { fd: number | undefined; size: number } | undefined

/**
 * @internal For `addFdMapping`: the native source number of a real, open `SharedMemory`
 * (its private descriptor, mapped without asking the kernel about it again); `undefined`
 * for anything else; `ERR_MMAP_CLOSED` for a closed one.
 */
export let sharedMemorySource: (value: unknown) => number | undefined

/** Options of {@link SharedMemory.create}. */
export interface SharedMemoryOptions {
  /** Seal against shrinking (`F_SEAL_SHRINK`) so no mapping of it can `SIGBUS`; default `true`. */
  seal?: boolean
  /**
   * Back it with huge pages (`MFD_HUGETLB`), all allocated up front: `true` for the system's
   * default huge page size, `'2M'` or `'1G'` for that size (`MFD_HUGE_2MB`/`MFD_HUGE_1GB`). The
   * size must then be a multiple of the huge page size, and so must every overlay of it (offset,
   * size, file offset). Default `false`.
   */
  hugetlb?: boolean | '2M' | '1G'
}

/** The native code of a `hugetlb` option: 0 none, 1 the default size, 2 for 2 MiB, 3 for 1 GiB. */
function hugetlbCode(value: unknown): number {
  if (value === '2M') return 2
  if (value === '1G') return 3
  if (value === undefined || typeof value === 'boolean') return value === true ? 1 : 0
  if (typeof value === 'string') throw invalidArgValue('hugetlb', "must be true, false, '2M' or '1G'", value)
  throw invalidArgType('hugetlb', "of type boolean or one of '2M', '1G'", value)
}

/**
 * A sized memfd (`memfd_create` with `MFD_CLOEXEC | MFD_ALLOW_SEALING`), sealed
 * against shrinking unless `seal: false`. Map it into any region with
 * `addFdMapping(offset, size, shm.fd, fdOffset, prot)`; mappings stay valid after `close()`.
 *
 * @example
 * using shm = SharedMemory.create('guest-ram', 16 << 20)
 * const a = MemoryMapping.fromFd(shm.fd, shm.size)
 */
export class SharedMemory implements Disposable {
  readonly #native: NativeSharedMemory
  /** Size in bytes. */
  readonly size: number
  readonly #fd: number
  readonly #size: number
  /** Its number in the native table of sources for overlays (this thread's). */
  readonly #source: number
  #closed = false

  private constructor(handle: NativeSharedMemory) {
    this.#native = handle
    this.#size = handle.size
    this.size = this.#size
    this.#fd = handle.fd
    this.#source = handle.source
  }

  /**
   * Creates a memfd called `name` (shown in `/proc/<pid>/fd`) of `size` bytes.
   * @param name the memfd's name, shown in `/proc/<pid>/fd` (at most 249 bytes, no NUL)
   * @param size size in bytes
   * @param options the options: see {@link SharedMemoryOptions}
   * @throws `ERR_INVALID_ARG_TYPE`, `ERR_INVALID_ARG_VALUE` (NUL in the name), `ERR_OUT_OF_RANGE`
   * (size 0, name over 249 bytes), `ERR_MMAP_UNALIGNED` (`hugetlb` and a size that is not a
   * multiple of the huge page size), `EMFILE`, `ENOSPC` (`hugetlb`: the pool cannot supply the
   * pages), `EINVAL` (a huge page size the kernel does not have).
   * @example
   * using ram = SharedMemory.create('guest-ram', 512 << 20)
   * using huge = SharedMemory.create('guest-ram-2m', 512 << 20, { hugetlb: '2M' })
   */
  static create(name: string, size: number, options?: SharedMemoryOptions): SharedMemory {
    const o = v.options('options', options, ['seal', 'hugetlb'])
    const n = v.string('name', name)
    const s = v.number('size', size)
    return new SharedMemory(native.NativeSharedMemory.create(n, s, v.bool('seal', o.seal, true), hugetlbCode(o.hugetlb)))
  }

  #live(): void {
    if (this.#closed) throw stateError('ERR_MMAP_CLOSED', 'The shared memory is closed')
  }

  /**
   * The memfd: pass it to `addFdMapping`, or to a child process.
   * @throws `ERR_MMAP_CLOSED` once closed.
   * @example
   * arena.addFdMapping(0, ram.size, ram.fd, 0, Protection.READ_WRITE)
   */
  get fd(): number {
    this.#live()
    return this.#fd
  }

  /**
   * The current seals, a combination of {@link Seal} bits.
   * @throws `ERR_MMAP_CLOSED` once closed.
   * @example
   * (ram.seals & Seal.SHRINK) !== 0 // true unless created with seal: false
   */
  get seals(): SealFlags {
    this.#live()
    return this.#native.seals() as SealFlags
  }

  /**
   * Adds {@link Seal} bits (`F_ADD_SEALS`).
   * @param seals the {@link Seal} bits to add
   * @throws `ERR_INVALID_ARG_TYPE`, `ERR_OUT_OF_RANGE` (unknown bits), `EPERM` (sealed with
   * `SEAL`), `EBUSY` (`WRITE` while writable shared mappings exist), `ERR_MMAP_CLOSED`.
   * @example
   * rom.addSeals(Seal.of(Seal.GROW, Seal.SEAL))
   */
  addSeals(seals: SealFlags): void {
    this.#live()
    this.#native.addSeals(v.number('seals', seals))
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#closed
  }

  /**
   * Closes the memfd; mappings of it stay valid. Idempotent.
   * @example
   * ram.close() // guest RAM overlays keep working
   */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#native.close()
  }

  /** Same as `close()`, for `using` declarations. */
  [Symbol.dispose](): void {
    this.close()
  }

  static {
    sharedMemoryState = (value) => {
      // A brand check on the private field: a proxy or an object that only
      // borrows the prototype is not a SharedMemory; own properties named `fd`
      // or `size` on an instance cannot change what is read here.
      if (typeof value !== 'object' || value === null || !(#native in value)) return undefined
      return { fd: value.#closed ? undefined : value.#fd, size: value.#size }
    }
    sharedMemorySource = (value) => {
      if (typeof value !== 'object' || value === null || !(#native in value)) return undefined
      value.#live()
      return value.#source
    }
  }
}
