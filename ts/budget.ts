import type { MapCount } from '../index.js'
import { native } from './native.js'

export type { MapCount }

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
