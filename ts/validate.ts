/**
 * What the facade checks before crossing into native code: types, option shapes and
 * bigint narrowing — what N-API cannot report well. Each argument is read once and
 * only the checked value is passed on. Every rule about the values themselves
 * (integers, alignment, bounds, end of file, advice, seals) is the Rust core's, applied
 * natively; the codes and classes of the errors thrown here come from `errors.ts`.
 */
import { constants as bufferConstants } from 'node:buffer'
import { types } from 'node:util'
import { ADVICE, PAGE_SIZE, type ProtectionFlags } from './constants.js'
import { invalidArgType, invalidArgValue, outOfRange, unaligned, type MappedRegionError } from './errors.js'
import { native } from './native.js'

/** A number (what it may be is checked natively). */
export function number(name: string, value: unknown): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value)
  return value
}

/**
 * A file offset: `number` or `bigint`. A bigint that fits a safe integer travels as a
 * plain number (no BigInt on the native hot path); larger ones, and negative ones,
 * stay bigints for the native side to judge.
 */
export function fdOffset(name: string, value: unknown): number | bigint {
  if (typeof value === 'bigint') {
    return value >= 0n && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value
  }
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number or bigint', value)
  return value
}

/** Protection bits (which combinations exist is checked natively). */
export function protection(value: unknown, name = 'protection'): ProtectionFlags {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number (Protection flags)', value)
  return value as ProtectionFlags
}

/**
 * Advice numbers by name. A `Map` rather than `Object.hasOwn(ADVICE, name)`: the
 * lookup runs on every `madvise`, and `hasOwn` with changing names is several times
 * slower; names like `'__proto__'` are simply absent.
 */
const ADVICE_BY_NAME: ReadonlyMap<string, number> = new Map(Object.entries(ADVICE))

/**
 * The last advice name looked up and its number: a loop that gives the same advice again
 * and again (the common case) costs one string comparison, not a `Map` lookup. Only names
 * found in {@link ADVICE_BY_NAME} are kept, so the pair is always one of its entries.
 */
let lastAdviceName = 'normal'
let lastAdviceNumber = ADVICE.normal as number

/** An advice name, as its number, or a raw advice number (which ones are refused is checked natively). */
export function advice(value: unknown): number {
  if (value === lastAdviceName) return lastAdviceNumber
  if (typeof value === 'string') {
    const number = ADVICE_BY_NAME.get(value)
    if (number === undefined) {
      throw invalidArgValue('advice', `must be one of ${Object.keys(ADVICE).join(', ')}`, value)
    }
    lastAdviceName = value
    lastAdviceNumber = number
    return number
  }
  if (typeof value !== 'number') throw invalidArgType('advice', 'an Advice name or a number', value)
  return value
}

// A bigint's low and high 32 bits, read through a scratch word: no `Number()` (which makes a heap
// number of every result beyond 2^30) and no allocation.
const BIG = new BigUint64Array(1)
const BIG_HALVES = new Uint32Array(BIG.buffer)
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1
const LO = LITTLE_ENDIAN ? 0 : 1
const HI = 1 - LO
const BIG_LIMIT = 2n ** 53n

/**
 * A bigint as the number it equals, if it is a safe integer `>= 0` (below 2^53, where numbers
 * are exact), else -1. The rule for every bigint address or offset narrowed to a number.
 */
export function bigintIndex(value: bigint): number {
  if (value < 0n || value >= BIG_LIMIT) return -1
  BIG[0] = value
  return BIG_HALVES[HI] * 4294967296 + BIG_HALVES[LO]
}

/**
 * A size, length or address narrowed to a non-negative safe integer, for the facade's own
 * arithmetic (`GuestMemory` finds regions with it; a snapshot's manifest is laid out with it).
 * Values that reach native code are checked there again.
 */
export function safeInteger(name: string, value: unknown): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value)
  if (!Number.isSafeInteger(value) || value < 0) throw outOfRange(name, 'a non-negative safe integer', value)
  return value
}

/** A whole number of pages, by the core's alignment rule (`isPageAligned`). */
export function wholePages(name: string, value: number): number {
  if (!native.isPageAligned(value)) throw unaligned(name, value, PAGE_SIZE)
  return value
}

/** A boolean option, `undefined` meaning `fallback`. */
export function bool(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw invalidArgType(name, 'of type boolean', value)
  return value
}

/**
 * An options bag: `undefined` or an object, copied into a plain object by reading
 * each of `keys` exactly once (a getter may answer differently on a second read, and
 * may run arbitrary code: what is validated is what is used). An own key that is not
 * one of `keys` is refused (`ERR_INVALID_ARG_VALUE`): a misspelt option (`{ shraed: true }`)
 * would otherwise be silently ignored.
 */
export function options<K extends string>(name: string, value: unknown, keys: readonly K[]): Partial<Record<K, unknown>> {
  const out: Partial<Record<K, unknown>> = {}
  if (value === undefined) return out
  if (value === null || typeof value !== 'object') throw invalidArgType(name, 'an object', value)
  for (const own of Object.keys(value)) {
    if (!(keys as readonly string[]).includes(own)) {
      throw invalidArgValue(name, `has an unknown property "${own}" (known: ${keys.join(', ')})`, value)
    }
  }
  for (const key of keys) out[key] = (value as Record<K, unknown>)[key]
  return out
}

// Intrinsic accessors, taken once at load. They check the internal slots of their
// receiver, so they work on values of any realm and refuse proxies and objects that
// only fake a prototype; an own `byteLength` property on the value cannot shadow them.
function getter(proto: object, key: PropertyKey): (this: unknown) => unknown {
  const desc = Object.getOwnPropertyDescriptor(proto, key)
  if (desc?.get === undefined) throw new Error(`no intrinsic getter ${String(key)}`)
  return desc.get
}
const TypedArrayProto = Object.getPrototypeOf(Uint8Array.prototype) as object
const typedArrayTag = getter(TypedArrayProto, Symbol.toStringTag)
const typedArrayBuffer = getter(TypedArrayProto, 'buffer')
const typedArrayOffset = getter(TypedArrayProto, 'byteOffset')
const typedArrayLength = getter(TypedArrayProto, 'byteLength')
const dataViewBuffer = getter(DataView.prototype, 'buffer')
const dataViewOffset = getter(DataView.prototype, 'byteOffset')
const dataViewLength = getter(DataView.prototype, 'byteLength')
const arrayBufferLength = getter(ArrayBuffer.prototype, 'byteLength')
const sharedArrayBufferLength = getter(SharedArrayBuffer.prototype, 'byteLength')
const arrayBufferDetached = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, 'detached')?.get

/** Whether a (non-shared) `ArrayBuffer` is detached. Node 20 has no `detached` getter. */
function isDetached(buffer: ArrayBufferLike): boolean {
  if (types.isSharedArrayBuffer(buffer)) return false
  if (arrayBufferDetached !== undefined) return arrayBufferDetached.call(buffer) === true
  if (arrayBufferLength.call(buffer) !== 0) return false
  try {
    new Uint8Array(buffer)
    return false
  } catch {
    return true
  }
}

function detached(name: string, value: unknown): MappedRegionError {
  return invalidArgValue(name, 'is over a detached ArrayBuffer (a view whose memory was removed, or a transferred buffer)', value)
}

/**
 * Bytes to copy: any `ArrayBufferView` (typed array, `Buffer`, `DataView`) or
 * `ArrayBuffer`/`SharedArrayBuffer`, of any realm, as a `Uint8Array` over the same
 * memory. Read through intrinsic accessors, once: the result is a real `Uint8Array`
 * whose length {@link byteLength} reads the same way, with no user code in between.
 * Refuses detached buffers (`ERR_INVALID_ARG_VALUE`), and proxies and look-alikes
 * (`ERR_INVALID_ARG_TYPE`).
 */
export function bytes(name: string, value: unknown): Uint8Array {
  const tag = typedArrayTag.call(value)
  if (tag !== undefined) {
    const view = value as Uint8Array
    const length = typedArrayLength.call(view) as number
    if (length === 0 && isDetached(typedArrayBuffer.call(view) as ArrayBufferLike)) throw detached(name, value)
    if (tag === 'Uint8Array') return view
    return new Uint8Array(typedArrayBuffer.call(view) as ArrayBufferLike, typedArrayOffset.call(view) as number, length)
  }
  if (types.isDataView(value)) {
    const buffer = dataViewBuffer.call(value) as ArrayBufferLike
    if (isDetached(buffer)) throw detached(name, value)
    // DataView's getters throw on a detached buffer, which was refused just above.
    return new Uint8Array(buffer, dataViewOffset.call(value) as number, dataViewLength.call(value) as number)
  }
  if (types.isArrayBuffer(value)) {
    if (isDetached(value)) throw detached(name, value)
    return new Uint8Array(value, 0, arrayBufferLength.call(value) as number)
  }
  if (types.isSharedArrayBuffer(value)) return new Uint8Array(value, 0, sharedArrayBufferLength.call(value) as number)
  throw invalidArgType(name, 'an ArrayBufferView or ArrayBuffer', value)
}

/**
 * The kind of a typed array (`'Uint8Array'`, `'BigUint64Array'`…: its `Symbol.toStringTag`, read
 * through the intrinsic getter, so a proxy or a look-alike has none); `undefined` for any other value.
 */
export function typedArrayKind(value: unknown): string | undefined {
  return typedArrayTag.call(value) as string | undefined
}

/** The `ArrayBuffer` and byte offset of a `Uint8Array`, read through the intrinsic accessors. */
export function memoryOf(view: Uint8Array): [ArrayBuffer, number] {
  return [typedArrayBuffer.call(view) as ArrayBuffer, typedArrayOffset.call(view) as number]
}

/** The byte length of a `Uint8Array` returned by {@link bytes}, read through the intrinsic accessor. */
export function byteLength(view: Uint8Array): number {
  return typedArrayLength.call(view) as number
}

/** A string (a memfd name: which ones are allowed is checked natively). */
export function string(name: string, value: unknown): string {
  if (typeof value !== 'string') throw invalidArgType(name, 'of type string', value)
  return value
}

/**
 * A view length: a number no longer than a `Buffer` can be in this runtime
 * (`buffer.constants.MAX_LENGTH`, a limit of JavaScript, not of the memory). Checked here so
 * that a view too long for a Buffer is refused as such, whatever is mapped under it.
 */
export function viewLength(value: unknown): number {
  const n = number('length', value)
  if (n > bufferConstants.MAX_LENGTH) {
    throw outOfRange('length', `<= buffer.constants.MAX_LENGTH (${bufferConstants.MAX_LENGTH})`, value)
  }
  return n
}
