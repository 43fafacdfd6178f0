// Dirty tracking (issue 30, point 6): the kernel's (userfaultfd write-protect, PAGEMAP_SCAN)
// against software bitmaps, on 1 GiB of guest memory: `takeDirty()` with nothing written and
// with one page in 64 written, a first write to a page after a take, and a write to a page
// written already (the steady state of a device loop), with the same write on an untracked
// GuestMemory as the reference. Information rows, no bar: the two modes see different writers
// (the kernel every one, software this object's), so neither is the other's floor.
//
// Then the kernel's tracking against KVM's own dirty log (KVM_MEM_LOG_DIRTY_PAGES,
// KVM_GET_DIRTY_LOG) on one guest, where /dev/kvm is usable: a VM whose one memory slot is a
// kernel-tracked GuestMemory of 1 GiB runs a 32-bit guest program (examples/kvm/program.mjs) that
// writes one page in 64 and halts; on that guest, the take of each record, clean and after the
// program, and the guest's first writes with one record re-armed and the other not. Every take
// and log after a run must name exactly the pages the program wrote, and every clean one none, or
// the bench fails.
//
//   node bench/dirty.mjs [--quick]   these rows alone (markdown tables on stdout)
//   npm run bench                    as a section of bench/RESULTS.md
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { GuestMemory, PAGE_SIZE } from 'mapped-region'
import { stridedWrites } from '../examples/kvm/program.mjs'
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

/** What is measured under KVM, in this order: key → label. */
const KVM_LABELS = {
  take_clean: 'take of 1 GiB under KVM, nothing written since the last',
  take_sparse: 'take of 1 GiB under KVM, one page in 64 written by the guest',
  first_write: 'guest write to a page not written since the take (per page: its run ÷ pages)',
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
    kvm: kvmCases(kernel),
  }
}

/** Where the guest program is: page 1, which it does not write (it writes one page in 64 from 0). */
const PROGRAM_AT = 0x1000
const STRIDE_PAGES = 64

/** Why the KVM rows cannot be measured here, or the example crate's module. */
function kvmExample() {
  if (process.arch !== 'x64') return { why: `the guest program is x86 code; this is ${process.arch}` }
  let kvm
  try {
    kvm = createRequire(import.meta.url)('../examples/kvm/index.js')
  } catch (e) {
    return { why: `the KVM example crate is not built (npm run build:kvm): ${e.message}` }
  }
  const why = kvm.kvmUnavailableReason()
  return why === null ? { kvm } : { why: `/dev/kvm is not usable: ${why}` }
}

/**
 * The kernel's tracking against KVM's dirty log on one guest, in ns, or `{ unavailable }` saying
 * why not. Each round: the clean take of each record; the program run with both re-armed, then
 * each record's take (in turns, first one then the other); the program run with only the kernel's
 * record re-armed, with only KVM's, and with neither (the guest's loop with no fault to take).
 */
export function kvmCases(kernelTracks) {
  if (!kernelTracks) return { unavailable: 'the kernel cannot track dirty pages here (trackDirty: kernel)' }
  const { kvm, why } = kvmExample()
  if (why !== undefined) return { unavailable: why }
  const guest = guestOf('kernel')
  const pages = GiB / PAGE_SIZE / STRIDE_PAGES
  guest.write(PROGRAM_AT, stridedWrites(GiB, STRIDE_PAGES * PAGE_SIZE))
  const machine = kvm.Machine.protectedMode(guest.regions(), { logDirty: true })
  const expected = new BigUint64Array(GiB / PAGE_SIZE / 64)
  for (let p = 0; p < GiB / PAGE_SIZE; p += STRIDE_PAGES) expected[p / 64] |= 1n << BigInt(p % 64)
  const expectedBytes = Buffer.from(expected.buffer)
  const noBytes = Buffer.alloc(expectedBytes.length)
  /**
   * Fails unless `bytes` (a record in KVM_GET_DIRTY_LOG's layout) names exactly the program's
   * pages, or none if `clean`.
   */
  const check = (bytes, what, clean = false) => {
    if (!bytes.equals(clean ? noBytes : expectedBytes)) {
      const words = new BigUint64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8)
      let n = 0
      for (const w of words) for (let b = w; b !== 0n; b &= b - 1n) n++
      throw new Error(
        clean
          ? `${what} with nothing written since the last: ${n} pages, not none`
          : `${what} after the guest program: ${n} pages, not exactly its ${pages} (one page in ${STRIDE_PAGES})`,
      )
    }
  }
  const take = () => {
    const taken = guest.takeDirty()
    const { bitmap } = taken[0]
    return Buffer.from(bitmap.buffer, bitmap.byteOffset, bitmap.byteLength)
  }
  const log = () => machine.dirtyLog(0)
  const timed = (f) => {
    const s = now()
    const out = f()
    return [now() - s, out]
  }
  const runGuest = () => {
    machine.setProtectedModeEntry(PROGRAM_AT)
    const s = now()
    let exit = machine.run()
    // A signal for this thread ends KVM_RUN before the guest exits: enter it again.
    while (exit.reason === 'intr') exit = machine.run()
    const t = now() - s
    if (exit.reason !== 'hlt') throw new Error(`the guest program ended with ${exit.reason}, not hlt`)
    return t / pages
  }
  const t = { take_clean: [], log_clean: [], take_sparse: [], log_sparse: [], write_kernel: [], write_kvm: [], write_neither: [] }
  runGuest()
  take()
  log()
  for (let r = 0; r < ROUNDS; r++) {
    // Both records clean and re-armed.
    const [takeNs, taken] = timed(take)
    check(taken, 'takeDirty()', true)
    t.take_clean.push(takeNs)
    const [logNs, logged] = timed(log)
    check(logged, 'KVM_GET_DIRTY_LOG', true)
    t.log_clean.push(logNs)
    runGuest()
    const order = r % 2 === 0 ? ['take', 'log'] : ['log', 'take']
    for (const which of order) {
      const [ns, bytes] = timed(which === 'take' ? take : log)
      check(bytes, which === 'take' ? 'takeDirty()' : 'KVM_GET_DIRTY_LOG')
      t[`${which}_sparse`].push(ns)
    }
    runGuest()
    check(take(), 'takeDirty()')
    t.write_kernel.push(runGuest())
    check(log(), 'KVM_GET_DIRTY_LOG')
    t.write_kvm.push(runGuest())
    t.write_neither.push(runGuest())
    check(take(), 'takeDirty()')
    check(log(), 'KVM_GET_DIRTY_LOG')
  }
  guest.close()
  return {
    take_clean: { kernel: median(t.take_clean), kvm: median(t.log_clean) },
    take_sparse: { kernel: median(t.take_sparse), kvm: median(t.log_sparse) },
    first_write: { kernel: median(t.write_kernel), kvm: median(t.write_kvm), neither: median(t.write_neither) },
  }
}

/** The KVM table's rows: measure, kernel (takeDirty()), KVM_GET_DIRTY_LOG, neither re-armed. */
export function kvmRows(cases, fmtNs) {
  const cell = (v) => (v === undefined ? '—' : fmtNs(v))
  return Object.entries(KVM_LABELS).map(([key, label]) => [label, cell(cases[key].kernel), cell(cases[key].kvm), cell(cases[key].neither)])
}

/** The KVM table's head. */
export const KVM_HEAD = ['measure', 'kernel: takeDirty()', 'KVM: KVM_GET_DIRTY_LOG', 'neither re-armed']

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
  const table = (head, rows) =>
    [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n')
  const cases = dirtyCases()
  console.log(table(head, dirtyRows(cases, fmtNs)))
  console.log()
  console.log(
    cases.kvm.unavailable === undefined ? table(KVM_HEAD, kvmRows(cases.kvm, fmtNs)) : `KVM rows not measured: ${cases.kvm.unavailable}`,
  )
}
