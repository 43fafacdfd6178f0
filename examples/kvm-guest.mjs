// Runs a real KVM guest on mapped-region memory: guest RAM is a sealed memfd
// overlaid in a GuestMemory; each region's userspaceAddress goes to
// KVM_SET_USER_MEMORY_REGION. The guest fills a pattern into its RAM, prints on
// the serial port and halts; the host reads the pattern through a zero-copy view
// and through a second mapping of the same memfd. Part of `npm run demo`.
import { createRequire } from 'node:module'
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
  { addressSpace: 4 * 1024 * 1024 * 1024 },
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

second.close()
guest.close()
ram.close()
if (!(viaView && viaSecondMapping && result.exit === 'hlt' && result.serial === 'OK\n')) process.exit(1)
