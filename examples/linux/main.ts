/**
 * A small VMM in TypeScript that boots Debian's cloud kernel on mapped-region memory:
 * `npm run demo:linux`. Guest RAM is a sealed memfd (`SharedMemory`) in a `GuestMemory`; the
 * kernel and the busybox initramfs are read straight into it (`loadFile`); the boot parameters,
 * e820 map and command line are written through it (`boot.ts`). The vCPU runs on a worker thread
 * over an attached `GuestMemory` (`vcpu.ts`) while this thread serves the console: the UART's
 * output is written to stdout, stdin is typed into it. When the guest resets (or the time is up),
 * the kernel's log buffer is read out of guest memory through a view and its first line printed.
 *
 * Environment: `LINUX_TIMEOUT` (seconds, default 3000), `LINUX_CMDLINE` (appended).
 */
import { execFileSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import { GuestMemory, SharedMemory } from 'mapped-region'
import { load } from './boot.ts'
import { QUIRK_FLAGS } from './host-quirks.ts'
import { INIT_MARKER, MAILBOX, MAILBOX_MAGIC, MAILBOX_REPLY, RAM_SIZE } from './layout.ts'
import { InputRing } from './uart.ts'

const kvm = createRequire(import.meta.url)('../kvm/index.js') as {
  kvmUnavailableReason(): string | null
  irqLineFd(vmFd: number, irq: number, level: boolean): void
}
const why = kvm.kvmUnavailableReason()
if (why !== null) {
  console.log(`Linux example skipped: ${why}`)
  process.exit(0)
}

const fetch = new URL('./fetch.sh', import.meta.url).pathname
let files: string
try {
  files = execFileSync('bash', [fetch], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim()
} catch (e) {
  console.log(`Linux example skipped: the guest files could not be fetched (${(e as Error).message.split('\n')[0]})`)
  process.exit(0)
}

const BASE_FLAGS = [
  'console=ttyS0',
  'earlyprintk=serial,ttyS0,115200',
  // Reboot on panic; reboot through the keyboard controller: both end the VMM cleanly.
  'panic=-1',
  'reboot=k',
  // The kernel at its link address, so its log buffer is where the image says (read afterwards).
  'nokaslr',
  // No PCI, ACPI or i8042 here: do not probe for them.
  'pci=off',
  'acpi=off',
  'i8042.noaux',
  'i8042.nokbd',
]
const cmdline = [...BASE_FLAGS, ...QUIRK_FLAGS, process.env.LINUX_CMDLINE ?? ''].join(' ').trim()

const t0 = Date.now()
const ram = SharedMemory.create('linux-ram', RAM_SIZE)
const guest = new GuestMemory([{ guestAddress: 0n, size: RAM_SIZE, backing: ram }])
guest.writeU32(MAILBOX, MAILBOX_MAGIC)
const entry = load(guest, `${files}/vmlinuz`, `${files}/initramfs.cpio`, cmdline)
console.log(`[vmm] ${RAM_SIZE >> 20} MiB of guest RAM, kernel ${files}/vmlinuz and initramfs loaded in ${Date.now() - t0} ms`)
for (const r of guest.regions())
  console.log(
    `[vmm] slot ${r.slot}: guest 0x${r.guestAddress.toString(16)}, ${r.size >> 20} MiB at host 0x${r.userspaceAddress.toString(16)}`,
  )
console.log(`[vmm] command line: ${cmdline}`)

const input = new InputRing()
const vcpu = new Worker(new URL('./vcpu-thread.mjs', import.meta.url), {
  workerData: { guest: guest.share(), entry, input: input.buffer },
})
let vmFd = -1
let consoleText = ''
const seen = { banner: false, init: false, marker: false }
const timeout = Number(process.env.LINUX_TIMEOUT ?? 3000) * 1000

// Typed input goes to the UART's receive ring; the guest is interrupted if it asked to be.
if (process.stdin.isTTY) process.stdin.setRawMode(true)
process.stdin.on('data', (data: Buffer) => {
  if (process.stdin.isTTY && data.includes(0x1d)) finish('quit (ctrl-])')
  input.push(data)
  if (vmFd >= 0 && (input.interruptEnable & 1) !== 0) {
    kvm.irqLineFd(vmFd, 4, true)
    kvm.irqLineFd(vmFd, 4, false)
  }
})
process.stdin.unref?.()

const timer = setTimeout(() => finish(`time is up (${timeout / 1000} s)`), timeout)
vcpu.on('message', (m: { vmFd?: number; serial?: Uint8Array; end?: string; emulated?: Record<string, number> }) => {
  if (m.vmFd !== undefined) vmFd = m.vmFd
  if (m.serial !== undefined) {
    const text = Buffer.from(m.serial).toString('latin1')
    process.stdout.write(text)
    consoleText = (consoleText + text).slice(-4096)
    if (/Linux version \d/.test(consoleText)) seen.banner = true
    if (consoleText.includes('Run /init as init process')) seen.init = true
    if (consoleText.includes(INIT_MARKER)) seen.marker = true
  }
  if (m.end !== undefined) finish(`${m.end}; emulated for this host: ${JSON.stringify(m.emulated)}`)
})
vcpu.on('error', (e) => finish(`the vCPU thread failed: ${e.message}`))

let finished = false
function finish(why: string): void {
  if (finished) return
  finished = true
  clearTimeout(timer)
  console.log(`\n[vmm] guest stopped after ${((Date.now() - t0) / 1000).toFixed(1)} s: ${why}`)
  // The kernel's log buffer, read out of guest memory through a view. The printk ring's first
  // record is a data block: an 8-byte block id (never 0), then the text, 8-byte aligned. The banner
  // constant in the kernel's read-only data sits after zero padding instead, and the pieces of it
  // in the compressed image are not aligned.
  const ramView = guest.view(0, RAM_SIZE)
  let line: string | undefined
  for (let at = ramView.indexOf('Linux version '); at >= 8 && line === undefined; at = ramView.indexOf('Linux version ', at + 1)) {
    let end = at
    while (end < ramView.length && ramView[end] >= 0x20 && ramView[end] < 0x7f) end++
    const id = ramView.readBigUInt64LE(at - 8)
    const text = ramView.toString('latin1', at, end)
    // The record's length is in its descriptor, elsewhere: the banner ends with the build date.
    const banner = /^Linux version \S+ \(.*\) #\d.*?\(\d{4}-\d\d-\d\d\)/.exec(text)
    if (at % 8 === 0 && id !== 0n && banner !== null) line = `${banner[0]} (at guest 0x${at.toString(16)})`
  }
  console.log(`[vmm] the kernel log buffer's first line, read through a view: ${line ?? 'not found'}`)
  const reply = guest.readU32(MAILBOX + 4)
  console.log(
    `[vmm] mailbox: the host wrote 0x${MAILBOX_MAGIC.toString(16)}; /init replied ${reply === MAILBOX_REPLY ? `0x${reply.toString(16)}` : 'nothing'}`,
  )
  console.log(
    `[vmm] reached: kernel banner ${seen.banner ? 'yes' : 'no'}, Run /init ${seen.init ? 'yes' : 'no'}, /init marker ${seen.marker ? 'yes' : 'no'}`,
  )
  if (process.stdin.isTTY) process.stdin.setRawMode(false)
  // The vCPU thread may be in KVM_RUN: the process ends it.
  process.exit(seen.init ? 0 : 1)
}
