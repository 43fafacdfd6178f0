// Runs a real KVM guest on mapped-region memory: guest RAM is a sealed memfd
// overlaid in a GuestMemory; each region's userspaceAddress goes to
// KVM_SET_USER_MEMORY_REGION. The guest fills a pattern into its RAM, prints on
// the serial port and halts; the host reads the pattern through a zero-copy view
// and through a second mapping of the same memfd. Then it snapshots the guest's
// memory (full, and a diff after a second run, from the kernel's dirty tracking,
// which sees the guest's writes and the VMM's alike), restores it into a fresh
// GuestMemory and checks it byte for byte. Finally the vCPU runs on a worker thread over a GuestMemory attached from this
// thread's, while this thread serves the serial port. Part of `npm run demo`.
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { GuestMemory, MemoryMapping, Protection, SharedMemory } from 'mapped-region'
import { CODE, ENTRY, EXPECTED, PATTERN_AT, PATTERN_LENGTH } from './kvm/program.mjs'

const kvm = createRequire(import.meta.url)('./kvm/index.js')
const hex = (n) => `0x${n.toString(16)}`
const ms = (t0) => `${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(2)} ms`

const why = kvm.kvmUnavailableReason()
if (why) {
  console.log(`KVM guest skipped: ${why}`)
  process.exit(0)
}

const t0 = process.hrtime.bigint()
const ram = SharedMemory.create('guest-ram', 2 << 20)
const guest = new GuestMemory(
  [
    { guestAddress: 0n, size: ram.size, backing: ram, protection: Protection.READ_WRITE },
    { guestAddress: 0xfff00000n, size: 1 << 20, backing: 'anonymous', protection: Protection.READ },
  ],
  { addressSpace: 4 * 1024 * 1024 * 1024, trackDirty: true },
)
guest.write(ENTRY, CODE)
const setup = ms(t0)

console.log('\nKVM guest memory slots (GuestMemory.regions()):')
for (const r of guest.regions()) {
  console.log(
    `  slot ${r.slot}${r.readonly ? ' (read-only)' : ''}: guest ${hex(r.guestAddress)}-${hex(r.guestAddress + BigInt(r.size))}  userspace_addr ${hex(r.userspaceAddress)}`,
  )
}

const t1 = process.hrtime.bigint()
const result = kvm.runRealMode(guest.regions(), ENTRY, 1000)
const run = ms(t1)

const view = guest.view(PATTERN_AT, PATTERN_LENGTH)
const second = MemoryMapping.fromFd(ram.fd, ram.size)
const viaView = view.equals(EXPECTED)
const viaSecondMapping = second.read(PATTERN_AT, PATTERN_LENGTH).equals(EXPECTED)
console.log(`guest exit: ${result.exit} at rip ${hex(result.rip)}, ${result.ioExits} port-I/O exits`)
console.log(`guest serial output: ${JSON.stringify(result.serial)}`)
console.log(
  `pattern at guest ${hex(PATTERN_AT)}: view ${viaView ? 'matches' : 'DIFFERS'}, second memfd mapping ${viaSecondMapping ? 'matches' : 'DIFFERS'}`,
)
console.log(`pages the guest dirtied (KVM dirty log, slot 0): ${result.dirtyPages.join(', ')}`)
console.log(`setup ${setup}, VM create + run ${run}`)

// Snapshot and restore (see the README's "Snapshots"): a full dump after the first run; the
// VMM then patches the program to fill another page (its own write), the guest runs again (its
// writes, made by KVM), and a diff holds just those pages: with trackDirty: true the kernel
// tracks every writer, so nothing is merged by hand. Where the kernel cannot (before Linux
// 6.7, or a sandbox without userfaultfd) tracking is in software, which sees only this
// object's writes: KVM's dirty log is merged in with markDirty. A fresh GuestMemory restored
// from the full snapshot, then the diff, must equal the memory at both points.
const dir = mkdtempSync(join(tmpdir(), 'mr-demo-'))
const memory = (g) => Buffer.concat(g.regions().map((r) => g.read(r.guestAddress, r.size)))
const t2 = process.hrtime.bigint()
const full = await guest.snapshot(join(dir, 'vm.mem'))
const atFirst = memory(guest)
guest.writeU16(ENTRY + 1, 0x3000)
const rerun = kvm.runRealMode(guest.regions(), ENTRY, 1000)
if (guest.dirtyTracking !== 'kernel') for (const page of rerun.dirtyPages) guest.markDirty(page * 4096, 4096)
const atSecond = memory(guest)
const diff = await guest.snapshot(join(dir, 'vm.diff'), { dirtyOnly: true })
const restored = GuestMemory.restore(full, join(dir, 'vm.mem'))
const firstMatches = memory(restored).equals(atFirst)
await restored.applyDiff(diff, join(dir, 'vm.diff'))
const secondMatches = memory(restored).equals(atSecond)
const snapshotTime = ms(t2)
const pages = diff.regions.map((r) => r.dirtyPages.map(([p, n]) => (n === 1 ? `${p}` : `${p}-${p + n - 1}`)).join(',') || '-')
console.log(
  `snapshot: full ${statSync(join(dir, 'vm.mem')).size >> 10} KiB; after a second run the diff (dirty tracking: ${guest.dirtyTracking}) holds pages ${pages.join(' | ')} (the VMM's own write, page 1; the guest's, page ${rerun.dirtyPages.join(', ')} — KVM's log agrees${guest.dirtyTracking === 'kernel' ? '' : ', merged in; the live view of the pattern, page 2'})`,
)
console.log(
  `restored into a fresh GuestMemory: first point ${firstMatches ? 'matches' : 'DIFFERS'}, after applyDiff second point ${secondMatches ? 'matches' : 'DIFFERS'} (${snapshotTime})`,
)
restored.close()

// The same snapshot restored with the pager (lazy: 'pager'): anonymous memory the package's pager
// thread fills — on the guest's own faults under KVM, and in the background — so the guest runs at
// once and the file can go as soon as `restored` resolves. Needs a full userfaultfd (root here).
try {
  const t3 = process.hrtime.bigint()
  const paged = GuestMemory.restore(full, join(dir, 'vm.mem'), { lazy: 'pager' })
  const run = kvm.runRealMode(paged.regions(), ENTRY, 1000)
  await paged.restored
  rmSync(join(dir, 'vm.mem'))
  console.log(
    `restored with the pager: the guest ran at once (${run.exit}, serial ${JSON.stringify(run.serial)}); every page in and the file deleted after ${ms(t3)}; memory after the run ${memory(paged).equals(atFirst) ? 'matches the snapshot (the guest rewrote the same pattern)' : 'DIFFERS'}`,
  )
  paged.close()
} catch (e) {
  if (e.code !== 'ERR_MMAP_UNSUPPORTED') throw e
  console.log(`restore with the pager skipped: ${e.message}`)
}
rmSync(dir, { recursive: true, force: true })

// The vCPU on a worker thread (KVM_RUN blocks): the worker attaches to a guest memory shared from
// this thread (see the README's "Threads"), runs the guest, and posts each serial byte here, where
// the main thread serves the console and reads the guest's memory through its own view.
const threadRam = SharedMemory.create('guest-ram-threads', 2 << 20)
const threaded = new GuestMemory([{ guestAddress: 0n, size: threadRam.size, backing: threadRam }], { addressSpace: 4 << 20 })
threaded.write(ENTRY, CODE)
const mainView = threaded.view(PATTERN_AT, PATTERN_LENGTH)
const t3 = process.hrtime.bigint()
const vcpu = new Worker(new URL('./kvm-vcpu-worker.mjs', import.meta.url), { workerData: { guest: threaded.share(), entry: ENTRY } })
let console3f8 = ''
const fromWorker = await new Promise((resolve, reject) => {
  vcpu.on('message', (m) => {
    if (m.serial !== undefined) console3f8 += String.fromCharCode(m.serial)
    else resolve(m)
  })
  vcpu.once('error', reject)
})
await vcpu.terminate()
const sameAddresses = fromWorker.userspaceAddresses.every((a, i) => a === threaded.regions()[i].userspaceAddress)
const threadedMatches = mainView.equals(EXPECTED)
console.log(
  `vCPU on a worker thread: exit ${fromWorker.result.exit}; serial served by the main thread ${JSON.stringify(console3f8)}; same userspace addresses in both threads: ${sameAddresses ? 'yes' : 'NO'}; pattern through the main thread's view ${threadedMatches ? 'matches' : 'DIFFERS'} (${ms(t3)})`,
)
threaded.close()
threadRam.close()

second.close()
guest.close()
ram.close()
if (!(viaView && viaSecondMapping && result.exit === 'hlt' && result.serial === 'OK\n')) process.exit(1)
if (!(firstMatches && secondMatches && rerun.exit === 'hlt')) process.exit(1)
if (!(fromWorker.result.exit === 'hlt' && console3f8 === 'OK\n' && sameAddresses && threadedMatches)) process.exit(1)
