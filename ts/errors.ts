/**
 * Every error the facade throws is built here, in Node's conventions: `TypeError`/`RangeError`
 * with a stable `code` for bad arguments. Errors about argument values and failed syscalls come
 * from the native side's one table (`crate/node/src/errors.rs`), with the same codes; failed
 * syscalls carry `code` (`'EBADF'`…), `errno` (negative) and `syscall`.
 */
import type { ErrorCode } from '../index.js'

// Every stable `code` this package throws besides errno names (`'EBADF'`…) is defined once, in
// the binding (`crate/node/src/errors.rs`), and generated into its typings: the codes the native
// side throws and the ones this module builds are the same type.
export type { ErrorCode }

/**
 * The shape of every error this package throws.
 * @example
 * try {
 *   arena.addFdMapping(0, size, fd, 0, Protection.READ_WRITE)
 * } catch (e) {
 *   const err = e as MappedRegionError
 *   if (err.code === 'ENOMEM') console.error(err.syscall, err.errno) // 'mmap', -12
 * }
 */
export interface MappedRegionError extends Error {
  /** `ERR_*` for argument and state errors, the errno name (`'ENOMEM'`) for failed syscalls. */
  code: ErrorCode | string
  /** For failed syscalls: the negated errno, as in Node's own system errors. */
  errno?: number
  /** For failed syscalls: the call that failed (`'mmap'`, `'msync'`…). */
  syscall?: string
}

type ErrorCtor = new (message: string) => Error

function make(Ctor: ErrorCtor, code: ErrorCode, message: string): MappedRegionError {
  const err = new Ctor(message) as MappedRegionError
  err.code = code
  return err
}

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (typeof value === 'bigint') return `type bigint (${value}n)`
  if (typeof value === 'number' || typeof value === 'boolean') return `type ${typeof value} (${String(value)})`
  if (typeof value === 'string') return `type string (${JSON.stringify(value.length > 28 ? `${value.slice(0, 25)}...` : value)})`
  if (typeof value === 'function') return 'function'
  if (typeof value === 'object') return `an instance of ${value.constructor?.name ?? 'Object'}`
  return `type ${typeof value}`
}

/** `TypeError` `ERR_INVALID_ARG_TYPE`. */
export function invalidArgType(name: string, expected: string, value: unknown): MappedRegionError {
  return make(TypeError, 'ERR_INVALID_ARG_TYPE', `The "${name}" argument must be ${expected}. Received ${describe(value)}`)
}

/** `TypeError` `ERR_INVALID_ARG_VALUE`. */
export function invalidArgValue(name: string, reason: string, value: unknown): MappedRegionError {
  return make(TypeError, 'ERR_INVALID_ARG_VALUE', `The argument "${name}" ${reason}. Received ${describe(value)}`)
}

/** `RangeError` `ERR_OUT_OF_RANGE`. */
export function outOfRange(name: string, range: string, value: unknown): MappedRegionError {
  return make(RangeError, 'ERR_OUT_OF_RANGE', `The value of "${name}" is out of range. It must be ${range}. Received ${String(value)}`)
}

/** `RangeError` `ERR_MMAP_UNALIGNED`. */
export function unaligned(name: string, value: number | bigint, pageSize: number): MappedRegionError {
  return make(
    RangeError,
    'ERR_MMAP_UNALIGNED',
    `The "${name}" argument must be a multiple of the page size (${pageSize}). Received ${String(value)}`,
  )
}

/** `RangeError` with a `GuestMemory` code. */
export function guestError(code: 'ERR_GUEST_OVERLAP' | 'ERR_GUEST_ADDRESS', message: string): MappedRegionError {
  return make(RangeError, code, message)
}

/** `Error` `ERR_MMAP_UNSUPPORTED`: an operation this object was not set up for. */
export function unsupported(message: string): MappedRegionError {
  return make(Error, 'ERR_MMAP_UNSUPPORTED', message)
}

/** `TypeError` `ERR_MMAP_INVALID_HANDLE`: not a share handle of the kind asked for. */
export function invalidHandle(reason: string): MappedRegionError {
  return make(TypeError, 'ERR_MMAP_INVALID_HANDLE', `The "handle" argument is not a share handle of this process: ${reason}`)
}

/** `Error` with one of the state codes. */
export function stateError(code: 'ERR_MMAP_CLOSED', message: string): MappedRegionError {
  return make(Error, code, message)
}
