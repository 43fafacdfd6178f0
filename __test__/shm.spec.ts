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
