// Live migration of a running KVM guest from this process to another, by pre-copy, over a Unix
// socket (issue 30, point 5). The guest (program.mjs) runs on a vCPU thread over guest memory
// shared with it (`share()`/`attach()`); meanwhile this thread sends every page (round 0), then,
// round after round, the pages written since the round before (`takeDirty()`), until a round is
// small enough or the round limit is reached; then it stops the vCPU at an exit, sends the last
// round with the vCPU's state, and the destination (destination.mjs, a child process) restores
// it and runs the guest to the end. The same guest then runs here unmigrated: the serial output
// and a hash of all guest memory at the end must be the same. Exits 1 if they are not.
//
//   node examples/migrate/main.mjs [--after <pass>] [--stop-at <pages>] [--max-rounds <n>] [--pace <ms per page>]
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Worker } from 'node:worker_threads'
import { GuestMemory, PAGE_SIZE, SharedMemory, writePages } from 'mapped-region'
import { CODE, ENTRY, expectedSerial, PAGES, PASSES, RAM_SIZE } from './program.mjs'
import { kvm, LAYOUT, memoryHash, PASS, RELEASE, ROUND, STOP, writeJson } from './vcpu.mjs'

const { values: options } = parseArgs({
  options: {
    after: { type: 'string', default: '4' },
    'stop-at': { type: 'string', default: '8' },
    'max-rounds': { type: 'string', default: '8' },
    pace: { type: 'string', default: '0.25' },
  },
})
/** The migration starts once the guest is in this pass (so that it has printed something here). */
const AFTER = Number(options.after)
/** A round of at most this many pages is the last one sent with the vCPU running. */
const STOP_AT = Number(options['stop-at'])
/** Rounds sent with the vCPU running, at most (round 0 included). */
const MAX_ROUNDS = Number(options['max-rounds'])
/** The vCPU thread's throttle: at least this long per page written (see vcpu-worker.mjs). */
const PACE_MS = Number(options.pace)

const why = kvm.kvmUnavailableReason()
if (why) {
  console.log(`migration example skipped: ${why}`)
  process.exit(0)
}

// The source: guest RAM is a memfd in a GuestMemory whose dirty pages the kernel tracks (Linux
// 6.7+) — every writer's, the guest's under KVM and other threads' included, one record for all.
// Pre-copy needs them: software tracking sees only this object's own writes.
const ram = SharedMemory.create('migrate-source', RAM_SIZE)
let guest
try {
  guest = new GuestMemory([{ guestAddress: 0n, size: RAM_SIZE, backing: ram }], { trackDirty: 'kernel' })
} catch (e) {
  if (e.code !== 'ERR_MMAP_UNSUPPORTED') throw e
  console.log(`migration example skipped: the kernel cannot track dirty pages here (${e.message})`)
  process.exit(0)
}
guest.write(ENTRY, CODE)

const ms = (from, to = process.hrtime.bigint()) => `${(Number(to - from) / 1e6).toFixed(2)} ms`
const pages = (n) => `${n} page${n === 1 ? '' : 's'}`

/** Runs the program on a vCPU thread over `handle` (a `share()` of its memory). */
function startVcpu(handle, control) {
  return new Worker(new URL('./vcpu-worker.mjs', import.meta.url), {
    workerData: { guest: handle, entry: ENTRY, control: control.buffer, paceMs: PACE_MS },
  })
}

/** The next message of a worker or a child process; its error, or its exit, if that comes first. */
function next(from) {
  return new Promise((resolve, reject) => {
    const settle = (f) => (value) => {
      from.off('message', onMessage)
      from.off('error', onError)
      from.off('exit', onExit)
      f(value)
    }
    const onMessage = settle(resolve)
    const onError = settle(reject)
    const onExit = settle((code) => reject(new Error(`${from.constructor.name} exited (${code}) before answering`)))
    from.on('message', onMessage)
    from.on('error', onError)
    from.on('exit', onExit)
  })
}

console.log(
  `Live migration by pre-copy: a real-mode guest making ${PASSES} passes over ${PAGES} pages of ${RAM_SIZE >> 20} MiB of RAM, moved to another process over a Unix socket from pass ${AFTER}`,
)

// The destination: a child process listening on a Unix socket.
const dir = mkdtempSync(join(tmpdir(), 'mr-migrate-'))
const socketPath = join(dir, 'migrate.sock')
const destination = fork(new URL('./destination.mjs', import.meta.url), [socketPath])
const destinationExit = once(destination, 'exit')
await next(destination)
const socket = connect(socketPath)
await once(socket, 'connect')
socket.on('error', (e) => {
  console.error(`the migration socket failed: ${e.message}`)
  process.exit(1)
})

// The source's vCPU thread, over the guest memory shared with it.
writeJson(socket, { type: 'layout', regions: LAYOUT })
const control = new Int32Array(new SharedArrayBuffer(8))
const vcpu = startVcpu(guest.share(), control)
await next(vcpu)
while (Atomics.load(control, PASS) < AFTER) await new Promise((resolve) => setTimeout(resolve, 1))

/** Sends one round: `selection` is `'all'` or what `takeDirty()` returned. */
async function sendRound(selection) {
  socket.write(Buffer.from([ROUND]))
  const { bytes } = await writePages(guest, selection, socket)
  return bytes / PAGE_SIZE
}

// Pre-copy: round 0 is every page; each later round the pages written while the one before was sent.
const rounds = []
guest.takeDirty() // from here on, writes are tracked
for (let selection = 'all'; ; selection = guest.takeDirty()) {
  const t0 = process.hrtime.bigint()
  const sent = await sendRound(selection)
  rounds.push(sent)
  console.log(
    `  round ${rounds.length - 1}: ${pages(sent)}${selection === 'all' ? ' (all)' : ''}, guest at pass ${Atomics.load(control, PASS)}, ${ms(t0)}`,
  )
  if ((rounds.length > 1 && sent <= STOP_AT) || rounds.length >= MAX_ROUNDS) break
}

// Stop-and-copy: the vCPU stops at its next exit; the last round and its state go together.
Atomics.store(control, STOP, 1)
Atomics.notify(control, STOP)
const stopped = await next(vcpu)
if (!stopped.stopped) {
  console.log(`the guest halted before it could be stopped (serial ${JSON.stringify(stopped.serial)}): nothing left to migrate`)
  process.exit(1)
}
const lastPages = await sendRound(guest.takeDirty())
const state = Buffer.from(stopped.state)
writeJson(socket, { type: 'vcpu', state: state.toString('base64'), stoppedAt: String(stopped.stoppedAt) })
console.log(
  `  stop-and-copy: ${pages(lastPages)} and the vCPU state (${state.length} bytes), vCPU stopped at pass ${Atomics.load(control, PASS)}`,
)
const arrived = await next(destination)
if ((await destinationExit)[0] !== 0) throw new Error('the destination failed')
// The source's VM was kept, stopped, until the destination ran (it could have resumed here had the
// migration failed); now it goes.
Atomics.store(control, STOP, RELEASE)
Atomics.notify(control, STOP)
await once(vcpu, 'exit')
socket.destroy()
const migratedSerial = stopped.serial + arrived.serial
console.log(
  `  destination: ${arrived.rounds.length} rounds applied (${arrived.rounds.map((r) => r.pages).join(', ')} pages), vCPU resumed, guest ${arrived.end === 'hlt' ? 'halted' : arrived.end}`,
)
console.log(`  downtime: ${arrived.downtimeMs.toFixed(2)} ms (the vCPU stopping here to its first run there)`)
console.log(`  serial output: ${JSON.stringify(stopped.serial)} here, then ${JSON.stringify(arrived.serial)} there`)
guest.close()
ram.close()
rmSync(dir, { recursive: true, force: true })

// The same guest, unmigrated.
const plainRam = SharedMemory.create('migrate-plain', RAM_SIZE)
const plain = new GuestMemory([{ guestAddress: 0n, size: RAM_SIZE, backing: plainRam }])
plain.write(ENTRY, CODE)
const plainControl = new Int32Array(new SharedArrayBuffer(8))
const plainVcpu = startVcpu(plain.share(), plainControl)
await next(plainVcpu)
const plainEnd = await next(plainVcpu)
const plainHash = memoryHash(plain)
console.log(`Unmigrated run: serial output ${JSON.stringify(plainEnd.serial)}`)
plain.close()
plainRam.close()

const sameSerial = migratedSerial === plainEnd.serial && plainEnd.serial === expectedSerial()
const sameMemory = arrived.hash === plainHash
const preCopyRounds = rounds.length
console.log(
  `Migrated vs unmigrated: serial output ${sameSerial ? 'the same' : `DIFFERS (${JSON.stringify(migratedSerial)})`}, guest memory ${sameMemory ? `the same (sha256 ${plainHash.slice(0, 16)}…)` : 'DIFFERS'}; ${preCopyRounds} pre-copy rounds, downtime ${arrived.downtimeMs.toFixed(2)} ms`,
)
if (!(sameSerial && sameMemory && arrived.end === 'hlt' && plainEnd.halted)) process.exit(1)
