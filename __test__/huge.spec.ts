import test from 'ava'
import { readFileSync } from 'node:fs'
import { GuestMemory, MemoryMapping, MemoryMappingArena, PAGE_SIZE, Protection, SharedMemory } from 'mapped-region'
import { mapsOverlapping } from './helpers.js'

const MiB = 1 << 20
const HUGE = 2 * MiB
const RW = Protection.READ_WRITE

/** Free 2 MiB huge pages in the pool, from /proc/meminfo (when the default size is 2 MiB). */
function freeHugePages(): { free: number; why: string } {
  const info = readFileSync('/proc/meminfo', 'utf8')
  const size = Number(/Hugepagesize:\s+(\d+) kB/.exec(info)?.[1] ?? 0) * 1024
  const free = Number(/HugePages_Free:\s+(\d+)/.exec(info)?.[1] ?? 0)
  if (size !== HUGE) return { free: 0, why: `the default huge page size is ${size} bytes, not 2 MiB` }
  return { free, why: `HugePages_Free is ${free} (set vm.nr_hugepages to run it)` }
}
const pool = freeHugePages()
const withHugePages = pool.free >= 4 ? test : test.skip
const skipNote = pool.free >= 4 ? '' : ` — skipped here: ${pool.why}`

test('reserve({ align }) starts the arena at that alignment; bad alignments are refused', (t) => {
  for (const align of [PAGE_SIZE, HUGE, 1 << 30]) {
    using arena = MemoryMappingArena.reserve(3 * PAGE_SIZE, { align })
    t.is(arena.address % BigInt(align), 0n, `align ${align}`)
    t.is(arena.size, 3 * PAGE_SIZE)
    t.is(arena.kernelMappingCount, 1)
    // Only the arena itself is reserved: the excess was given back.
    const lines = mapsOverlapping(arena.address - BigInt(align), 2 * align + 3 * PAGE_SIZE).filter((l) => l.includes(' ---p '))
    const ours = lines.find((l) => BigInt(`0x${l.split('-')[0]}`) === arena.address)
    t.truthy(ours)
    const [from, to] = (ours as string)
      .split(' ')[0]
      .split('-')
      .map((h) => BigInt(`0x${h}`))
    t.is(to - from, BigInt(3 * PAGE_SIZE), 'the reservation is exactly its size')
  }
  using viaNew = new MemoryMappingArena(PAGE_SIZE, { align: HUGE })
  t.is(viaNew.address % BigInt(HUGE), 0n)
  for (const align of [0, 3, PAGE_SIZE + 1, PAGE_SIZE / 2, 3 * PAGE_SIZE, -HUGE, 2 ** 53]) {
    t.throws(() => MemoryMappingArena.reserve(PAGE_SIZE, { align }), { code: 'ERR_OUT_OF_RANGE', message: /align/ }, String(align))
  }
  t.throws(() => MemoryMappingArena.reserve(PAGE_SIZE, { align: '2M' as never }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => MemoryMappingArena.reserve(PAGE_SIZE, { aling: HUGE } as never), { code: 'ERR_INVALID_ARG_VALUE' })
})

test('GuestMemory { align }: guest address g lives at an aligned host address', (t) => {
  using guest = new GuestMemory([{ guestAddress: HUGE, size: HUGE, backing: 'anonymous' }], { align: HUGE })
  const [r] = guest.regions()
  t.is(r.userspaceAddress % BigInt(HUGE), 0n)
  t.throws(() => new GuestMemory([{ guestAddress: 0, size: PAGE_SIZE, backing: 'anonymous' }], { align: 12345 }), {
    code: 'ERR_OUT_OF_RANGE',
  })
})

test('SharedMemory hugetlb: the option takes true, "2M" or "1G"; sizes must be whole huge pages', (t) => {
  t.throws(() => SharedMemory.create('h', HUGE, { hugetlb: '4K' as never }), { code: 'ERR_INVALID_ARG_VALUE' })
  t.throws(() => SharedMemory.create('h', HUGE, { hugetlb: 2 as never }), { code: 'ERR_INVALID_ARG_TYPE' })
  // Refused before any huge page is asked for, with or without a pool.
  t.throws(() => SharedMemory.create('h', PAGE_SIZE, { hugetlb: '2M' }), {
    code: 'ERR_MMAP_UNALIGNED',
    message: /huge page size \(2097152\)/,
  })
  t.throws(() => SharedMemory.create('h', HUGE + PAGE_SIZE, { hugetlb: true }), { code: 'ERR_MMAP_UNALIGNED' })
  if (pool.free === 0) {
    // An empty pool is an error at creation (pages are allocated up front), never a SIGBUS later.
    const err = t.throws(() => SharedMemory.create('h', HUGE, { hugetlb: '2M' })) as NodeJS.ErrnoException | undefined
    t.true(err?.code === 'ENOSPC' || err?.code === 'ENOMEM', String(err?.code))
  }
})

withHugePages(`a 2 MiB huge-page memfd overlays only at whole huge pages, and works there${skipNote}`, (t) => {
  using ram = SharedMemory.create('huge-ram', 2 * HUGE, { hugetlb: '2M' })
  using arena = MemoryMappingArena.reserve(8 * HUGE, { align: HUGE })
  t.throws(() => arena.addFdMapping(PAGE_SIZE, HUGE, ram.fd, 0, RW), { code: 'ERR_MMAP_UNALIGNED', message: /offset/ })
  t.throws(() => arena.addFdMapping(HUGE, PAGE_SIZE, ram.fd, 0, RW), { code: 'ERR_MMAP_UNALIGNED', message: /size/ })
  t.throws(() => arena.addFdMapping(HUGE, HUGE, ram.fd, PAGE_SIZE, RW), { code: 'ERR_MMAP_UNALIGNED', message: /fdOffset/ })
  t.throws(() => MemoryMapping.fromFd(ram.fd, PAGE_SIZE), { code: 'ERR_MMAP_UNALIGNED' })
  t.deepEqual(arena.mappings(), [], 'nothing was mapped by a refused overlay')
  arena.addFdMapping(HUGE, 2 * HUGE, ram.fd, 0, RW)
  arena.writeU64(HUGE + 8, 42n)
  using second = MemoryMapping.fromFd(ram.fd, 2 * HUGE)
  t.is(second.readU64(8), 42n)
  using guest = new GuestMemory([{ guestAddress: 0, size: 2 * HUGE, backing: ram }], { align: HUGE })
  t.is(guest.readU64(8), 42n)
  arena.removeMapping(HUGE, 2 * HUGE)
})
