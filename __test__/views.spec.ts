import test from 'ava'
import { constants as bufferConstants } from 'node:buffer'
import { MemoryMapping, MemoryMappingArena, PAGE_SIZE, Protection, Seal, SharedMemory } from 'mapped-region'
import { runChild } from './helpers.js'

const P = PAGE_SIZE
const RW = Protection.READ_WRITE

test('a view is zero-copy: writes through it are seen by read() and other mappings', (t) => {
  using shm = SharedMemory.create('view', 2 * P)
  using a = MemoryMappingArena.reserve(4 * P)
  a.addFdMapping(P, 2 * P, shm.fd, 0, RW)
  const v = a.view(P + 3, 10)
  t.true(Buffer.isBuffer(v))
  t.is(v.length, 10)
  v.write('zero-copy')
  t.is(a.read(P + 3, 9).toString(), 'zero-copy')
  a.write(P + 3, Buffer.from('Z'))
  t.is(v[0], 'Z'.charCodeAt(0))
  using other = MemoryMapping.fromFd(shm.fd, P)
  t.is(other.read(3, 9).toString(), 'Zero-copy')
  t.is(a.view(0 + P, 0).length, 0)
})

test('view needs READ | WRITE over the whole range', (t) => {
  using shm = SharedMemory.create('view', 2 * P)
  using a = MemoryMappingArena.reserve(4 * P)
  a.addFdMapping(0, P, shm.fd, 0, RW)
  a.addFdMapping(P, P, shm.fd, P, Protection.READ)
  t.is(a.view(0, P).length, P)
  t.throws(() => a.view(P - 1, 2), { code: 'ERR_MMAP_ACCESS' })
  t.throws(() => a.view(2 * P, 1), { code: 'ERR_MMAP_ACCESS' })
  using ro = MemoryMapping.anonymous(P, { protection: Protection.READ })
  t.throws(() => ro.view(0, 1), { code: 'ERR_MMAP_ACCESS' })
  t.throws(() => a.view(3 * P, P + 1), { code: 'ERR_MMAP_OUT_OF_BOUNDS' })
})

test('removeMapping, overlapping overlays and close detach exactly the affected views', (t) => {
  using shm = SharedMemory.create('view', 4 * P)
  const a = MemoryMappingArena.reserve(8 * P)
  a.addFdMapping(0, 4 * P, shm.fd, 0, RW)
  a.addAnonymous(4 * P, 2 * P, RW)
  const first = a.view(0, P)
  const second = a.view(P, P)
  const spanning = a.view(P - 8, 16)
  const anon = a.view(4 * P, 2 * P)
  const typed = new Uint32Array(second.buffer, second.byteOffset, 4)
  a.removeMapping(P, P)
  t.is(second.length, 0)
  t.is(second.byteLength, 0)
  t.is(typed.length, 0, 'typed arrays over the same memory are detached too')
  t.is(spanning.length, 0)
  t.is(first.length, P, 'views outside the range stay attached')
  t.is(second[0] as number | undefined, undefined)
  second[0] = 1 // a write to a detached view does nothing
  t.is(second[0] as number | undefined, undefined)
  a.addFdMapping(5 * P, P, shm.fd, 0, RW) // overlaps `anon`
  t.is(anon.length, 0)
  t.is(first.length, P)
  first[0] = 42
  a.close()
  t.is(first.length, 0)
  t.is(first.buffer.byteLength, 0)
})

test('a validation failure leaves views attached; a failed kernel call detaches them first', (t) => {
  using a = MemoryMappingArena.reserve(2 * P)
  a.addAnonymous(0, P, RW)
  const v = a.view(0, P)
  // EBADF comes from the fstat check, before anything changes.
  t.throws(() => a.addFdMapping(0, P, 2 ** 31 - 1, 0, RW), { code: 'EBADF' })
  t.throws(() => a.addFdMapping(1, P, 0, 0, RW), { code: 'ERR_MMAP_UNALIGNED' })
  t.is(v.length, P)
  // EPERM (a write-sealed memfd mapped writable) comes from mmap itself: views are
  // detached before the call, whatever its outcome.
  using shm = SharedMemory.create('ro', P)
  shm.addSeals(Seal.WRITE)
  t.throws(() => a.addFdMapping(0, P, shm.fd, 0, RW), { code: 'EPERM' })
  t.is(v.length, 0)
  t.deepEqual(a.mappings(), [{ offset: 0, size: P, kind: 'anonymous', protection: RW }])
  t.deepEqual(a.read(0, 4), Buffer.alloc(4))
})

test('a view longer than buffer.constants.MAX_LENGTH is refused', (t) => {
  using a = MemoryMappingArena.reserve(2 ** 40)
  t.throws(() => a.view(0, bufferConstants.MAX_LENGTH + 1), { code: 'ERR_OUT_OF_RANGE', instanceOf: RangeError })
})

test('crash cases run in a child: using views after remove, close and overlay never crashes', (t) => {
  const r = runChild(`
    const P = mr.PAGE_SIZE
    const shm = mr.SharedMemory.create('crash', 4 * P)
    const a = mr.MemoryMappingArena.reserve(4 * P)
    a.addFdMapping(0, 4 * P, shm.fd, 0, mr.Protection.READ_WRITE)
    const v1 = a.view(0, P), v2 = a.view(P, P), v3 = a.view(2 * P, P)
    const errors = []
    const poke = (v) => {
      v[10] = 2
      try { v.fill(1) } catch (e) { errors.push(e.constructor.name) }
      try { v.write('x') } catch (e) { errors.push(e.constructor.name) }
    }
    a.removeMapping(0, P)
    poke(v1)
    a.addAnonymous(P, P, mr.Protection.READ)
    poke(v2)
    a.close()
    poke(v3)
    let sum = 0
    for (const v of [v1, v2, v3]) for (let i = 0; i < P; i++) sum += v[i] ?? 0
    console.log('alive', sum, v1.length + v2.length + v3.length, errors.join(','))
  `)
  t.is(r.signal, null, r.stderr)
  t.is(r.status, 0, r.stderr)
  // Detached views read as empty; Buffer methods throw a TypeError, never crash.
  t.regex(r.stdout.trim(), /^alive 0 0 (TypeError,?)*$/)
})

test('a view keeps its memory mapped after the region object is collected', (t) => {
  const r = runChild(`
    const P = mr.PAGE_SIZE
    let view
    ;(() => {
      const a = mr.MemoryMappingArena.reserve(1 << 30)
      a.addAnonymous(0, 2 * P, mr.Protection.READ_WRITE)
      view = a.view(P, P)
      view.write('survives')
    })()
    let rounds = 0
    const tick = () => {
      global.gc()
      if (++rounds < 20) return setImmediate(tick)
      view.fill(7, 100)
      console.log(view.toString('utf8', 0, 8), view[P - 1], view.length)
      const vm = () => Number(/VmSize:\\s+(\\d+)/.exec(require('node:fs').readFileSync('/proc/self/status', 'utf8'))[1])
      const before = vm()
      view = null
      let r2 = 0
      const tock = () => {
        global.gc()
        if (before - vm() > 900 * 1024 || ++r2 > 50) return console.log(before - vm() > 900 * 1024)
        setImmediate(tock)
      }
      tock()
    }
    tick()
  `)
  t.is(r.signal, null, r.stderr)
  t.is(r.status, 0, r.stderr)
  t.deepEqual(r.stdout.trim().split('\n'), [`survives 7 ${P}`, 'true'])
})

test('a collected view is forgotten without touching the views made after it', async (t) => {
  // A detached view's slot in the list is reused by the next view; its finalizer, which runs
  // later, must forget nothing. Views collected in bulk leave the others attached and detachable.
  using shm = SharedMemory.create('view', 4 * P)
  using a = MemoryMappingArena.reserve(8 * P)
  a.addFdMapping(0, 4 * P, shm.fd, 0, RW)
  const settle = async () => {
    for (let i = 0; i < 6; i++) {
      global.gc?.()
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
  let first: Buffer | null = a.view(0, P)
  a.removeMapping(0, P)
  a.addFdMapping(0, P, shm.fd, 0, RW)
  t.is(first.length, 0)
  first = null
  const reused = a.view(0, P)
  const kept = a.view(P, P)
  let dropped: Buffer[] | null = Array.from({ length: 1000 }, (_, i) => a.view((i % 3) * P, P))
  dropped = null
  await settle()
  t.is(dropped, null)
  t.is(reused.length, P)
  a.removeMapping(0, P)
  t.is(reused.length, 0)
  t.is(kept.length, P)
  a.removeMapping(P, P)
  t.is(kept.length, 0)
})

test('a 5 GiB view request never crashes', (t) => {
  const r = runChild(`
    const a = mr.MemoryMappingArena.reserve(8 * 2 ** 30)
    a.addAnonymous(0, 6 * 2 ** 30, mr.Protection.READ_WRITE)
    try { const v = a.view(0, 5 * 2 ** 30); console.log('len', v.length) } catch (e) { console.log(e.code) }
    const b = a.view(0, 16); b[0] = 1; console.log(a.read(0, 1)[0])
  `)
  t.is(r.signal, null, r.stderr)
  t.is(r.status, 0, r.stderr)
  const [first, second] = r.stdout.trim().split('\n')
  // Node 20 caps Buffers at 4 GiB: refused with ERR_OUT_OF_RANGE; a runtime that allows it gets the full view.
  t.true(first === 'ERR_OUT_OF_RANGE' || first === `len ${5 * 2 ** 30}`, first)
  t.is(second, '1')
})

test('the native check refuses a too-long view even without the facade', (t) => {
  // dist/calls.js is the generated layer under the facade: it stores the numbers in the scratch
  // slots and calls the addon, checking nothing itself.
  const r = runChild(`
    const native = require(ROOT + 'dist/calls.js')
    const owner = {}
    const h = native.regionReserve(owner, 8 * 2 ** 30, 4096)
    native.regionAddAnonymous(h, 0, 8 * 2 ** 30, 3)
    const tries = [
      () => native.regionView(h, 0, 5 * 2 ** 30),
      () => native.regionView(h, 0, 9 * 2 ** 30),
      () => native.regionView(h, -1, 1),
      () => native.regionReadInto(h, NaN, Buffer.alloc(1)),
      () => native.regionAddFdMapping(h, 0, 4096, 1.5, 0, 3, true),
      () => native.regionAddAnonymous(h, 0, 4096, 9),
      () => native.regionMadvise(h, 0, 4096, 100),
      () => native.regionWrite(h, 0, 'not bytes'),
      () => native.regionMsync(h + 1, 0, 4096),
      () => native.regionMsync(h, 'x', 4096),
      // fractions, infinities and out-of-range integers, each argument kind
      () => native.regionMsync(h, 0.5, 4096),
      () => native.regionMsync(h, 0, Infinity),
      () => native.regionMsync(h + 0.5, 0, 4096),
      () => native.regionMadvise(h, 0, 4096, 3.5),
      () => native.regionMadvise(h, 0, 4096, NaN),
      () => native.regionMadvise(h, 0, 4096, 2 ** 31),
      () => native.regionAddAnonymous(h, 0, 4096, 2.5),
      () => native.regionAddAnonymous(h, 0, 4096, -1),
      () => native.regionAddFdMapping(h, 0, 4096, 2 ** 31, 0, 3, true),
      () => native.regionAddFdMapping(h, 0, 4096, -Infinity, 0, 3, true),
      () => native.regionRemoveMapping(h, 2 ** 53, 4096),
      () => native.regionMsync(h, 2 ** 53 - 4096, 4096),
    ]
    for (const f of tries) { try { f(); console.log('made') } catch (e) { console.log(e.code) } }
    native.regionClose(h)
    try { native.regionView(h, 0, 1) } catch (e) { console.log(e.code) }
    // The addon's own functions, called bare, take whatever the slots hold (here the closed
    // handle): checked like any argument. The slots are not on the exports any more.
    const raw = require(ROOT + 'dist/native.js').native
    for (const f of [raw.regionMsync, raw.regionAddAnonymous, raw.regionView, raw.regionRemoveMapping]) {
      try { f(); console.log('made') } catch (e) { console.log(e.code) }
    }
    console.log(raw.scratch === undefined)
  `)
  t.is(r.signal, null, r.stderr)
  t.is(r.status, 0, r.stderr)
  t.deepEqual(r.stdout.trim().split('\n'), [
    // Node 20 caps a Buffer at 4 GiB (refused); Node 22 and later allow 5 GiB (the view is made).
    bufferConstants.MAX_LENGTH < 5 * 2 ** 30 ? 'ERR_OUT_OF_RANGE' : 'made',
    'ERR_MMAP_OUT_OF_BOUNDS',
    'ERR_OUT_OF_RANGE',
    'ERR_OUT_OF_RANGE',
    'ERR_OUT_OF_RANGE',
    'ERR_OUT_OF_RANGE',
    'ERR_OUT_OF_RANGE',
    'ERR_INVALID_ARG_TYPE',
    'ERR_MMAP_CLOSED', // a stale or foreign handle reads as closed
    'ERR_OUT_OF_RANGE',
    'ERR_OUT_OF_RANGE', // offset 0.5
    'ERR_OUT_OF_RANGE', // size Infinity
    'ERR_MMAP_CLOSED', // a fractional handle names no region
    'ERR_OUT_OF_RANGE', // advice 3.5
    'ERR_OUT_OF_RANGE', // advice NaN
    'ERR_OUT_OF_RANGE', // advice past int
    'ERR_OUT_OF_RANGE', // protection 2.5
    'ERR_OUT_OF_RANGE', // protection -1
    'ERR_OUT_OF_RANGE', // fd past int
    'ERR_OUT_OF_RANGE', // fd -Infinity
    'ERR_OUT_OF_RANGE', // offset 2^53 is not a safe integer
    'ERR_MMAP_OUT_OF_BOUNDS', // a safe integer, past the end
    'ERR_MMAP_CLOSED',
    'ERR_MMAP_CLOSED', // the bare entry points, on the slots left by the last call
    'ERR_MMAP_CLOSED',
    'ERR_MMAP_CLOSED',
    'ERR_MMAP_CLOSED',
    'true',
  ])
})

test('crash case in a child: a file truncated under an arena overlay — read/write throw EFAULT', (t) => {
  const r = runChild(`
    const fs = require('node:fs'), os = require('node:os'), path = require('node:path')
    const P = mr.PAGE_SIZE
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mr-trunc-'))
    const file = path.join(dir, 'f')
    fs.writeFileSync(file, Buffer.alloc(2 * P, 1))
    const fd = fs.openSync(file, 'r+')
    const a = mr.MemoryMappingArena.reserve(4 * P)
    a.addFdMapping(0, 2 * P, fd, 0, mr.Protection.READ_WRITE)
    a.addAnonymous(2 * P, P, mr.Protection.READ_WRITE)
    fs.ftruncateSync(fd, 0) // "another process" truncates the file
    for (const f of [() => a.read(0, 8), () => a.write(P, Buffer.from('x')), () => a.read(P - 4, 8 + P)]) {
      try { f(); console.log('no error') } catch (e) { console.log(e.code, e.syscall) }
    }
    console.log(a.read(2 * P, 4).length) // the anonymous overlay is unaffected
    fs.rmSync(dir, { recursive: true })
  `)
  t.is(r.signal, null, r.stderr)
  t.is(r.status, 0, r.stderr)
  t.deepEqual(r.stdout.trim().split('\n'), ['EFAULT process_vm_readv', 'EFAULT process_vm_writev', 'EFAULT process_vm_readv', '4'])
})

test('a file mapped past its end (checkEof: false): views stop at the last backed page; copies report EFAULT', (t) => {
  const r = runChild(`
    const fs = require('node:fs'), os = require('node:os'), path = require('node:path')
    const P = mr.PAGE_SIZE
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mr-eof-'))
    const file = path.join(dir, 'f')
    fs.writeFileSync(file, Buffer.alloc(P + 100, 5))
    const fd = fs.openSync(file, 'r+')
    const m = mr.MemoryMapping.fromFd(fd, 4 * P, { checkEof: false })
    const out = []
    const ok = m.view(0, 2 * P) // the partial last page reads as zeros past EOF, no SIGBUS
    out.push(ok[P + 99] + ',' + ok[P + 100])
    for (const f of [() => m.view(2 * P, 1), () => m.view(P, P + 1), () => m.read(3 * P, 4), () => m.write(2 * P, Buffer.from('x'))]) {
      try { f(); out.push('allowed') } catch (e) { out.push(e.code) }
    }
    console.log(out.join(' '))
    fs.rmSync(dir, { recursive: true })
  `)
  t.is(r.signal, null, r.stderr)
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout.trim(), '5,0 ERR_MMAP_ACCESS ERR_MMAP_ACCESS EFAULT EFAULT')
})

test('a huge-page SharedMemory is allocated up front: no SIGBUS from an empty pool', (t) => {
  const r = runChild(`
    let shm
    try { shm = mr.SharedMemory.create('huge', 2 << 20, { hugetlb: true }) } catch (e) { console.log('refused', e.code); return }
    const m = mr.MemoryMapping.fromFd(shm.fd, shm.size)
    const v = m.view(0, shm.size)
    v.fill(1)
    console.log('mapped', v[shm.size - 1])
  `)
  t.is(r.signal, null, r.stderr)
  t.is(r.status, 0, r.stderr)
  // Either the pool supplies the pages, or creation fails cleanly (no pool: ENOSPC/ENOMEM; no hugetlbfs: EINVAL).
  t.regex(r.stdout.trim(), /^(mapped 1|refused E[A-Z]+)$/)
  t.log(r.stdout.trim())
})
