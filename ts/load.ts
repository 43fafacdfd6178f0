/**
 * What `loadFile`/`loadFileAsync` take, read once: the file (a path, opened here, or an fd
 * number, used as it is) and the `{ offset, length }` options. How many bytes a load reads
 * without a `length`, and every rule about the values, are the core's.
 */
import { closeSync, openSync, constants as fsConstants } from 'node:fs'
import { invalidArgType } from './errors.js'
import * as v from './validate.js'

/** Options of `loadFile`/`loadFileAsync`. */
export interface LoadOptions {
  /** Byte offset in the file to read from (any byte, not only whole pages); default 0. */
  offset?: number
  /**
   * Bytes to read; default the rest of the file from `offset` (regular files and block devices;
   * for other files, such as a character device, it must be given). A file that ends sooner loads
   * fewer bytes: the result says how many.
   */
  length?: number
}

/** A file to load: a path, or an open file descriptor (read from at `offset`, its position unchanged). */
export type LoadSource = string | URL | Buffer | number

/** The checked options: a file offset and a length, `undefined` for the rest of the file. */
export interface LoadRequest {
  fileOffset: number
  length: number | undefined
}

/** Reads the options of a load, each property once. */
export function loadRequest(options: unknown): LoadRequest {
  const o = v.options('options', options, ['offset', 'length'])
  return {
    fileOffset: o.offset === undefined ? 0 : v.number('options.offset', o.offset),
    length: o.length === undefined ? undefined : v.number('options.length', o.length),
  }
}

/**
 * Runs `use(fd)` with the file: an fd number is passed through; a path is opened with `flags`
 * (default read-only; `O_NONBLOCK` always: a FIFO without a writer cannot block the open; a file
 * created is `0o600`) and closed when `use` returns — an asynchronous operation has taken its
 * own duplicate by then.
 */
export function withFile<T>(file: unknown, use: (fd: number) => T, flags: number = fsConstants.O_RDONLY): T {
  if (typeof file === 'number') return use(file)
  if (typeof file !== 'string' && !(file instanceof URL) && !Buffer.isBuffer(file)) {
    throw invalidArgType('file', 'of type string, URL, Buffer (a path) or number (an fd)', file)
  }
  const fd = openSync(file, flags | fsConstants.O_NONBLOCK, 0o600)
  try {
    return use(fd)
  } finally {
    closeSync(fd)
  }
}
