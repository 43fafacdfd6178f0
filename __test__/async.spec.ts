import test from 'ava'
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { MemoryMapping, MemoryMappingArena, PAGE_SIZE, Protection, SharedMemory } from 'mapped-region'
import { mapsOverlapping, tempDir, runChild } from './helpers.js'
import { viewTest } from './view-test.js'

const P = PAGE_SIZE
const RW = Protection.READ_WRITE
const MiB = 1 << 20

function rssKiB(field: 'VmRSS' | 'RssShmem' | 'RssAnon'): number {
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync('/proc/self/status', 'utf8'))?.[1])
}

viewTest('many concurrent msyncAsync calls while the main thread writes through views: every synced byte is on disk', async (t) => {
  const { dir, done } = tempDir()
  t.teardown(done)
  const path = join(dir, 'disk.img')
  const pages = 64
  writeFileSync(path, Buffer.alloc(pages * P))
  const fd = openSync(path, 'r+')
  t.teardown(() => closeSync(fd))
  using a = MemoryMappingArena.reserve(pages * P)
  a.addFdMapping(0, pages * P, fd, 0, RW)
  const syncs: Array<Promise<void>> = []
  for (let round = 0; round < 4; round++) {
    for (let i = 0; i < pages; i++) {
      const v = a.view(i * P, P)
      v.fill(round * pages + i)
      v.write(`page ${i} round ${round}`, 8)
      syncs.push(a.msyncAsync(i * P, P))
    }
  }
  t.true(a.pendingOperations > 0)
  await Promise.all(syncs)
  t.is(a.pendingOperations, 0)
  const disk = readFileSync(path)
  for (let i = 0; i < pages; i++) {
    t.is(disk[i * P], (3 * pages + i) & 0xff)
    t.is(disk.subarray(i * P + 8, i * P + 8 + `page ${i} round 3`.length).toString(), `page ${i} round 3`)
  }
})

// Serial: concurrent tests of this file would block the event loop themselves.
test.serial('populateAsync makes pages resident while the event loop keeps ticking', async (t) => {
  using shm = SharedMemory.create('prefault', 512 * MiB)
  using a = MemoryMappingArena.reserve(shm.size)
  a.addFdMapping(0, shm.size, shm.fd, 0, RW)
  const before = rssKiB('RssShmem')
  let ticks = 0
  const timer = setInterval(() => ticks++, 1)
  const started = process.hrtime.bigint()
  await a.populateAsync(0, shm.size, { write: true })
  const ms = Number(process.hrtime.bigint() - started) / 1e6
  clearInterval(timer)
  const grown = (rssKiB('RssShmem') - before) * 1024
  t.true(grown >= 0.95 * shm.size, `RssShmem grew by ${grown} bytes`)
  t.log(`populated ${shm.size / MiB} MiB in ${ms.toFixed(1)} ms; the timer fired ${ticks} times meanwhile`)
  t.true(ticks >= 10, 'a 1 ms timer kept firing while the populate ran off the event loop')
  using m = MemoryMapping.anonymous(64 * MiB)
  const anonBefore = rssKiB('RssAnon')
  await m.populateAsync(0, m.size, { write: true })
  t.true((rssKiB('RssAnon') - anonBefore) * 1024 >= 0.95 * m.size)
  await m.populateAsync(0, m.size) // read populate of already-present pages
})

viewTest('changes over a pending range are refused with ERR_MMAP_BUSY; other ranges are free', async (t) => {
  using shm = SharedMemory.create('busy', 256 * MiB)
  using a = MemoryMappingArena.reserve(shm.size + 4 * P)
  a.addFdMapping(0, shm.size, shm.fd, 0, RW)
  a.addAnonymous(shm.size, P, RW)
  const pending = a.populateAsync(0, shm.size, { write: true })
  const view = a.view(0, P)
  t.throws(() => a.removeMapping(0, P), { code: 'ERR_MMAP_BUSY', instanceOf: Error })
  t.throws(() => a.addAnonymous(shm.size - P, 2 * P, RW), { code: 'ERR_MMAP_BUSY' })
  t.throws(() => a.addFdMapping(P, P, shm.fd, 0, RW), { code: 'ERR_MMAP_BUSY' })
  t.is(view.length, P, 'a refused change detaches nothing')
  // Outside the pending range everything works.
  a.removeMapping(shm.size, P)
  a.addAnonymous(shm.size + P, P, RW)
  a.write(10, Buffer.from('reads and writes are fine'))
  await pending
  a.removeMapping(0, P)
  t.is(view.length, 0)
})

viewTest('close() during pending work returns at once and unmaps when the work settles', async (t) => {
  using shm = SharedMemory.create('close', 256 * MiB)
  const a = MemoryMappingArena.reserve(shm.size)
  a.addFdMapping(0, shm.size, shm.fd, 0, RW)
  const address = a.address
  const view = a.view(0, P)
  const work = a.populateAsync(0, shm.size, { write: true })
  a.close()
  t.true(a.closed)
  t.is(view.length, 0, 'views are detached at close()')
  t.throws(() => a.read(0, 1), { code: 'ERR_MMAP_CLOSED' })
  await t.throwsAsync(a.msyncAsync(0, P), { code: 'ERR_MMAP_CLOSED' })
  t.true(a.pendingOperations > 0)
  t.true(mapsOverlapping(address, shm.size).length > 0, 'still mapped while the populate runs')
  await work
  t.is(a.pendingOperations, 0)
  t.is(mapsOverlapping(address, shm.size).length, 0, 'unmapped once it settled')
})

test('rejections carry the same error shape as the synchronous calls', async (t) => {
  using m = MemoryMapping.anonymous(4 * P)
  await t.throwsAsync(m.msyncAsync(1, P), { code: 'ERR_MMAP_UNALIGNED', instanceOf: RangeError })
  await t.throwsAsync(m.msyncAsync(0, 5 * P), { code: 'ERR_MMAP_OUT_OF_BOUNDS' })
  await t.throwsAsync(m.populateAsync(0, NaN), { code: 'ERR_OUT_OF_RANGE' })
  await t.throwsAsync(m.populateAsync('0' as unknown as number, P), { code: 'ERR_INVALID_ARG_TYPE', instanceOf: TypeError })
  await t.throwsAsync(m.populateAsync(0, P, { write: 1 as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' })
  using none = MemoryMapping.anonymous(P, { protection: Protection.NONE })
  const err = (await t.throwsAsync(none.populateAsync(0, P))) as NodeJS.ErrnoException
  t.true(err instanceof Error)
  t.is(err.syscall, 'madvise')
  t.true(typeof err.errno === 'number' && err.errno < 0)
  t.regex(err.code ?? '', /^E[A-Z]+$/)
  let sync: NodeJS.ErrnoException | undefined
  try {
    none.madvise(0, P, 'populate_read')
  } catch (e) {
    sync = e as NodeJS.ErrnoException
  }
  t.is(sync?.code, err.code)
  t.is(sync?.errno, err.errno)
  t.is(sync?.syscall, err.syscall)
  await m.msyncAsync(0, 0)
})

test('garbage collection of a region with a pending operation does not unmap under it', (t) => {
  const r = runChild(`
    const shm = mr.SharedMemory.create('gc', 512 << 20)
    let work
    ;(() => {
      const a = mr.MemoryMappingArena.reserve(shm.size)
      a.addFdMapping(0, shm.size, shm.fd, 0, mr.Protection.READ_WRITE)
      work = a.populateAsync(0, shm.size, { write: true })
    })()
    for (let i = 0; i < 5; i++) global.gc()
    work.then(() => {
      const m = mr.MemoryMapping.fromFd(shm.fd, shm.size)
      console.log('settled', m.read(shm.size - 1, 1)[0])
    }, (e) => console.log('rejected', e.code))
  `)
  t.is(r.signal, null, r.stderr)
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout.trim(), 'settled 0')
})
