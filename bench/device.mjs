// The device workload: what a VMM does most with guest memory. A virtio-blk-like split virtqueue
// — descriptor table, available and used rings in low RAM; request headers, data buffers and
// status bytes in a second region above 4 GiB — served by one device loop written twice: against
// `GuestMemory` (typed access for ring fields and headers, `readInto` for data, `writeU8` for the
// status, used-ring writes), and against `DataView`s over plain `ArrayBuffer`s with a region
// lookup (the JavaScript floor). Each is written with number addresses and with bigint addresses
// (descriptor addresses read as `u64`, address arithmetic in bigints); the bigint floor converts
// with `Number()` at its lookup. `bigintCases` are the bigint forms of GuestMemory's methods
// against their number forms plus one `Number()`. Run alone: `node bench/device.mjs` prints the rows.
import { GuestMemory, SharedMemory } from 'mapped-region'
import { paired, QUICK } from './harness.mjs'

const MiB = 1 << 20
/** Queue size (a power of two) and chains served per pass (as the workload that found the gap). */
const QSZ = 256
const CHAINS = 85
/** Guest layout: RAM at 0 holding the rings, a second region at 4 GiB holding the buffers. */
const LOW = 0
const LOW_SIZE = 16 * MiB
const HIGH = 2 ** 32
const HIGH_SIZE = 16 * MiB
const DESC = 0x10_0000
const AVAIL = 0x11_0000
const USED = 0x12_0000
/** Hot-plugged between passes in the hot-plug variant: outside both regions. */
const PLUG = 2 ** 33
const PLUG_SIZE = 2 * MiB
const DATA_LENGTHS = [512, 1024, 4096, 2048, 512]
const NEXT = 1
const WRITE = 2

const DESC_B = BigInt(DESC)
const AVAIL_B = BigInt(AVAIL)
const USED_B = BigInt(USED)

/** The bytes both sides start from: descriptors, the available ring, headers and data. */
function layout(put16, put32, put64, fill) {
  for (let i = 0; i < CHAINS; i++) {
    const req = HIGH + i * 0x1_0000
    const len = DATA_LENGTHS[i % DATA_LENGTHS.length]
    const chain = [
      [req, 16, NEXT],
      [req + 0x1000, len, NEXT],
      [req + 0x3000, 1, WRITE],
    ]
    for (const [j, [addr, size, flags]] of chain.entries()) {
      const d = DESC + 16 * (3 * i + j)
      put64(d, addr)
      put32(d + 8, size)
      put16(d + 12, flags)
      put16(d + 14, flags & NEXT ? 3 * i + j + 1 : 0)
    }
    put16(AVAIL + 4 + 2 * i, 3 * i)
    put32(req, i & 1)
    put64(req + 8, 1000 + i)
    fill(req + 0x1000, len, i)
  }
  put16(AVAIL + 2, CHAINS)
}

/** One pass over the queue, number addresses, through any object with GuestMemory's typed access. */
function serveNumbers(g, targets) {
  const avail = g.readU16(AVAIL + 2)
  let used = g.readU16(USED + 2)
  let sum = 0
  for (let k = 0; k < CHAINS; k++) {
    const head = g.readU16(AVAIL + 4 + 2 * ((avail - CHAINS + k) & (QSZ - 1)))
    let d = DESC + 16 * head
    const header = g.readU32(d) + g.readU32(d + 4) * 2 ** 32
    if ((g.readU16(d + 12) & NEXT) === 0) throw new Error('a chain without data')
    const type = g.readU32(header)
    const sector = g.readU32(header + 8) + g.readU32(header + 12) * 2 ** 32
    d = DESC + 16 * g.readU16(d + 14)
    const data = g.readU32(d) + g.readU32(d + 4) * 2 ** 32
    const length = g.readU32(d + 8)
    g.readInto(data, targets[length])
    d = DESC + 16 * g.readU16(d + 14)
    if ((g.readU16(d + 12) & WRITE) === 0) throw new Error('a read-only status')
    g.writeU8(g.readU32(d) + g.readU32(d + 4) * 2 ** 32, 0)
    const u = USED + 4 + 8 * (used & (QSZ - 1))
    g.writeU32(u, head)
    g.writeU32(u + 4, length + 1)
    used = (used + 1) & 0xffff
    sum += type + sector + targets[length][length - 1]
  }
  g.writeU16(USED + 2, used)
  return sum
}

/** The same pass with bigint guest addresses (`u64` descriptor addresses, bigint arithmetic). */
function serveBigints(g, targets) {
  const avail = g.readU16(AVAIL_B + 2n)
  let used = g.readU16(USED_B + 2n)
  let sum = 0
  for (let k = 0; k < CHAINS; k++) {
    const head = g.readU16(AVAIL_B + 4n + 2n * BigInt((avail - CHAINS + k) & (QSZ - 1)))
    let d = DESC_B + 16n * BigInt(head)
    const header = g.readU64(d)
    if ((g.readU16(d + 12n) & NEXT) === 0) throw new Error('a chain without data')
    const type = g.readU32(header)
    const sector = g.readU64(header + 8n)
    d = DESC_B + 16n * BigInt(g.readU16(d + 14n))
    const data = g.readU64(d)
    const length = g.readU32(d + 8n)
    g.readInto(data, targets[length])
    d = DESC_B + 16n * BigInt(g.readU16(d + 14n))
    if ((g.readU16(d + 12n) & WRITE) === 0) throw new Error('a read-only status')
    g.writeU8(g.readU64(d), 0)
    const u = USED_B + 4n + 8n * BigInt(used & (QSZ - 1))
    g.writeU32(u, head)
    g.writeU32(u + 4n, length + 1)
    used = (used + 1) & 0xffff
    sum += type + Number(sector) + targets[length][length - 1]
  }
  g.writeU16(USED_B + 2n, used)
  return sum
}

/**
 * The floor: guest memory as plain `ArrayBuffer`s, one `DataView` and `Uint8Array` each, found
 * by a region lookup on every access (what a device model over JavaScript memory does). Its
 * methods have GuestMemory's names so that the same loops serve both; a bigint address is
 * converted with `Number()` where it is looked up.
 */
class Floor {
  constructor(regions) {
    this.regions = regions.map(({ start, size }) => {
      const buffer = new ArrayBuffer(size)
      return { start, end: start + size, dv: new DataView(buffer), u8: new Uint8Array(buffer) }
    })
  }
  find(at) {
    const a = typeof at === 'bigint' ? Number(at) : at
    for (const r of this.regions) if (a >= r.start && a < r.end) return r
    throw new RangeError(`guest address ${a} is in no region`)
  }
  off(r, at) {
    return (typeof at === 'bigint' ? Number(at) : at) - r.start
  }
  readU8(at) {
    const r = this.find(at)
    return r.dv.getUint8(this.off(r, at))
  }
  readU16(at) {
    const r = this.find(at)
    return r.dv.getUint16(this.off(r, at), true)
  }
  readU32(at) {
    const r = this.find(at)
    return r.dv.getUint32(this.off(r, at), true)
  }
  readU64(at) {
    const r = this.find(at)
    return r.dv.getBigUint64(this.off(r, at), true)
  }
  writeU8(at, v) {
    const r = this.find(at)
    r.dv.setUint8(this.off(r, at), v)
  }
  writeU16(at, v) {
    const r = this.find(at)
    r.dv.setUint16(this.off(r, at), v, true)
  }
  writeU32(at, v) {
    const r = this.find(at)
    r.dv.setUint32(this.off(r, at), v, true)
  }
  readInto(at, target) {
    const r = this.find(at)
    const o = this.off(r, at)
    target.set(r.u8.subarray(o, o + target.length))
    return target.length
  }
}

/** Lays the queue out in `g` (GuestMemory or Floor) with number addresses. */
function prepare(g) {
  layout(
    (a, v) => g.writeU16(a, v),
    (a, v) => g.writeU32(a, v),
    (a, v) => {
      g.writeU32(a, v % 2 ** 32)
      g.writeU32(a + 4, Math.floor(v / 2 ** 32))
    },
    (a, n, seed) => {
      for (let i = 0; i < n; i += 4) g.writeU32(a + i, (seed * 2654435761 + i) >>> 0)
    },
  )
}

/**
 * The device rows: `{ key, label, bar, result }` with `result` from `paired`, and the hot-plug
 * variant as information. `GuestMemory` is built over `SharedMemory`s, as a VMM's guest RAM is.
 */
export function deviceCases() {
  const low = SharedMemory.create('device-low', LOW_SIZE)
  const high = SharedMemory.create('device-high', HIGH_SIZE)
  const guest = new GuestMemory(
    [
      { guestAddress: LOW, size: LOW_SIZE, backing: low },
      { guestAddress: HIGH, size: HIGH_SIZE, backing: high },
    ],
    { addressSpace: PLUG + PLUG_SIZE },
  )
  const floor = new Floor([
    { start: LOW, size: LOW_SIZE },
    { start: HIGH, size: HIGH_SIZE },
  ])
  prepare(guest)
  prepare(floor)
  const targets = (() => {
    const t = {}
    for (const n of DATA_LENGTHS) t[n] = new Uint8Array(n)
    return t
  })()
  const check = [serveNumbers(guest, targets), serveNumbers(floor, targets), serveBigints(guest, targets), serveBigints(floor, targets)]
  if (new Set(check).size !== 1) throw new Error(`the device loops disagree: ${check}`)
  let sink = 0
  const opts = { batch: 20, rounds: QUICK ? 31 : 201 }
  const out = []
  out.push({
    key: 'device_numbers',
    label: `virtio device loop, ${CHAINS} chains over two regions (rings low, buffers above 4 GiB), number addresses (against DataViews over ArrayBuffers with a region lookup)`,
    bar: 1.3,
    result: paired(
      () => (sink += serveNumbers(guest, targets)),
      () => (sink += serveNumbers(floor, targets)),
      opts,
    ),
  })
  out.push({
    key: 'device_bigints',
    label: `the same loop with bigint addresses (the floor converts with Number() at its lookup)`,
    bar: 1.5,
    result: paired(
      () => (sink += serveBigints(guest, targets)),
      () => (sink += serveBigints(floor, targets)),
      opts,
    ),
  })
  // Hot-plug: a region added and removed between passes (information: what a plug costs the loop).
  const plug = () => {
    guest.addRegion({ guestAddress: PLUG, size: PLUG_SIZE, backing: 'anonymous' })
    guest.removeRegion(PLUG)
  }
  const hotplug = {
    key: 'device_hotplug',
    label: 'the number loop with a region hot-plugged and unplugged before each pass (against the loop alone)',
    result: paired(
      () => {
        plug()
        sink += serveNumbers(guest, targets)
      },
      () => (sink += serveNumbers(guest, targets)),
      { batch: 10, rounds: QUICK ? 21 : 101 },
    ),
  }
  hotplug.plugOnly = paired(plug, () => {}, { batch: 10, rounds: QUICK ? 21 : 51 })
  if (sink === 0.5) console.log(sink)
  guest.close()
  low.close()
  high.close()
  hotplug.chains = CHAINS
  return { cases: out, hotplug }
}

/**
 * Bigint guest addresses cost no more than their conversion: each GuestMemory method called with
 * bigint addresses, against the same method with number addresses plus one `Number()` of the same
 * bigint (the floor); and last round's GuestMemory rows again, with bigint addresses (their floors
 * convert with `Number()` too). 64 addresses per call, rotating, so that nothing is folded.
 */
export function bigintCases() {
  const N = 64
  const ram = SharedMemory.create('bigint', 4 * MiB)
  const guest = new GuestMemory([{ guestAddress: HIGH, size: 4 * MiB, backing: ram }], { addressSpace: HIGH + 4 * MiB })
  const arena = guest.arena
  const view = arena.view(HIGH, 4 * MiB)
  const dv = new DataView(view.buffer, view.byteOffset, view.byteLength)
  const big = Array.from({ length: N }, (_, i) => BigInt(HIGH + ((i * 389) % (MiB - 2)) * 4))
  const buf8 = new Uint8Array(8)
  let sink = 0
  const opts = { batch: 200, rounds: QUICK ? 31 : 201 }
  const pair = (ours, floor) => {
    const r = paired(ours, floor, opts)
    r.ours /= N
    r.floor /= N
    return r
  }
  const rows = [
    [
      'readU32',
      () => {
        for (let i = 0; i < N; i++) sink += guest.readU32(big[i])
      },
      () => {
        for (let i = 0; i < N; i++) sink += guest.readU32(Number(big[i]))
      },
    ],
    [
      'writeU32',
      () => {
        for (let i = 0; i < N; i++) guest.writeU32(big[i], i)
      },
      () => {
        for (let i = 0; i < N; i++) guest.writeU32(Number(big[i]), i)
      },
    ],
    [
      'read (8 B)',
      () => {
        for (let i = 0; i < N; i++) sink += guest.read(big[i], 8)[0]
      },
      () => {
        for (let i = 0; i < N; i++) sink += guest.read(Number(big[i]), 8)[0]
      },
    ],
    [
      'readInto (8 B)',
      () => {
        for (let i = 0; i < N; i++) guest.readInto(big[i], buf8)
      },
      () => {
        for (let i = 0; i < N; i++) guest.readInto(Number(big[i]), buf8)
      },
    ],
    [
      'write (8 B)',
      () => {
        for (let i = 0; i < N; i++) guest.write(big[i], buf8)
      },
      () => {
        for (let i = 0; i < N; i++) guest.write(Number(big[i]), buf8)
      },
    ],
    [
      'translate',
      () => {
        for (let i = 0; i < N; i++) sink += Number(guest.translate(big[i]) & 1n)
      },
      () => {
        for (let i = 0; i < N; i++) sink += Number(guest.translate(Number(big[i])) & 1n)
      },
    ],
  ]
  const out = rows.map(([name, ours, floor]) => ({
    key: `bigint_${name.split(' ')[0]}`,
    label: `GuestMemory.${name} with a bigint address (against the number form plus one Number() of it)`,
    bar: 1.3,
    result: pair(ours, floor),
  }))
  const base = HIGH
  out.push(
    {
      key: 'guest_write_8_bigint',
      label: 'GuestMemory.write() 8 B, bigint address (against the arena’s own write() with Number())',
      bar: 1.2,
      result: pair(
        () => {
          for (let i = 0; i < N; i++) guest.write(big[i], buf8)
        },
        () => {
          for (let i = 0; i < N; i++) arena.write(Number(big[i]), buf8)
        },
      ),
    },
    {
      key: 'guest_readinto_8_bigint',
      label: 'GuestMemory.readInto() 8 B, bigint address (against the arena’s own readInto() with Number())',
      bar: 1.2,
      result: pair(
        () => {
          for (let i = 0; i < N; i++) guest.readInto(big[i], buf8)
        },
        () => {
          for (let i = 0; i < N; i++) arena.readInto(Number(big[i]), buf8)
        },
      ),
    },
    {
      key: 'guest_typed_read_bigint',
      label: 'GuestMemory.readU32(), bigint address (against a held DataView + bounds check + Number())',
      bar: 1.5,
      result: pair(
        () => {
          for (let i = 0; i < N; i++) sink += guest.readU32(big[i])
        },
        () => {
          for (let i = 0; i < N; i++) {
            const o = Number(big[i]) - base
            if (o >= 0 && o + 4 <= dv.byteLength) sink += dv.getUint32(o, true)
          }
        },
      ),
    },
    {
      key: 'guest_typed_write_bigint',
      label: 'GuestMemory.writeU32(), bigint address (against a held DataView + bounds check + Number())',
      bar: 1.5,
      result: pair(
        () => {
          for (let i = 0; i < N; i++) guest.writeU32(big[i], i)
        },
        () => {
          for (let i = 0; i < N; i++) {
            const o = Number(big[i]) - base
            if (o >= 0 && o + 4 <= dv.byteLength) dv.setUint32(o, i, true)
          }
        },
      ),
    },
  )
  if (sink === 0.5) console.log(sink)
  guest.close()
  ram.close()
  return out
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const fmt = (r) =>
    `${(r.ours / 1000).toFixed(2)} µs vs ${(r.floor / 1000).toFixed(2)} µs: ${r.ratio.toFixed(2)} (${r.lo.toFixed(2)}–${r.hi.toFixed(2)})`
  const { cases, hotplug } = deviceCases()
  for (const c of cases) console.log(`${c.key}: ${fmt(c.result)} bar ${c.bar}`)
  console.log(`${hotplug.key}: ${fmt(hotplug.result)}; plug+unplug alone ${(hotplug.plugOnly.ours / 1000).toFixed(2)} µs`)
  for (const c of bigintCases())
    console.log(`${c.key}: ${c.result.ours.toFixed(1)} ns vs ${c.result.floor.toFixed(1)} ns: ${c.result.ratio.toFixed(2)} bar ${c.bar}`)
}
