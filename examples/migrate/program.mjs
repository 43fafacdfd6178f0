// The migration example's guest: 16-bit real-mode x86 machine code, assembled by hand (the
// opcode bytes below; only the jumps' 8-bit displacements are computed, from labels).
//
// It makes PASSES passes over PAGES pages of guest RAM (from DATA). In pass p, page k gets the
// value v = 31 * (the page's first word) + p + k in each of its 2048 words, so every pass depends
// on the one before: a page the migration lost or sent stale changes every later pass and the
// result. After each page it writes the pass number to the progress port (an exit: the VMM
// regains control, and may stop the vCPU there); after each pass it prints '.' on the serial
// port. At the end it folds the pages' first words into a 16-bit checksum (h = rol(h, 3) ^ v),
// prints " sum xxxx\n" and halts. Deterministic: an unmigrated run and a migrated one must print
// the same and leave the same memory.
export const ENTRY = 0x1000
/** Guest RAM: one region at guest address 0. */
export const RAM_SIZE = 1 << 20
/** The first page the program writes (real mode reaches it as segment DATA >> 4). */
export const DATA = 0x20000
export const PAGES = 128
export const PASSES = 16
export const PROGRESS_PORT = 0x80
export const SERIAL_PORT = 0x3f8

const code = []
const labels = new Map()
const jumps = []
const emit = (...bytes) => code.push(...bytes)
const label = (name) => labels.set(name, code.length)
/** A short jump (`opcode rel8`) to `name`. */
const jump = (opcode, name) => {
  emit(opcode, 0)
  jumps.push([code.length - 1, name])
}
const lo = (n) => n & 0xff
const hi = (n) => (n >> 8) & 0xff
/** `mov al, c; out dx, al` for each character (dx = SERIAL_PORT). */
const print = (text) => {
  for (const c of Buffer.from(text, 'latin1')) emit(0xb0, c, 0xee)
}

emit(0xbd, 0x01, 0x00) //                   mov bp, 1              ; pass
label('pass')
emit(0xbb, lo(DATA >> 4), hi(DATA >> 4)) // mov bx, DATA >> 4      ; segment of page 0
emit(0x31, 0xf6) //                         xor si, si             ; page
label('page')
emit(0x8e, 0xc3) //                         mov es, bx
emit(0x26, 0xa1, 0x00, 0x00) //             mov ax, [es:0]         ; the page's value so far
emit(0x89, 0xc2) //                         mov dx, ax
emit(0xc1, 0xe0, 0x05) //                   shl ax, 5
emit(0x29, 0xd0) //                         sub ax, dx             ; 31 * old
emit(0x01, 0xe8) //                         add ax, bp             ; + pass
emit(0x01, 0xf0) //                         add ax, si             ; + page
emit(0x31, 0xff) //                         xor di, di
emit(0xb9, 0x00, 0x08) //                   mov cx, 2048
emit(0xf3, 0xab) //                         rep stosw              ; fill the page
emit(0x89, 0xe8) //                         mov ax, bp
emit(0xe6, PROGRESS_PORT) //                out PROGRESS_PORT, al
emit(0x81, 0xc3, 0x00, 0x01) //             add bx, 0x100          ; next page's segment
emit(0x46) //                               inc si
emit(0x81, 0xfe, lo(PAGES), hi(PAGES)) //   cmp si, PAGES
jump(0x72, 'page') //                       jb page
emit(0xba, lo(SERIAL_PORT), hi(SERIAL_PORT)) // mov dx, SERIAL_PORT
print('.')
emit(0x45) //                               inc bp
emit(0x81, 0xfd, lo(PASSES + 1), hi(PASSES + 1)) // cmp bp, PASSES + 1
jump(0x72, 'pass') //                       jb pass
emit(0xbb, lo(DATA >> 4), hi(DATA >> 4)) // mov bx, DATA >> 4
emit(0x31, 0xf6) //                         xor si, si
emit(0x31, 0xff) //                         xor di, di             ; the checksum
label('sum')
emit(0x8e, 0xc3) //                         mov es, bx
emit(0x26, 0xa1, 0x00, 0x00) //             mov ax, [es:0]
emit(0xc1, 0xc7, 0x03) //                   rol di, 3
emit(0x31, 0xc7) //                         xor di, ax
emit(0x81, 0xc3, 0x00, 0x01) //             add bx, 0x100
emit(0x46) //                               inc si
emit(0x81, 0xfe, lo(PAGES), hi(PAGES)) //   cmp si, PAGES
jump(0x72, 'sum') //                        jb sum
emit(0xba, lo(SERIAL_PORT), hi(SERIAL_PORT)) // mov dx, SERIAL_PORT
print(' sum ')
emit(0xb9, 0x04, 0x00) //                   mov cx, 4
label('hex')
emit(0xc1, 0xc7, 0x04) //                   rol di, 4              ; the next digit in the low nibble
emit(0x89, 0xf8) //                         mov ax, di
emit(0x24, 0x0f) //                         and al, 0x0f
emit(0x04, 0x30) //                         add al, '0'
emit(0x3c, 0x39) //                         cmp al, '9'
jump(0x76, 'digit') //                      jbe digit
emit(0x04, 0x27) //                         add al, 'a' - '9' - 1
label('digit')
emit(0xee) //                               out dx, al
jump(0xe2, 'hex') //                        loop hex
print('\n')
emit(0xf4) //                               hlt

for (const [at, name] of jumps) {
  const displacement = labels.get(name) - (at + 1)
  if (displacement < -128 || displacement > 127) throw new Error(`jump to ${name} out of rel8 range`)
  code[at] = displacement & 0xff
}

export const CODE = Buffer.from(code)

/** What the program prints, computed here the way the program computes it. */
export function expectedSerial() {
  const values = new Array(PAGES).fill(0)
  for (let pass = 1; pass <= PASSES; pass++) {
    for (let page = 0; page < PAGES; page++) values[page] = (31 * values[page] + pass + page) & 0xffff
  }
  let sum = 0
  for (const v of values) sum = (((sum << 3) | (sum >>> 13)) & 0xffff) ^ v
  return `${'.'.repeat(PASSES)} sum ${sum.toString(16).padStart(4, '0')}\n`
}
