// The bench's report: bench/RESULTS.md and bench/live-overlays.svg from the figures
// bench/run.mjs collected. Formatting only; nothing is measured here.
import { readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { HERE, QUICK, signTail } from './harness.mjs'
import { noExternalRows } from './no-external.mjs'
import { dirtyRows, KVM_HEAD, kvmRows } from './dirty.mjs'
import { pagerRows, RESTORED_BAR } from './pager.mjs'

const fmtNs = (ns) =>
  ns === undefined || Number.isNaN(ns)
    ? '—'
    : ns >= 1e6
      ? `${(ns / 1e6).toFixed(2)} ms`
      : ns >= 1e3
        ? `${(ns / 1e3).toFixed(2)} µs`
        : `${ns.toFixed(0)} ns`
const fmtGb = (g) => (g === undefined ? '—' : `${g.toFixed(2)} GB/s`)
const fmtR = (x) => x.toFixed(2)
const table = (head, body) =>
  [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n')

const PEER_ALPHA = 0.001
const PEER_MARGIN = 3
const fmtP = (p) => (p < 1e-12 ? '< 1e-12' : p.toPrecision(2))
const twoSided = (c) => 2 * Math.min(c.p, signTail(c.losses, c.wins + c.losses))
const controlBiased = (c) => twoSided(c) < PEER_ALPHA
/**
 * Faster: significant, and — when the A/A control shows the design itself favours the first
 * function (ours) — a difference at least PEER_MARGIN times that bias.
 */
const peerFaster = (x) => x.p < PEER_ALPHA && (!controlBiased(x.control) || x.control.diff < 0 || x.diff > PEER_MARGIN * x.control.diff)

function peerCell(peer, peerRun, k) {
  const x = peerRun[k]
  if (x === undefined) return peer.skipped ? `skipped (${peer.skipped})` : '—'
  const verdict = peerFaster(x)
    ? `**we are faster**, by ${fmtNs(x.diff)} a call`
    : signTail(x.losses, x.wins + x.losses) < PEER_ALPHA
      ? '**peer faster**'
      : 'not shown faster'
  const bias = controlBiased(x.control) ? `a bias ${x.control.diff < 0 ? 'towards the peer' : 'towards ours'}` : 'no bias'
  return (
    `mmap-io ${fmtNs(x.b)} vs ours ${fmtNs(x.a)}; ours faster in ${x.wins} of ${x.rounds} pairs, p ${fmtP(x.p)}; ` +
    `A/A ${fmtNs(Math.abs(x.control.diff))}, ${bias} (${verdict})`
  )
}

function svg(live, counts) {
  const W = 640
  const H = 360
  const L = 70
  const R = 20
  const T = 30
  const Bm = 50
  const rows = counts.map((n) => [n, live[n].ours, live[n].floor])
  const xs = (n) => L + ((Math.log10(n) - 1) / (Math.log10(counts[counts.length - 1]) - 1)) * (W - L - R)
  const ymax = (Math.max(...rows.flatMap(([, a, b]) => [a, b])) * 1.2) / 1000
  const ys = (us) => H - Bm - (us / ymax) * (H - T - Bm)
  const line = (idx, color) =>
    `<polyline fill="none" stroke="${color}" stroke-width="2" points="${rows.map((r) => `${xs(r[0]).toFixed(1)},${ys(r[idx] / 1000).toFixed(1)}`).join(' ')}"/>` +
    rows.map((r) => `<circle cx="${xs(r[0]).toFixed(1)}" cy="${ys(r[idx] / 1000).toFixed(1)}" r="3" fill="${color}"/>`).join('')
  const ticks = Array.from({ length: 5 }, (_, i) => (ymax * i) / 4)
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="${W / 2}" y="18" text-anchor="middle" font-size="14">fd overlay add+remove pair against live overlays in the arena</text>
<line x1="${L}" y1="${H - Bm}" x2="${W - R}" y2="${H - Bm}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - Bm}" stroke="black"/>
${counts.map((n) => `<text x="${xs(n)}" y="${H - Bm + 18}" text-anchor="middle">${n}</text>`).join('')}
${ticks.map((v) => `<text x="${L - 8}" y="${ys(v) + 4}" text-anchor="end">${v.toFixed(1)}</text><line x1="${L}" x2="${W - R}" y1="${ys(v)}" y2="${ys(v)}" stroke="#ddd"/>`).join('')}
<text x="${W / 2}" y="${H - 12}" text-anchor="middle">live overlays (log scale)</text>
<text x="16" y="${H / 2}" transform="rotate(-90 16 ${H / 2})" text-anchor="middle">µs per pair</text>
${line(1, '#d6336c')}${line(2, '#1c7ed6')}
<text x="${W - R - 200}" y="${T + 16}" fill="#d6336c">mapped-region</text><text x="${W - R - 200}" y="${T + 32}" fill="#1c7ed6">raw N-API floor, same process</text>
</svg>
`
}

/** Writes RESULTS.md and the plot; returns the Markdown. */
export function writeReport({ floor, info, noExternal, dirty, pager, c, peer, peerRun, started, counts, changes, pageSize }) {
  const { cases, live, growth, layout } = floor
  const pass = (ok) => (ok ? 'pass' : '**fail**')
  const barRows = cases.map((x) => [
    x.label,
    fmtNs(x.result.ours),
    fmtNs(x.result.floor),
    `**${fmtR(x.result.ratio)}** (${fmtR(x.result.lo)}–${fmtR(x.result.hi)})`,
    `${fmtR(x.result.control.ratio)} (${fmtR(x.result.control.lo)}–${fmtR(x.result.control.hi)})`,
    `≤ ${x.bar}`,
    pass(x.result.ratio <= x.bar),
  ])
  barRows.push([
    'growth of the fd pair from 10 to 30,000 live overlays, against the floor’s growth',
    `${fmtR(growth.ours)}×`,
    `${fmtR(growth.floor)}×`,
    `**${fmtR(growth.ratio)}**`,
    '—',
    '≤ 1.05',
    pass(growth.ratio <= 1.05),
  ])
  const layoutLabels = {
    scattered: 'no neighbour (scattered)',
    contiguous: 'continuing the same fd’s pages (merged)',
    reused: 'continuing a page of another file under the same fd number',
  }
  for (const [key, label] of Object.entries(layoutLabels)) {
    const g = layout.growth[key]
    barRows.push([
      `layout growth: fd overlay add+remove, ${label}, from ${layout.small.process} to ${layout.large.process} process mappings (its own growth; the floor’s beside it)`,
      `${fmtR(g.ours)}×`,
      `${fmtR(g.floor)}×`,
      `**${fmtR(g.ours)}**`,
      '—',
      '≤ 1.2',
      pass(g.ours <= 1.2),
    ])
  }
  const fresh = layout.fresh
  barRows.push([
    `up to ${fresh.asked} one-page overlays of fresh files under ${fresh.numbers === 1 ? 'one' : fresh.numbers} fd number${fresh.numbers === 1 ? '' : 's'}, each continuing the page before, until the budget refuses (ENOMEM after ${fresh.added}; count ${fresh.exact ? 'exact' : '**not exact**'}, ${fresh.free} mappings left, headroom ${fresh.headroom}; a refused overlay then: ${fmtNs(fresh.refusal)})`,
    `${fresh.seconds.toFixed(2)} s`,
    '—',
    '—',
    '—',
    '< 20 s',
    pass(fresh.seconds < 20 && fresh.exact),
  ])
  barRows.push([
    'GuestMemory.restore() of a 1 GiB snapshot, then close() (lazy: maps, reads nothing)',
    `${floor.restoreMs.toFixed(3)} ms`,
    '—',
    '—',
    '—',
    '≤ 1 ms',
    pass(floor.restoreMs <= 1),
  ])
  const pagerTable = pagerRows(pager, fmtNs)
  const failed = barRows.filter((r) => r[6] !== 'pass').length + pagerTable.fails
  const liveRows = counts.map((n) => [
    n,
    fmtNs(live[n].ours),
    fmtNs(live[n].floor),
    `${fmtR(live[n].ratio)} (${fmtR(live[n].lo)}–${fmtR(live[n].hi)})`,
    fmtNs(live[n].mappings),
  ])
  const layoutRows = ['scattered', 'contiguous', 'reused'].map((key) => [
    layoutLabels[key],
    fmtNs(layout.small[key].ours),
    fmtNs(layout.large[key].ours),
    `${fmtR(layout.small[key].ratio)} → ${fmtR(layout.large[key].ratio)}`,
  ])
  const cpu = (/model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8')) ?? [])[1] ?? os.arch()
  const cRow = (label, key, ours) => [label, fmtNs(ours), fmtNs(c[key]), ours === undefined ? '—' : fmtR(ours / c[key])]
  const infoRows = [
    cRow('fd overlay add+remove, 4 KiB, of a SharedMemory', 'fd_pair_4k', cases.find((x) => x.key === 'fd_pair_4k')?.result.ours),
    cRow('anonymous overlay add+remove', 'anon_pair', cases.find((x) => x.key === 'anon_pair')?.result.ours),
    cRow('msync, clean memfd page', 'msync_memfd', cases.find((x) => x.key === 'msync')?.result.ours),
    cRow("madvise('willneed')", 'madvise_willneed', cases.find((x) => x.key === 'madvise')?.result.ours),
    cRow('reserve(1 TiB) + close()', 'reserve_1t', info.reserve_each),
    cRow('readInto() 4 KiB, memfd (C: memcpy)', 'read_4k', info.readinto_4k),
    cRow('read() 4 KiB, memfd, a fresh Buffer (C: memcpy)', 'read_4k', info.read_4k),
    cRow('write() 4 KiB, memfd (C: memcpy)', 'write_4k', info.write_4k),
    cRow('readInto() 1 MiB, memfd (C: memcpy)', 'read_1m', info.readinto_1m),
    cRow('write() 1 MiB, memfd (C: memcpy)', 'write_1m', info.write_1m),
    cRow('first touch per page through a view (memfd)', 'first_touch', info.first_touch),
  ]
  const bare = floor.fdNumberBare
  const more = [
    [
      'fd overlay add+remove, 4 KiB, of an fd number, against the floor’s two `mmap`s without the `fstat` (what the `fstat` costs; a SharedMemory passed itself makes none: see the barred rows)',
      fmtNs(bare.ours),
      `floor ${fmtNs(bare.floor)}: **${fmtR(bare.ratio)}** (${fmtR(bare.lo)}–${fmtR(bare.hi)})`,
    ],
    ['view().set() 1 MiB chunks into 256 MiB pre-faulted', fmtGb(info.copy_bandwidth_gbps), `C memcpy ${fmtGb(c.copy_bandwidth_gbps)}`],
    ['populateAsync 1 GiB memfd', fmtGb(info.populate_gbps), `C MADV_POPULATE_WRITE ${fmtGb(c.populate_gbps)}`],
    ['readInto() 8 B, ext4 file (fault-safe copy)', fmtNs(info.readinto_8_faultsafe), '—'],
    ['write() 8 B, ext4 file (fault-safe copy)', fmtNs(info.write_8_faultsafe), '—'],
    ['readInto() 4 KiB, ext4 file (fault-safe)', fmtNs(info.readinto_4k_faultsafe), `fs.readSync ${fmtNs(info.fs_read_4k)}`],
    ['write() 4 KiB, ext4 file (fault-safe)', fmtNs(info.write_4k_faultsafe), `fs.writeSync ${fmtNs(info.fs_write_4k)}`],
    ['readInto() 1 MiB, ext4 file (fault-safe)', fmtNs(info.readinto_1m_faultsafe), `fs.readSync ${fmtNs(info.fs_read_1m)}`],
    ['write() 1 MiB, ext4 file (fault-safe)', fmtNs(info.write_1m_faultsafe), `fs.writeSync ${fmtNs(info.fs_write_1m)}`],
    [
      'msyncAsync, dirty ext4 page, all in flight (per page)',
      fmtNs(info.msync_async_dirty_per_page),
      `sync msync loop ${fmtNs(info.msync_sync_dirty_per_page)}`,
    ],
    [
      'reserve(1 TiB): RSS growth per reservation',
      `${info.reserve_1t_rss_kib.toFixed(1)} KiB`,
      `bar < 1024 KiB: ${pass(info.reserve_1t_rss_kib < 1024)}`,
    ],
    [
      'readU32() / writeU32(), against a DataView in a closure constant (V8 folds its checks out of the loop)',
      `${fmtR(floor.typedInfo.typed_read_vs_constant)}× / ${fmtR(floor.typedInfo.typed_write_vs_constant)}×`,
      'the barred rows hold the DataView in an object, as the package holds its window',
    ],
    ["msync, clean memfd page, against mmap-io's sync", '—', peerCell(peer, peerRun, 'msync_memfd')],
    ["madvise('willneed'), against mmap-io's advise", '—', peerCell(peer, peerRun, 'madvise_willneed')],
    ["msync, clean ext4 page, against mmap-io's sync", '—', peerCell(peer, peerRun, 'msync_ext4')],
  ]
  const r0 = cases[0].result
  const md = `# Benchmark results

Produced by \`npm run bench${QUICK ? ' -- --quick' : ''}\` (bench/run.mjs, with bench/harness.mjs, bench/cases.mjs,
bench/report.mjs) on ${new Date().toISOString().slice(0, 10)}. Took ${((Date.now() - started) / 1000).toFixed(0)} s.
${failed === 0 ? '**Every bar passes.**' : `**${failed} bar(s) fail** (marked below).`}

- machine: ${cpu}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB
- kernel: ${os.release()}, page size ${pageSize}, vm.max_map_count ${readFileSync('/proc/sys/vm/max_map_count', 'utf8').trim()}
- node ${process.version}; peer: ${peer.mmap ? `mmap-io ${peer.version}` : peer.skipped}

## Against the floor, in this process

How it is measured: the floor is bench/floor.c, a raw N-API addon built by the bench with the
system \`cc\` and loaded into this same Node process. Each of its functions makes exactly the
syscalls of the operation (\`mmap\` of the fd or of anonymous memory — for an fd number after
the \`fstat\` its end-of-file check needs, which a \`SharedMemory\` passed itself does without —
\`mmap\` of a \`PROT_NONE\` hole, \`msync\`, \`madvise\`, \`mmap\`+\`munmap\` of a reservation, an external
\`Buffer\` with a weak reference, a \`memmove\` into a typed array) **at the same address**
mapped-region uses — inside the same arena — with no validation and no bookkeeping. Each row
is ${r0.rounds} rounds; a round times one batch of mapped-region, one of the floor and one of
the floor again (the **A/A control**), in an order that rotates from round to round, so drift
and position fall on all three alike. The ratio is the **median of the per-round ratios**
(mapped-region / floor; > 1 is slower) with their spread (25th–75th percentile) in
parentheses; the A/A column is the same statistic of the floor against itself, which shows
what the design alone produces (≈ 1.00). Rows that compare something else say so.

${table(['measure', 'mapped-region', 'floor', 'ratio (spread)', 'A/A control', 'bar', 'result'], barRows)}

### Against live overlays

Each arena holds N one-page fd overlays with a reserved gap page between them (so the kernel
cannot merge them); the pair is added and removed past the last one, by mapped-region and by
the floor at the same address. \`mappings()\` builds one object per entry, so its cost grows
with N by nature. Plot: [live-overlays.svg](live-overlays.svg).

${table(['live overlays', 'mapped-region pair', 'floor pair', 'ratio (spread)', 'mappings()'], liveRows)}

### Layout growth

An fd overlay added and removed in an arena of its own while a filler arena holds gap-separated
overlays (two kernel mappings each), so that the process has ${layout.small.process} or
${layout.large.process} mappings. Whether the kernel merged an overlay with the page before it
is known without asking where the files differ (their identities, from the \`fstat\` the
end-of-file check makes) and asked of the kernel for that one address otherwise
(\`PROCMAP_QUERY\`, O(log n); older kernels: a read of \`/proc/self/maps\`).

${table(['overlay', `pair at ${layout.small.process} mappings`, `pair at ${layout.large.process}`, 'ratio to the floor'], layoutRows)}

### Device workload

A virtio-blk-like split virtqueue (bench/device.mjs): ${floor.hotplug.chains} chains of a header,
a data buffer (512 B to 4 KiB) and a status byte, the descriptor table and rings in guest RAM at
0, headers, data and status in a second region at 4 GiB, both \`SharedMemory\`-backed. One device
loop serves it through \`GuestMemory\` (typed access for ring fields and headers, \`readInto\` for
the data, \`writeU8\` for the status, used-ring writes); the same loop serves \`DataView\`s over plain
\`ArrayBuffer\`s with a region lookup per access (the floor), paired in this process. The barred
rows are in the table above. **Hot-plug**: a region added and removed before each pass costs the
pass ${fmtR(floor.hotplug.result.ratio)}× the pass alone (${fmtNs(floor.hotplug.result.ours)} against
${fmtNs(floor.hotplug.result.floor)}); the plug and unplug alone take ${fmtNs(floor.hotplug.plugOnly.ours)},
so the loop itself pays nothing for it (its windows are over other regions and stay).

## What was changed, and what each change bought

Each figure is the paired ratio to the floor from a \`npm run bench -- --quick\` run just before
and one just after the change (bench/changes.mjs), so that a change is compared with its own
neighbours in time; runs differ from one another by about ±0.05 on the overlay and syscall
ratios and up to ±0.2 on the 8-byte copies (whose floor is 80 ns), which is also why the table
above can differ from the last figure here.

${table(['change', 'measured (this bench, paired ratio to the floor, before → after)'], changes)}

## For information

Separate-process C (bench/baseline.c, \`cc -O2\`, median of timed batches), as the earlier
reports had it. It is **not** the floor: a small process lays out its maple tree differently
(its overlay pair lands in the kernel's rebalancing slow path), so these ratios are
information only.

${table(['measure', 'mapped-region', 'C, separate process', 'ratio'], infoRows)}

${table(['measure', 'mapped-region', 'against'], more)}

### Without external buffers

Runtimes with V8's sandbox (Electron) forbid external buffers: there typed access has no window
(every access is the checked copy; atomics the native checked path) and the scratch slots are an
ordinary \`ArrayBuffer\` looked up on each call. Measured in child processes of
bench/no-external.mjs, the normal mode and the addon's test-only switch
\`MAPPED_REGION_TEST_NO_EXTERNAL=1\` by turns (${QUICK ? 1 : 3} runs of each, medians); information, no bar.

${table(['measure', 'normal', 'without external buffers', 'ratio'], noExternalRows(noExternal, fmtNs))}

### Dirty tracking

\`GuestMemory\` over 1 GiB of anonymous memory (populated), tracked by the kernel
(\`trackDirty: 'kernel'\`: userfaultfd write-protect, \`PAGEMAP_SCAN\`), in software
(\`trackDirty: 'software'\`) and untracked, in this process (bench/dirty.mjs; medians of
${QUICK ? 5 : 21} runs); information, no bar. The kernel sees every writer (the guest under KVM,
views, other threads) and costs a write nothing once its page is written; a first write after a
take is a fault the kernel resolves. Software sees only this object's writes and pays in
JavaScript on each.

${table(['measure', 'kernel', 'software', 'untracked'], dirtyRows(dirty, fmtNs))}

Against KVM's own dirty log, on one guest: a VM (examples/kvm, \`Machine.protectedMode\`) whose
one memory slot is a kernel-tracked \`GuestMemory\` of 1 GiB, logged by KVM too
(\`KVM_MEM_LOG_DIRTY_PAGES\`), runs a 32-bit guest program that writes one page in 64 and halts.
A take is \`takeDirty()\` for the kernel, \`KVM_GET_DIRTY_LOG\` of the slot for KVM; after each
run both must name exactly the pages the program wrote (the bench fails otherwise). A guest write
to a page not written since the take is the program's run (\`KVM_RUN\` to its \`hlt\`) over the
pages it writes, with only that record re-armed; "neither re-armed" is the same run with neither,
the guest's loop with no fault to take (on a nested hypervisor it carries the outer one's
costs). Medians of ${QUICK ? 5 : 21} rounds; information, no bar.

${dirty.kvm.unavailable === undefined ? table(KVM_HEAD, kvmRows(dirty.kvm, fmtNs)) : `Not measured on this machine: ${dirty.kvm.unavailable}.`}

The peer rows: mmap-io has a blocking \`msync\` and \`madvise\` and nothing else of ours; it is
handed a view of our own mapping so that both make the same syscall on the same page;
${QUICK ? 300 : 2000} paired batches by turns, a one-sided exact sign test over the pairs
(α = ${PEER_ALPHA}), and an ours-against-ours control; a bias the control shows in our favour
must be exceeded ${PEER_MARGIN}× before "we are faster" is claimed.

### Restore served by the pager

\`GuestMemory.restore(manifest, file, { lazy: 'pager' })\` of a 1 GiB snapshot (written once by
\`guest.snapshot()\` from anonymous memory holding non-zero bytes, read back from a **warm page
cache**), in this process (bench/pager.mjs; medians of rounds that alternate the two sides, the
ratio the median of the per-round ratios with its 25th–75th percentile). Each fault is served by
the pager's thread (a \`pread\` of the 64 KiB block around it and a \`UFFDIO_COPY\`) while the same
thread prefetches the rest, both on the machine's cores. Rows: the \`restore()\` call alone
against \`lazy: 'file'\` (a private mapping of the file); the first \`readU32\` of 1 % of the pages
in a random order (fixed seed), per page, against \`lazy: 'file'\` (a page-cache fault); the time
from \`restore()\` until \`restored\` resolves with nothing touched (it is polled every 5 ms) against
the floor, bench/floor.c's \`mmap\` of 1 GiB of anonymous memory and one \`pread\` of the whole file
into it, with an A/A control of the floor against itself — barred: throughput at least 0.8× the
floor's (a time ratio ≤ ${RESTORED_BAR}); and a trace of 2 % of the pages in a random order, replayed
by \`readU32\` at once after a restore: recorded first (\`record: true\`, \`snapshot({ workingSet:
true })\` into the same file), then replayed after restores with and without the stored set,
counting \`restoreFaults\` and timing from \`restore()\` to the trace's end. The replay touches as
fast as it can, so it can overtake the set's prefetch (which places the set's pages first, then
the rest in address order): a touch of a page the prefetch has not reached yet still faults.
${pager.unavailable !== undefined ? `\n**Not measured here**: the pager cannot run (${pager.unavailable}).\n` : `\n${table(pagerTable.head, pagerTable.rows)}\n`}
`
  writeFileSync(join(HERE, 'RESULTS.md'), md)
  writeFileSync(join(HERE, 'live-overlays.svg'), svg(live, counts))
  return md
}
