import test from 'ava'
import { closeSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { MemoryMapping, PAGE_SIZE, Protection, SharedMemory } from 'mapped-region'
import { throwsErrno, mapsOverlapping, tempDir, tempFile, runChild } from './helpers.js'
import { viewTest } from './view-test.js'

test('anonymous: zero-filled, readable and writable, size kept exact', (t) => {
  using m = MemoryMapping.anonymous(10_000)
  t.is(m.size, 10_000)
  t.is(m.protection, Protection.READ_WRITE)
  t.deepEqual(m.read(0, 16), Buffer.alloc(16))
  m.write(9_990, Buffer.from('0123456789'))
  t.is(m.read(9_990, 10).toString(), '0123456789')
  t.is(typeof m.address, 'bigint')
  t.true(m.address > 0n)
  t.is(m.address % BigInt(PAGE_SIZE), 0n)
})

test('anonymous: populate and shared options are accepted and mapped', (t) => {
  using m = MemoryMapping.anonymous(4 * PAGE_SIZE, { populate: true, shared: true })
  const lines = mapsOverlapping(m.address, m.size)
  t.is(lines.length, 1)
  t.regex(lines[0], / rw-s /)
  using p = MemoryMapping.anonymous(PAGE_SIZE)
  t.regex(mapsOverlapping(p.address, p.size)[0], / rw-p /)
})

test('write accepts any ArrayBufferView or ArrayBuffer', (t) => {
  using m = MemoryMapping.anonymous(PAGE_SIZE)
  m.write(0, new Uint32Array([0x04030201]))
  m.write(4, new Uint8Array([5, 6]).buffer)
  m.write(6, new DataView(new Uint8Array([9, 7, 8, 9]).buffer, 1, 2))
  t.deepEqual([...m.read(0, 8)], [1, 2, 3, 4, 5, 6, 7, 8])
  m.write(PAGE_SIZE, new Uint8Array(0))
  t.is(m.read(PAGE_SIZE, 0).length, 0)
})

test('readInto fills any ArrayBufferView or ArrayBuffer from any byte offset, and returns the count', (t) => {
  using m = MemoryMapping.anonymous(2 * PAGE_SIZE)
  const pattern = Buffer.from(Array.from({ length: 64 }, (_, i) => i + 1))
  m.write(PAGE_SIZE - 32, pattern) // across a page boundary
  const b = Buffer.alloc(64)
  t.is(m.readInto(PAGE_SIZE - 32, b), 64)
  t.deepEqual(b, pattern)
  const words = new Uint32Array(2)
  t.is(m.readInto(PAGE_SIZE - 32, words), 8)
  t.deepEqual([...new Uint8Array(words.buffer)], [1, 2, 3, 4, 5, 6, 7, 8])
  const ab = new ArrayBuffer(3)
  t.is(m.readInto(PAGE_SIZE - 29, ab), 3)
  t.deepEqual([...new Uint8Array(ab)], [4, 5, 6])
  // A DataView or subarray fills only its own window of the larger buffer.
  const big = Buffer.alloc(8, 0xee)
  t.is(m.readInto(PAGE_SIZE - 32, new DataView(big.buffer, big.byteOffset + 2, 3)), 3)
  t.is(m.readInto(PAGE_SIZE - 30, big.subarray(6)), 2)
  t.deepEqual([...big], [0xee, 0xee, 1, 2, 3, 0xee, 3, 4])
  // An empty target at the very end is a no-op.
  t.is(m.readInto(2 * PAGE_SIZE, new Uint8Array(0)), 0)
})

test('readInto refuses what read refuses, and leaves the target untouched when it does', (t) => {
  using m = MemoryMapping.anonymous(PAGE_SIZE)
  m.write(0, Buffer.from('data'))
  const target = Buffer.alloc(8, 7)
  t.throws(() => m.readInto(PAGE_SIZE - 4, target), { code: 'ERR_MMAP_OUT_OF_BOUNDS', instanceOf: RangeError })
  for (const value of ['text', 8, null, undefined, {}, [1, 2]]) {
    t.throws(() => m.readInto(0, value as Buffer), { code: 'ERR_INVALID_ARG_TYPE', instanceOf: TypeError })
  }
  using none = MemoryMapping.anonymous(PAGE_SIZE, { protection: Protection.NONE })
  t.throws(() => none.readInto(0, target), { code: 'ERR_MMAP_ACCESS' })
  t.deepEqual(target, Buffer.alloc(8, 7))
  m.close()
  t.throws(() => m.readInto(0, target), { code: 'ERR_MMAP_CLOSED' })
})

viewTest('readInto a view of the same region copies like memmove', (t) => {
  using m = MemoryMapping.anonymous(PAGE_SIZE)
  m.write(0, Buffer.from('abcdefgh'))
  const view = m.view(2, 8) // overlaps the source range [0, 8)
  t.is(m.readInto(0, view), 8)
  t.is(m.read(0, 10).toString('latin1'), 'ababcdefgh')
})

test('read-only mapping: read works, write is ERR_MMAP_ACCESS; PROT_NONE refuses both', (t) => {
  using ro = MemoryMapping.anonymous(PAGE_SIZE, { protection: Protection.READ })
  t.deepEqual(ro.read(0, 4), Buffer.alloc(4))
  t.throws(() => ro.write(0, Buffer.from('x')), { code: 'ERR_MMAP_ACCESS', instanceOf: Error })
  using none = MemoryMapping.anonymous(PAGE_SIZE, { protection: Protection.NONE })
  t.throws(() => none.read(0, 1), { code: 'ERR_MMAP_ACCESS' })
  t.throws(() => none.write(0, Buffer.from('x')), { code: 'ERR_MMAP_ACCESS' })
})

test('fromFile: maps the rest of the file read-only by default and closes its fd', (t) => {
  const { dir, done } = tempDir()
  t.teardown(done)
  const path = join(dir, 'rom.bin')
  writeFileSync(path, Buffer.from('firmware image'))
  const fdsBefore = readFds()
  using m = MemoryMapping.fromFile(path)
  t.is(m.size, 14)
  t.is(m.protection, Protection.READ)
  t.is(m.read(0, 14).toString(), 'firmware image')
  t.throws(() => m.write(0, Buffer.from('x')), { code: 'ERR_MMAP_ACCESS' })
  t.deepEqual(readFds(), fdsBefore)
  throwsErrno(t, () => MemoryMapping.fromFile(join(dir, 'missing')), 'ENOENT', 'open')
  t.throws(() => MemoryMapping.fromFile(path, { size: 2 * PAGE_SIZE }), { code: 'ERR_MMAP_BEYOND_EOF', instanceOf: RangeError })
  writeFileSync(join(dir, 'empty'), '')
  t.throws(() => MemoryMapping.fromFile(join(dir, 'empty')), { code: 'ERR_OUT_OF_RANGE' })
})

test('fromFile with WRITE + shared writes through to the file after msync', (t) => {
  const { dir, done } = tempDir()
  t.teardown(done)
  const path = join(dir, 'disk.img')
  writeFileSync(path, Buffer.alloc(2 * PAGE_SIZE))
  using m = MemoryMapping.fromFile(path, { protection: Protection.READ_WRITE, offset: PAGE_SIZE })
  t.is(m.size, PAGE_SIZE)
  m.write(100, Buffer.from('synced'))
  m.msync(0, m.size)
  t.is(
    readFileSync(path)
      .subarray(PAGE_SIZE + 100, PAGE_SIZE + 106)
      .toString(),
    'synced',
  )
})

test('fromFile private writable mapping does not change the file', (t) => {
  const { dir, done } = tempDir()
  t.teardown(done)
  const path = join(dir, 'cow.bin')
  writeFileSync(path, Buffer.from('original'))
  using m = MemoryMapping.fromFile(path, { protection: Protection.READ_WRITE, shared: false })
  m.write(0, Buffer.from('modified'))
  m.msync(0, m.size)
  t.is(m.read(0, 8).toString(), 'modified')
  t.is(readFileSync(path, 'utf8'), 'original')
})

test('fromFd: EOF check, opt-out, offset alignment, read-only fd mapped writable is EACCES', (t) => {
  const { fd: ro } = tempFile(t, Buffer.alloc(PAGE_SIZE, 7), 'r')
  t.throws(() => MemoryMapping.fromFd(ro, 2 * PAGE_SIZE, { protection: Protection.READ }), {
    code: 'ERR_MMAP_BEYOND_EOF',
    instanceOf: RangeError,
  })
  t.throws(() => MemoryMapping.fromFd(ro, PAGE_SIZE, { protection: Protection.READ, offset: PAGE_SIZE }), {
    code: 'ERR_MMAP_BEYOND_EOF',
  })
  using beyond = MemoryMapping.fromFd(ro, 2 * PAGE_SIZE, { protection: Protection.READ, checkEof: false })
  t.is(beyond.size, 2 * PAGE_SIZE)
  t.throws(() => MemoryMapping.fromFd(ro, PAGE_SIZE, { offset: 1 }), { code: 'ERR_MMAP_UNALIGNED' })
  throwsErrno(t, () => MemoryMapping.fromFd(ro, PAGE_SIZE), 'EACCES', 'mmap')
  using m = MemoryMapping.fromFd(ro, PAGE_SIZE, { protection: Protection.READ })
  t.deepEqual(m.read(0, 3), Buffer.from([7, 7, 7]))
})

test('fromFd: a closed fd is EBADF with errno and syscall', (t) => {
  const fd = openSync('/dev/null', 'r')
  closeSync(fd)
  const err = throwsErrno(t, () => MemoryMapping.fromFd(fd, PAGE_SIZE), 'EBADF')
  t.regex(err?.message ?? '', /^EBADF: bad file descriptor/)
})

test('fromFd: a pipe cannot be mapped (ENODEV)', (t) => {
  const r = runChild(`
    // stdin of a spawnSync child is a pipe.
    try { mr.MemoryMapping.fromFd(0, mr.PAGE_SIZE, { protection: mr.Protection.READ }) } catch (e) { console.log(e.code) }
  `)
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout.trim(), 'ENODEV')
})

test('two mappings of one SharedMemory see each other', (t) => {
  using shm = SharedMemory.create('two-views', 2 * PAGE_SIZE)
  using a = MemoryMapping.fromFd(shm.fd, shm.size)
  using b = MemoryMapping.fromFd(shm.fd, PAGE_SIZE, { offset: PAGE_SIZE })
  a.write(PAGE_SIZE + 5, Buffer.from('ping'))
  t.is(b.read(5, 4).toString(), 'ping')
  b.write(0, Buffer.from('pong'))
  t.is(a.read(PAGE_SIZE, 4).toString(), 'pong')
})

test('msync and madvise validate ranges; zero length is a no-op', (t) => {
  using m = MemoryMapping.anonymous(3 * PAGE_SIZE + 10)
  m.msync(0, 0)
  m.msync(PAGE_SIZE, 2 * PAGE_SIZE + 10)
  m.madvise(0, m.size, 'willneed')
  m.madvise(0, m.size, 3)
  t.throws(() => m.msync(PAGE_SIZE, 2 * PAGE_SIZE + 11), { code: 'ERR_MMAP_OUT_OF_BOUNDS', instanceOf: RangeError })
  t.throws(() => m.madvise(8, 1, 'normal'), { code: 'ERR_MMAP_UNALIGNED' })
  t.throws(() => m.madvise(0, 1, 100), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => m.madvise(0, 1, 'nonsense' as 'normal'), { code: 'ERR_INVALID_ARG_VALUE', instanceOf: TypeError })
  throwsErrno(t, () => m.madvise(0, PAGE_SIZE, 99), 'EINVAL', 'madvise')
})

test('madvise dontneed zeroes private anonymous memory', (t) => {
  using m = MemoryMapping.anonymous(PAGE_SIZE)
  m.write(0, Buffer.from('data'))
  m.madvise(0, PAGE_SIZE, 'dontneed')
  t.deepEqual(m.read(0, 4), Buffer.alloc(4))
})

test('a file truncated under the mapping: read/write throw EFAULT instead of SIGBUS (in a child)', (t) => {
  const r = runChild(`
    const fs = require('node:fs'), os = require('node:os'), path = require('node:path')
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mr-trunc-'))
    const file = path.join(dir, 't')
    fs.writeFileSync(file, Buffer.alloc(2 * mr.PAGE_SIZE, 1))
    const fd = fs.openSync(file, 'r+')
    const m = mr.MemoryMapping.fromFd(fd, 2 * mr.PAGE_SIZE)
    fs.ftruncateSync(fd, 0)
    for (const f of [() => m.read(0, 8), () => m.write(mr.PAGE_SIZE, Buffer.from('x')), () => m.readInto(4, Buffer.alloc(8))]) {
      try { f(); console.log('no error') } catch (e) { console.log(e.code, e.errno, e.syscall) }
    }
    fs.rmSync(dir, { recursive: true })
  `)
  t.is(r.signal, null, r.stderr)
  t.is(r.status, 0, r.stderr)
  t.deepEqual(r.stdout.trim().split('\n'), ['EFAULT -14 process_vm_readv', 'EFAULT -14 process_vm_writev', 'EFAULT -14 process_vm_readv'])
})

test('fault-safe copies stay fault-safe with a SIGBUS listener installed and in a worker thread (in a child)', (t) => {
  // process.on('SIGBUS') installs libuv's handler over the copy guard's: the copy must notice
  // and take the syscall path (a guarded fault sent to libuv's handler would hang or crash).
  const r = runChild(`
    const fs = require('node:fs'), os = require('node:os'), path = require('node:path')
    const { Worker } = require('node:worker_threads')
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mr-guard-'))
    const file = path.join(dir, 't')
    fs.writeFileSync(file, Buffer.alloc(mr.PAGE_SIZE, 1))
    const fd = fs.openSync(file, 'r+')
    const m = mr.MemoryMapping.fromFd(fd, mr.PAGE_SIZE)
    console.log(m.read(0, 1)[0]) // the guard is installed by the first fault-safe copy
    fs.ftruncateSync(fd, 0)
    const tryRead = () => { try { m.readInto(0, Buffer.alloc(8)); return 'no error' } catch (e) { return e.code } }
    console.log('guarded', tryRead())
    const w = new Worker(\`
      const { parentPort, workerData } = require('node:worker_threads')
      const mr = require(workerData.entry)
      const m = mr.MemoryMapping.fromFd(workerData.fd, mr.PAGE_SIZE, { checkEof: false })
      try { m.write(0, Buffer.from('x')); parentPort.postMessage('no error') } catch (e) { parentPort.postMessage(e.code) }
    \`, { eval: true, workerData: { fd, entry: require.resolve(ROOT + 'dist/index.js') } })
    w.on('message', (code) => {
      console.log('worker', code)
      process.on('SIGBUS', () => {})
      console.log('with listener', tryRead())
      fs.rmSync(dir, { recursive: true })
    })
  `)
  t.is(r.signal, null, r.stderr)
  t.is(r.status, 0, r.stderr)
  t.deepEqual(r.stdout.trim().split('\n'), ['1', 'guarded EFAULT', 'worker EFAULT', 'with listener EFAULT'])
})

test('addFdMapping/removeMapping on a MemoryMapping are ERR_MMAP_UNSUPPORTED', (t) => {
  using m = MemoryMapping.anonymous(PAGE_SIZE)
  using shm = SharedMemory.create('x', PAGE_SIZE)
  t.throws(() => m.addFdMapping(0, PAGE_SIZE, shm.fd, 0, Protection.READ), { code: 'ERR_MMAP_UNSUPPORTED', instanceOf: Error })
  t.throws(() => m.removeMapping(0, PAGE_SIZE), { code: 'ERR_MMAP_UNSUPPORTED' })
  t.deepEqual(m.read(0, 1), Buffer.alloc(1))
})

function readFds(): string[] {
  return readdirSync('/proc/self/fd').sort()
}

/** The `Locked:` kB of the kernel mapping that contains `address`, from /proc/self/smaps. */
function lockedKiB(address: bigint): number {
  let inside = false
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line)
    if (range) inside = BigInt(`0x${range[1]}`) <= address && address < BigInt(`0x${range[2]}`)
    else if (inside && line.startsWith('Locked:')) return Number(/(\d+)/.exec(line)?.[1])
  }
  return -1
}

test('mlock/munlock lock pages in place; onFault locks them once touched', (t) => {
  const P = PAGE_SIZE
  using m = MemoryMapping.anonymous(4 * P)
  m.write(0, Buffer.from('kept'))
  m.mlock(0, 2 * P)
  t.is(lockedKiB(m.address), (2 * P) / 1024, 'both pages faulted in and locked')
  m.munlock(0, 4 * P)
  t.is(lockedKiB(m.address), 0)
  m.mlock(0, 4 * P, { onFault: true })
  t.is(lockedKiB(m.address), (2 * P) / 1024, 'only the pages present so far (the first mlock faulted in two) are locked')
  m.write(3 * P, Buffer.from([1]))
  t.is(lockedKiB(m.address), (3 * P) / 1024, 'a page is locked once touched')
  m.munlock(0, 4 * P)
  m.mlock(0, 0)
  t.deepEqual(m.read(0, 4), Buffer.from('kept'))
  t.throws(() => m.mlock(1, P), { code: 'ERR_MMAP_UNALIGNED' })
  t.throws(() => m.munlock(0, 5 * P), { code: 'ERR_MMAP_OUT_OF_BOUNDS' })
  t.throws(() => m.mlock(0, P, { onFault: 1 as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => m.mlock('0' as unknown as number, P), { code: 'ERR_INVALID_ARG_TYPE' })
  m.close()
  t.throws(() => m.mlock(0, P), { code: 'ERR_MMAP_CLOSED' })
  t.throws(() => m.munlock(0, P), { code: 'ERR_MMAP_CLOSED' })
})

test('mlock past RLIMIT_MEMLOCK is a syscall error with errno, not a crash (in a child)', (t) => {
  const r = runChild(`
    const limit = Number(require('node:child_process').execSync('ulimit -l', { shell: '/bin/sh' }).toString().trim())
    const size = Number.isFinite(limit) ? (limit + 4096) * 1024 : 0
    if (size === 0) { console.log('unlimited'); return }
    const m = mr.MemoryMapping.anonymous(size)
    try { m.mlock(0, size); console.log('locked') } catch (e) { console.log(e.code, e.syscall, typeof e.errno) }
    m.close()
  `)
  t.is(r.status, 0, r.stderr)
  const out = r.stdout.trim()
  if (out === 'unlimited' || out === 'locked') t.pass(`no limit to exceed here (${out})`)
  else t.regex(out, /^(ENOMEM|EPERM|EAGAIN) mlock number$/)
})
