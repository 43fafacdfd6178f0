import test from 'ava'
import { ftruncateSync, readlinkSync } from 'node:fs'
import { MemoryMapping, PAGE_SIZE, Seal, SharedMemory, type SealFlags } from 'mapped-region'
import { runChild, throwsErrno } from './helpers.js'

test('create: a sized memfd, close-on-exec, sealed against shrinking', (t) => {
  using shm = SharedMemory.create('guest-ram', 3 * PAGE_SIZE)
  t.is(shm.size, 3 * PAGE_SIZE)
  t.true(Number.isInteger(shm.fd) && shm.fd > 2)
  t.regex(readlinkSync(`/proc/self/fd/${shm.fd}`), /^\/memfd:guest-ram/)
  t.is(shm.seals & Seal.SHRINK, Seal.SHRINK)
  throwsErrno(t, () => ftruncateSync(shm.fd, 0), 'EPERM')
  // Growing is still allowed.
  ftruncateSync(shm.fd, 4 * PAGE_SIZE)
  const flags = runChild(`
    const shm = mr.SharedMemory.create('cloexec', 4096)
    const info = require('node:fs').readFileSync('/proc/self/fdinfo/' + shm.fd, 'utf8')
    console.log(/flags:\\s+(\\d+)/.exec(info)[1])
  `)
  t.is(flags.status, 0, flags.stderr)
  // O_CLOEXEC is 02000000 (octal).
  t.true((parseInt(flags.stdout.trim(), 8) & 0o2000000) !== 0)
})

test('seal: false leaves it shrinkable; addSeals adds seals', (t) => {
  using shm = SharedMemory.create('open', PAGE_SIZE, { seal: false })
  t.is(shm.seals & Seal.SHRINK, 0)
  shm.addSeals(Seal.of(Seal.GROW, Seal.SHRINK))
  t.is(shm.seals & (Seal.GROW | Seal.SHRINK), Seal.GROW | Seal.SHRINK)
  shm.addSeals(Seal.SEAL)
  throwsErrno(t, () => shm.addSeals(Seal.WRITE), 'EPERM', 'fcntl')
  t.throws(() => shm.addSeals(64 as SealFlags), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => shm.addSeals('2' as unknown as SealFlags), { code: 'ERR_INVALID_ARG_TYPE' })
})

test('two mappings of one SharedMemory see each other, also after close()', (t) => {
  const shm = SharedMemory.create('shared', PAGE_SIZE)
  using a = MemoryMapping.fromFd(shm.fd, PAGE_SIZE)
  using b = MemoryMapping.fromFd(shm.fd, PAGE_SIZE)
  shm.close()
  t.true(shm.closed)
  a.write(0, Buffer.from('hello'))
  t.is(b.read(0, 5).toString(), 'hello')
  t.throws(() => shm.fd, { code: 'ERR_MMAP_CLOSED' })
  t.throws(() => shm.seals, { code: 'ERR_MMAP_CLOSED' })
  t.throws(() => shm.addSeals(Seal.GROW), { code: 'ERR_MMAP_CLOSED' })
  shm.close()
})

test('Symbol.dispose closes the memfd', (t) => {
  let fd = -1
  {
    using shm = SharedMemory.create('scoped', PAGE_SIZE)
    fd = shm.fd
    t.regex(readlinkSync(`/proc/self/fd/${fd}`), /memfd:scoped/)
  }
  t.throws(() => readlinkSync(`/proc/self/fd/${fd}`), { code: 'ENOENT' })
})

test('bad arguments', (t) => {
  t.throws(() => SharedMemory.create('x', 0), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => SharedMemory.create('x', -1), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => SharedMemory.create('x', 1.5), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => SharedMemory.create('x', NaN), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => SharedMemory.create('x', '1' as unknown as number), { code: 'ERR_INVALID_ARG_TYPE', instanceOf: TypeError })
  t.throws(() => SharedMemory.create(1 as unknown as string, 1), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => SharedMemory.create('a\0b', 1), { code: 'ERR_INVALID_ARG_VALUE' })
  t.throws(() => SharedMemory.create('n'.repeat(250), 1), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => SharedMemory.create('x', 1, { seal: 'yes' as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => SharedMemory.create('x', 1, null as unknown as undefined), { code: 'ERR_INVALID_ARG_TYPE' })
  // A memfd larger than any tmpfs is fine until touched: the size is sparse.
  using big = SharedMemory.create('sparse', 2 ** 40)
  t.is(big.size, 2 ** 40)
})

test('a SharedMemory as an overlay source: its own descriptor, listed by its fd, checked against its size', async (t) => {
  const { MemoryMappingArena, Protection } = await import('mapped-region')
  using shm = SharedMemory.create('source', 4 * PAGE_SIZE)
  using arena = MemoryMappingArena.reserve(8 * PAGE_SIZE)
  arena.addFdMapping(0, 2 * PAGE_SIZE, shm, PAGE_SIZE, Protection.READ_WRITE)
  using m = MemoryMapping.fromFd(shm.fd, 4 * PAGE_SIZE)
  arena.write(0, Buffer.from('via source'))
  t.is(m.read(PAGE_SIZE, 10).toString(), 'via source')
  t.deepEqual(
    arena.mappings().map((e) => [e.offset, e.size, e.kind, e.fd, e.fdOffset]),
    [[0, 2 * PAGE_SIZE, 'fd', shm.fd, PAGE_SIZE]],
  )
  // Past the size it was sealed at: the kernel is asked (fstat), and it is past the end.
  t.throws(() => arena.addFdMapping(4 * PAGE_SIZE, 2 * PAGE_SIZE, shm, 3 * PAGE_SIZE, Protection.READ_WRITE), {
    code: 'ERR_MMAP_BEYOND_EOF',
  })
  // Grown since: the fstat path sees the new size and maps it.
  ftruncateSync(shm.fd, 6 * PAGE_SIZE)
  arena.addFdMapping(4 * PAGE_SIZE, 2 * PAGE_SIZE, shm, 4 * PAGE_SIZE, Protection.READ_WRITE)
  t.is(arena.read(4 * PAGE_SIZE, 1)[0], 0)
  t.throws(() => arena.addFdMapping(0, PAGE_SIZE, shm, 1, Protection.READ_WRITE), { code: 'ERR_MMAP_UNALIGNED' })
  shm.close()
  t.throws(() => arena.addFdMapping(0, PAGE_SIZE, shm, 0, Protection.READ_WRITE), { code: 'ERR_MMAP_CLOSED' })
  // An object that only borrows the prototype is not a SharedMemory.
  const fake = Object.create(SharedMemory.prototype) as SharedMemory
  t.throws(() => arena.addFdMapping(0, PAGE_SIZE, fake, 0, Protection.READ_WRITE), { code: 'ERR_INVALID_ARG_TYPE' })
  // The mapping outlives the SharedMemory.
  t.is(arena.read(0, 10).toString(), 'via source')
})

test('a SharedMemory source that is not sealed is checked by the kernel on every overlay', async (t) => {
  const { MemoryMappingArena, Protection } = await import('mapped-region')
  using shm = SharedMemory.create('unsealed-source', 4 * PAGE_SIZE, { seal: false })
  using arena = MemoryMappingArena.reserve(4 * PAGE_SIZE)
  arena.addFdMapping(0, 4 * PAGE_SIZE, shm, 0, Protection.READ_WRITE)
  arena.removeMapping(0, 4 * PAGE_SIZE)
  // Shrunk behind its back: the overlay is refused, as it is for a plain fd.
  ftruncateSync(shm.fd, PAGE_SIZE)
  t.throws(() => arena.addFdMapping(0, 2 * PAGE_SIZE, shm, 0, Protection.READ_WRITE), { code: 'ERR_MMAP_BEYOND_EOF' })
  // Sealed now at one page: only that page is known without asking.
  shm.addSeals(Seal.SHRINK)
  arena.addFdMapping(0, PAGE_SIZE, shm, 0, Protection.READ_WRITE)
  t.throws(() => arena.addFdMapping(PAGE_SIZE, PAGE_SIZE, shm, PAGE_SIZE, Protection.READ_WRITE), { code: 'ERR_MMAP_BEYOND_EOF' })
  t.is(arena.mappings().length, 1)
})
