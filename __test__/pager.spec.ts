/**
 * `GuestMemory.restore(…, { lazy: 'pager' })`: anonymous memory filled by the package's pager
 * thread (userfaultfd, missing mode) on faults from anywhere and in the background; `restored`;
 * a source that cannot supply pages; close() during a restore, also by a worker that is the last
 * holder; the refusal without a full userfaultfd. Crash-prone cases run in child processes.
 */
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { chmodSync, closeSync, cpSync, mkdtempSync, openSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GuestMemory, PAGE_SIZE, Protection, type SnapshotManifest } from 'mapped-region'
import { NO_EXTERNAL, NOBODY_CAN_RUN_NODE, ROOT, runChild, tempDir } from './helpers.js'

const P = PAGE_SIZE
const MiB = 1 << 20

/** A full userfaultfd is ours (root here); elsewhere the pager is refused (tested below). */
const PAGER = process.getuid?.() === 0

/** A guest of two regions (the second read-only), page i holding i's low bytes, snapshotted to a temporary file. */
async function snapshotted(t: import('ava').ExecutionContext, size = 8 * MiB): Promise<{ path: string; manifest: SnapshotManifest }> {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const path = join(tmp.dir, 'vm.mem')
  // The second region: a file's pages, read-only.
  const rom = Buffer.alloc(16 * P)
  for (let i = 0; i < 16; i++) rom.writeUInt32LE(0xc0de0000 + i, i * P + 8)
  writeFileSync(join(tmp.dir, 'rom'), rom)
  const fd = openSync(join(tmp.dir, 'rom'), 'r')
  using g = new GuestMemory([
    { guestAddress: 0, size, backing: 'anonymous' },
    { guestAddress: 64 * MiB, size: 16 * P, backing: { fd, fdOffset: 0, shared: false }, protection: Protection.READ },
  ])
  closeSync(fd)
  for (let i = 0; i < size / P; i++) g.writeU32(i * P, i ^ 0x5a5a0000)
  const manifest = await g.snapshot(path)
  return { path, manifest: JSON.parse(JSON.stringify(manifest)) as SnapshotManifest }
}

const pagerTest = PAGER ? test : test.skip

/** For the children: `threads()` counts this process's pager threads (named `mr-pager`). */
const THREADS =
  "const threads = () => fs.readdirSync('/proc/self/task').filter((id) => { try { return fs.readFileSync('/proc/self/task/' + id + '/comm', 'utf8').trim() === 'mr-pager' } catch { return false } }).length"

pagerTest('lazy: pager returns at once; every access is served; restored resolves, and the file may then be deleted', async (t) => {
  const { path, manifest } = await snapshotted(t)
  using guest = GuestMemory.restore(manifest, path, { lazy: 'pager' })
  t.true(guest.restored instanceof Promise)
  // Faults from this thread: a copy, typed access, a view, an atomic (anonymous memory allows it).
  t.is(guest.readU32(1000 * P), 1000 ^ 0x5a5a0000)
  t.is(guest.read(2000 * P, 4).readUInt32LE(0), 2000 ^ 0x5a5a0000)
  // (Without external buffers there are no views: a copy stands in for the view's fault.)
  const view = NO_EXTERNAL ? guest.read(1500 * P, P) : guest.view(1500 * P, P)
  t.is(view.readUInt32LE(0), 1500 ^ 0x5a5a0000)
  t.is(guest.compareExchangeU32(1700 * P, 1700 ^ 0x5a5a0000, 7), 1700 ^ 0x5a5a0000)
  t.is(guest.readU32Atomic(1700 * P), 7)
  t.is(guest.readU32(64 * MiB + 3 * P + 8), 0xc0de0003)
  // A page discarded once it is in reads as zeros, during the restore and after (never refilled).
  guest.discard(1000 * P, P)
  t.is(guest.readU32(1000 * P), 0)
  await guest.restored
  t.is(guest.readU32(1000 * P), 0)
  unlinkSync(path)
  for (let i = 0; i < 2048; i++) if (i !== 1700 && i !== 1000) t.is(guest.readU32(i * P), i ^ 0x5a5a0000, `page ${i}`)
  t.is(guest.readU32(64 * MiB + 15 * P + 8), 0xc0de000f)
  t.deepEqual(
    guest.regions().map((r) => [r.guestAddress, r.size, r.readonly]),
    [
      [0n, 8 * MiB, false],
      [BigInt(64 * MiB), 16 * P, true],
    ],
  )
  // A snapshot of it restores to the same bytes (eagerly here).
  const tmp = tempDir()
  t.teardown(tmp.done)
  const again = await guest.snapshot(join(tmp.dir, 'again.mem'))
  using copy = GuestMemory.restore(again, join(tmp.dir, 'again.mem'), { lazy: false })
  t.true(copy.read(0, 8 * MiB).equals(guest.read(0, 8 * MiB)))
  t.true(copy.read(64 * MiB, 16 * P).equals(guest.read(64 * MiB, 16 * P)))
})

test('lazy takes true, false, file and pager; restored is only for the pager', async (t) => {
  const { path, manifest } = await snapshotted(t, 16 * P)
  for (const lazy of [undefined, true, 'file', false] as const) {
    using g = GuestMemory.restore(manifest, path, { lazy })
    t.is(g.restored, undefined, String(lazy))
    t.is(g.readU32(3 * P), 3 ^ 0x5a5a0000)
  }
  for (const lazy of ['pagers', 'PAGER', '']) {
    t.throws(() => GuestMemory.restore(manifest, path, { lazy: lazy as never }), { code: 'ERR_INVALID_ARG_VALUE', message: /lazy/ })
  }
  for (const lazy of [1, null, {}]) {
    t.throws(() => GuestMemory.restore(manifest, path, { lazy: lazy as never }), { code: 'ERR_INVALID_ARG_TYPE', message: /lazy/ })
  }
})

pagerTest(
  'a file truncated during the restore: no signal, no hang; restored rejects naming exactly the pages that hold zeros (in a child)',
  async (t) => {
    const { path, manifest } = await snapshotted(t, 64 * MiB)
    const r = runChild(
      `
    const fs = require('node:fs')
    const manifest = ${JSON.stringify(manifest)}
    const guest = mr.GuestMemory.restore(manifest, ${JSON.stringify(path)}, { lazy: 'pager' })
    // Truncated to 1 MiB at once: the prefetch cannot have read 64 MiB yet.
    fs.truncateSync(${JSON.stringify(path)}, ${MiB})
    // A fault past the new end resolves (zeros or, if read before, the bytes).
    const last = guest.readU32(${64 * MiB - P})
    guest.restored.then(
      () => console.log(JSON.stringify({ resolved: true })),
      (e) => {
        const zero = new Set()
        for (const [at, n] of e.pages) for (let i = 0; i < n; i++) zero.add(at + i * ${P})
        let wrong = 0
        for (let i = 0; i < ${(64 * MiB) / P}; i++) {
          const v = guest.readU32(i * ${P})
          if (zero.has(i * ${P}) ? v !== 0 : v !== ((i ^ 0x5a5a0000) >>> 0)) wrong++
        }
        const ro = guest.readU32(${64 * MiB + 8})
        console.log(JSON.stringify({ code: e.code, runs: e.pages.length, zeros: zero.size, wrong, message: e.message, last, ro }))
        guest.close()
      },
    )`,
      60_000,
    )
    t.is(r.signal, null, r.stderr)
    t.is(r.status, 0, r.stderr)
    const out = JSON.parse(r.stdout.trim())
    t.is(out.code, 'ERR_RESTORE_INCOMPLETE', r.stdout)
    t.true(out.zeros > 0 && out.zeros <= (64 * MiB) / P + 16 - MiB / P, r.stdout)
    t.is(out.wrong, 0, 'the pages named hold zeros, every other page the snapshot')
    t.regex(out.message, /could not supply \d+ pages .* at guest addresses 0x/)
    t.is(out.ro, 0, 'the second region lies past the new end too: zeros')
  },
)

pagerTest(
  'a file truncated by another process while this one faults: no signal, no hang; restored rejects naming exactly the pages past the new end that were not filled (in a child)',
  (t) => {
    const size = 256 * MiB
    const cut = 4 * MiB
    const tmp = tempDir()
    t.teardown(tmp.done)
    const path = join(tmp.dir, 'vm.mem')
    const data = Buffer.alloc(size, 0x77)
    for (let i = 0; i < size / P; i++) data.writeUInt32LE((i ^ 0x5a5a0000) >>> 0, i * P)
    writeFileSync(path, data)
    const manifest = {
      version: 1,
      pageSize: P,
      dirtyOnly: false,
      regions: [{ guestAddress: 0, size, fileOffset: 0, backing: 'anonymous', protection: 3 }],
    }
    const r = runChild(
      `
    const fs = require('node:fs')
    const { spawn } = require('node:child_process')
    const path = ${JSON.stringify(path)}
    // The other process: started first, it truncates the file when told to (on its stdin).
    const other = spawn(process.execPath, ['-e', "process.stdin.once('data', () => { require('node:fs').truncateSync(" + JSON.stringify(path) + ", ${cut}); process.exit(0) }); process.stdout.write('ready')"], { stdio: ['pipe', 'pipe', 'inherit'] })
    other.stdout.once('data', () => {
      const guest = mr.GuestMemory.restore(${JSON.stringify(manifest)}, path, { lazy: 'pager' })
      // Faults from the end backwards (the prefetch goes forwards): 16 pages, then the other
      // process is told to cut the file, and this thread sleeps until it has (the restore goes on
      // meanwhile: the pager is a thread of its own); then 1024 more faults. Every value read is kept.
      const seen = new Map()
      const top = ${size / P - 1}
      for (let i = top; i > top - 16; i--) seen.set(i, guest.readU32(i * ${P}))
      other.stdin.write('now')
      const until = Date.now() + 30_000
      const nap = new Int32Array(new SharedArrayBuffer(4))
      while (fs.statSync(path).size !== ${cut} && Date.now() < until) Atomics.wait(nap, 0, 0, 1)
      const cutSeen = fs.statSync(path).size === ${cut}
      for (let i = top - 16; i > top - 16 - 1024; i--) seen.set(i, guest.readU32(i * ${P}))
      other.once('exit', (code) => guest.restored.then(
        () => console.log(JSON.stringify({ resolved: true })),
        (e) => {
          const zero = new Set()
          for (const [at, n] of e.pages) for (let k = 0; k < n; k++) zero.add(at / ${P} + k)
          let wrong = 0
          let below = 0
          for (let i = 0; i < ${size / P}; i++) {
            const v = guest.readU32(i * ${P})
            if (zero.has(i) ? v !== 0 : v !== ((i ^ 0x5a5a0000) >>> 0)) wrong++
            if (zero.has(i) && i < ${cut / P}) below++
          }
          let changed = 0
          for (const [i, v] of seen) if (v !== guest.readU32(i * ${P})) changed++
          const firstZero = [...seen.entries()].filter(([i, v]) => i > top - 16 && v === 0).length
          const seenZero = [...seen.values()].filter((v) => v === 0).length
          console.log(JSON.stringify({ code: e.code, exit: code, zeros: zero.size, below, wrong, changed, seen: seen.size, firstZero, seenZero, cutSeen, message: e.message }))
          guest.close()
        },
      ))
    })`,
      60_000,
    )
    t.is(r.signal, null, r.stderr)
    t.is(r.status, 0, r.stderr)
    const out = JSON.parse(r.stdout.trim())
    t.is(out.exit, 0, 'the other process truncated the file')
    t.true(out.cutSeen, r.stdout)
    // The prefetch cannot read 256 MiB before the other process's truncation (a pipe write and
    // one ftruncate away): the restore is incomplete.
    t.is(out.code, 'ERR_RESTORE_INCOMPLETE', r.stdout)
    t.is(out.below, 0, 'no page below the new end is named')
    t.true(out.zeros > 0 && out.zeros <= (size - cut) / P, r.stdout)
    t.is(out.wrong, 0, 'the pages named hold zeros, every other page the snapshot')
    t.is(out.changed, 0, 'what a fault returned during the restore is what the page holds after: zeros only where named')
    t.is(out.firstZero, 0, 'the pages faulted on before the cut hold the snapshot')
    t.log(`${out.seen} pages faulted on from the end, ${out.seenZero} of them served zeros; ${out.zeros} pages named`)
  },
)

pagerTest('close() during the restore stops the pager: restored rejects, mappings and the thread are gone (in a child)', (t) => {
  const r = runChild(
    `
    const fs = require('node:fs')
    ${THREADS}
    const dir = fs.mkdtempSync(require('node:os').tmpdir() + '/mr-pager-')
    const path = dir + '/vm.mem'
    fs.writeFileSync(path, Buffer.alloc(${128 * MiB}, 3))
    const manifest = { version: 1, pageSize: ${P}, dirtyOnly: false, regions: [{ guestAddress: 0, size: ${128 * MiB}, fileOffset: 0, backing: 'anonymous', protection: 3 }] }
    const before = mr.mapCount().owned
    const guest = mr.GuestMemory.restore(manifest, path, { lazy: 'pager' })
    const read = guest.readU8(${100 * MiB})
    // After a page it served: the thread has named itself by then.
    const during = threads()
    guest.close()
    guest.restored.then(
      () => console.log('resolved'),
      (e) => {
        console.log(JSON.stringify({ code: e.code, during, after: threads(), read, owned: mr.mapCount().owned - before }))
        fs.rmSync(dir, { recursive: true })
      },
    )`,
    60_000,
  )
  t.is(r.status, 0, r.stderr)
  t.deepEqual(JSON.parse(r.stdout.trim()), { code: 'ERR_MMAP_CLOSED', during: 1, after: 0, read: 3, owned: 0 })
})

/** Whether this runtime makes sharedView()s (node_api_create_external_sharedarraybuffer: not Node 20). */
const SHARED_VIEW = (() => {
  try {
    using g = new GuestMemory([{ guestAddress: 0, size: P, backing: 'anonymous' }])
    g.sharedView(0, P)
    return true
  } catch {
    return false
  }
})()

;(PAGER && SHARED_VIEW ? test : test.skip)(
  "close() while another thread's faults are in flight (a worker reading through a sharedView): they are woken, the pages never filled read as zeros, nothing hangs (in a child)",
  (t) => {
    const r = runChild(
      `
    const fs = require('node:fs')
    const { Worker } = require('node:worker_threads')
    ${THREADS}
    const dir = fs.mkdtempSync(require('node:os').tmpdir() + '/mr-pager-')
    const path = dir + '/vm.mem'
    const size = ${256 * MiB}
    const data = Buffer.alloc(size)
    for (let i = 0; i < size / ${P}; i++) data.writeUInt32LE(i + 1, i * ${P})
    fs.writeFileSync(path, data)
    const manifest = { version: 1, pageSize: ${P}, dirtyOnly: false, regions: [{ guestAddress: 0, size, fileOffset: 0, backing: 'anonymous', protection: 3 }] }
    // The worker holds no GuestMemory, only a view: the main thread's close() is the last one.
    // It starts before the restore (so the prefetch has no head start), is handed the view, and
    // tells through \`ctrl\` that it has faulted once; it then reads every page from the end
    // backwards (the prefetch goes forwards) while the main thread closes.
    const ctrl = new Int32Array(new SharedArrayBuffer(4))
    const w = new Worker(\`
      const { parentPort, workerData: ctrl } = require('node:worker_threads')
      parentPort.once('message', (sab) => {
        const u32 = new Uint32Array(sab)
        let filled = 0, zeros = 0, wrong = 0
        for (let i = ${(256 * MiB) / P - 1}; i >= 0; i--) {
          const v = u32[i * ${P / 4}]
          if (v === i + 1) filled++
          else if (v === 0) zeros++
          else wrong++
          if (i === ${(256 * MiB) / P - 1}) { Atomics.store(ctrl, 0, 1); Atomics.notify(ctrl, 0) }
        }
        parentPort.postMessage({ filled, zeros, wrong })
      })
      parentPort.postMessage('ready')
    \`, { eval: true, workerData: ctrl })
    w.once('message', () => {
      const guest = mr.GuestMemory.restore(manifest, path, { lazy: 'pager' })
      w.postMessage(guest.sharedView(0, size))
      const waited = Atomics.wait(ctrl, 0, 0, 30_000)
      guest.close()
      const settled = guest.restored.then(() => 'resolved', (e) => e.code)
      w.once('message', async (counts) => {
        console.log(JSON.stringify({ ...counts, waited, settled: await settled, threads: threads() }))
        await w.terminate()
        fs.rmSync(dir, { recursive: true })
      })
    })`,
      60_000,
    )
    t.is(r.signal, null, r.stderr)
    t.is(r.status, 0, r.stderr)
    const out = JSON.parse(r.stdout.trim())
    t.not(out.waited, 'timed-out', 'the worker faulted once')
    t.is(out.wrong, 0, 'every page read holds the snapshot or zeros')
    t.is(out.filled + out.zeros, (256 * MiB) / P)
    t.true(out.filled > 0, 'the page the worker faulted on first holds the snapshot')
    // Normally the close comes long before the prefetch could fill 256 MiB; on a machine slow
    // enough to let it finish first, nothing is zero and the restore may have settled as done.
    if (out.zeros > 0) t.is(out.settled, 'ERR_MMAP_CLOSED', 'pages never filled: the restore did not complete')
    else t.true(out.settled === 'resolved' || out.settled === 'ERR_MMAP_CLOSED', out.settled)
    t.is(out.threads, 0, 'the pager thread is joined')
    t.log(`${out.filled} pages read the snapshot, ${out.zeros} zeros`)
  },
)

pagerTest('a worker faults on attached memory; when it is the last holder, its close() stops the pager (in a child)', (t) => {
  const r = runChild(
    `
    const fs = require('node:fs')
    const { Worker } = require('node:worker_threads')
    ${THREADS}
    const dir = fs.mkdtempSync(require('node:os').tmpdir() + '/mr-pager-')
    const path = dir + '/vm.mem'
    const data = Buffer.alloc(${128 * MiB})
    for (let i = 0; i < ${(128 * MiB) / P}; i++) data.writeUInt32LE(i, i * ${P})
    fs.writeFileSync(path, data)
    const manifest = { version: 1, pageSize: ${P}, dirtyOnly: false, regions: [{ guestAddress: 0, size: ${128 * MiB}, fileOffset: 0, backing: 'anonymous', protection: 3 }] }
    const before = mr.mapCount().owned
    const guest = mr.GuestMemory.restore(manifest, path, { lazy: 'pager' })
    const w = new Worker(\`
      const { parentPort, workerData } = require('node:worker_threads')
      const mr = require(\${JSON.stringify(${JSON.stringify(join(ROOT, 'dist/index.js'))})})
      const g = mr.GuestMemory.attach(workerData)
      // Faults from this thread, from the end backwards (the prefetch goes forwards).
      let wrong = 0
      for (let i = ${(128 * MiB) / P - 1}; i >= ${(120 * MiB) / P}; i--) if (g.readU32(i * ${P}) !== i) wrong++
      // Its own restored: settled as the main thread's.
      g.restored.then(() => parentPort.postMessage(wrong), (e) => parentPort.postMessage(e.code))
      parentPort.once('message', () => { g.close(); parentPort.postMessage('closed') })
    \`, { eval: true, workerData: guest.share() })
    w.once('message', (wrong) => {
      guest.close()
      const heldByWorker = threads()
      w.once('message', () => {
        console.log(JSON.stringify({ wrong, heldByWorker, after: threads(), owned: mr.mapCount().owned - before }))
        w.terminate()
        fs.rmSync(dir, { recursive: true })
      })
      w.postMessage('close')
    })`,
    60_000,
  )
  t.is(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout.trim())
  t.is(out.wrong, 0)
  t.true(out.heldByWorker <= 1, 'the pager lives on with the worker (or is done)')
  t.is(out.after, 0)
  t.is(out.owned, 0)
})

// A user without privileges gets no full userfaultfd (vm.unprivileged_userfaultfd is 0 here): the
// pager is refused, saying why (a user-mode-only one would let kernel-mode faults fail with EFAULT).
const asNobody = PAGER && NOBODY_CAN_RUN_NODE ? test : test.skip
asNobody("as a user without privileges (nobody): lazy: 'pager' is refused with the reason, the other modes work", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mr-nobody-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const f of ['index.js', 'package.json', ...readdirSync(ROOT).filter((n) => n.endsWith('.node'))]) cpSync(join(ROOT, f), join(dir, f))
  cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true })
  writeFileSync(join(dir, 'vm.mem'), Buffer.alloc(4 * P, 9))
  chmodSync(dir, 0o755)
  const manifest = {
    version: 1,
    pageSize: P,
    dirtyOnly: false,
    regions: [{ guestAddress: 0, size: 4 * P, fileOffset: 0, backing: 'anonymous', protection: 3 }],
  }
  const script = `
    const { GuestMemory } = require('${dir}/dist/index.js')
    const m = ${JSON.stringify(manifest)}
    try { GuestMemory.restore(m, '${dir}/vm.mem', { lazy: 'pager' }); console.log('made') } catch (e) { console.log(e.code, e.message) }
    console.log(GuestMemory.restore(m, '${dir}/vm.mem', { lazy: 'file' }).readU8(5), GuestMemory.restore(m, '${dir}/vm.mem', { lazy: false }).readU8(5))`
  const r = spawnSync('su', ['nobody', '-s', '/bin/sh', '-c', `"${process.execPath}" -e "$0"`, script], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  const [refusal, others] = r.stdout.trim().split('\n')
  t.regex(refusal, /^ERR_MMAP_UNSUPPORTED .*userfaultfd.*EFAULT/)
  t.is(others, '9 9')
})

pagerTest(
  'hostile: a worker terminated while it faults, before and after the main close(); nothing crashes, hangs or stays (in a child)',
  (t) => {
    const r = runChild(
      `
    const fs = require('node:fs')
    const { Worker } = require('node:worker_threads')
    ${THREADS}
    const dir = fs.mkdtempSync(require('node:os').tmpdir() + '/mr-pager-')
    const path = dir + '/vm.mem'
    fs.writeFileSync(path, Buffer.alloc(${256 * MiB}, 1))
    const manifest = { version: 1, pageSize: ${P}, dirtyOnly: false, regions: [{ guestAddress: 0, size: ${256 * MiB}, fileOffset: 0, backing: 'anonymous', protection: 3 }] }
    const before = mr.mapCount().owned
    const body = \`
      const { parentPort, workerData } = require('node:worker_threads')
      const mr = require(\${JSON.stringify(${JSON.stringify(join(ROOT, 'dist/index.js'))})})
      const g = mr.GuestMemory.attach(workerData)
      parentPort.postMessage('started')
      // Faults, from the end backwards, until terminated (then over and over: the pages are in).
      for (let sum = 0; ; ) for (let i = ${(256 * MiB) / P - 1}; i >= 0; i -= 3) sum += g.readU8(i * ${P})
    \`
    const round = (closeFirst) => new Promise((resolve) => {
      const guest = mr.GuestMemory.restore(manifest, path, { lazy: 'pager' })
      const w = new Worker(body, { eval: true, workerData: guest.share() })
      w.once('message', async () => {
        if (closeFirst) guest.close()
        await w.terminate()
        if (!closeFirst) guest.close()
        const settled = await guest.restored.then(() => 'resolved', (e) => e.code)
        resolve({ settled, threads: threads(), owned: mr.mapCount().owned - before })
      })
    })
    ;(async () => {
      const a = await round(false)
      const b = await round(true)
      console.log(JSON.stringify([a, b]))
      fs.rmSync(dir, { recursive: true })
    })()`,
      120_000,
    )
    t.is(r.signal, null, r.stderr)
    t.is(r.status, 0, r.stderr)
    for (const round of JSON.parse(r.stdout.trim())) {
      t.true(round.settled === 'resolved' || round.settled === 'ERR_MMAP_CLOSED', JSON.stringify(round))
      t.is(round.threads, 0)
      t.is(round.owned, 0)
    }
  },
)

pagerTest(
  'record: the pages first touched, in order; snapshot({ workingSet: true }) stores them (manifest version 2) and the next restore fetches them first',
  async (t) => {
    const size = 64 * MiB
    const { path, manifest } = await snapshotted(t, size)
    // A replayed access trace: 256 pages scattered over the upper half (the prefetch starts at the
    // bottom), each read once.
    const trace = Array.from({ length: 256 }, (_, i) => (size / 2 / P + ((i * 2654435761) % (size / 2 / P))) * P)
    const replay = (g: GuestMemory) => {
      const t0 = process.hrtime.bigint()
      let wrong = 0
      for (const at of trace) if (g.readU32(at) !== ((at / P) ^ 0x5a5a0000)) wrong++
      return { wrong, ms: Number(process.hrtime.bigint() - t0) / 1e6, faults: g.restoreFaults ?? -1 }
    }
    using first = GuestMemory.restore(manifest, path, { lazy: 'pager', record: true })
    const without = replay(first)
    t.is(without.wrong, 0)
    const recorded = first.workingSet()
    // Each touch that waited for the file is recorded once (how many wait depends on how far the
    // prefetch got meanwhile: all 256 on a quiet machine).
    t.is(
      recorded.reduce((sum, [, n]) => sum + n, 0),
      without.faults,
      'every touch that waited is recorded, once',
    )
    // Every page recorded is a page of the trace, in the trace's order (only touches that waited
    // for the file are seen).
    const order = new Map(trace.map((at, i) => [at, i]))
    let last = -1
    for (const [at, n] of recorded) {
      for (let k = 0; k < n; k++) {
        const i = order.get(at + k * P)
        t.not(i, undefined, `0x${(at + k * P).toString(16)} was not touched`)
        t.true((i as number) > last, 'in the order of the first touches')
        last = i as number
      }
    }
    await first.restored
    const tmp = tempDir()
    t.teardown(tmp.done)
    const next = JSON.parse(JSON.stringify(await first.snapshot(join(tmp.dir, 'next.mem'), { workingSet: true }))) as SnapshotManifest
    t.is(next.version, 2)
    t.deepEqual(next.workingSet, first.workingSet())
    using second = GuestMemory.restore(next, join(tmp.dir, 'next.mem'), { lazy: 'pager' })
    const withSet = replay(second)
    t.is(withSet.wrong, 0)
    await second.restored
    t.true(second.read(0, size).equals(first.read(0, size)))
    t.log(
      `replayed trace of ${trace.length} pages: without a working set ${without.faults} faults, ${without.ms.toFixed(2)} ms; with it ${withSet.faults} faults, ${withSet.ms.toFixed(2)} ms`,
    )
    // The checks around it.
    t.throws(() => second.workingSet(), { code: 'ERR_MMAP_UNSUPPORTED' }, 'not recording')
    t.throws(() => GuestMemory.restore(manifest, path, { lazy: 'file', record: true }), {
      code: 'ERR_INVALID_ARG_VALUE',
      message: /record/,
    })
    t.throws(() => GuestMemory.restore({ ...manifest, workingSet: [[0, 1]] }, path), {
      code: 'ERR_INVALID_ARG_VALUE',
      message: /version 2/,
    })
    t.throws(() => GuestMemory.restore({ ...next, version: 3 as never }, path), { code: 'ERR_INVALID_ARG_VALUE', message: /1 or 2/ })
    t.throws(() => GuestMemory.restore({ ...next, workingSet: [[1, 1]] }, path), { code: 'ERR_MMAP_UNALIGNED' })
    t.throws(() => GuestMemory.restore({ ...next, workingSet: [[0, 0]] }, path), { code: 'ERR_OUT_OF_RANGE' })
    t.throws(() => GuestMemory.restore({ ...next, workingSet: 'all' as never }, path), { code: 'ERR_INVALID_ARG_TYPE' })
    using plain = GuestMemory.restore(next, path, { lazy: false })
    t.is(plain.restoreFaults, undefined)
    await t.throwsAsync(plain.snapshot(join(tmp.dir, 'x.mem'), { workingSet: true }), { code: 'ERR_MMAP_UNSUPPORTED' })
  },
)

// trackDirty: 'software' with the pager (the kernel's tracking with it: dirty-kernel.spec.ts).

/** The dirty pages of each region, as page indexes, from `takeDirty()`. */
function dirtyPages(guest: GuestMemory): number[][] {
  return guest.takeDirty().map(({ bitmap, size }) => {
    const out: number[] = []
    for (let p = 0; p < size / P; p++) if ((bitmap[p >> 6] >> BigInt(p & 63)) & 1n) out.push(p)
    return out
  })
}

pagerTest("trackDirty: 'software' with lazy: 'pager': the pager's fills mark nothing, this object's writes are marked", async (t) => {
  const { path, manifest } = await snapshotted(t)
  using guest = GuestMemory.restore(manifest, path, { lazy: 'pager', trackDirty: 'software' })
  t.is(guest.dirtyTracking, 'software')
  t.deepEqual(dirtyPages(guest), [[], []], 'nothing written yet')
  // Reads fault pages in (the pager fills them): not writes.
  t.is(guest.readU32(100 * P), 100 ^ 0x5a5a0000)
  t.is(guest.read(64 * MiB + 2 * P + 8, 4).readUInt32LE(0), 0xc0de0002)
  guest.writeU32(200 * P, 1)
  guest.write(300 * P + P - 2, Buffer.from([1, 2, 3, 4]))
  t.deepEqual(dirtyPages(guest), [[200, 300, 301], []])
  await guest.restored
  t.deepEqual(dirtyPages(guest), [[], []], 'the background fill marked nothing either')
  guest.writeU32(5 * P, 9)
  t.deepEqual(dirtyPages(guest), [[5], []])
  t.is(guest.readU32(5 * P), 9)
  t.is(guest.readU32(200 * P), 1)
  t.is(guest.readU32(201 * P), 201 ^ 0x5a5a0000)
})
