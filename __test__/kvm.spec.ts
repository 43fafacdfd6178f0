/**
 * A real KVM guest on mapped-region memory (examples/kvm): guest RAM is a sealed
 * memfd in a GuestMemory, each slot's userspaceAddress is handed to
 * KVM_SET_USER_MEMORY_REGION. Skipped, with the reason, where /dev/kvm is unusable.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Worker } from 'node:worker_threads'
import { GuestMemory, MemoryMapping, PAGE_SIZE, SharedMemory, type GuestRegion, type SnapshotManifest } from 'mapped-region'
import { CODE, ENTRY, EXPECTED, PATTERN_AT, PATTERN_LENGTH, stridedWrites } from '../examples/kvm/program.mjs'
import { NO_EXTERNAL, ROOT, SLOWDOWN, tempDir } from './helpers.js'
import { viewTest } from './view-test.js'

interface RunResult {
  exit: string
  serial: string
  ioExits: number
  rip: number
  dirtyPages: number[]
}
interface Exit {
  reason: string
  port: number
  write: boolean
  value: number
}
interface Machine {
  run(): Exit
  setRealModeEntry(entry: number): void
  setProtectedModeEntry(entry: number): void
  dirtyLog(slot: number): Buffer
  saveState(): Buffer
  restoreState(state: Buffer): void
  regs(): bigint[]
}
interface KvmExample {
  kvmUnavailableReason(): string | null
  runRealMode(slots: GuestRegion[], entry: number, maxExits: number, onSerial?: (byte: number) => void): RunResult
  Machine: {
    realMode(slots: GuestRegion[]): Machine
    protectedMode(slots: GuestRegion[], options?: { logDirty?: boolean }): Machine
  }
}

// The example runs an x86 real-mode guest and is built for the host only: on another
// architecture (the arm64 suite, scripts/arm64-test.sh) it is not loaded at all.
const kvm = (process.arch === 'x64' ? createRequire(import.meta.url)('../examples/kvm/index.js') : null) as KvmExample
const unavailable = process.arch === 'x64' ? kvm.kvmUnavailableReason() : `the example's guest is x86 code; this is ${process.arch}`
const kvmTest = unavailable === null ? test : test.skip
/** A KVM test that checks guest memory through a view. */
const kvmViewTest = NO_EXTERNAL ? viewTest : kvmTest
if (unavailable !== null) console.log(`KVM tests skipped: ${unavailable}`)
/** Why the kernel cannot track dirty pages here (the migration example needs it), or null. */
const noKernelTracking = ((): string | null => {
  try {
    new GuestMemory([{ guestAddress: 0, size: PAGE_SIZE, backing: 'anonymous' }], { trackDirty: 'kernel' }).close()
    return null
  } catch (e) {
    return (e as Error).message
  }
})()
const migrationTest = unavailable === null && noKernelTracking === null ? test : test.skip
/** A KVM test that needs the kernel's dirty tracking too. */
const kvmKernelDirtyTest = unavailable === null && noKernelTracking === null ? test : test.skip
if (unavailable === null && noKernelTracking !== null) console.log(`migration test skipped: ${noKernelTracking}`)

/**
 * Runs the example program on a vCPU worker (examples/kvm-vcpu-worker.mjs) over `guest.share()`;
 * this thread collects the serial bytes it posts. Resolves once the worker is terminated.
 */
async function onWorker(guest: GuestMemory): Promise<{ done: { result: RunResult; userspaceAddresses: bigint[] }; serial: string }> {
  const vcpu = new Worker(new URL('../examples/kvm-vcpu-worker.mjs', import.meta.url), {
    workerData: { guest: guest.share(), entry: ENTRY },
  })
  let serial = ''
  const done = await new Promise<{ result: RunResult; userspaceAddresses: bigint[] }>((resolve, reject) => {
    vcpu.on('message', (m) => {
      if (m.serial !== undefined) serial += String.fromCharCode(m.serial)
      else resolve(m)
    })
    vcpu.once('error', reject)
  })
  await vcpu.terminate()
  return { done, serial }
}

kvmViewTest('a real-mode guest fills a pattern into mapped-region RAM and halts', (t) => {
  using ram = SharedMemory.create('guest-ram', 1 << 20)
  using guest = new GuestMemory([{ guestAddress: 0n, size: ram.size, backing: ram }])
  guest.write(ENTRY, CODE)
  const before = guest.view(PATTERN_AT, PATTERN_LENGTH)
  t.false(before.equals(EXPECTED))
  const result = kvm.runRealMode(guest.regions(), ENTRY, 1000)
  t.is(result.exit, 'hlt')
  t.is(result.serial, 'OK\n')
  t.is(result.ioExits, 3)
  t.is(result.rip, ENTRY + CODE.length, 'rip is past the hlt')
  // The guest's writes are in the memory the host sees: through the view taken
  // before the run, and through a second mapping of the same memfd.
  t.true(before.equals(EXPECTED))
  using second = MemoryMapping.fromFd(ram.fd, ram.size)
  t.true(second.read(PATTERN_AT, PATTERN_LENGTH).equals(EXPECTED))
  t.deepEqual(result.dirtyPages, [PATTERN_AT / 4096], 'KVM logged exactly the page the guest wrote')
})

kvmTest('a guest address space with a hole and a second slot', (t) => {
  using ram = SharedMemory.create('guest-ram', 64 * 1024)
  using guest = new GuestMemory(
    [
      { guestAddress: 0n, size: ram.size, backing: ram },
      { guestAddress: 0x100000n, size: 64 * 1024, backing: 'anonymous' },
    ],
    { addressSpace: 4 << 20 },
  )
  guest.write(ENTRY, CODE)
  const result = kvm.runRealMode(guest.regions(), ENTRY, 1000)
  t.is(result.exit, 'hlt')
  t.true(guest.read(PATTERN_AT, PATTERN_LENGTH).equals(EXPECTED))
  t.deepEqual(guest.read(0x100000n, 4), Buffer.alloc(4))
})

kvmTest("snapshot a running guest (full, then a diff from the kernel's dirty tracking alone), restore it, byte for byte", async (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const base = join(tmp.dir, 'vm.mem')
  const diffFile = join(tmp.dir, 'vm.diff')
  using ram = SharedMemory.create('guest-ram', 1 << 20)
  using guest = new GuestMemory(
    [
      { guestAddress: 0n, size: ram.size, backing: ram },
      { guestAddress: 0x200000n, size: 64 * 1024, backing: 'anonymous' },
    ],
    { trackDirty: 'kernel' },
  )
  t.is(guest.dirtyTracking, 'kernel')
  const memory = (g: GuestMemory) => Buffer.concat([g.read(0, ram.size), g.read(0x200000, 64 * 1024)])
  guest.write(ENTRY, CODE)
  t.is(kvm.runRealMode(guest.regions(), ENTRY, 1000).exit, 'hlt')
  const full = await guest.snapshot(base)
  const first = memory(guest)
  // The VMM points the program at another page (a write of its own), and the guest runs again
  // (its writes, made by KVM): the kernel's tracking sees both, with no dirty log merged in.
  guest.writeU16(ENTRY + 1, 0x3000)
  const again = kvm.runRealMode(guest.regions(), ENTRY, 1000)
  t.is(again.exit, 'hlt')
  t.deepEqual(again.dirtyPages, [3], "KVM's own log (not used) agrees: the guest wrote page 3")
  const second = memory(guest)
  t.false(second.equals(first))
  const diff = await guest.snapshot(diffFile, { dirtyOnly: true })
  t.deepEqual(
    diff.regions[0].dirtyPages,
    [
      [1, 1],
      [3, 1],
    ],
    "the VMM's page and the guest's",
  )
  t.deepEqual(diff.regions[1].dirtyPages, [])
  // A fresh GuestMemory from the snapshot: the memory at the first point, then at the second.
  using restored = GuestMemory.restore(full, base)
  t.true(memory(restored).equals(first))
  await restored.applyDiff(diff, diffFile)
  t.true(memory(restored).equals(second))
  // And it runs: the restored memory is a guest KVM can execute.
  t.is(kvm.runRealMode(restored.regions(), ENTRY, 1000).exit, 'hlt')
})

// A full userfaultfd (root here; /dev/kvm is root-only on these machines too) serves KVM's faults.
const kvmPagerTest = unavailable === null && process.getuid?.() === 0 ? test : test.skip
kvmPagerTest(
  "a guest restored with lazy: 'pager' runs at once: KVM's faults are served by the pager, on this thread and on a worker",
  async (t) => {
    const tmp = tempDir()
    t.teardown(tmp.done)
    const file = join(tmp.dir, 'vm.mem')
    let manifest: SnapshotManifest
    {
      using ram = SharedMemory.create('guest-ram', 1 << 20)
      using guest = new GuestMemory([
        { guestAddress: 0n, size: ram.size, backing: ram },
        { guestAddress: 0x200000n, size: 8 << 20, backing: 'anonymous' },
      ])
      guest.write(ENTRY, CODE)
      guest.write(0x200000n + 0x1234n, Buffer.from('second region'))
      manifest = await guest.snapshot(file)
    }
    // Run before anything in this process touched the memory: the guest's code fetch and its
    // writes are KVM's accesses (kernel mode) to pages the pager has to supply, unless its prefetch
    // got there first.
    using restored = GuestMemory.restore(manifest, file, { lazy: 'pager' })
    const result = kvm.runRealMode(restored.regions(), ENTRY, 1000)
    t.is(result.exit, 'hlt')
    t.is(result.serial, 'OK\n')
    t.true(restored.read(PATTERN_AT, PATTERN_LENGTH).equals(EXPECTED))
    t.true(restored.read(ENTRY, CODE.length).equals(CODE))
    await restored.restored
    t.is(restored.read(0x200000n + 0x1234n, 13).toString(), 'second region')
    // And on a worker over the same guest, restored again from the file.
    using again = GuestMemory.restore(manifest, file, { lazy: 'pager' })
    const { done, serial } = await onWorker(again)
    t.is(done.result.exit, 'hlt')
    t.is(serial, 'OK\n')
    t.true(again.read(PATTERN_AT, PATTERN_LENGTH).equals(EXPECTED))
    await again.restored
  },
)

test('the KVM example module loads and answers', (t) => {
  t.true(unavailable === null || typeof unavailable === 'string')
  if (unavailable !== null) t.log(`KVM unavailable here: ${unavailable}`)
})

kvmViewTest('the vCPU on a worker thread over an attached GuestMemory, the serial port served by the main thread', async (t) => {
  using ram = SharedMemory.create('guest-ram-threads', 1 << 20)
  using guest = new GuestMemory([{ guestAddress: 0n, size: ram.size, backing: ram }], { addressSpace: 4 << 20 })
  guest.write(ENTRY, CODE)
  const view = guest.view(PATTERN_AT, PATTERN_LENGTH)
  t.false(view.equals(EXPECTED))
  const { done, serial } = await onWorker(guest)
  t.is(done.result.exit, 'hlt')
  t.is(serial, 'OK\n', 'every byte reached the main thread')
  t.deepEqual(
    done.userspaceAddresses,
    guest.regions().map((r) => r.userspaceAddress),
    'one memory at the same host addresses',
  )
  t.true(view.equals(EXPECTED), "the main thread's own view shows what the guest wrote on the worker")
  t.deepEqual(done.result.dirtyPages, [PATTERN_AT / 4096])
})

/** `run()` again while a signal for this thread ended `KVM_RUN` before the guest exited. */
function runPastSignals<E extends { reason: string }>(machine: { run(): E }): E {
  for (;;) {
    const exit = machine.run()
    if (exit.reason !== 'intr') return exit
  }
}

kvmTest("a real-mode machine's vCPU moves to another machine between exits (saveState, restoreState)", (t) => {
  using ram = SharedMemory.create('guest-ram-state', 1 << 20)
  using guest = new GuestMemory([{ guestAddress: 0n, size: ram.size, backing: ram }])
  guest.write(ENTRY, CODE)
  const first = kvm.Machine.realMode(guest.regions())
  first.setRealModeEntry(ENTRY)
  const exit = runPastSignals(first)
  t.like(exit, { reason: 'io', port: 0x3f8, write: true, value: 'O'.charCodeAt(0) })
  const state = first.saveState()
  t.is(state.length, 472)
  t.is(state.toString('latin1', 0, 4), 'MRvc')
  const second = kvm.Machine.realMode(guest.regions())
  second.restoreState(state)
  t.deepEqual(second.regs(), first.regs(), 'the same registers in both')
  // The `out` of the exit was completed before the state was taken: the second machine goes on
  // from the instruction after it, and does not print 'O' again.
  let serial = ''
  for (let e = runPastSignals(second); e.reason !== 'hlt'; e = runPastSignals(second)) serial += String.fromCharCode(e.value)
  t.is(serial, 'K\n')
  t.true(guest.read(PATTERN_AT, PATTERN_LENGTH).equals(EXPECTED))
})

kvmTest('restoreState refuses a state of another length, magic, version or part size, and leaves the vCPU alone', (t) => {
  using guest = new GuestMemory([{ guestAddress: 0n, size: 1 << 20, backing: 'anonymous' }])
  const machine = kvm.Machine.realMode(guest.regions())
  machine.setRealModeEntry(ENTRY)
  const state = machine.saveState()
  const before = machine.regs()
  const damaged = (at: number, value: number) => {
    const copy = Buffer.from(state)
    copy.writeUInt32LE(value, at)
    return copy
  }
  for (const [what, bad, message] of [
    ['shorter', state.subarray(0, 471), /471 bytes; version 1 is 472/],
    ['longer', Buffer.concat([state, Buffer.alloc(1)]), /473 bytes/],
    ['empty', Buffer.alloc(0), /0 bytes/],
    ['magic', damaged(0, 0), /magic/],
    ['version', damaged(4, 2), /version 2/],
    ['regs size', damaged(8, 143), /parts of 143 and 312 bytes/],
    ['sregs size', damaged(12, 313), /parts of 144 and 313 bytes/],
  ] as const) {
    t.throws(() => machine.restoreState(bad), { message }, what)
  }
  t.deepEqual(machine.regs(), before)
})

migrationTest(
  'live migration (examples/migrate): pre-copy rounds while the vCPU runs, then stop-and-copy; the same result as unmigrated',
  async (t) => {
    t.timeout(300_000 * SLOWDOWN)
    const { stdout } = await promisify(execFile)(process.execPath, ['examples/migrate/main.mjs'], {
      cwd: ROOT,
      timeout: 240_000 * SLOWDOWN,
    })
    t.log(stdout.trimEnd())
    const rounds = [...stdout.matchAll(/^ {2}round (\d+): (\d+) pages?/gm)].map((m) => [Number(m[1]), Number(m[2])])
    t.true(rounds.length >= 2, 'at least two pre-copy rounds while the vCPU ran')
    t.deepEqual(rounds[0], [0, (1 << 20) / 4096], 'round 0 is every page')
    t.deepEqual(
      rounds.map(([n]) => n),
      rounds.map((_, i) => i),
    )
    t.regex(stdout, /^ {2}stop-and-copy: \d+ pages? and the vCPU state \(472 bytes\)/m)
    t.regex(stdout, /^ {2}downtime: \d+\.\d+ ms/m)
    t.regex(stdout, /^ {2}destination: \d+ rounds applied .*guest halted$/m)
    t.regex(stdout, /^Migrated vs unmigrated: serial output the same, guest memory the same/m)
  },
)

kvmKernelDirtyTest("KVM's dirty log and the kernel's takeDirty() name the same pages the guest wrote", (t) => {
  const size = 8 << 20
  const stride = 64 * PAGE_SIZE
  using guest = new GuestMemory([{ guestAddress: 0n, size, backing: 'anonymous' }], { trackDirty: 'kernel' })
  // The program writes one page in 64 from page 0; it sits on page 1, which it does not write.
  guest.write(PAGE_SIZE, stridedWrites(size, stride))
  const machine = kvm.Machine.protectedMode(guest.regions(), { logDirty: true })
  const words = size / PAGE_SIZE / 64
  const pagesOf = (bytes: Buffer) => {
    t.is(bytes.length, words * 8, 'one bit per page of the slot, in 64-bit words')
    const pages: number[] = []
    for (let p = 0; p < size / PAGE_SIZE; p++) if (bytes[p >> 3] & (1 << (p & 7))) pages.push(p)
    return pages
  }
  const taken = () => {
    const [{ bitmap }] = guest.takeDirty()
    return pagesOf(Buffer.from(bitmap.buffer, bitmap.byteOffset, bitmap.byteLength))
  }
  const runToHlt = () => {
    machine.setProtectedModeEntry(PAGE_SIZE)
    t.is(runPastSignals(machine).reason, 'hlt')
  }
  t.deepEqual(pagesOf(machine.dirtyLog(0)), [], 'KVM logs nothing before the guest runs')
  t.deepEqual(taken(), [1], "the kernel's record has the program's page, written by this process")
  const written = Array.from({ length: size / stride }, (_, i) => (i * stride) / PAGE_SIZE)
  for (const round of [1, 2]) {
    runToHlt()
    t.deepEqual(pagesOf(machine.dirtyLog(0)), written, `round ${round}: KVM's log`)
    t.deepEqual(taken(), written, `round ${round}: takeDirty()`)
    t.deepEqual(pagesOf(machine.dirtyLog(0)), [], `round ${round}: KVM's log, clean`)
    t.deepEqual(taken(), [], `round ${round}: takeDirty(), clean`)
  }
  for (let i = 0; i < size; i += stride) t.is(guest.readU8(i), 1)
  t.throws(() => machine.dirtyLog(1), { message: /slot 1: the machine has 1 slots/ })
  const unlogged = kvm.Machine.protectedMode(guest.regions())
  t.throws(() => unlogged.dirtyLog(0), { message: /do not log dirty pages/ })
})
