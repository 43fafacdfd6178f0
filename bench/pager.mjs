// Restore served by the pager (issue 31, point 6): `GuestMemory.restore(…, { lazy: 'pager' })` of
// a 1 GiB snapshot against `lazy: 'file'` (the private mapping of the file) and against an eager
// `pread` of the whole file into anonymous memory (bench/floor.c's `load`, the floor of a restore
// that copies everything), and a replayed access trace with and without a recorded working set.
// The snapshot file is written once by `guest.snapshot()` and read from the page cache (warm).
//
//   node bench/pager.mjs [--quick]   these rows alone (a markdown table on stdout)
//   npm run bench                    as a section of bench/RESULTS.md
import { closeSync, openSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { GuestMemory, PAGE_SIZE } from 'mapped-region'
import { BUILD, loadFloor, median, now, QUICK, quantile } from './harness.mjs'

const SELF = fileURLToPath(import.meta.url)
const GiB = 1 << 30
const P = PAGE_SIZE
const PAGES = GiB / P
const RW = 3
/** The bar of the `restored` row: a time ratio of at most 1.25, i.e. a throughput of at least 0.8×. */
export const RESTORED_BAR = 1.25
/** Pages touched once each after a restore (1 %), and the replayed trace (2 %). */
const TOUCHED = Math.round(PAGES / 100)
const TRACE = Math.round(PAGES / 50)
const ROUNDS = {
  restore: QUICK ? 5 : 21,
  touch: QUICK ? 3 : 9,
  restored: QUICK ? 1 : 7,
  trace: QUICK ? 3 : 9,
}

/** What page `p` holds in its first four bytes (never zero, so a zero-filled page shows). */
const pageValue = (p) => (p ^ 0xa5a50000) >>> 0

/** `n` distinct pages of the guest in a random order fixed by `seed` (xorshift32). */
function pagesOf(n, seed) {
  let x = seed >>> 0 || 1
  const seen = new Set()
  const out = []
  while (out.length < n) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    const p = x % PAGES
    if (!seen.has(p)) {
      seen.add(p)
      out.push(p)
    }
  }
  return out
}

/** Reads `pages` in order with `readU32`; throws if one does not hold the snapshot's bytes. */
function touch(guest, pages) {
  let wrong = 0
  for (const p of pages) if (guest.readU32(p * P) !== pageValue(p)) wrong++
  if (wrong !== 0) throw new Error(`${wrong} of ${pages.length} pages read wrong after a restore`)
}

/**
 * Rounds of the async functions `fns` (each resolving to the ns it measured), in an order that
 * rotates from round to round. Medians of each, and of the per-round ratios of fns[0] (and of
 * fns[2], the A/A control, when given) to fns[1], with their 25th–75th percentiles.
 */
async function rounds(fns, n) {
  const rows = []
  for (let r = 0; r < n; r++) {
    const x = []
    for (let k = 0; k < fns.length; k++) {
      const i = (r + k) % fns.length
      x[i] = await fns[i]()
    }
    rows.push(x)
  }
  const ratio = (i) => {
    const v = rows.map((x) => x[i] / x[1])
    return { ratio: median(v), lo: quantile(v, 0.25), hi: quantile(v, 0.75) }
  }
  return {
    ours: median(rows.map((x) => x[0])),
    floor: median(rows.map((x) => x[1])),
    ...ratio(0),
    control: fns.length > 2 ? ratio(2) : undefined,
    rounds: n,
  }
}

/** Why the pager cannot run here (`ERR_MMAP_UNSUPPORTED`'s message), or undefined where it can. */
function pagerRefusal() {
  const probe = join(BUILD, 'pager-probe.mem')
  writeFileSync(probe, Buffer.alloc(P, 1))
  const manifest = {
    version: 1,
    pageSize: P,
    dirtyOnly: false,
    regions: [{ guestAddress: 0, size: P, fileOffset: 0, backing: 'anonymous', protection: RW }],
  }
  try {
    GuestMemory.restore(manifest, probe, { lazy: 'pager' }).close()
    return undefined
  } catch (e) {
    if (e.code === 'ERR_MMAP_UNSUPPORTED') return e.message
    throw e
  } finally {
    rmSync(probe, { force: true })
  }
}

/** A 1 GiB snapshot of non-zero anonymous memory, page p starting with pageValue(p): its manifest. */
async function makeSnapshot(path) {
  rmSync(path, { force: true })
  const guest = new GuestMemory([{ guestAddress: 0, size: GiB, backing: 'anonymous' }])
  const chunk = Buffer.alloc(64 << 20, 0x5c)
  for (let at = 0; at < GiB; at += chunk.length) {
    for (let o = 0; o < chunk.length; o += P) chunk.writeUInt32LE(pageValue((at + o) / P), o)
    guest.write(at, chunk)
  }
  const manifest = JSON.parse(JSON.stringify(await guest.snapshot(path)))
  guest.close()
  return manifest
}

/** Every measure, or `{ unavailable }` saying why the pager cannot run here. F: the floor addon. */
export async function pagerCases(F) {
  const unavailable = pagerRefusal()
  if (unavailable !== undefined) return { unavailable }
  const path = join(BUILD, 'pager-1g.mem')
  try {
    const manifest = await makeSnapshot(path)
    const restoreOnly = (lazy) => async () => {
      const s = now()
      const g = GuestMemory.restore(manifest, path, { lazy })
      const t = now() - s
      g.close()
      return t
    }
    const restore = await rounds([restoreOnly('pager'), restoreOnly('file')], ROUNDS.restore)

    const touched = pagesOf(TOUCHED, 1)
    const firstTouch = (lazy) => async () => {
      const g = GuestMemory.restore(manifest, path, { lazy })
      const s = now()
      touch(g, touched)
      const t = (now() - s) / touched.length
      g.close()
      return t
    }
    const touchRow = await rounds([firstTouch('pager'), firstTouch('file')], ROUNDS.touch)

    // Until `restored`: the pager's restore against the floor's mmap + pread of the same file.
    const fd = openSync(path, 'r')
    const sample = pagesOf(256, 3)
    const untilRestored = async () => {
      const s = now()
      const g = GuestMemory.restore(manifest, path, { lazy: 'pager' })
      await g.restored
      const t = now() - s
      touch(g, sample)
      g.close()
      return t
    }
    const eager = async () => {
      const s = now()
      const at = F.reserve(GiB)
      F.mapAnon(at, GiB, RW)
      F.load(fd, at, GiB)
      const t = now() - s
      F.unmap(at, GiB)
      return t
    }
    let restored
    try {
      await untilRestored()
      await eager()
      restored = await rounds([untilRestored, eager, eager], ROUNDS.restored)
    } finally {
      closeSync(fd)
    }

    // The working set: recorded on a first replay of the trace, stored by snapshot({ workingSet })
    // into the same file (the bytes are the same), then the trace replayed after restores with
    // and without it.
    const trace = pagesOf(TRACE, 2)
    const recording = GuestMemory.restore(manifest, path, { lazy: 'pager', record: true })
    touch(recording, trace)
    await recording.restored
    const withSet = JSON.parse(JSON.stringify(await recording.snapshot(path, { workingSet: true })))
    recording.close()
    const recorded = withSet.workingSet.reduce((n, [, pages]) => n + pages, 0)
    const faults = { with: [], without: [] }
    const replay = (m, key) => async () => {
      const s = now()
      const g = GuestMemory.restore(m, path, { lazy: 'pager' })
      touch(g, trace)
      const t = now() - s
      faults[key].push(g.restoreFaults)
      g.close()
      return t
    }
    const traced = await rounds([replay(withSet, 'with'), replay(manifest, 'without')], ROUNDS.trace)
    return {
      restore,
      touch: touchRow,
      restored,
      trace: { ...traced, faultsWith: median(faults.with), faultsWithout: median(faults.without), recorded },
    }
  } finally {
    rmSync(path, { force: true })
  }
}

/** The table's head and rows (measure, pager, against, ratio, bar, result); `fails` counts the failed bars. */
export function pagerRows(cases, fmtNs) {
  const head = ['measure', "lazy: 'pager'", 'against', 'ratio (spread)', 'bar', 'result']
  if (cases.unavailable !== undefined) return { head, rows: [], fails: 0 }
  const r = (x) => `**${x.ratio.toFixed(2)}** (${x.lo.toFixed(2)}–${x.hi.toFixed(2)})`
  const gbs = (ns) => `${(GiB / ns).toFixed(2)} GB/s`
  const { restore, touch: t, restored, trace } = cases
  const pass = restored.ratio <= RESTORED_BAR
  const rows = [
    ['`restore()` of 1 GiB until it returns', fmtNs(restore.ours), `\`lazy: 'file'\` ${fmtNs(restore.floor)}`, r(restore), '—', '—'],
    [
      `first touch of 1 % of the pages (${TOUCHED}) in a random order, \`readU32\`, per page`,
      fmtNs(t.ours),
      `\`lazy: 'file'\` ${fmtNs(t.floor)}`,
      r(t),
      '—',
      '—',
    ],
    [
      'time until `restored` resolves, nothing touched',
      `${fmtNs(restored.ours)} (${gbs(restored.ours)})`,
      `eager \`pread\` into anonymous memory ${fmtNs(restored.floor)} (${gbs(restored.floor)})`,
      `${r(restored)}; A/A ${restored.control.ratio.toFixed(2)} (${restored.control.lo.toFixed(2)}–${restored.control.hi.toFixed(2)})`,
      `≤ ${RESTORED_BAR} (throughput ≥ 0.8×)`,
      pass ? 'pass' : '**fail**',
    ],
    [
      `replayed trace of 2 % of the pages (${TRACE}) in a random order: faults (\`restoreFaults\`)`,
      `with the recorded set (${trace.recorded} pages): ${trace.faultsWith}`,
      `without: ${trace.faultsWithout}`,
      '—',
      '—',
      '—',
    ],
    [
      'the same trace: time from `restore()` to its end',
      `with the set: ${fmtNs(trace.ours)}`,
      `without: ${fmtNs(trace.floor)}`,
      r(trace),
      '—',
      '—',
    ],
  ]
  return { head, rows, fails: pass ? 0 : 1 }
}

if (process.argv[1] === SELF) {
  const fmtNs = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : ns >= 1e3 ? `${(ns / 1e3).toFixed(2)} µs` : `${ns.toFixed(0)} ns`)
  const cases = await pagerCases(loadFloor())
  if (cases.unavailable !== undefined) console.log(`The pager cannot run here: ${cases.unavailable}`)
  else {
    const { head, rows } = pagerRows(cases, fmtNs)
    console.log([`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n'))
  }
}
