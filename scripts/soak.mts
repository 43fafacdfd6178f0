/**
 * `npm run soak`: the long reliability runs (not part of `npm test`).
 * - 1,000,000 add/view/write/remove cycles: RSS, the map count and the fd count
 *   are sampled every 100,000 cycles and must stay flat over the second half.
 * - 100 durability iterations: a child msyncs pages through views and is
 *   SIGKILLed; every page it reported as synced must be on disk.
 * - The hostile-argument fuzzer over 100 fresh random seeds of 20,000 operations
 *   (printed, so a failure replays: see __test__/fuzz/run.ts).
 * Exits non-zero on any failure. MR_SOAK_CYCLES / MR_SOAK_KILLS / MR_SOAK_FUZZ_SEEDS
 * shorten it.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PAGE_SIZE } from 'mapped-region'
import { fuzz } from '../__test__/fuzz/run.js'
import { killAfterSomeSyncs, overlayCycles, pagePattern, processStat, settle, type ProcessStat } from '../__test__/workloads.js'

const CYCLES = Number(process.env.MR_SOAK_CYCLES ?? 1_000_000)
const KILLS = Number(process.env.MR_SOAK_KILLS ?? 100)
const FUZZ_SEEDS = Number(process.env.MR_SOAK_FUZZ_SEEDS ?? 100)
const failures: string[] = []

// Samples are taken inside the run (the arena and its memfd are open), every tenth of it. The
// runtime settles in during the first ones — CI runs saw its own mappings go +5 and its own
// descriptors -2 between the first samples, flat afterwards — while a leak goes on growing. So
// each sample of the second half is compared with the one halfway through: a mapping or a
// descriptor leaked every ten thousand cycles shows there as +5 at least.
const samples: Array<ProcessStat & { cycles: number }> = []
const started = Date.now()
await overlayCycles(CYCLES, Math.max(1, Math.floor(CYCLES / 10)), async (done) => {
  await settle()
  samples.push({ cycles: done, ...processStat() })
})
console.log(`${CYCLES} cycles in ${((Date.now() - started) / 1000).toFixed(1)} s`)
console.table(samples)
const half = Math.floor((samples.length - 1) / 2)
const base = samples[half]
for (const s of samples.slice(half + 1)) {
  const since = `between ${base.cycles} and ${s.cycles} cycles`
  if (s.rss - base.rss > 16 * 1024) failures.push(`RSS grew by ${s.rss - base.rss} KiB ${since}`)
  if (s.maps - base.maps > 4) failures.push(`map count ${base.maps} -> ${s.maps} ${since}`)
  if (s.fds > base.fds) failures.push(`fd count ${base.fds} -> ${s.fds} ${since}`)
}

const dir = mkdtempSync(join(tmpdir(), 'mr-soak-'))
let checked = 0
try {
  for (let i = 0; i < KILLS; i++) {
    const path = join(dir, 'disk.img')
    const synced = await killAfterSomeSyncs(path, 1 + (i % 50))
    const disk = readFileSync(path)
    for (const page of synced) {
      checked++
      if (!disk.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE).equals(pagePattern(page))) {
        failures.push(`kill ${i}: page ${page} was reported synced but is not on disk`)
      }
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}
console.log(`${KILLS} SIGKILLed writers, ${checked} synced pages checked on disk`)

const fuzzSeeds = Array.from({ length: FUZZ_SEEDS }, () => Math.floor(Math.random() * 2 ** 32))
const fuzzStarted = Date.now()
const fuzzed = await fuzz(fuzzSeeds, 20_000)
for (const r of fuzzed) if (!r.ok) failures.push(`fuzzer ${r.detail}`)
console.log(
  `fuzzer: ${FUZZ_SEEDS} seeds x 20000 operations in ${((Date.now() - fuzzStarted) / 1000).toFixed(1)} s (seeds ${fuzzSeeds.slice(0, 4).join(', ')}, ...)`,
)

if (failures.length > 0) {
  console.error(failures.join('\n'))
  process.exit(1)
}
console.log('soak: ok')
