// The bench's measures. `floorCases` are the barred ones: each pairs a mapped-region call
// with the bare syscalls the floor addon (bench/floor.c) makes at the same address, in this
// process. `infoCases` are figures without a floor (bandwidth, copies against memcpy and fs,
// asynchronous operations), `peerCases` the comparison with mmap-io.
import { closeSync, ftruncateSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { GuestMemory, MemoryMapping, MemoryMappingArena, mapCount, PAGE_SIZE, Protection, SharedMemory } from 'mapped-region'
import { BUILD, comparePaired, measure, median, now, paired, pairedAsync, QUICK, timeEach } from './harness.mjs'

const P = PAGE_SIZE
const RW = Protection.READ_WRITE
const MiB = 1 << 20
const GiB = 1 << 30
const TIB = 2 ** 40
export const LIVE_COUNTS = [10, 1000, 10000, 30000]
/** Gap-separated overlays of a filler arena (two kernel mappings each) for the layout growth. */
export const LAYOUT_FILLS = [10, 29000]
/** Fresh-file overlays under one reused fd number, until the map-count budget refuses. */
export const FRESH_FILES = 65546
const ROUNDS = QUICK ? 31 : 201
const SYSCALL = { batch: 100, rounds: ROUNDS }
const FAST = { batch: 1000, rounds: ROUNDS }

const addr = (region, offset = 0) => Number(region.address) + offset

/**
 * An fd overlay added and removed by mapped-region, and the floor's same two syscalls at the same
 * address. `source` is what mapped-region is handed: a `SharedMemory` itself or an fd number; the
 * floor maps `fd` (the SharedMemory's fd) either way.
 */
function fdPair(F, region, at, size, source, fd = typeof source === 'number' ? source : source.fd, map = F.mapFd) {
  const a = addr(region, at)
  return [
    () => {
      region.addFdMapping(at, size, source, 0, RW)
      region.removeMapping(at, size)
    },
    () => {
      map(a, size, fd, 3)
      F.hole(a, size)
    },
  ]
}

/**
 * The barred measures, each `{ key, label, bar, result }` with `result` from `paired`:
 * the ratio is mapped-region / the floor (> 1: slower), except where `label` says what
 * else is compared.
 */
export function floorCases(F) {
  const out = []
  const add = (key, label, bar, result, note) => out.push({ key, label, bar, result, note })
  const shm = SharedMemory.create('bench', 4 * MiB)
  const arena = MemoryMappingArena.reserve(64 * MiB)
  const at = 8 * MiB
  const a = addr(arena, at)

  add('fd_pair_4k', 'fd overlay add+remove, 4 KiB, of a SharedMemory', 1.1, paired(...fdPair(F, arena, at, P, shm), SYSCALL))
  add('fd_pair_2m', 'fd overlay add+remove, 2 MiB, of a SharedMemory', 1.1, paired(...fdPair(F, arena, at, 2 * MiB, shm), SYSCALL))
  // An fd number's overlay needs an `fstat` (its size for the end-of-file check, its type, its
  // identity): the floor makes it too. The same pair against the bare two `mmap`s is information.
  add(
    'fd_pair_4k_number',
    'fd overlay add+remove, 4 KiB, of an fd number (floor: `fstat` + the two `mmap`s)',
    1.1,
    paired(...fdPair(F, arena, at, P, shm.fd, shm.fd, F.mapFdChecked), SYSCALL),
  )
  const fdNumberBare = paired(...fdPair(F, arena, at, P, shm.fd), SYSCALL)
  add(
    'anon_pair',
    'anonymous overlay add+remove, 4 KiB',
    1.07,
    paired(
      () => {
        arena.addAnonymous(at, P, RW)
        arena.removeMapping(at, P)
      },
      () => {
        F.mapAnon(a, P, 3)
        F.hole(a, P)
      },
      SYSCALL,
    ),
  )

  const page = MemoryMapping.fromFd(shm.fd, P)
  page.write(0, Buffer.from([1]))
  const pa = addr(page)
  add(
    'msync',
    'msync, one clean memfd page',
    1.05,
    paired(
      () => page.msync(0, P),
      () => F.msync(pa, P),
      FAST,
    ),
  )
  add(
    'madvise',
    "madvise('willneed'), one page",
    1.1,
    paired(
      () => page.madvise(0, P, 'willneed'),
      () => F.madvise(pa, P, 3),
      FAST,
    ),
  )
  add(
    'reserve_close',
    'reserve(1 TiB) + close()',
    1.3,
    paired(
      () => MemoryMappingArena.reserve(TIB).close(),
      () => F.unmap(F.reserve(TIB), TIB),
      { batch: 50, rounds: ROUNDS },
    ),
  )

  arena.addFdMapping(at, P, shm.fd, 0, RW)
  add(
    'view',
    'view() of 4 KiB (floor: an external buffer with a weak reference)',
    1.15,
    paired(
      () => arena.view(at, P),
      () => F.view(a, P),
      { batch: 200, rounds: ROUNDS },
    ),
  )
  const buf8 = Buffer.alloc(8)
  add(
    'readinto_8',
    'readInto() 8 B, memfd (floor: the raw copy call)',
    2.0,
    paired(
      () => arena.readInto(at, buf8),
      () => F.readInto(a, buf8),
      FAST,
    ),
  )
  add(
    'write_8',
    'write() 8 B, memfd (floor: the raw copy call)',
    2.0,
    paired(
      () => arena.write(at, buf8),
      () => F.write(a, buf8),
      FAST,
    ),
  )

  const guest = new GuestMemory([{ guestAddress: 0, size: 4 * MiB, backing: shm }])
  const g = 0x1000
  add(
    'guest_write_8',
    'GuestMemory.write() 8 B (against the arena’s own write())',
    1.2,
    paired(
      () => guest.write(g, buf8),
      () => guest.arena.write(g, buf8),
      FAST,
    ),
  )
  add(
    'guest_readinto_8',
    'GuestMemory.readInto() 8 B (against the arena’s own readInto())',
    1.2,
    paired(
      () => guest.readInto(g, buf8),
      () => guest.arena.readInto(g, buf8),
      FAST,
    ),
  )

  // loadFile of 1 MiB of a file in the page cache into guest-like memory, against Node's own
  // fs.readSync into a view of the same memory (both one pread; the bar is a throughput of
  // at least 0.9x, i.e. a time ratio of at most 1/0.9).
  const image = join(BUILD, 'load.bin')
  writeFileSync(image, Buffer.alloc(MiB, 5))
  const imageFd = openSync(image, 'r')
  const ram = MemoryMappingArena.reserve(2 * MiB)
  ram.addAnonymous(0, 2 * MiB, RW)
  ram.madvise(0, 2 * MiB, 'populate_write')
  const ramView = ram.view(0, MiB)
  add(
    'load_file',
    'loadFile() 1 MiB from the page cache (against fs.readSync into a view; throughput ≥ 0.9×)',
    1.11,
    paired(
      () => ram.loadFile(0, imageFd, { length: MiB }),
      () => readSync(imageFd, ramView, 0, MiB, 0),
      { batch: 20, rounds: ROUNDS },
    ),
  )
  ram.close()
  closeSync(imageFd)
  rmSync(image, { force: true })

  // Typed access: 64 little-endian u32 loads or stores per call (the loop inlines the access)
  // at scattered offsets of a sealed memfd, against a DataView over a view of the same memory
  // plus the same bounds check. The DataView is held the way a device model holds one — in an
  // object, replaced when memory changes — as the package holds its window; a DataView in a
  // closure constant lets V8 fold its checks out of the loop, and that ratio is in the info table.
  const typed = typedCases(shm)
  for (const c of typed.barred) add(c.key, c.label, 1.5, c.result)

  // Dirty tracking's cost: an 8-byte GuestMemory.write with { trackDirty: true } against the
  // same write into an identical GuestMemory without tracking.
  const untracked = new GuestMemory([{ guestAddress: 0, size: 4 * MiB, backing: 'anonymous' }])
  const tracked = new GuestMemory([{ guestAddress: 0, size: 4 * MiB, backing: 'anonymous' }], { trackDirty: true })
  add(
    'dirty_write',
    'GuestMemory.write() 8 B with trackDirty (against the same write without)',
    1.1,
    paired(
      () => tracked.write(g, buf8),
      () => untracked.write(g, buf8),
      FAST,
    ),
  )
  untracked.close()
  tracked.close()

  // A change with 10,000 live views elsewhere in the arena, against the same change in an
  // identical arena without views (the control compares the view-less arena with itself).
  const plain = MemoryMappingArena.reserve(64 * MiB)
  const viewed = MemoryMappingArena.reserve(64 * MiB)
  for (const x of [plain, viewed]) x.addFdMapping(0, 4 * MiB, shm.fd, 0, RW)
  const views = Array.from({ length: 10000 }, (_, i) => viewed.view((i % 1024) * P, P))
  add(
    'live_views',
    'fd overlay pair with 10,000 live views elsewhere (against none)',
    1.1,
    paired(fdPair(F, viewed, at, P, shm.fd)[0], fdPair(F, plain, at, P, shm.fd)[0], SYSCALL),
    `${views.length} views alive`,
  )
  views.length = 0

  // Live overlays: the pair past N one-page overlays (a gap page between each, so the
  // kernel cannot merge them), against the floor at the same address.
  const live = {}
  for (const n of LIVE_COUNTS) {
    const x = MemoryMappingArena.reserve((2 * n + 64) * P)
    for (let i = 0; i < n; i++) x.addFdMapping(2 * i * P, P, shm.fd, (i % 1024) * P, RW)
    live[n] = paired(...fdPair(F, x, (2 * n + 32) * P, P, shm.fd), SYSCALL)
    live[n].mappings = measure(() => x.mappings(), { batch: n < 10000 ? 20 : 2 })
    x.close()
  }
  const first = live[LIVE_COUNTS[0]]
  const last = live[LIVE_COUNTS[LIVE_COUNTS.length - 1]]
  const growth = {
    ours: last.ours / first.ours,
    floor: last.floor / first.floor,
  }
  growth.ratio = growth.ours / growth.floor

  // Layout growth: adding an overlay with ~10 and ~60,000 more mappings in the process.
  const layout = layoutCases(F, shm)
  for (const x of [guest, page, arena, plain, viewed, shm]) x.close()
  typed.close()
  return { cases: out, live, growth, layout, typedInfo: typed.info, fdNumberBare }
}

/** The kernel mappings of this process that overlap `region` (from /proc/self/maps). */
function kernelMappingsIn(region) {
  const [start, end] = [region.address, region.address + BigInt(region.size)]
  let n = 0
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line)
    if (m && BigInt(`0x${m[1]}`) < end && BigInt(`0x${m[2]}`) > start) n++
  }
  return n
}

/**
 * Layout growth: the cost of adding an overlay (added, then removed; against the floor's `fstat`
 * and two `mmap`s at the same address) with LAYOUT_FILLS[i] gap-separated overlays of a filler
 * arena in the process (two kernel mappings each: ~10 and ~60,000 more), for an overlay with no
 * neighbour (scattered), one that continues the pages of the same fd before it (the kernel
 * merges them: the layout must learn whether it did), and one under an fd number that named
 * another file when the page before it was mapped (never merged). The bar is each case's own
 * growth, large / small. Then FRESH_FILES one-page overlays, each of a fresh file under the
 * same fd number at the offset that continues the page before, until the budget refuses
 * (`ENOMEM`): the time, and the arena's count against the kernel's.
 */
export function layoutCases(F, shm) {
  const config = SYSCALL
  const at = {}
  for (const n of LAYOUT_FILLS) {
    // The measured arena first: the kernel places the filler below it, so that a reader of
    // /proc/self/maps (in address order) passes every filler mapping before reaching it.
    const m = MemoryMappingArena.reserve(64 * P)
    const aside = []
    let filler = MemoryMappingArena.reserve((2 * n + 2) * P)
    while (filler.address > m.address && aside.length < 8) {
      aside.push(filler) // a hole above the measured arena: keep it taken, try again
      filler = MemoryMappingArena.reserve((2 * n + 2) * P)
    }
    for (const x of aside) x.close()
    if (filler.address > m.address) throw new Error('the filler landed above the measured arena')
    for (let i = 0; i < n; i++) filler.addFdMapping(2 * i * P, P, shm, (i % 1024) * P, Protection.READ)
    const pair = (offset, fd, fdOffset) => {
      const a = addr(m, offset)
      return paired(
        () => {
          m.addFdMapping(offset, P, fd, fdOffset, RW)
          m.removeMapping(offset, P)
        },
        () => {
          F.mapFdAt(a, P, fd, 3, fdOffset)
          F.hole(a, P)
        },
        config,
      )
    }
    // One fd number naming another file than the page before it: `other` is mapped at page 32
    // and closed, and the next SharedMemory's fd takes its number.
    const other = SharedMemory.create('layout-other', 2 * P)
    m.addFdMapping(32 * P, P, other.fd, 0, RW)
    const number = other.fd
    other.close()
    const reused = SharedMemory.create('layout-reused', 2 * P)
    if (reused.fd !== number) throw new Error(`fd ${number} was not reused (${reused.fd})`)
    m.addFdMapping(16 * P, P, shm.fd, 0, RW)
    at[n] = {
      process: mapCount().process,
      scattered: pair(8 * P, shm.fd, 0),
      contiguous: pair(17 * P, shm.fd, P),
      reused: pair(33 * P, reused.fd, P),
    }
    if (m.kernelMappingCount !== kernelMappingsIn(m)) throw new Error('the layout count differs from the kernel')
    for (const x of [m, filler, reused]) x.close()
  }
  const [small, large] = LAYOUT_FILLS.map((n) => at[n])
  const growth = {}
  for (const key of ['scattered', 'contiguous', 'reused']) {
    growth[key] = { ours: large[key].ours / small[key].ours, floor: large[key].floor / small[key].floor }
  }

  // Fresh files under one fd number, contiguous, until ENOMEM.
  const fresh = MemoryMappingArena.reserve((FRESH_FILES + 1) * P)
  const numbers = new Set()
  let added = 0
  let refused
  const started = now()
  for (; added < FRESH_FILES; added++) {
    const file = SharedMemory.create('layout-fresh', (added + 1) * P, { seal: false })
    numbers.add(file.fd)
    try {
      fresh.addFdMapping(added * P, P, file.fd, added * P, Protection.READ)
    } catch (e) {
      refused = e
      break
    } finally {
      file.close()
    }
  }
  const seconds = (now() - started) / 1e9
  if (refused?.code !== 'ENOMEM') throw new Error(`fresh files: not refused with ENOMEM (${refused?.code ?? 'never refused'})`)
  // A caller retrying at the limit: the time of one refused overlay.
  const refusal = timeEach(() => {
    try {
      fresh.addFdMapping(added * P, P, shm.fd, 0, Protection.READ)
    } catch (e) {
      if (e.code !== 'ENOMEM') throw e
    }
  }, 21)
  const count = mapCount()
  const freshRun = {
    asked: FRESH_FILES,
    seconds,
    added,
    numbers: numbers.size,
    exact: fresh.kernelMappingCount === kernelMappingsIn(fresh) && fresh.kernelMappingCount === added + 1,
    free: count.limit - count.process,
    headroom: count.headroom,
    refusal,
  }
  fresh.close()
  return { at, small, large, growth, fresh: freshRun }
}

/**
 * Snapshots: a full dump of 64 MiB of guest memory (`snapshot` to an fd) against the floor's
 * `pwrite` of the same memory into the same file, paired by turns; and the time of a lazy
 * restore of a 1 GiB snapshot (`GuestMemory.restore` + `close`), whose bar is absolute.
 */
export async function snapshotCases(F) {
  const size = 64 * MiB
  const guest = new GuestMemory([{ guestAddress: 0, size, backing: 'anonymous' }], { dontDump: false })
  guest.arena.madvise(0, size, 'populate_write')
  guest.write(0, Buffer.alloc(size, 3))
  const file = join(BUILD, 'snapshot.mem')
  const fd = openSync(file, 'w+')
  const at = Number(guest.regions()[0].userspaceAddress)
  const dump = await pairedAsync(
    () => guest.snapshot(fd),
    async () => F.dump(fd, at, size),
    { rounds: QUICK ? 5 : 21 },
  )
  guest.close()
  closeSync(fd)

  // A 1 GiB snapshot file (sparse) and its manifest: the restore maps it, reads nothing.
  const big = join(BUILD, 'snapshot-1g.mem')
  const bigFd = openSync(big, 'w+')
  ftruncateSync(bigFd, GiB)
  closeSync(bigFd)
  const manifest = {
    version: 1,
    pageSize: P,
    dirtyOnly: false,
    regions: [{ guestAddress: 0, size: GiB, fileOffset: 0, backing: 'anonymous', protection: RW }],
  }
  const restoreMs = timeEach(() => GuestMemory.restore(manifest, big).close(), QUICK ? 11 : 51) / 1e6
  rmSync(file, { force: true })
  rmSync(big, { force: true })
  return {
    cases: [
      {
        key: 'snapshot_dump',
        label: 'snapshot() of 64 MiB to a file (floor: pwrite of the same memory; throughput ≥ 0.8×)',
        bar: 1.25,
        result: dump,
      },
    ],
    restoreMs,
  }
}

/** The typed-access measures: barred ratios against a held DataView, and the constant-DataView ratios as information. */
function typedCases(shm) {
  const N = 64
  const m = MemoryMapping.fromFd(shm.fd, 16 * P)
  const base = 0x10_0000
  const g = new GuestMemory([{ guestAddress: base, size: 16 * P, backing: { fd: shm.fd, fdOffset: 0 } }])
  const view = m.view(0, 16 * P)
  const dv = new DataView(view.buffer, view.byteOffset, view.byteLength)
  const u32 = new Uint32Array(view.buffer, view.byteOffset, view.byteLength / 4)
  const len = view.byteLength
  // A device model's view of guest memory: replaced whenever the memory changes.
  const device = { dv: new DataView(new ArrayBuffer(8)), u32: new Uint32Array(2), len: 8 }
  Object.assign(device, { dv, u32, len })
  const offs = Int32Array.from({ length: N }, (_, i) => ((i * 389) % (len / 4 - 1)) * 4)
  let sink = 0
  const load = {
    region: () => {
      let x = 0
      for (let i = 0; i < N; i++) x += m.readU32(offs[i])
      sink += x
    },
    guest: () => {
      let x = 0
      for (let i = 0; i < N; i++) x += g.readU32(base + offs[i])
      sink += x
    },
    held: () => {
      let x = 0
      for (let i = 0; i < N; i++) {
        const o = offs[i]
        if (o >= 0 && o + 4 <= device.len) x += device.dv.getUint32(o, true)
      }
      sink += x
    },
    constant: () => {
      let x = 0
      for (let i = 0; i < N; i++) {
        const o = offs[i]
        if (o >= 0 && o + 4 <= len) x += dv.getUint32(o, true)
      }
      sink += x
    },
  }
  const store = {
    region: () => {
      for (let i = 0; i < N; i++) m.writeU32(offs[i], i)
    },
    guest: () => {
      for (let i = 0; i < N; i++) g.writeU32(base + offs[i], i)
    },
    held: () => {
      for (let i = 0; i < N; i++) {
        const o = offs[i]
        if (o >= 0 && o + 4 <= device.len) device.dv.setUint32(o, i, true)
      }
    },
    constant: () => {
      for (let i = 0; i < N; i++) {
        const o = offs[i]
        if (o >= 0 && o + 4 <= len) dv.setUint32(o, i, true)
      }
    },
  }
  const cas = {
    region: () => {
      for (let i = 0; i < N; i++) m.compareExchangeU32(offs[i], i, i + 1)
    },
    held: () => {
      for (let i = 0; i < N; i++) {
        const o = offs[i]
        if (o >= 0 && o + 4 <= device.len && (o & 3) === 0) Atomics.compareExchange(device.u32, o >>> 2, i, i + 1)
      }
    },
  }
  const opts = { batch: 200, rounds: ROUNDS }
  const barred = [
    {
      key: 'typed_read',
      label: 'readU32() on a region, 64 per call (against a held DataView + bounds check)',
      result: paired(load.region, load.held, opts),
    },
    {
      key: 'typed_write',
      label: 'writeU32() on a region (against a held DataView + bounds check)',
      result: paired(store.region, store.held, opts),
    },
    {
      key: 'guest_typed_read',
      label: 'GuestMemory.readU32() (against a held DataView + bounds check)',
      result: paired(load.guest, load.held, opts),
    },
    {
      key: 'guest_typed_write',
      label: 'GuestMemory.writeU32() (against a held DataView + bounds check)',
      result: paired(store.guest, store.held, opts),
    },
    {
      key: 'typed_cas',
      label: 'compareExchangeU32() on a region (against Atomics on a held Uint32Array + checks)',
      result: paired(cas.region, cas.held, opts),
    },
  ]
  for (const c of barred) {
    c.result.ours /= N
    c.result.floor /= N
  }
  const info = {
    typed_read_vs_constant: paired(load.region, load.constant, opts).ratio,
    typed_write_vs_constant: paired(store.region, store.constant, opts).ratio,
    sink,
  }
  return {
    barred,
    info,
    close: () => {
      m.close()
      g.close()
    },
  }
}

/** Figures without a floor: bandwidth, copies against memcpy (C) and fs, async, first touch. */
export async function infoCases() {
  const r = {}
  const shm = SharedMemory.create('bench', 4 * MiB)
  const rss0 = rssKiB()
  const held = Array.from({ length: 16 }, () => MemoryMappingArena.reserve(TIB))
  r.reserve_1t_rss_kib = (rssKiB() - rss0) / held.length
  for (const a of held) a.close()

  // Bandwidth: view().set() of 1 MiB chunks into a pre-faulted 256 MiB overlay.
  const big = SharedMemory.create('bench-256m', 256 * MiB)
  const bigArena = MemoryMappingArena.reserve(256 * MiB)
  bigArena.addFdMapping(0, big.size, big.fd, 0, RW)
  bigArena.madvise(0, big.size, 'populate_write')
  const view = bigArena.view(0, big.size)
  const src = Buffer.alloc(MiB, 7)
  const bw = []
  for (let i = 0; i < (QUICK ? 3 : 9); i++) {
    const s = now()
    for (let off = 0; off < big.size; off += MiB) view.set(src, off)
    bw.push(big.size / (now() - s))
  }
  r.copy_bandwidth_gbps = median(bw)

  // read()/readInto()/write(): the plain path (sealed memfd) and the fault-safe path (ext4 file).
  const file = join(BUILD, 'rw.bin')
  writeFileSync(file, Buffer.alloc(2 * MiB, 3))
  const fileFd = openSync(file, 'r+')
  const fileMap = MemoryMapping.fromFd(fileFd, 2 * MiB)
  for (const [tag, len] of [
    ['4k', 4096],
    ['1m', MiB],
  ]) {
    const data = Buffer.alloc(len)
    const batch = len > 4096 ? 20 : 200
    r[`read_${tag}`] = measure(() => bigArena.read(0, len), { batch })
    r[`readinto_${tag}`] = measure(() => bigArena.readInto(0, data), { batch })
    r[`write_${tag}`] = measure(() => bigArena.write(0, data), { batch })
    r[`readinto_${tag}_faultsafe`] = measure(() => fileMap.readInto(0, data), { batch })
    r[`write_${tag}_faultsafe`] = measure(() => fileMap.write(0, data), { batch })
    r[`fs_read_${tag}`] = measure(() => readSync(fileFd, data, 0, len, 0), { batch })
    r[`fs_write_${tag}`] = measure(() => writeSync(fileFd, data, 0, len, 0), { batch })
  }
  const buf8 = Buffer.alloc(8)
  r.readinto_8_faultsafe = measure(() => fileMap.readInto(0, buf8))
  r.write_8_faultsafe = measure(() => fileMap.write(0, buf8))

  // First touch per page through a view of a fresh memfd overlay.
  const touch = []
  for (let i = 0; i < (QUICK ? 3 : 9); i++) {
    const t = SharedMemory.create('touch', 64 * MiB)
    const a = MemoryMappingArena.reserve(t.size)
    a.addFdMapping(0, t.size, t.fd, 0, RW)
    const v = a.view(0, t.size)
    const s = now()
    for (let off = 0; off < t.size; off += P) v[off] = 1
    touch.push((now() - s) / (t.size / P))
    a.close()
    t.close()
  }
  r.first_touch = median(touch)

  // populateAsync of 1 GiB of a memfd.
  const pop = []
  for (let i = 0; i < (QUICK ? 1 : 3); i++) {
    const s2 = SharedMemory.create('populate', GiB)
    const a = MemoryMappingArena.reserve(GiB)
    a.addFdMapping(0, GiB, s2.fd, 0, RW)
    const s = now()
    await a.populateAsync(0, GiB, { write: true })
    pop.push(GiB / (now() - s))
    a.close()
    s2.close()
  }
  r.populate_gbps = median(pop)

  // msyncAsync: many small dirty ranges of an ext4 file, all in flight at once.
  const pages = QUICK ? 64 : 256
  const mfile = join(BUILD, 'msync-async.bin')
  writeFileSync(mfile, Buffer.alloc(pages * P))
  const fd = openSync(mfile, 'r+')
  const m = MemoryMapping.fromFd(fd, pages * P)
  const perPage = []
  const syncPerPage = []
  for (let round = 0; round < (QUICK ? 2 : 5); round++) {
    for (let i = 0; i < pages; i++) m.write(i * P, Buffer.from([round + 1]))
    let s = now()
    await Promise.all(Array.from({ length: pages }, (_, i) => m.msyncAsync(i * P, P)))
    perPage.push((now() - s) / pages)
    for (let i = 0; i < pages; i++) m.write(i * P, Buffer.from([round + 100]))
    s = now()
    for (let i = 0; i < pages; i++) m.msync(i * P, P)
    syncPerPage.push((now() - s) / pages)
  }
  r.msync_async_dirty_per_page = median(perPage)
  r.msync_sync_dirty_per_page = median(syncPerPage)
  r.reserve_each = timeEach(() => MemoryMappingArena.reserve(TIB).close(), 101)

  m.close()
  closeSync(fd)
  closeSync(fileFd)
  for (const x of [fileMap, bigArena, big, shm]) x.close()
  rmSync(file, { force: true })
  rmSync(mfile, { force: true })
  return r
}

/**
 * mmap-io has a blocking msync and madvise (no unmap, no overlays). Its calls take any
 * Buffer, so it is handed a view of our own mapping: both packages then make the same
 * syscall on the same address, and only the call paths differ. Paired batches, sign test,
 * and an A/A control (ours in both slots).
 */
export function peerCases(peer, ext4File) {
  if (!peer.mmap) return {}
  const m = peer.mmap
  const rounds = QUICK ? 300 : 2000
  const shm = SharedMemory.create('peer', P)
  const page = MemoryMapping.fromFd(shm.fd, P)
  page.write(0, Buffer.from([1]))
  const ext4Fd = openSync(ext4File, 'r+')
  const ext4 = MemoryMapping.fromFd(ext4Fd, P)
  ext4.write(0, Buffer.from([2]))
  ext4.msync(0, P)
  const pageView = page.view(0, P)
  const ext4View = ext4.view(0, P)
  const fast = { batch: 200, rounds, perCall: false }
  const slow = { batch: 50, rounds, perCall: true }
  const cases = {
    msync_memfd: [() => page.msync(0, P), () => m.sync(pageView, 0, P, true, false), fast],
    madvise_willneed: [() => page.madvise(0, P, 'willneed'), () => m.advise(pageView, 0, P, m.MADV_WILLNEED), fast],
    msync_ext4: [() => ext4.msync(0, P), () => m.sync(ext4View, 0, P, true, false), slow],
  }
  const r = {}
  for (const [k, [ours, theirs, opts]] of Object.entries(cases)) {
    r[k] = comparePaired(ours, theirs, opts)
    r[k].control = comparePaired(ours, ours, opts)
  }
  for (const x of [page, ext4, shm]) x.close()
  closeSync(ext4Fd)
  return r
}

function rssKiB() {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1])
}
