import { createRequire } from 'node:module'
import type * as Binding from '../index.js'

// The napi-generated loader sits at the package root, next to `dist/`. Its typings
// (index.d.ts) are generated too: napi-rs writes the classes, records and cold functions,
// and scripts/typings.mjs appends the raw entry points declared in crate/node/src/entries.rs.
const load = createRequire(__filename)

/** The native binding. Internal: use the facade classes. */
export const native = load('../index.js') as typeof Binding

export type NativeSharedMemory = Binding.NativeSharedMemory
