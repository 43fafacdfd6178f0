/**
 * mapped-region: the memory-mapping primitives virtual machine monitors are built
 * on — reserved arenas, fd overlays, sealed memfds, msync/madvise, zero-copy views —
 * with every argument validated before it reaches native code.
 *
 * @packageDocumentation
 */
export { PAGE_SIZE, Protection, ADVICE, Seal, type Advice, type ProtectionFlags, type SealFlags } from './constants.js'
export type { ErrorCode, MappedRegionError } from './errors.js'
export {
  MemoryMapping,
  MemoryMappingArena,
  type MappedRegion,
  type MappingInfo,
  type AnonymousOptions,
  type FdOptions,
  type FileOptions,
  type PopulateOptions,
  type FdMappingOptions,
  type ReserveOptions,
  type ShareHandle,
} from './region.js'
export type { LoadOptions, LoadSource } from './load.js'
export { SharedMemory, type SharedMemoryOptions } from './shm.js'
export { mapCount, type MapCount } from './budget.js'
export {
  GuestMemory,
  type GuestBacking,
  type GuestMemoryOptions,
  type GuestRegion,
  type GuestRegionSpec,
  type GuestShareHandle,
} from './guest.js'
export type { DirtyBitmap } from './dirty.js'
export type { RestoreOptions, SnapshotManifest, SnapshotOptions, SnapshotRegion } from './snapshot.js'
export { readPages, writePages, type PageSelection, type PageSink, type PageSource, type PageStreamSummary } from './pages.js'
