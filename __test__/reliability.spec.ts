/**
 * Reliability under exhaustion, faults, kills, garbage collection and several
 * processes. Everything that strains the process runs in a child.
 */
import test from 'ava'
import { spawn, spawnSync } from 'node:child_process'
import { closeSync, ftruncateSync, openSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { MemoryMapping, PAGE_SIZE, SharedMemory, mapCount } from 'mapped-region'
import { ENTRY, throwsErrno, tempDir, tempFile, ROOT, runChild, SLOWDOWN } from './helpers.js'
import { viewTest } from './view-test.js'
import { killAfterSomeSyncs, pagePattern } from './workloads.js'

const P = PAGE_SIZE

viewTest('map-count limit: overlays are refused with ENOMEM before the runtime runs out; a full arena can always be emptied', (t) => {
  const r = runChild(
    `
    const P = mr.PAGE_SIZE
    const shm = mr.SharedMemory.create('limit', 1024 * P)
    const { limit, headroom } = mr.mapCount()
    const a = mr.MemoryMappingArena.reserve(2 * limit * P)
    a.addFdMapping(2 * P * 10, P, shm.fd, 0, mr.Protection.READ_WRITE)
    let added = 0, error
    try {
      for (; ; added++) a.addFdMapping(2 * added * P, P, shm.fd, (added % 1024) * P, mr.Protection.READ_WRITE)
    } catch (e) { error = e }
    const view = a.view(0, P) // views of the full arena still work
    view.write('still alive')
    const before = a.mappings()
    const counts = mr.mapCount()
    // A refused overlay changes nothing, detaches nothing.
    try { a.addAnonymous(2 * added * P, P, mr.Protection.READ) } catch (e) { }
    const unchanged = JSON.stringify(a.mappings()) === JSON.stringify(before) && view.length === P
    // The runtime still has room: allocate, collect, compile.
    const junk = []
    for (let i = 0; i < 64; i++) junk.push(Buffer.alloc(1 << 20, i))
    global.gc()
    // Remove every overlay.
    for (let i = 0; i < added; i++) a.removeMapping(2 * i * P, P)
    console.log(JSON.stringify({
      code: error.code, syscall: error.syscall, added, layoutWasFull: before.length === added, unchanged,
      room: counts.limit - counts.process, headroom, left: a.mappings().length, kernel: a.kernelMappingCount,
      text: a.read(0, 0).length === 0,
    }))
  `,
    120_000,
  )
  t.is(r.signal, null, r.stderr)
  t.is(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout.trim())
  t.is(out.code, 'ENOMEM')
  t.is(out.syscall, 'mmap')
  t.true(out.added > 25_000, `${out.added} overlays fitted`)
  t.true(out.layoutWasFull)
  t.true(out.unchanged, 'a refused overlay leaves layout and views as they were')
  // The headroom stays for the runtime (which used a few dozen since the refusal).
  t.true(out.room > out.headroom * 0.9, `${out.room} of ${out.headroom} mappings left for the runtime`)
  t.is(out.left, 0)
  t.is(out.kernel, 1)
})

test('mapCount() reports the process, this library and the limit', (t) => {
  const before = mapCount()
  t.true(before.limit >= 1024 && before.headroom >= 1024)
  t.true(before.process > 0 && before.process < before.limit)
  using m = MemoryMapping.anonymous(P)
  const after = mapCount()
  t.is(after.owned, before.owned + 1)
  m.close()
  t.is(mapCount().owned, before.owned)
})

viewTest('durability: bytes msynced by a child that is then SIGKILLed are on disk (10 iterations)', async (t) => {
  const { dir, done } = tempDir()
  t.teardown(done)
  for (let iteration = 0; iteration < 10; iteration++) {
    const path = join(dir, `disk-${iteration}.img`)
    const synced = await killAfterSomeSyncs(path, 3 + ((iteration * 7) % 20))
    const disk = readFileSync(path)
    for (const page of synced) {
      t.true(disk.subarray(page * P, (page + 1) * P).equals(pagePattern(page)), `iteration ${iteration}, page ${page}`)
    }
    t.true(synced.length >= 3)
  }
})

viewTest('leak check: add/view/remove cycles keep RSS, the map count and the fd count flat (the soak, short)', (t) => {
  // The soak script in a process of its own, so that nothing else moves its RSS.
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', 'scripts/soak.mts'], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, MR_SOAK_CYCLES: '100000', MR_SOAK_KILLS: '0', MR_SOAK_FUZZ_SEEDS: '0' },
    timeout: 120_000 * SLOWDOWN,
  })
  t.is(r.status, 0, r.stdout + r.stderr)
  t.regex(r.stdout, /100000 cycles in/)
  t.regex(r.stdout, /soak: ok/)
})

viewTest('garbage collection: thousands of forgotten regions and views are unmapped', (t) => {
  const r = runChild(
    `
    const fs = require('node:fs')
    const vm = () => Number(/VmSize:\\s+(\\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) * 1024
    const P = mr.PAGE_SIZE
    const shm = mr.SharedMemory.create('gc', 64 * P)
    const base = vm()
    ;(() => {
      for (let i = 0; i < 3000; i++) {
        const a = mr.MemoryMappingArena.reserve(64 << 20)
        a.addFdMapping(0, 64 * P, shm.fd, 0, mr.Protection.READ_WRITE)
        const v = a.view(i % 64 * P, P)
        v[0] = i & 0xff
        if (i % 3 === 0) { const m = mr.MemoryMapping.fromFd(shm.fd, 64 * P); m.view(0, P) }
      }
    })()
    const grown = vm() - base
    let rounds = 0
    const tick = () => {
      global.gc()
      const left = vm() - base
      if ((mr.mapCount().owned === 0 && left < (1 << 30)) || ++rounds > 200) return console.log(grown, left, mr.mapCount().owned)
      setImmediate(tick)
    }
    tick()
  `,
    120_000,
  )
  t.is(r.status, 0, r.stderr)
  const [grown, left, owned] = r.stdout.trim().split(' ').map(Number)
  t.true(grown > 3000 * 64 * 2 ** 20 * 0.9, `virtual size grew by ${grown}`)
  t.true(left < 2 ** 30, `virtual size back near its baseline (+${left} of ${grown})`)
  t.is(owned, 0, 'the library owns no mapping any more')
})

test('several processes share one SharedMemory: inherited fd and /proc/<pid>/fd; the peer cannot shrink it', async (t) => {
  using shm = SharedMemory.create('shared-across', 4 * P)
  using mine = MemoryMapping.fromFd(shm.fd, shm.size)
  mine.write(0, Buffer.from('from parent'))
  const body = `
    const mr = require(${JSON.stringify(ENTRY)})
    const fs = require('node:fs')
    const inherited = mr.MemoryMapping.fromFd(3, 4 * mr.PAGE_SIZE)
    const viaProc = fs.openSync('/proc/' + process.ppid + '/fd/' + ${shm.fd}, 'r+')
    const second = mr.MemoryMapping.fromFd(viaProc, 4 * mr.PAGE_SIZE)
    const seen = inherited.read(0, 11).toString()
    second.write(mr.PAGE_SIZE, Buffer.from('from child'))
    let shrink = 'allowed'
    try { fs.ftruncateSync(3, 0) } catch (e) { shrink = e.code }
    let shrinkProc = 'allowed'
    try { fs.ftruncateSync(viaProc, mr.PAGE_SIZE) } catch (e) { shrinkProc = e.code }
    process.stdout.write(JSON.stringify({ seen, shrink, shrinkProc }))
    // Wait for the parent's reply through the shared memory.
    const deadline = Date.now() + 10000
    while (inherited.read(2 * mr.PAGE_SIZE, 5).toString() !== 'reply' && Date.now() < deadline) {}
    process.exitCode = inherited.read(2 * mr.PAGE_SIZE, 5).toString() === 'reply' ? 0 : 3
  `
  const child = spawn(process.execPath, ['-e', body], { stdio: ['ignore', 'pipe', 'inherit', shm.fd] })
  const out = await new Promise<string>((resolve) => {
    let text = ''
    child.stdout?.on('data', (d: Buffer) => {
      text += d.toString()
      if (text.endsWith('}')) {
        mine.write(2 * P, Buffer.from('reply'))
        resolve(text)
      }
    })
  })
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  const result = JSON.parse(out)
  t.is(result.seen, 'from parent')
  t.is(mine.read(P, 10).toString(), 'from child')
  t.is(result.shrink, 'EPERM')
  t.is(result.shrinkProc, 'EPERM')
  t.is(code, 0, 'the child saw the parent reply through shared memory')
  throwsErrno(t, () => ftruncateSync(shm.fd, 0), 'EPERM')
})

test('an fd closed right after mapping: the mapping keeps working; close + reuse of the fd number is harmless', (t) => {
  const { path, fd } = tempFile(t, Buffer.alloc(P, 9))
  using m = MemoryMapping.fromFd(fd, P)
  closeSync(fd)
  const reused = openSync('/dev/null', 'r')
  t.teardown(() => closeSync(reused))
  t.deepEqual(m.read(0, 2), Buffer.from([9, 9]))
  m.write(0, Buffer.from([1]))
  m.msync(0, P)
  t.is(readFileSync(path)[0], 1)
})

test('a file truncated and regrown by another process during copies: every copy succeeds or throws EFAULT, none crashes', (t) => {
  // A second process flips the file between empty and 1 MiB as fast as it can while this
  // child copies 1 MiB in and out: faults land in the middle of copies, not only before them.
  const r = runChild(
    `
    const fs = require('node:fs'), os = require('node:os'), path = require('node:path')
    const { spawn } = require('node:child_process')
    const MiB = 1 << 20
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mr-race-'))
    const file = path.join(dir, 'f')
    fs.writeFileSync(file, Buffer.alloc(MiB, 1))
    const fd = fs.openSync(file, 'r+')
    const m = mr.MemoryMapping.fromFd(fd, MiB)
    const flipper = spawn(process.execPath, ['-e', \`
      const fs = require('node:fs'); const fd = fs.openSync(\${JSON.stringify(file)}, 'r+')
      for (;;) { fs.ftruncateSync(fd, 0); fs.ftruncateSync(fd, \${MiB}) }
    \`], { stdio: 'ignore' })
    const into = Buffer.alloc(MiB)
    const data = Buffer.alloc(MiB, 2)
    const seen = { ok: 0, EFAULT: 0 }
    const until = Date.now() + 20000
    while ((seen.ok < 20 || seen.EFAULT < 20) && Date.now() < until) {
      for (const f of [() => m.readInto(0, into), () => m.write(0, data), () => m.read(MiB / 2, 4096)]) {
        try { f(); seen.ok++ } catch (e) { seen[e.code] = (seen[e.code] ?? 0) + 1 }
      }
    }
    flipper.kill('SIGKILL')
    fs.rmSync(dir, { recursive: true })
    console.log(JSON.stringify(seen))
  `,
    60_000,
  )
  t.is(r.signal, null, r.stderr)
  t.is(r.status, 0, r.stderr)
  const seen = JSON.parse(r.stdout.trim()) as Record<string, number>
  t.deepEqual(Object.keys(seen).sort(), ['EFAULT', 'ok'], r.stdout)
  t.true(seen.ok >= 20 && seen.EFAULT >= 20, r.stdout)
})
