/**
 * Builds the Linux example's initramfs: a `newc` cpio archive (the format the kernel unpacks)
 * with busybox-static and an `/init` that prints a marker, reads the host's word in the mailbox
 * page and writes its reply there (`devmem`: a command that reads and writes memory the host then
 * checks through its own view), and reboots — the VMM's clean exit.
 * Usage: node --import=tsx initramfs.ts <busybox> <out.cpio>
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { INIT_MARKER, MAILBOX, MAILBOX_REPLY } from './layout.ts'

export interface Entry {
  name: string
  mode: number
  data?: Buffer
}

const hex = (n: number) => n.toString(16).padStart(8, '0')
const pad4 = (n: number) => (4 - (n % 4)) % 4

/**
 * One cpio `newc` record: a 110-byte header, the name, the data, each padded to 4 bytes. The
 * archive is its entries' records and then the `TRAILER!!!` record. (Also used by
 * scripts/arm64-initramfs.mts for the arm64 test guest.)
 */
export function record(e: Entry, ino: number): Buffer {
  const name = Buffer.from(`${e.name}\0`)
  const data = e.data ?? Buffer.alloc(0)
  const fields = [ino, e.mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length, 0]
  const header = Buffer.from(`070701${fields.map(hex).join('')}`)
  return Buffer.concat([header, name, Buffer.alloc(pad4(header.length + name.length)), data, Buffer.alloc(pad4(data.length))])
}

export function initramfs(busybox: Buffer): Buffer {
  const init = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox echo "${INIT_MARKER}: /init runs on mapped-region memory"
/bin/busybox echo "${INIT_MARKER}: the host wrote $(/bin/busybox devmem 0x${MAILBOX.toString(16)} 32) into the mailbox"
/bin/busybox devmem 0x${(MAILBOX + 4).toString(16)} 32 0x${MAILBOX_REPLY.toString(16)}
/bin/busybox echo "${INIT_MARKER}: reply written; rebooting"
/bin/busybox reboot -f
`
  const DIR = 0o040755
  const FILE = 0o100755
  const entries: Entry[] = [
    { name: 'bin', mode: DIR },
    { name: 'dev', mode: DIR },
    { name: 'proc', mode: DIR },
    { name: 'sys', mode: DIR },
    { name: 'tmp', mode: DIR },
    { name: 'bin/busybox', mode: FILE, data: busybox },
    { name: 'bin/sh', mode: 0o120777, data: Buffer.from('busybox') },
    { name: 'init', mode: FILE, data: Buffer.from(init) },
  ]
  const records = entries.map((e, i) => record(e, i + 1))
  records.push(record({ name: 'TRAILER!!!', mode: 0 }, 0))
  return Buffer.concat(records)
}

if (process.argv[1]?.endsWith('initramfs.ts')) {
  const [busybox, out] = process.argv.slice(2)
  writeFileSync(out, initramfs(readFileSync(busybox)))
}
