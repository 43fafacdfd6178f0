// Typed access and copies without external buffers (issue 32, point 4), against the normal mode.
// The mode is per process (the addon reads MAPPED_REGION_TEST_NO_EXTERNAL, its test-only switch,
// when it loads), so each is measured in a child process of this module, by turns: normal, then
// without, ROUNDS times; per measure the median of each mode's runs. Information rows, no bar.
//
//   node bench/no-external.mjs [--quick]   these rows alone (a markdown table on stdout)
//   npm run bench                          as a section of bench/RESULTS.md
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { measure as measureBatches, median, QUICK } from './harness.mjs'

const SELF = fileURLToPath(import.meta.url)
const SWITCH = 'MAPPED_REGION_TEST_NO_EXTERNAL'
const ROUNDS = QUICK ? 1 : 3
/** Batches of many calls: a typed access is a few nanoseconds in the normal mode. */
const measure = (f) => measureBatches(f, { batch: 5000 })

/** What is measured, in this order: key → label. */
const LABELS = {
  region_read_u32: 'readU32(), arena over a SharedMemory',
  region_write_u32: 'writeU32(), arena over a SharedMemory',
  region_atomic_u32: 'readU32Atomic(), arena over a SharedMemory',
  guest_read_u32: 'readU32(), GuestMemory, two regions (one above 4 GiB), alternating',
  guest_write_u32: 'writeU32(), GuestMemory, two regions (one above 4 GiB), alternating',
  region_read_into_8: 'readInto() 8 B, arena over a SharedMemory',
  region_write_8: 'write() 8 B, arena over a SharedMemory',
  guest_read_into_8: 'readInto() 8 B, GuestMemory',
  guest_write_8: 'write() 8 B, GuestMemory',
}

/** The child: each measure in ns per call, as JSON on stdout. */
async function child() {
  const { GuestMemory, MemoryMappingArena, Protection, SharedMemory } = await import('mapped-region')
  const MiB = 1 << 20
  const HIGH = 2 ** 32
  const ram = SharedMemory.create('bench-noext', 16 * MiB)
  const arena = MemoryMappingArena.reserve(16 * MiB)
  arena.addFdMapping(0, ram.size, ram.fd, 0, Protection.READ_WRITE)
  const low = SharedMemory.create('bench-noext-low', 16 * MiB)
  const high = SharedMemory.create('bench-noext-high', 16 * MiB)
  const guest = new GuestMemory(
    [
      { guestAddress: 0, size: 16 * MiB, backing: low },
      { guestAddress: HIGH, size: 16 * MiB, backing: high },
    ],
    { addressSpace: 2 ** 34 },
  )
  const buf = new Uint8Array(8)
  let sink = 0
  let i = 0
  const r = {
    region_read_u32: measure(() => {
      sink += arena.readU32((i++ & 1023) * 4)
    }),
    region_write_u32: measure(() => arena.writeU32((i++ & 1023) * 4, i >>> 0)),
    region_atomic_u32: measure(() => {
      sink += arena.readU32Atomic((i++ & 1023) * 4)
    }),
    guest_read_u32: measure(() => {
      sink += guest.readU32(i++ & 1 ? 0x1000 : HIGH + 0x2000)
    }),
    guest_write_u32: measure(() => guest.writeU32(i++ & 1 ? 0x1000 : HIGH + 0x2000, i >>> 0)),
    region_read_into_8: measure(() => arena.readInto((i++ & 1023) * 8, buf)),
    region_write_8: measure(() => arena.write((i++ & 1023) * 8, buf)),
    guest_read_into_8: measure(() => guest.readInto(i++ & 1 ? 0x1000 : HIGH + 0x2000, buf)),
    guest_write_8: measure(() => guest.write(i++ & 1 ? 0x1000 : HIGH + 0x2000, buf)),
  }
  // Proof of the mode: a view is refused only without external buffers.
  let views = true
  try {
    arena.view(0, 4096)
  } catch (e) {
    if (e.code !== 'ERR_MMAP_NO_EXTERNAL') throw e
    views = false
  }
  guest.close()
  arena.close()
  for (const s of [ram, low, high]) s.close()
  process.stdout.write(`${JSON.stringify({ r, views, sink: sink > 0 })}\n`)
}

/** One child run; `noExternal` sets the switch. */
function run(noExternal) {
  const env = { ...process.env }
  delete env[SWITCH]
  if (noExternal) env[SWITCH] = '1'
  const args = ['--expose-gc', SELF, '--child', ...(QUICK ? ['--quick'] : [])]
  const c = spawnSync(process.execPath, args, { env, encoding: 'utf8', timeout: 300_000 })
  if (c.status !== 0)
    throw new Error(`bench/no-external.mjs child (${noExternal ? 'no external' : 'normal'}) failed: ${c.status} ${c.signal}\n${c.stderr}`)
  const out = JSON.parse(c.stdout.trim().split('\n').pop())
  if (out.views === noExternal)
    throw new Error(`bench/no-external.mjs: the child's mode is not the one asked for (${noExternal ? 'no external' : 'normal'})`)
  return out.r
}

/** Both modes by turns: per measure `{ normal, noExternal, ratio }` (medians, ns per call). */
export function noExternalCases() {
  const normal = []
  const without = []
  for (let k = 0; k < ROUNDS; k++) {
    normal.push(run(false))
    without.push(run(true))
  }
  const out = {}
  for (const key of Object.keys(LABELS)) {
    const a = median(normal.map((x) => x[key]))
    const b = median(without.map((x) => x[key]))
    out[key] = { normal: a, noExternal: b, ratio: b / a }
  }
  return out
}

/** The rows for the report: label, normal, without external buffers, ratio. */
export function noExternalRows(cases, fmtNs) {
  return Object.entries(LABELS).map(([key, label]) => {
    const c = cases[key]
    return [label, fmtNs(c.normal), fmtNs(c.noExternal), `${c.ratio.toFixed(2)}×`]
  })
}

if (process.argv[1] === SELF) {
  if (process.argv.includes('--child')) {
    await child()
  } else {
    const fmtNs = (ns) => (ns >= 1e3 ? `${(ns / 1e3).toFixed(2)} µs` : `${ns.toFixed(0)} ns`)
    const rows = noExternalRows(noExternalCases(), fmtNs)
    const head = ['measure', 'normal', 'without external buffers', 'ratio']
    console.log([`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n'))
  }
}
