// The demo's guest program: 16-bit real-mode x86 machine code, assembled by hand.
// It fills 256 bytes of guest RAM at 0x2000 with 0, 1, ..., 255, prints "OK\n"
// on the serial port (0x3f8) and halts.
export const ENTRY = 0x1000
export const PATTERN_AT = 0x2000
export const PATTERN_LENGTH = 256

export const CODE = Buffer.from([
  0xbf,
  0x00,
  0x20, //       mov di, 0x2000
  0xb9,
  0x00,
  0x01, //       mov cx, 256
  0xb0,
  0x00, //             mov al, 0
  0x88,
  0x05, //       fill: mov [di], al
  0x47, //                   inc di
  0xfe,
  0xc0, //             inc al
  0xe2,
  0xf9, //             loop fill
  0xba,
  0xf8,
  0x03, //       mov dx, 0x3f8
  0xb0,
  0x4f, //             mov al, 'O'
  0xee, //                   out dx, al
  0xb0,
  0x4b, //             mov al, 'K'
  0xee, //                   out dx, al
  0xb0,
  0x0a, //             mov al, '\n'
  0xee, //                   out dx, al
  0xf4, //                   hlt
])

/** The bytes the program leaves at PATTERN_AT. */
export const EXPECTED = Buffer.from(Array.from({ length: PATTERN_LENGTH }, (_, i) => i))

/**
 * The dirty-tracking bench's guest program: 32-bit protected-mode x86 machine code (flat
 * segments, no paging; `Machine.setProtectedModeEntry`), assembled by hand. It writes the byte 1
 * at guest-physical 0, `stride`, 2·`stride`, … below `end` and halts. Reads only its own code,
 * so the pages it writes are all it dirties; place it on a page it does not write.
 */
export function stridedWrites(end, stride) {
  // biome-ignore format: one instruction a line
  const code = Buffer.from([
    0xbf, 0x00, 0x00, 0x00, 0x00, //     0: mov edi, 0
    0xc6, 0x07, 0x01, //                 5: next: mov byte [edi], 1
    0x81, 0xc7, 0x00, 0x00, 0x00, 0x00, // 8: add edi, stride (imm32 at 10)
    0x81, 0xff, 0x00, 0x00, 0x00, 0x00, // 14: cmp edi, end (imm32 at 16)
    0x72, 0xef, //                      20: jb next (22 - 17 = 5)
    0xf4, //                            22: hlt
  ])
  code.writeUInt32LE(stride, 10)
  code.writeUInt32LE(end, 16)
  return code
}
