import { createRequire } from 'node:module'
import type * as Binding from '../index.js'

/**
 * Hot-path functions the addon registers with raw N-API (crate/node/src/fast.rs)
 * rather than through napi-rs, so they are not in the generated typings. They
 * take the region's handle and re-validate every argument natively.
 */
interface FastPath {
  regionMsync(handle: number, offset: number, size: number): void
  regionMadvise(handle: number, offset: number, size: number, advice: number): void
  /** Changes return `true` when the arena now holds ranges to reclaim on the next turn of the event loop. */
  regionAddFdMapping(handle: number, offset: number, size: number, fd: number, fdOffset: number, protection: number): true | undefined
  regionAddAnonymous(handle: number, offset: number, size: number, protection: number): true | undefined
  regionRemoveMapping(handle: number, offset: number, size: number): true | undefined
  regionReadInto(handle: number, offset: number, target: Uint8Array): void
  regionWrite(handle: number, offset: number, source: Uint8Array): void
}

// The napi-generated loader sits at the package root, next to `dist/`.
const load = createRequire(__filename)

/** The native binding. Internal: use the facade classes. */
export const native = load('../index.js') as typeof Binding & FastPath

export type NativeRegion = Binding.NativeRegion
export type NativeSharedMemory = Binding.NativeSharedMemory
