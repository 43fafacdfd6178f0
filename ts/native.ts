import { createRequire } from 'node:module'
import type * as Binding from '../index.js'

// The napi-generated loader sits at the package root, next to `dist/`.
const load = createRequire(__filename)

/** The native binding (napi-rs). Internal: use the facade classes. */
export const native: typeof Binding = load('../index.js') as typeof Binding

export type NativeRegion = Binding.NativeRegion
export type NativeSharedMemory = Binding.NativeSharedMemory
