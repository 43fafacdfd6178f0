/**
 * Without external buffers (V8's sandbox: Electron ≥ 21; here the addon's test-only switch
 * `MAPPED_REGION_TEST_NO_EXTERNAL=1`, set for the children of this file): the package loads, and
 * everything but `view()`/`sharedView()` works. `scripts/no-external.sh` runs the whole suite so;
 * this file checks the mode's own promises in every run of the suite.
 */
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ENTRY, ROOT, runChild, SLOWDOWN } from './helpers.js'

// Only the children see it: this process never loads the addon.
process.env.MAPPED_REGION_TEST_NO_EXTERNAL = '1'

test('without external buffers: loads; copies, typed access, atomics, GuestMemory, snapshots and a worker work; views throw ERR_MMAP_NO_EXTERNAL', (t) => {
  const r = runChild(
    `
const assert = require('node:assert')
const { readFileSync, rmSync } = require('node:fs')
const { join } = require('node:path')
const { tmpdir } = require('node:os')
const { Worker } = require('node:worker_threads')
const { GuestMemory, MemoryMapping, MemoryMappingArena, SharedMemory, Protection, PAGE_SIZE: P } = mr
const noExternal = (f) => assert.throws(f, (e) => e.code === 'ERR_MMAP_NO_EXTERNAL' && e instanceof Error && /forbids external buffers/.test(e.message))
;(async () => {
  const ram = SharedMemory.create('ram', 16 * P)
  const arena = MemoryMappingArena.reserve(64 * P)
  arena.addFdMapping(0, 16 * P, ram.fd, 0, Protection.READ_WRITE)
  arena.write(8, Buffer.from('abcdefgh'))
  assert.equal(arena.read(8, 8).toString(), 'abcdefgh')
  const into = new Uint8Array(4)
  assert.equal(arena.readInto(10, into), 4)
  assert.deepEqual([...into], [99, 100, 101, 102])
  for (let i = 0; i < 1000; i++) arena.writeU32(4 * i, i * 3)
  for (let i = 0; i < 1000; i++) assert.equal(arena.readU32(4 * i), i * 3)
  arena.writeU64(P - 4, 0x0102030405060708n) // across a page: still one access
  assert.equal(arena.readU64(P - 4), 0x0102030405060708n)
  arena.writeU32Atomic(64, 7)
  assert.equal(arena.compareExchangeU32(64, 7, 9), 7)
  assert.equal(arena.readU32Atomic(64), 9)
  arena.writeU64Atomic(128, 5n)
  assert.equal(arena.compareExchangeU64(128, 5n, 6n), 5n)
  assert.equal(arena.readU64Atomic(128), 6n)
  assert.throws(() => arena.readU32Atomic(2), { code: 'ERR_MMAP_UNALIGNED' })
  assert.throws(() => arena.readU32(16 * P), { code: 'ERR_MMAP_ACCESS' })
  noExternal(() => arena.view(0, P))
  noExternal(() => arena.sharedView(0, P))
  // A change under typed access: nothing stale is read (no window was ever made).
  arena.addAnonymous(0, P, Protection.READ_WRITE)
  assert.equal(arena.readU32(4), 0)

  const m = MemoryMapping.anonymous(4 * P)
  m.writeU16(3, 0xbeef)
  assert.equal(m.readU16(3), 0xbeef)
  noExternal(() => m.view(0, P))
  m.close()

  const guest = GuestMemory.create([
    { guestAddress: 0, size: 8 * P, backing: 'anonymous' },
    { guestAddress: 2 ** 32, size: 8 * P, backing: ram },
  ], { addressSpace: 2 ** 33 })
  guest.writeU32(0x1000, 0xfeedface)
  guest.writeU32(2 ** 32 + 0x2000, 0x12345678)
  assert.equal(guest.readU32(0x1000n), 0xfeedface)
  assert.equal(guest.readU32(BigInt(2 ** 32) + 0x2000n), 0x12345678)
  assert.equal(arena.readU32(0x2000), 0x12345678) // the same memfd page
  guest.writeU32Atomic(0x1004, 1)
  assert.equal(guest.compareExchangeU32(0x1004, 1, 2), 1)
  noExternal(() => guest.view(0, P))
  noExternal(() => guest.sharedView(0, P))
  const dir = join(tmpdir(), 'mr-noext-' + process.pid)
  const manifest = await guest.snapshot(dir + '.mem')
  const restored = GuestMemory.restore(manifest, dir + '.mem')
  assert.equal(restored.readU32(0x1000), 0xfeedface)
  assert.equal(restored.readU32(2 ** 32 + 0x2000), 0x12345678)
  restored.close()
  rmSync(dir + '.mem', { force: true })

  // A worker (its own env, its own slots) over the same guest memory.
  const code = \`
    const { workerData, parentPort } = require('node:worker_threads')
    const { GuestMemory } = require(${JSON.stringify(ENTRY)})
    const g = GuestMemory.attach(workerData)
    const seen = g.readU32(0x1000)
    g.writeU32(0x1008, seen + 1)
    g.compareExchangeU32(0x1004, 2, 3)
    let code = ''
    try { g.view(0, 4096) } catch (e) { code = e.code }
    g.close()
    parentPort.postMessage(code)
  \`
  const worker = new Worker(code, { eval: true, workerData: guest.share() })
  const [message] = await require('node:events').once(worker, 'message')
  await require('node:events').once(worker, 'exit')
  assert.equal(message, 'ERR_MMAP_NO_EXTERNAL')
  assert.equal(guest.readU32(0x1008), 0xfeedface + 1)
  assert.equal(guest.readU32Atomic(0x1004), 3)
  guest.close()
  arena.close()
  ram.close()
  console.log('ok')
})().catch((e) => { console.error(e); process.exit(1) })
`,
  )
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout.trim(), 'ok')
})

test('without external buffers: the scratch slots detached by code that got hold of them make calls fail with a code, never touch freed memory', (t) => {
  // Its own child: the native exports are loaded before the facade, which would take the slots off them.
  const dir = mkdtempSync(join(tmpdir(), 'mr-noext-'))
  const file = join(dir, 'child.cjs')
  writeFileSync(
    file,
    `'use strict'
const assert = require('node:assert')
const raw = require(${JSON.stringify(join(ROOT, 'index.js'))})
const slots = raw.scratch
assert.ok(slots instanceof ArrayBuffer)
const { MemoryMapping } = require(${JSON.stringify(ENTRY)})
assert.equal(raw.scratch, undefined)
const m = MemoryMapping.anonymous(4096)
m.writeU32(0, 42)
assert.equal(m.readU32(0), 42)
structuredClone(slots, { transfer: [slots] }) // detaches it: the runtime frees its memory
assert.equal(slots.byteLength, 0)
for (let round = 0; round < 3; round++) {
  // Fresh allocations that could reuse the freed memory, then calls: refused, with a code.
  const junk = Array.from({ length: 1000 }, () => new Float64Array(16).fill(1))
  for (const call of [() => m.readU32(0), () => m.read(0, 4), () => m.writeU32(0, 1), () => m.msync(0, 4096)]) {
    assert.throws(call, (e) => typeof e.code === 'string' && e.code.startsWith('ERR_'))
  }
  junk.length = 0
  gc()
}
console.log('ok')
`,
  )
  try {
    const r = spawnSync(process.execPath, ['--expose-gc', file], { encoding: 'utf8', timeout: 60_000 * SLOWDOWN })
    t.is(r.status, 0, r.stderr)
    t.is(r.signal, null)
    t.is(r.stdout.trim(), 'ok')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
