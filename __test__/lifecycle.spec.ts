import test from 'ava'
import { createRequire } from 'node:module'
import * as esm from 'mapped-region'
import { MemoryMapping, MemoryMappingArena, PAGE_SIZE, Protection, Seal, SharedMemory } from 'mapped-region'
import { ENTRY, mapsOverlapping, runChild } from './helpers.js'

const P = PAGE_SIZE
const RW = Protection.READ_WRITE

test('close is idempotent; every other call throws ERR_MMAP_CLOSED', (t) => {
  using shm = SharedMemory.create('closed', P)
  const regions = [MemoryMappingArena.reserve(2 * P), MemoryMapping.anonymous(2 * P)]
  for (const r of regions) {
    const address = r.address
    t.false(r.closed)
    r.close()
    r.close()
    t.true(r.closed)
    t.is(mapsOverlapping(address, r.size).length, 0, 'unmapped')
    const calls: Array<() => unknown> = [
      () => r.address,
      () => r.addFdMapping(0, P, shm.fd, 0, RW),
      () => r.removeMapping(0, P),
      () => r.msync(0, P),
      () => r.madvise(0, P, 'normal'),
      () => r.read(0, 1),
      () => r.write(0, Buffer.from('x')),
      () => r.view(0, 1),
    ]
    if (r instanceof MemoryMappingArena) {
      calls.push(
        () => r.addAnonymous(0, P, RW),
        () => r.mappings(),
      )
    }
    for (const call of calls) t.throws(call, { code: 'ERR_MMAP_CLOSED', instanceOf: Error })
    // Closed is checked before the arguments.
    t.throws(() => r.read(-1, 1), { code: 'ERR_MMAP_CLOSED' })
    t.is(r.size, 2 * P)
  }
})

test('using / Symbol.dispose unmaps at the end of the scope', (t) => {
  let address = 0n
  {
    using a = MemoryMappingArena.reserve(4 * P)
    address = a.address
    t.true(mapsOverlapping(address, 4 * P).length > 0)
  }
  t.is(mapsOverlapping(address, 4 * P).length, 0)
})

test('a region that is only garbage-collected is unmapped by its finalizer', (t) => {
  const r = runChild(`
    const vmSize = () => Number(/VmSize:\\s+(\\d+)/.exec(require('node:fs').readFileSync('/proc/self/status', 'utf8'))[1]) * 1024
    const base = vmSize()
    ;(() => {
      for (let i = 0; i < 50; i++) {
        const a = mr.MemoryMappingArena.reserve(1 << 30)
        a.addAnonymous(0, mr.PAGE_SIZE, mr.Protection.READ_WRITE)
        mr.MemoryMapping.anonymous(64 << 20)
      }
    })()
    const grown = vmSize() - base
    let rounds = 0
    const tick = () => {
      global.gc()
      const left = vmSize() - base
      if (left < (1 << 30) || ++rounds > 100) { console.log(grown, left); return }
      setImmediate(tick)
    }
    tick()
  `)
  t.is(r.status, 0, r.stderr)
  const [grown, left] = r.stdout.trim().split(' ').map(Number)
  // The rest of the process may give back a little meanwhile (V8 releasing heap pages): 64 MiB slack.
  t.true(grown >= 50 * (2 ** 30 + 64 * 2 ** 20) - 64 * 2 ** 20, `virtual size grew by ${grown}`)
  t.true(left < 2 ** 30, `virtual size is back near its baseline (+${left} bytes)`)
})

test('require and import load the same API', (t) => {
  const cjs = createRequire(import.meta.url)(ENTRY) as typeof esm
  t.is(cjs.PAGE_SIZE, esm.PAGE_SIZE)
  t.is(cjs.MemoryMappingArena, esm.MemoryMappingArena)
  t.deepEqual(
    Object.keys(cjs).sort(),
    Object.keys(esm)
      .filter((k) => k !== 'default')
      .sort(),
  )
  const viaPackage = runChild(`
    // Resolved by name through the package's own "exports" map.
    const pkg = require(require('node:module').createRequire(ROOT + 'package.json').resolve('mapped-region'))
    const m = pkg.MemoryMapping.anonymous(4096)
    m.write(0, Buffer.from('cjs'))
    console.log(m.read(0, 3).toString(), pkg.PAGE_SIZE === mr.PAGE_SIZE)
  `)
  t.is(viaPackage.status, 0, viaPackage.stderr)
  t.is(viaPackage.stdout.trim(), 'cjs true')
})

test('PAGE_SIZE and Protection constants', (t) => {
  t.is(PAGE_SIZE, 4096)
  const { of, ...names } = Protection
  t.deepEqual({ ...names }, { NONE: 0, READ: 1, WRITE: 2, READ_WRITE: 3, EXEC: 4, READ_EXEC: 5, WRITE_EXEC: 6, READ_WRITE_EXEC: 7 })
  t.is(of(Protection.READ, Protection.EXEC), Protection.READ_EXEC)
  t.is(of(), Protection.NONE)
  t.is(Seal.of(Seal.GROW, Seal.SHRINK, Seal.SEAL) as number, 7)
})
