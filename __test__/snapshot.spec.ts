import test from 'ava'
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { GuestMemory, MemoryMappingArena, PAGE_SIZE, Protection } from 'mapped-region'
import { tempDir } from './helpers.js'

const P = PAGE_SIZE
const RW = Protection.READ_WRITE

/** A file of `pages` pages, page i filled with the byte i + 1, opened read-only. */
function pagedFile(t: import('ava').ExecutionContext, pages: number, mode = 'r'): { path: string; fd: number } {
  const tmp = tempDir()
  const path = join(tmp.dir, 'mem')
  writeFileSync(path, Buffer.concat(Array.from({ length: pages }, (_, i) => Buffer.alloc(P, i + 1))))
  const fd = openSync(path, mode)
  t.teardown(() => {
    closeSync(fd)
    tmp.done()
  })
  return { path, fd }
}

test('private overlays: a read-only fd mapped READ_WRITE, writes stay in the process, the file never changes', (t) => {
  const { path, fd } = pagedFile(t, 4)
  const before = readFileSync(path)
  using arena = MemoryMappingArena.reserve(8 * P)
  t.throws(() => arena.addFdMapping(0, 4 * P, fd, 0, RW), { code: 'EACCES' }, 'shared, a read-only fd cannot be writable')
  arena.addFdMapping(0, 4 * P, fd, 0, RW, { shared: false })
  t.is(arena.readU8(P), 2, 'the file is there')
  arena.write(P, Buffer.from('private'))
  arena.writeU32(3 * P, 0xdead)
  t.is(arena.read(P, 7).toString(), 'private')
  t.deepEqual(readFileSync(path), before, 'the file never changed')
  t.deepEqual(
    arena.mappings().map((m) => [m.offset, m.size, m.kind, m.shared, m.fdOffset]),
    [[0, 4 * P, 'fd', false, 0]],
  )
  // madvise('dontneed') drops the private copy: the file's bytes reappear.
  arena.madvise(P, P, 'dontneed')
  t.is(arena.readU8(P), 2)
  t.is(arena.readU32(3 * P), 0xdead, 'other pages keep their private copy')
  // A view of a private overlay, detached by removal like any.
  const view = arena.view(0, P)
  t.is(view[0], 1)
  arena.removeMapping(0, P)
  t.is(view.length, 0)
  t.throws(() => arena.readU8(0), { code: 'ERR_MMAP_ACCESS' })
})

test('private and shared pieces never merge in mappings(); EOF and options are checked as for shared ones', (t) => {
  const { fd: ro } = pagedFile(t, 4)
  const { fd: rw } = pagedFile(t, 4, 'r+')
  using arena = MemoryMappingArena.reserve(16 * P)
  arena.addFdMapping(0, 2 * P, rw, 0, RW, { shared: false })
  arena.addFdMapping(2 * P, 2 * P, rw, 2 * P, RW, { shared: false })
  arena.addFdMapping(4 * P, P, rw, 4 * P - P, RW)
  t.deepEqual(
    arena.mappings().map((m) => [m.offset / P, m.size / P, m.shared]),
    [
      [0, 4, false],
      [4, 1, true],
    ],
    'contiguous private pieces of one fd are one entry; the shared one is not merged into them',
  )
  t.throws(() => arena.addFdMapping(8 * P, 2 * P, ro, 3 * P, RW, { shared: false }), { code: 'ERR_MMAP_BEYOND_EOF' })
  t.throws(() => arena.addFdMapping(8 * P, P, ro, 0, RW, { shared: 1 as never }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => arena.addFdMapping(8 * P, P, ro, 0, RW, { shraed: false } as never), { code: 'ERR_INVALID_ARG_VALUE' })
  t.deepEqual(arena.mappings().length, 2, 'nothing refused was mapped')
})

test('GuestMemory backing { fd, fdOffset, shared: false }: guest writes never reach the file', (t) => {
  const { path, fd } = pagedFile(t, 4)
  using guest = new GuestMemory([{ guestAddress: 0x10_0000, size: 2 * P, backing: { fd, fdOffset: 2 * P, shared: false } }])
  t.is(guest.readU8(0x10_0000), 3)
  guest.write(0x10_0000, Buffer.from('guest'))
  t.is(guest.read(0x10_0000, 5).toString(), 'guest')
  t.is(readFileSync(path)[2 * P], 3)
  t.is(guest.arena.mappings()[0].shared, false)
})
