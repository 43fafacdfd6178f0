// Dirty tracking (issue 30, point 6): the kernel's (userfaultfd write-protect, PAGEMAP_SCAN)
// against software bitmaps, on 1 GiB of guest memory: `takeDirty()` with nothing written and
// with one page in 64 written, a first write to a page after a take, and a write to a page
// written already (the steady state of a device loop), with the same write on an untracked
// GuestMemory as the reference. Information rows, no bar: the two modes see different writers
// (the kernel every one, software this object's), so neither is the other's floor.
//
//   node bench/dirty.mjs [--quick]   these rows alone (a markdown table on stdout)
//   npm run bench                    as a section of bench/RESULTS.md
import { fileURLToPath } from 'node:url'
import { GuestMemory, PAGE_SIZE } from 'mapped-region'
import { median, now, QUICK } from './harness.mjs'

const SELF = fileURLToPath(import.meta.url)
const GiB = 1 << 30
const PAGES = GiB / PAGE_SIZE
const ROUNDS = QUICK ? 5 : 21

/** What is measured, in this order: key → label. */
const LABELS = {
  take_clean: 'takeDirty() of 1 GiB, nothing written',
  take_sparse: 'takeDirty() of 1 GiB, one page in 64 written',
  first_write: 'writeU32() to a page not written since the take (per page)',
  steady_write: 'writeU32() to a page written already (per write)',
}

/** A GuestMemory of 1 GiB, populated, tracked as `mode` (or not). */
function guestOf(mode) {
  const guest = new GuestMemory([{ guestAddress: 0, size: GiB, backing: 'anonymous' }], mode === 'off' ? {} : { trackDirty: mode })
  guest.arena.madvise(0, GiB, 'populate_write')
  if (mode !== 'off') guest.takeDirty()
  return guest
}

/** Nanoseconds per call of `f` over `n` calls, the median of ROUNDS runs, each after `prepare`. */
function perCall(prepare, f, n) {
  const t = []
  for (let r = 0; r < ROUNDS; r++) {
    prepare()
    const s = now()
    for (let i = 0; i < n; i++) f(i)
    t.push((now() - s) / n)
  }
  return median(t)
}

/** Every measure for one mode, in ns. */
function modeCases(mode) {
  const guest = guestOf(mode)
  const out = {}
  const sparse = PAGES / 64
  if (mode !== 'off') {
    out.take_clean = perCall(
      () => guest.takeDirty(),
      () => guest.takeDirty(),
      1,
    )
    out.take_sparse = perCall(
      () => {
        guest.takeDirty()
        for (let p = 0; p < PAGES; p += 64) guest.writeU32(p * PAGE_SIZE, p)
      },
      () => guest.takeDirty(),
      1,
    )
  }
  const n = QUICK ? 4096 : 16384
  out.first_write = perCall(
    () => mode !== 'off' && guest.takeDirty(),
    (i) => guest.writeU32(i * PAGE_SIZE * 3, i),
    n,
  )
  out.steady_write = perCall(
    () => guest.writeU32(8, 0),
    (i) => guest.writeU32(8, i),
    n * 16,
  )
  out.sparsePages = sparse
  guest.close()
  return out
}

/** The measures of each mode: `{ kernel, software, off }`, or without `kernel` where it cannot track. */
export function dirtyCases() {
  const probe = new GuestMemory([{ guestAddress: 0, size: PAGE_SIZE, backing: 'anonymous' }], { trackDirty: true })
  const kernel = probe.dirtyTracking === 'kernel'
  probe.close()
  return {
    kernel: kernel ? modeCases('kernel') : undefined,
    software: modeCases('software'),
    off: modeCases('off'),
  }
}

/** The table rows: measure, kernel, software, untracked. */
export function dirtyRows(cases, fmtNs) {
  const cell = (mode, key) => {
    const v = cases[mode]?.[key]
    if (cases[mode] === undefined) return 'kernel tracking unavailable'
    return v === undefined ? '—' : fmtNs(v)
  }
  return Object.entries(LABELS).map(([key, label]) => [label, cell('kernel', key), cell('software', key), cell('off', key)])
}

if (process.argv[1] === SELF) {
  const fmtNs = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : ns >= 1e3 ? `${(ns / 1e3).toFixed(2)} µs` : `${ns.toFixed(0)} ns`)
  const head = ['measure', 'kernel', 'software', 'untracked']
  const rows = dirtyRows(dirtyCases(), fmtNs)
  console.log([`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n'))
}
