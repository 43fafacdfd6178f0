/**
 * The vCPU thread of the Linux example: `KVM_RUN` blocks, so it runs here, on a worker, over a
 * `GuestMemory` attached from the main thread's (the same memory at the same host addresses). It
 * serves the exits: the 16550 UART on 0x3f8 (its output posted to the main thread, which serves
 * the console; its input from a ring the main thread fills), the keyboard controller's reset line
 * (the clean exit of `reboot`), and the instructions this host's emulator cannot do.
 */
import { createRequire } from 'node:module'
import { parentPort, workerData } from 'node:worker_threads'
import { GuestMemory } from 'mapped-region'
import { emulate } from './host-quirks.ts'
import { BOOT_PARAMS } from './layout.ts'
import { InputRing, Uart } from './uart.ts'

const kvm = createRequire(import.meta.url)('../kvm/index.js') as typeof import('../kvm/index.js')

const port = parentPort
if (port === null) throw new Error('vcpu.ts runs as a worker')
const guest = GuestMemory.attach(workerData.guest)
const regions = guest.regions()
const machine = new kvm.Machine(
  regions,
  regions.map((r) => r.readonly),
)
port.postMessage({ vmFd: machine.vmFd })
machine.setBootState(workerData.entry, BOOT_PARAMS)

// Output is batched per exit run and posted; the main thread writes it to the console.
let pending: number[] = []
const flush = () => {
  if (pending.length > 0) port.postMessage({ serial: Buffer.from(pending) })
  pending = []
}
const COM1 = 0x3f8
const uart = new Uart(
  (byte) => {
    pending.push(byte)
    if (byte === 0x0a || pending.length >= 256) flush()
  },
  () => {
    machine.irqLine(4, true)
    machine.irqLine(4, false)
  },
  new InputRing(workerData.input),
)

/** Where the vCPU is, and the instruction bytes there (for an exit nothing here can serve). */
function describeRip(): string {
  const rip = machine.regs()[16]
  const at = machine.translate(rip)
  const bytes = at === null ? 'unmapped' : guest.read(at, 15).toString('hex').replace(/(..)/g, '$1 ')
  return `rip 0x${rip.toString(16)} (${bytes.trim()})`
}

const counts = new Map<string, number>()
const count = (what: string) => counts.set(what, (counts.get(what) ?? 0) + 1)
let end = ''
while (end === '') {
  const exit = machine.run()
  switch (exit.reason) {
    case 'io':
      if (exit.port >= COM1 && exit.port < COM1 + 8) {
        if (exit.write) uart.write(exit.port - COM1, exit.value & 0xff)
        else machine.answerIo(uart.read(exit.port - COM1))
      } else if (exit.port === 0x64 && exit.write && exit.value === 0xfe) {
        end = 'reset (keyboard controller)'
      } else if (!exit.write) {
        // Nothing else is there: the CMOS clock reads as 0 (no update in progress), the rest
        // as a floating bus.
        machine.answerIo(exit.port === 0x71 ? 0 : 0xffffffff)
      }
      break
    case 'mmio':
      if (!exit.write) machine.answerMmio(0xffffffff)
      break
    case 'intr':
      break
    case 'internal-error': {
      const done = exit.detail === 1 ? emulate(machine, guest) : undefined
      if (done === undefined) end = `KVM internal error ${exit.detail} at ${describeRip()}`
      else count(done)
      break
    }
    case 'shutdown':
      end = 'reset (triple fault)'
      break
    case 'system-event':
      end = `system event ${exit.detail}`
      break
    case 'hlt':
      end = 'halt'
      break
    default:
      end = `${exit.reason} (${exit.detail}) at ${describeRip()}`
  }
  uart.poll()
}
flush()
port.postMessage({ end, emulated: Object.fromEntries(counts) })
guest.close()
