import test from 'ava'
import { closeSync, ftruncateSync, mkdirSync, openSync, readSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { GuestMemory, MemoryMapping, MemoryMappingArena, PAGE_SIZE, Protection, SharedMemory } from 'mapped-region'
import { tempDir } from './helpers.js'

const P = PAGE_SIZE
const RW = Protection.READ_WRITE

/** Bytes `i * 7 % 251`, so that a misplaced byte shows. */
function pattern(length: number): Buffer {
  const b = Buffer.alloc(length)
  for (let i = 0; i < length; i++) b[i] = (i * 7) % 251
  return b
}

test('loadFile reads a path or an fd at any byte offset; the result says how many bytes', (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const data = pattern(3 * P + 123)
  const path = join(tmp.dir, 'image.bin')
  writeFileSync(path, data)
  using m = MemoryMapping.anonymous(8 * P)
  // The whole file by default, from a path.
  t.is(m.loadFile(5, path), data.length)
  t.deepEqual(m.read(5, data.length), data)
  // A part of it, from an fd: its position is not used nor moved.
  const fd = openSync(path, 'r')
  t.teardown(() => closeSync(fd))
  t.is(m.loadFile(P, fd, { offset: 100, length: 50 }), 50)
  t.deepEqual(m.read(P, 50), data.subarray(100, 150))
  const probe = Buffer.alloc(4)
  t.is(readSync(fd, probe, 0, 4, null), 4, 'the fd still reads from its start')
  t.deepEqual(probe, data.subarray(0, 4))
  // A file that ends sooner loads fewer bytes; from past its end, none.
  t.is(m.loadFile(0, fd, { offset: data.length - 10, length: P }), 10)
  t.is(m.loadFile(0, fd, { offset: data.length + 1 }), 0)
  t.is(m.loadFile(0, fd, { offset: 2 ** 40, length: 8 }), 0)
})

test('loadFile across contiguous overlays; holes, read-only memory and the bounds are refused first', (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const path = join(tmp.dir, 'k')
  const data = pattern(4 * P)
  writeFileSync(path, data)
  using ram = SharedMemory.create('load', 2 * P)
  using arena = MemoryMappingArena.reserve(8 * P)
  arena.addAnonymous(0, 2 * P, RW)
  arena.addFdMapping(2 * P, 2 * P, ram.fd, 0, RW)
  arena.addAnonymous(5 * P, P, Protection.READ)
  t.is(arena.loadFile(P / 2, path, { length: 3 * P }), 3 * P)
  t.deepEqual(arena.read(P / 2, 3 * P), data.subarray(0, 3 * P))
  using whole = MemoryMapping.fromFd(ram.fd, ram.size)
  t.deepEqual(whole.read(0, P), data.subarray((3 * P) / 2, (5 * P) / 2), 'the memfd got its part')
  const before = arena.read(0, 4 * P)
  t.throws(() => arena.loadFile(3 * P, path, { length: 2 * P }), { code: 'ERR_MMAP_ACCESS' }, 'runs into the hole')
  t.throws(() => arena.loadFile(5 * P, path, { length: 1 }), { code: 'ERR_MMAP_ACCESS' }, 'read-only')
  t.throws(() => arena.loadFile(7 * P, path), { code: 'ERR_MMAP_OUT_OF_BOUNDS' }, 'the file is longer than the rest of the arena')
  t.deepEqual(arena.read(0, 4 * P), before, 'nothing was read by a refused load')
})

test('loadFile errors: argument types, unknown options, a bad fd, a directory, a device without a length', (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  using m = MemoryMapping.anonymous(2 * P)
  t.throws(() => m.loadFile(0, {} as never), { code: 'ERR_INVALID_ARG_TYPE' })
  t.like(
    t.throws(() => m.loadFile(0, 0x7fff_fff0), { code: 'EBADF' }),
    { syscall: 'fstat', errno: -9 },
  )
  t.like(
    t.throws(() => m.loadFile(0, 0x7fff_fff0, { length: 1 }), { code: 'EBADF' }),
    { syscall: 'pread' },
  )
  t.throws(() => m.loadFile(0, -1), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => m.loadFile(0, '/dev/zero', { lenght: 4 } as never), { code: 'ERR_INVALID_ARG_VALUE' })
  t.throws(() => m.loadFile(0, '/dev/zero', { offset: -1, length: 4 }), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => m.loadFile(0, join(tmp.dir, 'missing')), { code: 'ENOENT' })
  mkdirSync(join(tmp.dir, 'd'))
  t.throws(() => m.loadFile(0, join(tmp.dir, 'd')), { code: 'ERR_INVALID_ARG_VALUE', message: /length/ })
  t.like(
    t.throws(() => m.loadFile(0, join(tmp.dir, 'd'), { length: 1 }), { code: 'EISDIR' }),
    { syscall: 'pread' },
  )
  t.throws(() => m.loadFile(0, '/dev/zero'), { code: 'ERR_INVALID_ARG_VALUE', message: /length/ })
  m.write(0, Buffer.from('xxxx'))
  t.is(m.loadFile(0, '/dev/zero', { length: 4 }), 4)
  t.deepEqual(m.read(0, 4), Buffer.alloc(4))
})

test('a region page that cannot be written is EFAULT with bytesCopied, not a signal', (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const backing = join(tmp.dir, 'backing')
  writeFileSync(backing, Buffer.alloc(2 * P))
  const source = join(tmp.dir, 'source')
  writeFileSync(source, pattern(2 * P))
  const fd = openSync(backing, 'r+')
  t.teardown(() => closeSync(fd))
  using arena = MemoryMappingArena.reserve(2 * P)
  arena.addFdMapping(0, 2 * P, fd, 0, RW)
  ftruncateSync(fd, P)
  const err = t.throws(() => arena.loadFile(0, source), { code: 'EFAULT' })
  t.like(err, { syscall: 'pread', bytesCopied: P })
  t.deepEqual(arena.read(0, P), pattern(P), 'the page before the fault was loaded')
})

test('loadFileAsync loads on the thread pool, keeps its range busy and owns its fd', async (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const path = join(tmp.dir, 'initrd')
  const data = pattern(64 * P + 9)
  writeFileSync(path, data)
  using arena = MemoryMappingArena.reserve(128 * P)
  arena.addAnonymous(0, 128 * P, RW)
  const fd = openSync(path, 'r')
  const pending = arena.loadFileAsync(P, fd)
  closeSync(fd) // the load has its own duplicate
  t.is(arena.pendingOperations, 1)
  t.throws(() => arena.removeMapping(2 * P, P), { code: 'ERR_MMAP_BUSY' })
  arena.removeMapping(100 * P, P) // outside the range: free
  t.is(await pending, data.length)
  t.deepEqual(arena.read(P, data.length), data)
  t.is(arena.pendingOperations, 0)
  await t.throwsAsync(arena.loadFileAsync(99 * P, path, { length: 2 * P }), { code: 'ERR_MMAP_ACCESS' })
  await t.throwsAsync(arena.loadFileAsync(99 * P, path), { code: 'ERR_MMAP_OUT_OF_BOUNDS' })
  await t.throwsAsync(arena.loadFileAsync(0, 0x7fff_fff0, { length: 1 }), { code: 'EBADF' })
  // A close meanwhile defers the unmap until the load settled.
  const last = arena.loadFileAsync(0, path, { length: P })
  arena.close()
  t.is(await last, P)
})

test('GuestMemory.loadFile: across regions that follow each other, never into a hole', async (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const path = join(tmp.dir, 'bzImage')
  const data = pattern(3 * P + 1)
  writeFileSync(path, data)
  using ram = SharedMemory.create('guest-load', 2 * P)
  using guest = new GuestMemory([
    { guestAddress: 0, size: 2 * P, backing: 'anonymous' },
    { guestAddress: 2 * P, size: 2 * P, backing: ram },
    { guestAddress: 6 * P, size: 2 * P, backing: 'anonymous' },
    { guestAddress: 8 * P, size: 2 * P, backing: 'anonymous', protection: Protection.READ },
  ])
  t.is(guest.loadFile(P / 2, path), data.length)
  t.deepEqual(guest.read(P / 2, data.length), data)
  t.is(await guest.loadFileAsync(0x1000n, path, { offset: 1, length: 16 }), 16)
  t.deepEqual(guest.read(0x1000n, 16), data.subarray(1, 17))
  t.throws(() => guest.loadFile(3 * P, path), { code: 'ERR_GUEST_ADDRESS' }, 'runs past the region into the hole')
  t.throws(() => guest.loadFile(5 * P, path, { length: 1 }), { code: 'ERR_GUEST_ADDRESS' })
  await t.throwsAsync(guest.loadFileAsync(7 * P, path), { code: 'ERR_GUEST_ADDRESS' })
  t.throws(() => guest.loadFile(8 * P, path, { length: 1 }), { code: 'ERR_MMAP_ACCESS' }, 'a read-only region')
  t.is(guest.loadFile(7 * P, path, { length: P }), P, 'up to the end of a region')
})
