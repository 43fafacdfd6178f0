/**
 * Every argument of every method against wrong types and bad numbers: the
 * facade throws the documented class and code (README, Errors), and the region is left unchanged.
 */
import test from 'ava'
import { MemoryMapping, MemoryMappingArena, PAGE_SIZE, Protection, SharedMemory } from 'mapped-region'

const P = PAGE_SIZE
const RW = Protection.READ_WRITE

/** Values that are not numbers at all: TypeError ERR_INVALID_ARG_TYPE. */
const WRONG_TYPES: unknown[] = ['4096', null, undefined, {}, [], true, 4096n, Symbol('x'), () => 1]
/** Numbers that are not non-negative safe integers: RangeError ERR_OUT_OF_RANGE. */
const BAD_NUMBERS: number[] = [NaN, -1, -4096, 1.5, Infinity, -Infinity, 2 ** 53, Number.MAX_VALUE]

type Call = (arg: unknown) => unknown

function cases(): Array<[string, Call]> {
  const shm = SharedMemory.create('args', 4 * P)
  const a = MemoryMappingArena.reserve(8 * P)
  a.addFdMapping(0, 4 * P, shm.fd, 0, RW)
  const m = MemoryMapping.anonymous(4 * P)
  // Any value, typed as whatever the parameter takes (the facade judges it at run time).
  const n = (x: unknown) => x as never
  return [
    ['arena.addFdMapping offset', (x) => a.addFdMapping(n(x), P, shm.fd, 0, RW)],
    ['arena.addFdMapping size', (x) => a.addFdMapping(0, n(x), shm.fd, 0, RW)],
    ['arena.addFdMapping fd', (x) => a.addFdMapping(0, P, n(x), 0, RW)],
    ['arena.addFdMapping prot', (x) => a.addFdMapping(0, P, shm.fd, 0, n(x))],
    ['arena.addAnonymous offset', (x) => a.addAnonymous(n(x), P, RW)],
    ['arena.addAnonymous size', (x) => a.addAnonymous(0, n(x), RW)],
    ['arena.addAnonymous prot', (x) => a.addAnonymous(0, P, n(x))],
    ['arena.removeMapping offset', (x) => a.removeMapping(n(x), P)],
    ['arena.removeMapping size', (x) => a.removeMapping(0, n(x))],
    ['arena.msync offset', (x) => a.msync(n(x), P)],
    ['arena.msync size', (x) => a.msync(0, n(x))],
    ['arena.madvise offset', (x) => a.madvise(n(x), P, 'willneed')],
    ['arena.madvise size', (x) => a.madvise(0, n(x), 'willneed')],
    ['arena.read offset', (x) => a.read(n(x), 1)],
    ['arena.read length', (x) => a.read(0, n(x))],
    ['arena.write offset', (x) => a.write(n(x), Buffer.from('x'))],
    ['arena.readInto offset', (x) => a.readInto(n(x), Buffer.alloc(1))],
    ['arena.view offset', (x) => a.view(n(x), 1)],
    ['arena.view length', (x) => a.view(0, n(x))],
    ['MemoryMappingArena.reserve size', (x) => MemoryMappingArena.reserve(n(x))],
    ['MemoryMapping.anonymous size', (x) => MemoryMapping.anonymous(n(x))],
    ['MemoryMapping.anonymous protection', (x) => MemoryMapping.anonymous(P, { protection: n(x) })],
    ['MemoryMapping.fromFd fd', (x) => MemoryMapping.fromFd(n(x), P)],
    ['MemoryMapping.fromFd size', (x) => MemoryMapping.fromFd(shm.fd, n(x))],
    ['MemoryMapping.fromFd offset', (x) => MemoryMapping.fromFd(shm.fd, P, { offset: n(x) })],
    ['mapping.read offset', (x) => m.read(n(x), 1)],
    ['mapping.msync size', (x) => m.msync(0, n(x))],
    ['SharedMemory.create size', (x) => SharedMemory.create('x', n(x))],
  ]
}

const CASES = cases()

for (const [name, call] of CASES) {
  test(`${name}: wrong types are TypeError ERR_INVALID_ARG_TYPE`, (t) => {
    for (const value of WRONG_TYPES) {
      if (value === undefined && /protection|fromFd offset/.test(name)) continue // an omitted option takes its default
      t.throws(() => call(value), { code: 'ERR_INVALID_ARG_TYPE', instanceOf: TypeError }, `${String(value)}`)
    }
  })

  test(`${name}: bad numbers are RangeError ERR_OUT_OF_RANGE`, (t) => {
    for (const value of BAD_NUMBERS) {
      if (/prot|protection/.test(name) && value === 2 ** 53) continue
      const err = t.throws(() => call(value), { instanceOf: RangeError }, `${value}`) as NodeJS.ErrnoException | undefined
      // A huge aligned number is a bounds error for offsets; otherwise out of range.
      t.true(err?.code === 'ERR_OUT_OF_RANGE', `${name} ${value}: ${err?.code}`)
    }
  })
}

test('fdOffset: number and bigint forms are validated', (t) => {
  using shm = SharedMemory.create('fdoff', P)
  using a = MemoryMappingArena.reserve(P)
  for (const value of WRONG_TYPES.filter((v) => typeof v !== 'bigint')) {
    t.throws(() => a.addFdMapping(0, P, shm.fd, value as number, RW), { code: 'ERR_INVALID_ARG_TYPE' })
  }
  for (const value of [...BAD_NUMBERS, -1n, 2n ** 64n]) {
    t.throws(() => a.addFdMapping(0, P, shm.fd, value as number, RW), { code: 'ERR_OUT_OF_RANGE', instanceOf: RangeError })
  }
  t.deepEqual(a.mappings(), [])
})

test('advice: wrong types, unknown names and bad numbers', (t) => {
  using m = MemoryMapping.anonymous(P)
  for (const value of [null, undefined, {}, 3n, true]) {
    t.throws(() => m.madvise(0, P, value as 'normal'), { code: 'ERR_INVALID_ARG_TYPE', instanceOf: TypeError })
  }
  t.throws(() => m.madvise(0, P, 'DONTNEED' as 'normal'), { code: 'ERR_INVALID_ARG_VALUE', instanceOf: TypeError })
  for (const name of ['toString', '__proto__', 'hasOwnProperty', '']) {
    t.throws(() => m.madvise(0, P, name as 'normal'), { code: 'ERR_INVALID_ARG_VALUE' })
  }
  for (const value of [NaN, -1, 1.5, 2 ** 31, 100, 102]) {
    t.throws(() => m.madvise(0, P, value), { code: 'ERR_OUT_OF_RANGE', instanceOf: RangeError })
  }
})

test('write: data must be bytes', (t) => {
  using m = MemoryMapping.anonymous(P)
  for (const value of ['text', 1, null, undefined, {}, [1, 2]]) {
    t.throws(() => m.write(0, value as Buffer), { code: 'ERR_INVALID_ARG_TYPE', instanceOf: TypeError })
  }
  t.throws(() => m.write(P - 1, Buffer.from('xy')), { code: 'ERR_MMAP_OUT_OF_BOUNDS' })
})

test('options must be objects; boolean options must be booleans', (t) => {
  t.throws(() => MemoryMapping.anonymous(P, 1 as unknown as undefined), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => MemoryMapping.anonymous(P, { populate: 1 as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => MemoryMapping.anonymous(P, { shared: 'no' as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => MemoryMapping.fromFd(0, P, { checkEof: 0 as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => MemoryMapping.fromFile(42 as unknown as string), { code: 'ERR_INVALID_ARG_TYPE' })
})

test('unknown option keys are refused, not ignored', async (t) => {
  const typo = { shraed: true } as unknown as { shared: boolean }
  const err = t.throws(() => MemoryMapping.anonymous(P, typo), { code: 'ERR_INVALID_ARG_VALUE', instanceOf: TypeError })
  t.regex(err?.message ?? '', /"shraed"/)
  using shm = SharedMemory.create('keys', P)
  t.throws(() => SharedMemory.create('x', P, { sealed: true } as unknown as { seal: boolean }), { code: 'ERR_INVALID_ARG_VALUE' })
  using m = MemoryMapping.fromFd(shm.fd, P)
  t.throws(() => m.mlock(0, P, { onfault: true } as unknown as { onFault: boolean }), { code: 'ERR_INVALID_ARG_VALUE' })
  await t.throwsAsync(m.populateAsync(0, P, { writ: true } as unknown as { write: boolean }), { code: 'ERR_INVALID_ARG_VALUE' })
  // Known keys, and keys inherited from a prototype, are fine.
  t.notThrows(() => MemoryMapping.anonymous(P, Object.create({ extra: 1 }, { shared: { value: true, enumerable: true } })).close())
})

test('errors never change the region', (t) => {
  using shm = SharedMemory.create('atomic', 2 * P)
  using a = MemoryMappingArena.reserve(4 * P)
  a.addFdMapping(0, 2 * P, shm.fd, 0, RW)
  a.write(0, Buffer.from('unchanged'))
  const before = a.mappings()
  for (const [, call] of CASES.filter(([name]) => name.startsWith('arena.'))) {
    for (const value of [...WRONG_TYPES, ...BAD_NUMBERS]) {
      try {
        call(value)
      } catch {
        // expected
      }
    }
  }
  t.deepEqual(a.mappings(), before)
  t.is(a.read(0, 9).toString(), 'unchanged')
})
