/**
 * What this example needs because of the host it runs on, in one place. Under hardware KVM none of
 * it is needed; under a nested, software hypervisor (such as `kvm_pvm` inside a Firecracker VM,
 * which emulates stretches of guest kernel code with KVM's instruction emulator) some instructions
 * cannot be emulated. Each workaround says why. See NOTES "Booting Linux here".
 */
import type { GuestMemory } from 'mapped-region'

/**
 * CPU features hidden from the guest (one `clearcpuid=` list: the kernel reads only the last
 * `clearcpuid=` it is given), each because the emulator cannot execute what the kernel would use
 * it for.
 */
const CLEARED_CPUID: [feature: string, why: string][] = [
  ['cx16', "`lock cmpxchg16b` (SLUB's lockless fast path) is not emulated"],
  ['xsave', 'XSAVE/XRSTOR (the FPU state on context switch) are not emulated: FXSAVE/FXRSTOR are'],
  ['smap', 'CLAC/STAC around user accesses are not emulated'],
  ['popcnt', "POPCNT (the scheduler's and the bitmap code's hot paths) is not emulated"],
  ['ssse3', 'the SIMD crypto and RAID paths use SSSE3, SSE4 and AVX instructions the emulator does not know'],
  ['sse4_1', 'as above'],
  ['sse4_2', 'as above'],
  ['avx', 'as above'],
  ['avx2', 'as above'],
  ['avx512f', 'as above'],
  ['aes', 'AES-NI, as above'],
  ['pclmulqdq', 'carry-less multiply (GHASH, CRC), as above'],
  ['sha_ni', 'SHA extensions, as above'],
  ['fma', 'as above'],
  ['f16c', 'as above'],
]

/** Kernel command-line flags that keep the guest away from what the emulator cannot do. */
export const QUIRK_FLAGS = [
  `clearcpuid=${CLEARED_CPUID.map(([feature]) => feature).join(',')}`,
  // The crypto self-tests (RSA above all) take more than ten minutes emulated.
  'cryptomgr.notests',
  // About 100× slower than hardware: the soft-lockup detector's 20 s would fire on long loops
  // (ftrace's record check, kallsyms lookups) that are only slow.
  'nowatchdog',
]

/** The 64-bit general registers in `Machine.regs()` order, by ModRM/SIB register number. */
const REG_INDEX = [0, 2, 3, 1, 6, 7, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15] // rax rcx rdx rbx rsp rbp rsi rdi r8..r15

/** What the vCPU thread's machine offers the workarounds. */
export interface QuirkMachine {
  regs(): bigint[]
  setRip(rip: bigint): void
  translate(address: bigint): bigint | null
  setMxcsr(value: number): void
  injectException(vector: number): void
}

/**
 * Handles an instruction KVM's emulator gave up on (`internal-error`, suberror 1) where this host
 * needs it: returns what was done, or `undefined` if it is not one of ours (a real failure).
 * - `int3` in protected mode (the kernel's int3 self-test, and kprobes/jump labels patching
 *   through it): raise the #BP it would have raised, past the instruction.
 * - `fwait`: a no-op without a pending x87 exception: step over it.
 * - `ldmxcsr m32` (in `kernel_fpu_begin`): decode the operand, read it from guest memory through
 *   the page tables (`KVM_TRANSLATE`), set MXCSR (`KVM_SET_FPU`), step over it.
 */
export function emulate(machine: QuirkMachine, guest: GuestMemory): string | undefined {
  const regs = machine.regs()
  const rip = regs[16]
  const at = machine.translate(rip)
  if (at === null) return undefined
  const code = guest.read(at, 15)
  let i = 0
  let rex = 0
  while (code[i] === 0x66 || code[i] === 0xf2 || code[i] === 0xf3 || code[i] === 0x3e || code[i] === 0x2e) i++
  if ((code[i] & 0xf0) === 0x40) rex = code[i++]
  if (code[i] === 0xcc) {
    machine.setRip(rip + BigInt(i + 1))
    machine.injectException(3)
    return 'int3'
  }
  if (code[i] === 0x9b) {
    machine.setRip(rip + BigInt(i + 1))
    return 'fwait'
  }
  if (code[i] === 0x0f && code[i + 1] === 0xae && ((code[i + 2] >> 3) & 7) === 2 && code[i + 2] >> 6 !== 3) {
    const operand = modrmAddress(code, i + 2, rex, regs, rip)
    const phys = machine.translate(operand.address)
    if (phys === null) return undefined
    machine.setMxcsr(guest.readU32(phys))
    machine.setRip(rip + BigInt(operand.end))
    return 'ldmxcsr'
  }
  return undefined
}

/** The memory operand of the ModRM byte at `at` (64-bit addressing): its address, and where the instruction ends. */
function modrmAddress(code: Buffer, at: number, rex: number, regs: bigint[], rip: bigint): { address: bigint; end: number } {
  const reg = (n: number) => regs[REG_INDEX[n]]
  const modrm = code[at]
  const mod = modrm >> 6
  let rm = modrm & 7
  let i = at + 1
  let address = 0n
  if (rm === 4) {
    const sib = code[i++]
    const scale = 1n << BigInt(sib >> 6)
    const index = ((sib >> 3) & 7) | ((rex & 2) << 2)
    const base = (sib & 7) | ((rex & 1) << 3)
    if (index !== 4) address += reg(index) * scale
    if ((sib & 7) === 5 && mod === 0) {
      address += BigInt(code.readInt32LE(i))
      i += 4
    } else address += reg(base)
  } else if (rm === 5 && mod === 0) {
    const disp = BigInt(code.readInt32LE(i))
    i += 4
    return { address: (rip + BigInt(i) + disp) & 0xffff_ffff_ffff_ffffn, end: i }
  } else {
    rm |= (rex & 1) << 3
    address += reg(rm)
  }
  if (mod === 1) address += BigInt(code.readInt8(i++))
  else if (mod === 2) {
    address += BigInt(code.readInt32LE(i))
    i += 4
  }
  return { address: address & 0xffff_ffff_ffff_ffffn, end: i }
}
