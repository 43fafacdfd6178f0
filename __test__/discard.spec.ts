import test from 'ava'
import { readFileSync, statSync } from 'node:fs'
import { GuestMemory, MemoryMapping, MemoryMappingArena, PAGE_SIZE, Protection, Seal, SharedMemory } from 'mapped-region'
import { NO_EXTERNAL, tempFile, throwsErrno } from './helpers.js'

const P = PAGE_SIZE

/** Resident kilobytes (`Rss:` of `/proc/self/smaps`) of the mappings inside `[start, start + size)`. */
function rssKb(start: bigint, size: number): number {
  const end = start + BigInt(size)
  let inside = false
  let kb = 0
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line)
    if (range !== null) {
      const [a, b] = [BigInt(`0x${range[1]}`), BigInt(`0x${range[2]}`)]
      inside = a >= start && b <= end
    } else if (inside && line.startsWith('Rss:')) {
      kb += Number(/(\d+)/.exec(line)?.[1])
    }
  }
  return kb
}

test('discard: private and shared anonymous mappings read as zeros; a view sees it and stays attached', (t) => {
  for (const shared of [false, true]) {
    using m = MemoryMapping.anonymous(4 * P, { shared })
    m.write(0, Buffer.alloc(4 * P, 0xaa))
    // Without external buffers (scripts/no-external.sh) there are no views: the same bytes are read by copy.
    const view = NO_EXTERNAL ? undefined : m.view(0, 4 * P)
    m.discard(P, 2 * P)
    if (view !== undefined) t.is(view.length, 4 * P, 'not detached: the mapping stays')
    const bytes = view ?? m.read(0, 4 * P)
    t.is(bytes[P - 1], 0xaa)
    t.true(bytes.subarray(P, 3 * P).equals(Buffer.alloc(2 * P)), `zeros (shared: ${shared})`)
    t.is(bytes[3 * P], 0xaa)
    t.is(m.readU32(P), 0, 'typed access too')
    m.discard(0, 0) // nothing
    t.is(m.read(0, 1)[0], 0xaa)
  }
})

test('discard: in an arena each overlay piece goes its own way (memfd freed, private file restored, shared file punched)', (t) => {
  using ram = SharedMemory.create('discard-ram', 64 * P)
  const privateFile = tempFile(t, Buffer.alloc(2 * P, 7), 'r')
  const sharedFile = tempFile(t, Buffer.alloc(4 * P, 9))
  using arena = MemoryMappingArena.reserve(80 * P)
  arena.addAnonymous(0, 2 * P, Protection.READ_WRITE)
  arena.addFdMapping(2 * P, 64 * P, ram, 0, Protection.READ_WRITE)
  arena.addFdMapping(66 * P, 2 * P, privateFile.fd, 0, Protection.READ_WRITE, { shared: false })
  arena.addFdMapping(68 * P, 4 * P, sharedFile.fd, 0, Protection.READ_WRITE)
  arena.write(0, Buffer.alloc(72 * P, 1))
  const ramView = NO_EXTERNAL ? undefined : arena.view(2 * P, 64 * P)
  const ramStart = arena.address + BigInt(2 * P)
  t.true(rssKb(ramStart, 64 * P) >= (64 * P) / 1024, 'the memfd is resident')

  arena.discard(P, 70 * P) // crosses all four pieces, ends inside the shared file

  t.true(rssKb(ramStart, 64 * P) < (64 * P) / 1024 / 2, 'the memfd pages went back')
  t.true(arena.read(0, P).equals(Buffer.alloc(P, 1)), 'before the range: kept')
  t.true(arena.read(P, P).equals(Buffer.alloc(P)), 'private anonymous: zeros')
  if (ramView !== undefined) {
    t.is(ramView.length, 64 * P, 'the view over the memfd stays attached')
    t.true(ramView.equals(Buffer.alloc(64 * P)), 'the memfd: zeros, through the view')
  }
  using again = MemoryMapping.fromFd(ram.fd, ram.size)
  t.true(again.read(0, 64 * P).equals(Buffer.alloc(64 * P)), 'zeros in the memfd itself, not just here')
  t.true(arena.read(66 * P, 2 * P).equals(Buffer.alloc(2 * P, 7)), 'private file: the file again')
  t.true(arena.read(68 * P, 3 * P).equals(Buffer.alloc(3 * P)), 'shared file: zeros')
  t.true(arena.read(71 * P, P).equals(Buffer.alloc(P, 1)), 'after the range: kept')
  const after = statSync(sharedFile.path)
  t.is(after.size, 4 * P, 'the file keeps its size')
  const onDisk = readFileSync(sharedFile.path)
  t.true(onDisk.subarray(0, 3 * P).equals(Buffer.alloc(3 * P)), 'a hole in the file')
  t.true(onDisk.subarray(3 * P).equals(Buffer.alloc(P, 1)))
  t.is(arena.mappings().length, 4, 'the layout is unchanged')
})

test('discard: errors — alignment, bounds, holes, read-only memory, sealed memfds, closed, types', (t) => {
  using arena = MemoryMappingArena.reserve(8 * P)
  arena.addAnonymous(0, 2 * P, Protection.READ_WRITE)
  arena.addAnonymous(4 * P, P, Protection.READ)
  arena.write(0, Buffer.from('kept'))
  t.throws(() => arena.discard(1, P), { code: 'ERR_MMAP_UNALIGNED' })
  t.throws(() => arena.discard(0, P + 1), { code: 'ERR_MMAP_UNALIGNED' }, 'the size too: no byte lost with its page')
  t.throws(() => arena.discard(7 * P, 2 * P), { code: 'ERR_MMAP_OUT_OF_BOUNDS' })
  t.throws(() => arena.discard(0, 3 * P), { code: 'ERR_MMAP_ACCESS' }, 'a hole: refused, as msync and protect do')
  t.throws(() => arena.discard(4 * P, P), { code: 'ERR_MMAP_ACCESS' }, 'read-only memory')
  t.is(arena.read(0, 4).toString(), 'kept', 'a refused discard discards nothing')
  t.throws(() => arena.discard('0' as unknown as number, P), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => arena.discard(-P, P), { code: 'ERR_OUT_OF_RANGE' })

  using ro = MemoryMapping.anonymous(P, { protection: Protection.READ })
  t.throws(() => ro.discard(0, P), { code: 'ERR_MMAP_ACCESS' })

  using sealed = SharedMemory.create('discard-sealed', 2 * P)
  using over = MemoryMappingArena.reserve(2 * P)
  over.addFdMapping(0, 2 * P, sealed, 0, Protection.READ_WRITE)
  over.write(0, Buffer.from('sealed'))
  sealed.addSeals(Seal.FUTURE_WRITE)
  throwsErrno(t, () => over.discard(0, 2 * P), 'EPERM', 'madvise')
  t.is(over.read(0, 6).toString(), 'sealed')

  const closed = MemoryMapping.anonymous(P)
  closed.close()
  t.throws(() => closed.discard(0, P), { code: 'ERR_MMAP_CLOSED' })
})

test('GuestMemory.discard: across regions that follow each other, marks the pages dirty', (t) => {
  using ram = SharedMemory.create('discard-guest', 4 * P)
  using guest = new GuestMemory(
    [
      { guestAddress: 0, size: 4 * P, backing: ram },
      { guestAddress: 4 * P, size: 4 * P, backing: 'anonymous' },
      { guestAddress: 8 * P, size: P, backing: 'anonymous', protection: Protection.READ },
      { guestAddress: 16 * P, size: P, backing: 'anonymous' },
    ],
    { addressSpace: 32 * P, trackDirty: true },
  )
  guest.write(0, Buffer.alloc(8 * P, 3))
  guest.takeDirty()
  guest.discard(3n * BigInt(P), 2 * P) // the last page of one region, the first of the next
  t.true(guest.read(0, 3 * P).equals(Buffer.alloc(3 * P, 3)))
  t.true(guest.read(3 * P, 2 * P).equals(Buffer.alloc(2 * P)))
  t.true(guest.read(5 * P, 3 * P).equals(Buffer.alloc(3 * P, 3)))
  const dirty = guest.takeDirty().map(({ bitmap }) => bitmap[0])
  t.deepEqual(dirty, [0b1000n, 0b1n, 0n, 0n], 'the discarded pages changed: dirty')

  // A view across both regions sees the change and stays attached.
  const view = NO_EXTERNAL ? undefined : guest.view(P, 6 * P)
  guest.discard(P, 6 * P)
  if (view !== undefined) t.is(view.length, 6 * P, 'the view stays')
  t.true((view ?? guest.read(P, 6 * P)).equals(Buffer.alloc(6 * P)))
  t.true(guest.read(7 * P, P).equals(Buffer.alloc(P, 3)))

  t.throws(() => guest.discard(7 * P, 2 * P), { code: 'ERR_MMAP_ACCESS' }, 'into a read-only region')
  t.throws(() => guest.discard(8 * P, 8 * P), { code: 'ERR_GUEST_ADDRESS' }, 'a gap between regions')
  t.throws(() => guest.discard(16 * P, 2 * P), { code: 'ERR_GUEST_ADDRESS' }, 'past the last region')
  t.throws(() => guest.discard(P + 1, P), { code: 'ERR_MMAP_UNALIGNED' })
  t.deepEqual(
    guest.takeDirty().map(({ bitmap }) => bitmap[0]),
    [0b1110n, 0b0111n, 0n, 0n],
    'the second discard (and the live writable view, always reported) only; the refused ones mark nothing',
  )
  t.true(guest.read(7 * P, P).equals(Buffer.alloc(P, 3)), 'and discards nothing')
})
