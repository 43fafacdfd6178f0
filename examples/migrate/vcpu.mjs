// What the migration example's processes share: the KVM example's addon, the guest's memory
// layout, the loop that runs its vCPU exit by exit, the hash of its memory, and the framing of the
// example's own messages on the migration socket.
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'
import { PROGRESS_PORT, RAM_SIZE, SERIAL_PORT } from './program.mjs'

export const kvm = createRequire(import.meta.url)('../kvm/index.js')

/** The guest's regions: RAM at guest address 0 (the same on both sides of a migration). */
export const LAYOUT = [{ guestAddress: 0, size: RAM_SIZE }]

/**
 * The vCPU thread's control words (an Int32Array over a SharedArrayBuffer): at STOP, 0 to run, 1 to
 * stop at the next exit, RELEASE (2) once stopped to let its machine go; at PASS, the guest's pass.
 */
export const STOP = 0
export const PASS = 1
export const RELEASE = 2

/**
 * Runs `machine`'s vCPU exit by exit, serving the program's ports — a serial byte goes to
 * `onSerial`, a progress report (the pass) to `onProgress` — until the guest halts (`'hlt'`) or,
 * asked after each exit, `stop()` says to stop (`'stopped'`: the vCPU is between exits, where
 * `saveState()` can take it).
 */
export function runVcpu(machine, { onSerial, onProgress = () => {}, stop = () => false }) {
  for (;;) {
    const exit = machine.run()
    if (exit.reason === 'hlt') return 'hlt'
    if (exit.reason === 'io' && exit.write && exit.port === SERIAL_PORT) onSerial(exit.value & 0xff)
    else if (exit.reason === 'io' && exit.write && exit.port === PROGRESS_PORT) onProgress(exit.value & 0xff)
    else if (exit.reason !== 'intr') throw new Error(`unexpected exit ${exit.reason} (port 0x${exit.port.toString(16)})`)
    if (stop()) return 'stopped'
  }
}

/** sha256 of all guest memory, region after region. */
export function memoryHash(guest) {
  const hash = createHash('sha256')
  for (const r of guest.regions()) hash.update(guest.read(r.guestAddress, r.size))
  return hash.digest('hex')
}

/**
 * The example's messages on the migration socket, each a tag byte: `R` and a page stream (a
 * round: `writePages`/`readPages`), or `J`, a length (u32 LE) and that much JSON (the memory
 * layout, the vCPU state).
 */
export const ROUND = 0x52
export const JSON_MESSAGE = 0x4a

/** Writes a `J` message. */
export function writeJson(socket, value) {
  const body = Buffer.from(JSON.stringify(value))
  const head = Buffer.alloc(5)
  head[0] = JSON_MESSAGE
  head.writeUInt32LE(body.length, 1)
  socket.write(Buffer.concat([head, body]))
}

/**
 * The next `n` bytes of the paused stream `socket` (`null` at its end): `read(n)` never takes more,
 * so a page stream after them is left for `readPages`.
 */
export async function take(socket, n) {
  for (;;) {
    const bytes = socket.read(n)
    if (bytes !== null) return bytes.length === n ? bytes : null
    if (socket.readableEnded || socket.destroyed) return null
    await new Promise((resolve) => {
      const done = () => {
        socket.off('readable', done)
        socket.off('close', done)
        resolve()
      }
      socket.on('readable', done)
      socket.on('close', done)
    })
  }
}
