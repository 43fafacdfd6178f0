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
