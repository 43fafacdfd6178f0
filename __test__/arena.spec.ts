import test from 'ava'
import { spawnSync } from 'node:child_process'
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { MemoryMappingArena, PAGE_SIZE, Protection, SharedMemory, type MappingInfo, type ProtectionFlags } from 'mapped-region'
import { throwsErrno, mapsOverlapping, tempDir, tempFile, runChild } from './helpers.js'
import { viewTest } from './view-test.js'

const P = PAGE_SIZE
const RW = Protection.READ_WRITE

function layout(a: MemoryMappingArena): Array<[number, number, string, number | undefined, number | undefined, number]> {
  return a
    .mappings()
    .map((m: MappingInfo) => [m.offset / P, m.size / P, m.kind, m.fd, m.fdOffset === undefined ? undefined : m.fdOffset / P, m.protection])
}

test('reserve: PROT_NONE, rounded up to pages, constructor and factory agree', (t) => {
  using a = MemoryMappingArena.reserve(P + 1)
  t.is(a.size, 2 * P)
  t.deepEqual(a.mappings(), [])
  const lines = mapsOverlapping(a.address, a.size)
  t.true(lines.length >= 1)
  for (const line of lines) t.regex(line, / ---p /)
  using b = new MemoryMappingArena(P)
  t.is(b.size, P)
  t.throws(() => a.read(0, 1), { code: 'ERR_MMAP_ACCESS' })
})

test('reserve(1 TiB) costs address space only', (t) => {
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1])
  const before = rss()
  using a = MemoryMappingArena.reserve(2 ** 40)
  t.is(a.size, 2 ** 40)
  t.true(rss() - before < 1024, 'RSS grew by less than 1 MiB')
})

test('fd overlays that overlap front, back and spanning split the layout', (t) => {
  using shm = SharedMemory.create('ram', 8 * P)
  using a = MemoryMappingArena.reserve(16 * P)
  const fd = shm.fd
  a.addFdMapping(2 * P, 4 * P, fd, 0, RW)
  t.deepEqual(layout(a), [[2, 4, 'fd', fd, 0, RW]])
  a.addAnonymous(1 * P, 2 * P, RW) // front overlap
  a.addFdMapping(5 * P, 2 * P, fd, 6 * P, Protection.READ) // back overlap
  t.deepEqual(layout(a), [
    [1, 2, 'anonymous', undefined, undefined, RW],
    [3, 2, 'fd', fd, 1, RW],
    [5, 2, 'fd', fd, 6, Protection.READ],
  ])
  a.addFdMapping(0, 8 * P, fd, 0, RW) // spanning
  t.deepEqual(layout(a), [[0, 8, 'fd', fd, 0, RW]])
  // The kernel agrees: the range is one shared mapping.
  const lines = mapsOverlapping(a.address, 8 * P)
  t.is(lines.length, 1)
  t.regex(lines[0], / rw-s /)
})

test('neighbouring overlays with contiguous fd offsets are one entry; others are not', (t) => {
  using shm = SharedMemory.create('ram', 8 * P)
  using a = MemoryMappingArena.reserve(16 * P)
  a.addFdMapping(0, 2 * P, shm.fd, 0, RW)
  a.addFdMapping(2 * P, 2 * P, shm.fd, 2 * P, RW)
  t.deepEqual(layout(a), [[0, 4, 'fd', shm.fd, 0, RW]])
  a.addFdMapping(4 * P, P, shm.fd, 0, RW) // not contiguous in the file
  a.addFdMapping(5 * P, P, shm.fd, P, Protection.READ) // other protection
  a.addAnonymous(8 * P, P, RW)
  a.addAnonymous(9 * P, P, RW)
  t.deepEqual(layout(a), [
    [0, 4, 'fd', shm.fd, 0, RW],
    [4, 1, 'fd', shm.fd, 0, RW],
    [5, 1, 'fd', shm.fd, 1, Protection.READ],
    [8, 2, 'anonymous', undefined, undefined, RW],
  ])
})

test('partial remove splits; removing a hole succeeds; removed range refuses copies', (t) => {
  using shm = SharedMemory.create('ram', 4 * P)
  using a = MemoryMappingArena.reserve(8 * P)
  a.addFdMapping(0, 4 * P, shm.fd, 0, RW)
  a.write(P + 10, Buffer.from('in the hole'))
  a.removeMapping(P, P)
  t.deepEqual(layout(a), [
    [0, 1, 'fd', shm.fd, 0, RW],
    [2, 2, 'fd', shm.fd, 2, RW],
  ])
  t.throws(() => a.read(P + 10, 1), { code: 'ERR_MMAP_ACCESS' })
  t.throws(() => a.write(P - 1, Buffer.from('xx')), { code: 'ERR_MMAP_ACCESS' })
  t.throws(() => a.read(P - 2, 4), { code: 'ERR_MMAP_ACCESS' })
  a.removeMapping(P, P)
  a.removeMapping(6 * P, 2 * P)
  t.is(a.mappings().length, 2)
  // The hole is still reserved: PROT_NONE, not unmapped.
  const hole = mapsOverlapping(a.address + BigInt(P), P)
  t.is(hole.length, 1)
  t.regex(hole[0], / ---p /)
  // The memfd still has the data.
  using b = MemoryMappingArena.reserve(P * 4)
  b.addFdMapping(0, 2 * P, shm.fd, 0, Protection.READ)
  t.is(b.read(P + 10, 11).toString(), 'in the hole')
  t.throws(() => b.write(0, Buffer.from('x')), { code: 'ERR_MMAP_ACCESS' })
})

test('anonymous overlays: private, zero-filled, and replace fd pages', (t) => {
  using a = MemoryMappingArena.reserve(4 * P)
  a.addAnonymous(0, 2 * P, RW)
  a.write(0, Buffer.from('private'))
  t.is(a.read(0, 7).toString(), 'private')
  a.addAnonymous(0, P, Protection.READ)
  t.deepEqual(a.read(0, 7), Buffer.alloc(7))
  t.throws(() => a.write(0, Buffer.from('x')), { code: 'ERR_MMAP_ACCESS' })
  t.deepEqual(layout(a), [
    [0, 1, 'anonymous', undefined, undefined, Protection.READ],
    [1, 1, 'anonymous', undefined, undefined, RW],
  ])
  // Reads across two pieces with enough protection work.
  t.deepEqual(a.read(P - 2, 4), Buffer.alloc(4))
})

test('unaligned size is rounded to whole pages in the layout', (t) => {
  using shm = SharedMemory.create('ram', 2 * P)
  using a = MemoryMappingArena.reserve(4 * P)
  a.addFdMapping(0, P + 1, shm.fd, 0, RW)
  t.deepEqual(layout(a), [[0, 2, 'fd', shm.fd, 0, RW]])
  a.removeMapping(P, 1)
  t.deepEqual(layout(a), [[0, 1, 'fd', shm.fd, 0, RW]])
})

test('argument errors: alignment, zero size, bounds, overflow, EOF', (t) => {
  using shm = SharedMemory.create('ram', 2 * P)
  using a = MemoryMappingArena.reserve(4 * P)
  t.throws(() => a.addFdMapping(1, P, shm.fd, 0, RW), { code: 'ERR_MMAP_UNALIGNED', instanceOf: RangeError })
  t.throws(() => a.addFdMapping(0, P, shm.fd, 1, RW), { code: 'ERR_MMAP_UNALIGNED' })
  t.throws(() => a.addFdMapping(0, P, shm.fd, 1n, RW), { code: 'ERR_MMAP_UNALIGNED' })
  t.throws(() => a.addAnonymous(P / 2, P, RW), { code: 'ERR_MMAP_UNALIGNED' })
  t.throws(() => a.removeMapping(3, P), { code: 'ERR_MMAP_UNALIGNED' })
  t.throws(() => a.addFdMapping(0, 0, shm.fd, 0, RW), { code: 'ERR_OUT_OF_RANGE', instanceOf: RangeError })
  t.throws(() => a.addAnonymous(0, 0, RW), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => a.removeMapping(0, 0), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => a.addAnonymous(3 * P, 2 * P, RW), { code: 'ERR_MMAP_OUT_OF_BOUNDS', instanceOf: RangeError })
  t.throws(() => a.removeMapping(4 * P, P), { code: 'ERR_MMAP_OUT_OF_BOUNDS' })
  t.throws(() => a.removeMapping(P, Number.MAX_SAFE_INTEGER), { code: 'ERR_MMAP_OUT_OF_BOUNDS' })
  t.throws(() => a.read(Number.MAX_SAFE_INTEGER, 2), { code: 'ERR_MMAP_OUT_OF_BOUNDS' })
  t.throws(() => a.msync(4 * P, 1), { code: 'ERR_MMAP_OUT_OF_BOUNDS' })
  t.throws(() => a.madvise(0, 4 * P + 1, 'willneed'), { code: 'ERR_MMAP_OUT_OF_BOUNDS' })
  t.throws(() => a.addFdMapping(0, 3 * P, shm.fd, 0, RW), { code: 'ERR_MMAP_BEYOND_EOF', instanceOf: RangeError })
  t.throws(() => a.addFdMapping(0, P, shm.fd, 2 * P, RW), { code: 'ERR_MMAP_BEYOND_EOF' })
  t.throws(() => a.addFdMapping(0, P, shm.fd, 2n ** 63n, RW), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => a.addFdMapping(0, P, shm.fd, -4096n, RW), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => a.addAnonymous(0, P, 8 as ProtectionFlags), { code: 'ERR_OUT_OF_RANGE' })
  t.deepEqual(a.mappings(), [])
})

test('failed overlays leave the range as it was: closed fd, read-only fd', (t) => {
  const { dir, done } = tempDir()
  t.teardown(done)
  const path = join(dir, 'ro')
  writeFileSync(path, Buffer.alloc(2 * P))
  using a = MemoryMappingArena.reserve(4 * P)
  a.addAnonymous(0, 2 * P, RW)
  a.write(0, Buffer.from('keep me'))
  const before = a.mappings()
  const closed = openSync(path, 'r')
  closeSync(closed)
  throwsErrno(t, () => a.addFdMapping(0, P, closed, 0, RW), 'EBADF')
  const ro = openSync(path, 'r')
  t.teardown(() => closeSync(ro))
  throwsErrno(t, () => a.addFdMapping(0, 2 * P, ro, 0, RW), 'EACCES', 'mmap')
  t.deepEqual(a.mappings(), before)
  t.is(a.read(0, 7).toString(), 'keep me')
  // Nothing inside the arena was left unmapped.
  const lines = mapsOverlapping(a.address, a.size)
  let cursor = a.address
  for (const line of lines) {
    const [start, end] = line
      .split(' ')[0]
      .split('-')
      .map((h) => BigInt(`0x${h}`))
    t.true(start <= cursor, `no hole at ${cursor.toString(16)}`)
    cursor = end
  }
  t.true(cursor >= a.address + BigInt(a.size))
})

test('a BigInt fdOffset beyond 2^53 reaches the kernel (EOF check first for regular files)', (t) => {
  using a = MemoryMappingArena.reserve(P)
  using shm = SharedMemory.create('ram', P)
  t.throws(() => a.addFdMapping(0, P, shm.fd, 2n ** 60n, RW), { code: 'ERR_MMAP_BEYOND_EOF' })
  const zero = openSync('/dev/zero', 'r+')
  t.teardown(() => closeSync(zero))
  a.addFdMapping(0, P, zero, 2n ** 60n, RW)
  t.is(a.mappings()[0].fdOffset, 2 ** 60)
  a.addFdMapping(0, P, zero, 8192n, RW)
  t.is(a.mappings()[0].fdOffset, 8192)
})

test('madvise remove zeroes a memfd page; msync works over holes and overlays', (t) => {
  using shm = SharedMemory.create('ram', 2 * P)
  using a = MemoryMappingArena.reserve(4 * P)
  a.addFdMapping(0, 2 * P, shm.fd, 0, RW)
  a.write(0, Buffer.from('balloon'))
  a.write(P, Buffer.from('stays'))
  a.msync(0, a.size)
  a.madvise(0, P, 'remove')
  t.deepEqual(a.read(0, 7), Buffer.alloc(7))
  t.is(a.read(P, 5).toString(), 'stays')
  using other = MemoryMappingArena.reserve(P)
  other.addFdMapping(0, P, shm.fd, 0, Protection.READ)
  t.deepEqual(other.read(0, 7), Buffer.alloc(7))
})

test('a FIFO cannot be mapped: ENODEV, the layout is unchanged', (t) => {
  const { dir, done } = tempDir()
  t.teardown(done)
  const fifo = join(dir, 'fifo')
  t.is(spawnSync('mkfifo', [fifo]).status, 0)
  const fd = openSync(fifo, 'r+') // O_RDWR on a FIFO does not block on Linux
  t.teardown(() => closeSync(fd))
  using a = MemoryMappingArena.reserve(4 * P)
  a.addAnonymous(0, P, RW)
  a.write(0, Buffer.from('kept'))
  throwsErrno(t, () => a.addFdMapping(0, P, fd, 0, Protection.READ), 'ENODEV', 'mmap')
  t.deepEqual(layout(a), [[0, 1, 'anonymous', undefined, undefined, RW]])
  t.is(a.read(0, 4).toString(), 'kept')
})

test('a socket overlay that destroys the range leaves a reserved hole that matches the layout', (t) => {
  // The kernel fails a socket mmap only after replacing the old pages; the arena
  // re-reserves what was lost and records it as a hole.
  const r = runChild(`
    const a = mr.MemoryMappingArena.reserve(4 * mr.PAGE_SIZE)
    a.addAnonymous(0, 2 * mr.PAGE_SIZE, mr.Protection.READ_WRITE)
    // stdin of a spawnSync child is a socket (libuv socketpair).
    try { a.addFdMapping(0, mr.PAGE_SIZE, 0, 0, mr.Protection.READ) } catch (e) { console.log(e.code, e.syscall) }
    const start = a.address, end = start + BigInt(a.size)
    const lines = require('node:fs').readFileSync('/proc/self/maps', 'utf8').trim().split('\\n')
      .map((l) => l.split(' ')[0].split('-').map((h) => BigInt('0x' + h)))
      .filter(([s, e]) => s < end && e > start)
    let cursor = start
    for (const [s, e] of lines) { if (s > cursor) console.log('HOLE'); cursor = e }
    if (cursor < end) console.log('HOLE')
    console.log(JSON.stringify(a.mappings()))
  `)
  t.is(r.status, 0, r.stderr)
  const out = r.stdout.trim().split('\n')
  t.is(out[0], 'ENODEV mmap')
  t.false(out.includes('HOLE'), 'nothing inside the arena is unmapped')
  const entries = JSON.parse(out[out.length - 1]) as MappingInfo[]
  // Whatever survived is still listed; the first page is not.
  t.true(entries.every((m) => m.offset >= P && m.kind === 'anonymous'))
})

viewTest('protect: access changes in place, views detach only when they would lose READ | WRITE', (t) => {
  using shm = SharedMemory.create('protect', 4 * P)
  using a = MemoryMappingArena.reserve(8 * P)
  a.addFdMapping(0, 4 * P, shm.fd, 0, Protection.READ_WRITE)
  a.write(P, Buffer.from('kept'))
  const keep = a.view(3 * P, 16)
  const lose = a.view(P, 16)
  a.protect(0, 4 * P, Protection.of(Protection.READ_WRITE, Protection.EXEC))
  t.is(keep.length, 16, 'still READ | WRITE: the view stays')
  a.protect(P, 2 * P, Protection.READ)
  t.is(lose.length, 0, 'read-only: the view over it is detached')
  t.is(keep.length, 16)
  t.is(a.read(P, 4).toString(), 'kept')
  t.throws(() => a.write(P, Buffer.from('x')), { code: 'ERR_MMAP_ACCESS' })
  t.throws(() => a.view(P, 1), { code: 'ERR_MMAP_ACCESS' })
  t.deepEqual(
    a.mappings().map((m) => [m.offset / P, m.size / P, m.protection]),
    [
      [0, 1, Protection.READ_WRITE | Protection.EXEC],
      [1, 2, Protection.READ],
      [3, 1, Protection.READ_WRITE | Protection.EXEC],
    ],
  )
  t.throws(() => a.protect(2 * P, 4 * P, Protection.READ), { code: 'ERR_MMAP_ACCESS' }, 'a hole in the range')
  t.throws(() => a.protect(1, P, Protection.READ), { code: 'ERR_MMAP_UNALIGNED' })
  t.throws(() => a.protect(0, 0, Protection.READ), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => a.protect(0, P, 8 as ProtectionFlags), { code: 'ERR_OUT_OF_RANGE' })
  a.protect(0, 4 * P, Protection.READ_WRITE)
  a.write(P, Buffer.from('more'))
  t.is(shm.size, 4 * P)
  t.deepEqual(
    a.mappings().map((m) => [m.offset / P, m.size / P, m.protection]),
    [[0, 4, Protection.READ_WRITE]],
  )
  a.close()
  t.throws(() => a.protect(0, P, Protection.READ), { code: 'ERR_MMAP_CLOSED' })
})

test('protect: refused while an asynchronous operation uses the range; EACCES for WRITE on a read-only fd', async (t) => {
  using shm = SharedMemory.create('protect-busy', 4 * P)
  using a = MemoryMappingArena.reserve(4 * P)
  a.addFdMapping(0, 4 * P, shm.fd, 0, Protection.READ_WRITE)
  const pending = a.msyncAsync(0, 4 * P)
  t.throws(() => a.protect(0, P, Protection.READ), { code: 'ERR_MMAP_BUSY' })
  await pending
  a.protect(0, P, Protection.READ)
  const { fd } = tempFile(t, Buffer.alloc(P, 1), 'r')
  a.addFdMapping(2 * P, P, fd, 0, Protection.READ)
  const before = a.mappings()
  const err = t.throws(() => a.protect(2 * P, P, Protection.READ_WRITE))
  t.is((err as { code?: string }).code, 'EACCES')
  t.deepEqual(a.mappings(), before, 'a refused protect changes nothing')
})
