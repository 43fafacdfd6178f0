// `npm run bench`: mapped-region against the in-process floor (bench/floor.c, a raw N-API
// addon making the bare syscalls at the same addresses), plus information figures and the
// npm peer mmap-io. The harness (clocks, paired comparisons, builds) is bench/harness.mjs,
// the measures bench/cases.mjs, the report bench/report.mjs. Writes bench/RESULTS.md and
// bench/live-overlays.svg.
//
//   npm run bench              full run (a few minutes)
//   npm run bench -- --quick   smoke run
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { PAGE_SIZE } from 'mapped-region'
import { floorCases, infoCases, LIVE_COUNTS, peerCases, snapshotCases } from './cases.mjs'
import { bigintCases, deviceCases } from './device.mjs'
import { dirtyCases } from './dirty.mjs'
import { BUILD, buildBaseline, loadFloor, loadPeer, QUICK } from './harness.mjs'
import { noExternalCases } from './no-external.mjs'
import { pagerCases } from './pager.mjs'
import { writeReport } from './report.mjs'
import { CHANGES } from './changes.mjs'

const started = Date.now()
const F = loadFloor()
const ext4File = join(BUILD, 'ext4-page.bin')
writeFileSync(ext4File, Buffer.alloc(PAGE_SIZE, 1))
const runC = buildBaseline(ext4File)
const peer = loadPeer()

const floor = floorCases(F)
const snapshots = await snapshotCases(F)
floor.cases.push(...snapshots.cases)
floor.restoreMs = snapshots.restoreMs
const device = deviceCases()
floor.cases.push(...device.cases, ...bigintCases())
floor.hotplug = device.hotplug
process.stderr.write('device and bigint cases done\n')
process.stderr.write('floor cases done\n')
const info = await infoCases()
process.stderr.write('information cases done\n')
const noExternal = noExternalCases()
process.stderr.write('no-external cases done\n')
const dirty = dirtyCases()
process.stderr.write('dirty-tracking cases done\n')
const pager = await pagerCases(F)
process.stderr.write('pager cases done\n')
const c = runC(QUICK ? 'quick' : 'full')
const peerRun = peerCases(peer, ext4File)
process.stderr.write('peer done\n')
console.log(
  writeReport({
    floor,
    info,
    noExternal,
    dirty,
    pager,
    c,
    peer,
    peerRun,
    started,
    counts: LIVE_COUNTS,
    changes: CHANGES,
    pageSize: PAGE_SIZE,
  }),
)
