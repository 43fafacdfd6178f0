import { native } from './native.js'

/** How close the process is to `vm.max_map_count`; see {@link mapCount}. */
export interface MapCount {
  /** Kernel mappings in the whole process right now (lines of `/proc/self/maps`). */
  process: number
  /** Of those, the ones this library owns: each mapping, and each arena's overlays and reserved holes. */
  owned: number
  /** `vm.max_map_count`: past it every `mmap` in the process fails — the JavaScript heap's included. */
  limit: number
  /**
   * Mappings kept free for the runtime and for removals (1/16 of the limit, at least 1024):
   * creating a mapping or an overlay that would come closer than this to the limit fails
   * with `ENOMEM`, so that the process never runs out while removals keep working.
   */
  headroom: number
}

/**
 * Counts the process's kernel mappings against `vm.max_map_count`. Reads
 * `/proc/self/maps`, so it costs time proportional to the count: call it to
 * monitor, not per operation.
 *
 * @example
 * const { process, limit, headroom } = mapCount()
 * const left = limit - headroom - process // overlays (with gaps: half of it) still possible
 */
export function mapCount(): MapCount {
  return native.mapCount()
}
