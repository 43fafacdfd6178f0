import { native, type NativeSharedMemory } from './native.js'
import { stateError } from './errors.js'
import * as v from './validate.js'

/** Options of {@link SharedMemory.create}. */
export interface SharedMemoryOptions {
  /** Seal against shrinking (`F_SEAL_SHRINK`) so no mapping of it can `SIGBUS`; default `true`. */
  seal?: boolean
  /** Back it with huge pages (`MFD_HUGETLB`); default `false`. */
  hugetlb?: boolean
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
  #closed = false

  private constructor(handle: NativeSharedMemory) {
    this.#native = handle
    this.size = handle.size
    this.#fd = handle.fd
  }

  /**
   * Creates a memfd called `name` (shown in `/proc/<pid>/fd`) of `size` bytes.
   * @throws `ERR_INVALID_ARG_TYPE`, `ERR_INVALID_ARG_VALUE` (NUL in the name), `ERR_OUT_OF_RANGE`
   * (size 0, name over 249 bytes), `EMFILE`, `EINVAL` (`hugetlb` without huge pages).
   * @example
   * using ram = SharedMemory.create('guest-ram', 512 << 20)
   */
  static create(name: string, size: number, options?: SharedMemoryOptions): SharedMemory {
    const o = v.options('options', options)
    const n = v.memfdName(name)
    const s = v.mappingSize('size', size)
    return new SharedMemory(native.NativeSharedMemory.create(n, s, v.bool('seal', o.seal, true), v.bool('hugetlb', o.hugetlb, false)))
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
  get seals(): number {
    this.#live()
    return this.#native.seals()
  }

  /**
   * Adds {@link Seal} bits (`F_ADD_SEALS`).
   * @throws `ERR_INVALID_ARG_TYPE`, `ERR_OUT_OF_RANGE` (unknown bits), `EPERM` (sealed with
   * `SEAL`), `EBUSY` (`WRITE` while writable shared mappings exist), `ERR_MMAP_CLOSED`.
   * @example
   * rom.addSeals(Seal.GROW | Seal.SEAL)
   */
  addSeals(seals: number): void {
    this.#live()
    if (typeof seals !== 'number')
      throw Object.assign(new TypeError('The "seals" argument must be of type number'), { code: 'ERR_INVALID_ARG_TYPE' })
    if (!Number.isInteger(seals) || seals < 0 || seals > 31) {
      throw Object.assign(
        new RangeError(`The value of "seals" is out of range. It must be a combination of Seal bits (0 to 31). Received ${seals}`),
        { code: 'ERR_OUT_OF_RANGE' },
      )
    }
    this.#native.addSeals(seals)
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
}
