// The vCPU thread of the demo's multi-threaded run: KVM_RUN blocks, so it runs here, on a worker,
// over a GuestMemory attached from the main thread's (the same memory at the same host
// addresses). Each byte the guest writes to the serial port is posted to the main thread, which
// serves the console.
import { createRequire } from 'node:module'
import { parentPort, workerData } from 'node:worker_threads'
import { GuestMemory } from 'mapped-region'

const kvm = createRequire(import.meta.url)('./kvm/index.js')
const guest = GuestMemory.attach(workerData.guest)
const regions = guest.regions()
const result = kvm.runRealMode(regions, workerData.entry, 1000, (byte) => parentPort.postMessage({ serial: byte }))
parentPort.postMessage({ result, userspaceAddresses: regions.map((r) => r.userspaceAddress) })
guest.close()
