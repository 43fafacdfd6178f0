import test from 'ava'
import { ENTRY, runChild } from './helpers.js'

/**
 * Typed access and copies allocate nothing per access in steady state, whatever the pattern.
 * Each pattern runs in a fresh process (nothing else allocating there): warmed up, then run
 * `N` times between two looks at the young generation, with the collector's events observed.
 * An access that allocated even 16 bytes would grow it by `16 * N` bytes or make it collect.
 */
const MEASURE = `
const v8 = require('node:v8')
const { PerformanceObserver, constants } = require('node:perf_hooks')
const N = 200_000
const young = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_used_size
async function allocations(run) {
  for (let i = 0; i < 3; i++) run(N / 10)
  let gcs = 0
  // Scavenges only: the forced collections before each run are this harness's own.
  const seen = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if ((e.detail ?? e).kind === constants.NODE_PERFORMANCE_GC_MINOR) gcs++
  })
  seen.observe({ entryTypes: ['gc'] })
  // The least of three runs: the first may still see the compiler's own allocations.
  // Buffers made (a window is an external buffer as long as its mapping) show in arrayBuffers.
  let bytes = Infinity
  let buffers = 0
  for (let i = 0; i < 3; i++) {
    gc()
    const before = young()
    const made = process.memoryUsage().arrayBuffers
    run(N)
    bytes = Math.min(bytes, young() - before)
    buffers = Math.max(buffers, process.memoryUsage().arrayBuffers - made)
  }
  await new Promise((r) => setTimeout(r, 20))
  seen.disconnect()
  return { gcs, bytes, buffers }
}
`

/** Runs `patterns` (an object of name → `(n) => void`, set up by `setup`) in a child; their allocations. */
function measure(setup: string, patterns: string[]): Record<string, { gcs: number; bytes: number; buffers: number }> {
  const r = runChild(
    `${MEASURE}
${setup}
;(async () => {
  const out = {}
  for (const name of ${JSON.stringify(patterns)}) out[name] = await allocations(patterns[name])
  console.log(JSON.stringify(out))
})().catch((e) => { console.error(e); process.exit(1) })`,
    120_000,
  )
  if (r.status !== 0) throw new Error(`child failed: ${r.status} ${r.signal}\n${r.stderr}`)
  return JSON.parse(r.stdout.trim().split('\n').pop() as string)
}

/** Iterations measured per pattern (as in MEASURE). */
const N = 200_000
const MiB = 1 << 20
const HIGH = 2 ** 32

const GUEST = `
const { GuestMemory, MemoryMappingArena, SharedMemory, PAGE_SIZE } = mr
const low = SharedMemory.create('low', ${16 * MiB})
const high = SharedMemory.create('high', ${16 * MiB})
const specs = [
  { guestAddress: 0, size: ${16 * MiB}, backing: low },
  { guestAddress: ${HIGH}, size: ${16 * MiB}, backing: high },
]
const guest = new GuestMemory(specs, { addressSpace: 2 ** 34 })
const buf = new Uint8Array(64)
const lowB = 0x1000n, highB = BigInt(${HIGH}) + 0x2000n
let sink = 0
`

test('typed access and copies alternating between two regions (one above 4 GiB) allocate nothing', (t) => {
  const out = measure(
    `${GUEST}
const patterns = {
  numbers: (n) => { for (let i = 0; i < n; i++) { sink += guest.readU32(0x1000); guest.writeU32(${HIGH} + 0x2000, i >>> 0) } },
  bigints: (n) => { for (let i = 0; i < n; i++) { sink += guest.readU32(lowB); guest.writeU16(highB, i & 0xffff) } },
  u64: (n) => { for (let i = 0; i < n; i++) { guest.writeU64(lowB, 5n); sink += Number(guest.readU64(highB) & 1n) } },
  atomics: (n) => { for (let i = 0; i < n; i++) { sink += guest.readU32Atomic(0x1000); guest.writeU32Atomic(${HIGH} + 0x2000, 1) } },
  copies: (n) => { for (let i = 0; i < n; i++) { guest.readInto(0x1000, buf); guest.write(${HIGH} + 0x2000, buf) } },
  copiesBigint: (n) => { for (let i = 0; i < n; i++) { guest.readInto(lowB, buf); guest.write(highB, buf) } },
}`,
    ['numbers', 'bigints', 'u64', 'atomics', 'copies', 'copiesBigint'],
  )
  for (const [name, r] of Object.entries(out)) {
    t.is(r.buffers, 0, `${name}: buffers made during the runs`)
    // A bigint's number may be one heap number (16 bytes) where V8 does not inline its conversion;
    // readU64 returns a new bigint, as DataView's getBigUint64 does.
    if (name === 'bigints' || name === 'copiesBigint' || name === 'u64') {
      t.true(r.bytes < 16 * N, `${name}: ${r.bytes} bytes allocated in ${N} iterations`)
      continue
    }
    t.is(r.gcs, 0, `${name}: scavenges during the runs`)
    t.true(r.bytes < 64 * 1024, `${name}: ${r.bytes} bytes allocated in ${N} iterations`)
  }
})

test('alternating overlays of an arena, more regions than windows kept, and after hot-plug allocate nothing', (t) => {
  const out = measure(
    `${GUEST}
const arena = MemoryMappingArena.reserve(2 ** 29)
for (let i = 0; i < 8; i++) arena.addFdMapping(i * 2 ** 26, 4 * PAGE_SIZE, low, i * 4 * PAGE_SIZE, 3)
const many = new GuestMemory(
  Array.from({ length: 100 }, (_, i) => ({ guestAddress: i * 2 * PAGE_SIZE, size: PAGE_SIZE, backing: 'anonymous' })),
)
const plugged = new GuestMemory(specs.map((s) => ({ ...s })), { addressSpace: 2 ** 34 })
const patterns = {
  overlays: (n) => { for (let i = 0; i < n; i++) sink += arena.readU32((i & 7) * 2 ** 26 + 8) },
  manyRegions: (n) => { for (let i = 0; i < n; i++) sink += many.readU32((i % 100) * 2 * PAGE_SIZE) },
  randomOverlays: (n) => { for (let i = 0; i < n; i++) sink += many.readU16(((i * 7919) % 100) * 2 * PAGE_SIZE + 2) },
  afterHotplug: (n) => {
    plugged.addRegion({ guestAddress: 2 ** 33, size: PAGE_SIZE, backing: 'anonymous' })
    plugged.removeRegion(2 ** 33)
    for (let i = 0; i < n; i++) { sink += plugged.readU32(0x1000); plugged.writeU32(${HIGH}, 1) }
  },
}`,
    ['overlays', 'manyRegions', 'randomOverlays', 'afterHotplug'],
  )
  for (const [name, r] of Object.entries(out)) {
    t.is(r.buffers, 0, `${name}: buffers made during the runs`)
    t.is(r.gcs, 0, `${name}: scavenges during the runs`)
    // afterHotplug makes the plug's own objects once per run.
    t.true(r.bytes < 64 * 1024, `${name}: ${r.bytes} bytes allocated in ${N} iterations`)
  }
})

test('in a worker over an attached (shared) GuestMemory, the checked path makes no buffers and at most a heap number per access', (t) => {
  const worker = `
const { workerData, parentPort } = require('node:worker_threads')
const mr = require(workerData.entry)
${MEASURE}
const guest = mr.GuestMemory.attach(workerData.handle)
const buf = new Uint8Array(16)
let sink = 0
;(async () => {
  const typed = await allocations((n) => { for (let i = 0; i < n; i++) { sink += guest.readU32(0x1000); guest.writeU32(${HIGH} + 0x2000, 7) } })
  const copies = await allocations((n) => { for (let i = 0; i < n; i++) { guest.readInto(${HIGH}, buf); guest.write(0x1000, buf) } })
  guest.close()
  parentPort.postMessage({ typed, copies })
})()`
  const r = runChild(
    `${GUEST}
const { Worker } = require('node:worker_threads')
const w = new Worker(${JSON.stringify(worker)}, { eval: true, workerData: { entry: ${JSON.stringify(ENTRY)}, handle: guest.share() } })
w.once('message', (m) => { console.log(JSON.stringify(m)); guest.close() })
w.once('error', (e) => { console.error(e); process.exit(1) })`,
    120_000,
  )
  t.is(r.status, 0, r.stderr)
  const out: Record<string, { gcs: number; bytes: number; buffers: number }> = JSON.parse(r.stdout.trim())
  t.deepEqual(Object.keys(out).sort(), ['copies', 'typed'])
  for (const [name, x] of Object.entries(out)) {
    t.is(x.buffers, 0, `${name}: buffers made during the runs`)
    // The checked path is a native call per access: an address beyond 2^30 may be boxed once for
    // it (a heap number, 16 bytes) where V8 does not inline the call's preparation.
    t.true(x.bytes < 16 * N, `${name}: ${x.bytes} bytes allocated in ${N} iterations`)
  }
})
