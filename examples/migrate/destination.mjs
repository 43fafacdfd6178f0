// The migration's destination, a process of its own (forked by main.mjs with the socket's path):
// listens on the Unix socket, builds the guest memory and the machine when the layout arrives,
// applies each round of pages as it comes (`readPages`), and on the vCPU state restores it and
// runs the guest to the end. Reports to its parent (the fork's IPC channel): the rounds applied,
// the downtime — from the vCPU stopping on the source to its first run here — the serial output
// and the hash of all guest memory at the end.
import { createServer } from 'node:net'
import { GuestMemory, PAGE_SIZE, readPages, SharedMemory } from 'mapped-region'
import { JSON_MESSAGE, kvm, memoryHash, ROUND, runVcpu, take } from './vcpu.mjs'

const [path] = process.argv.slice(2)
const server = createServer()
await new Promise((resolve) => server.listen(path, resolve))
process.send({ listening: true })
const socket = await new Promise((resolve) => server.once('connection', resolve))
server.close()

let ram
let guest
let machine
const rounds = []
for (;;) {
  const tag = await take(socket, 1)
  if (tag === null) throw new Error('the source hung up before sending the vCPU state')
  if (tag[0] === ROUND) {
    const t0 = process.hrtime.bigint()
    const { bytes } = await readPages(guest, socket)
    rounds.push({ pages: bytes / PAGE_SIZE, ms: Number(process.hrtime.bigint() - t0) / 1e6 })
    continue
  }
  if (tag[0] !== JSON_MESSAGE) throw new Error(`unknown message ${tag[0]}`)
  const message = JSON.parse((await take(socket, (await take(socket, 4)).readUInt32LE(0))).toString())
  if (message.type === 'layout') {
    // Made before the first round, so the downtime holds none of it.
    const size = message.regions.reduce((n, r) => Math.max(n, r.guestAddress + r.size), 0)
    ram = SharedMemory.create('migrate-destination', size)
    guest = new GuestMemory(message.regions.map((r) => ({ guestAddress: r.guestAddress, size: r.size, backing: ram })))
    machine = kvm.Machine.realMode(guest.regions())
    continue
  }
  if (message.type !== 'vcpu') throw new Error(`unknown message type ${message.type}`)
  machine.restoreState(Buffer.from(message.state, 'base64'))
  const resumedAt = process.hrtime.bigint()
  const downtimeMs = Number(resumedAt - BigInt(message.stoppedAt)) / 1e6
  let serial = ''
  const end = runVcpu(machine, {
    onSerial: (byte) => {
      serial += String.fromCharCode(byte)
    },
  })
  process.send({ rounds, downtimeMs, end, serial, hash: memoryHash(guest) })
  break
}
socket.destroy()
guest.close()
ram.close()
