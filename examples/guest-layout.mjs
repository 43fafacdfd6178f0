// Lays out guest memory the way a VMM does: one large reservation, guest RAM
// from a sealed memfd, a read-only firmware image from a file, and a hole
// punched where a device's MMIO window lives. Run with `npm run demo`.
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MemoryMappingArena, PAGE_SIZE, Protection, SharedMemory } from 'mapped-region'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const hex = (n) => `0x${n.toString(16).padStart(9, '0')}`
const prot = (p) => (p & Protection.READ ? 'r' : '-') + (p & Protection.WRITE ? 'w' : '-') + (p & Protection.EXEC ? 'x' : '-')

// Node 20 has no `using` syntax (TypeScript lowers it); here regions are closed explicitly.
const dir = mkdtempSync(join(tmpdir(), 'mapped-region-demo-'))
// 1. Reserve 4 GiB of guest-physical address space: PROT_NONE, costs no memory.
const arena = MemoryMappingArena.reserve(4 * GiB)
// 2. Guest RAM: a 256 MiB memfd, sealed against shrinking.
const ram = SharedMemory.create('guest-ram', 256 * MiB)
try {
  console.log(`reserved ${arena.size / GiB} GiB at ${hex(arena.address)} (page size ${PAGE_SIZE})`)

  // Guest RAM overlaid at guest address 0.
  arena.addFdMapping(0, ram.size, ram.fd, 0, Protection.READ_WRITE)

  // 3. Firmware: a read-only file overlaid just below 4 GiB, as on a PC.
  const romPath = join(dir, 'firmware.bin')
  const rom = Buffer.alloc(64 * 1024, 0xf4) // hlt, hlt, hlt, ...
  rom.write('mapped-region demo BIOS', 0)
  writeFileSync(romPath, rom)
  const romFd = openSync(romPath, 'r')
  const romBase = 4 * GiB - rom.length
  arena.addFdMapping(romBase, rom.length, romFd, 0, Protection.READ_EXEC)
  closeSync(romFd) // the mapping keeps the file; the fd is no longer needed

  // 4. A hole for a device's MMIO window at 160 MiB: accesses must trap to the VMM.
  arena.removeMapping(160 * MiB, 1 * MiB)

  // Guest memory is real memory: write through a zero-copy view, read through a copy.
  const bootParams = arena.view(0x7000, 64)
  bootParams.write('kernel cmdline: console=ttyS0', 0)
  console.log(`guest 0x7000 reads back: "${arena.read(0x7000, 29).toString()}"`)
  console.log(`firmware signature:      "${arena.read(romBase, 23).toString()}"`)
  try {
    arena.read(160 * MiB, 4)
  } catch (err) {
    console.log(`read inside the MMIO hole: ${err.code}`)
  }
  try {
    arena.write(romBase, Buffer.from('x'))
  } catch (err) {
    console.log(`write into the firmware:   ${err.code}`)
  }

  console.log('\nguest memory layout (mappings()):')
  console.log('  guest range                    size       kind       prot  backing')
  for (const m of arena.mappings()) {
    const backing = m.kind === 'fd' ? `fd ${m.fd} @ ${hex(m.fdOffset)}` : 'anonymous'
    const size = m.size >= MiB ? `${(m.size / MiB).toFixed(2)} MiB` : `${m.size / 1024} KiB`
    console.log(`  ${hex(m.offset)}-${hex(m.offset + m.size)}  ${size.padEnd(10)} ${m.kind.padEnd(10)} ${prot(m.protection)}   ${backing}`)
  }
  console.log(`\nKVM_SET_USER_MEMORY_REGION would get userspace_addr ${hex(arena.address)} for slot 0.`)
} finally {
  arena.close() // unmaps everything and detaches the view
  ram.close()
  rmSync(dir, { recursive: true, force: true })
}
