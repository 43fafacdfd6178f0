// The vCPU thread (KVM_RUN blocks): attaches the guest memory the main thread shared, makes a
// machine over its regions, runs the program from its entry, and reports to the main thread.
// Stops between exits when the main thread sets the STOP word: it then takes the vCPU's state
// (`saveState`) and posts it with the time the vCPU stopped, and keeps the stopped machine until
// the main thread releases it (once the destination runs: until then the source could resume).
//
// The throttle: at each progress exit the guest is held until `paceMs` have passed since the one
// before, so that the program lasts long enough to be migrated while it runs: on hardware KVM it
// would otherwise be over in milliseconds, before the pre-copy rounds. Under emulation (this
// host's nested hypervisor) a page takes longer than that and it never waits. (QEMU's
// auto-converge throttles vCPUs during a migration too, there to slow the guest's writes down.)
import { parentPort, workerData } from 'node:worker_threads'
import { GuestMemory } from 'mapped-region'
import { kvm, PASS, RELEASE, runVcpu, STOP } from './vcpu.mjs'

const { entry, paceMs } = workerData
const control = new Int32Array(workerData.control)
const guest = GuestMemory.attach(workerData.guest)
const machine = kvm.Machine.realMode(guest.regions())
machine.setRealModeEntry(entry)
parentPort.postMessage({ started: true })
let serial = ''
let last = performance.now()
const end = runVcpu(machine, {
  onSerial: (byte) => {
    serial += String.fromCharCode(byte)
  },
  onProgress: (pass) => {
    Atomics.store(control, PASS, pass)
    const wait = last + paceMs - performance.now()
    if (wait > 0) Atomics.wait(control, STOP, 0, wait)
    last = performance.now()
  },
  stop: () => Atomics.load(control, STOP) !== 0,
})
if (end === 'stopped') {
  const stoppedAt = process.hrtime.bigint()
  parentPort.postMessage({ stopped: true, stoppedAt, state: machine.saveState(), serial })
  while (Atomics.load(control, STOP) !== RELEASE) Atomics.wait(control, STOP, 1)
} else {
  parentPort.postMessage({ halted: true, serial })
}
guest.close()
