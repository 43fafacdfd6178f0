/**
 * A 16550A UART (the PC's COM1 at port 0x3f8, IRQ 4) as Linux's 8250 driver sees it: the divisor
 * latch, line and modem control (with the loopback the driver's probe checks), 16-byte FIFOs
 * reported by IIR, and interrupts for received data and an empty transmit register. Output goes
 * to a callback; input comes through a {@link InputRing} that another thread fills (the console
 * thread), and which it signals by raising the IRQ itself (the vCPU thread may be in `KVM_RUN`).
 */

const IER_RDA = 0x01
const IER_THRE = 0x02
const IIR_NONE = 0x01
const IIR_THRE = 0x02
const IIR_RDA = 0x04
const IIR_FIFO = 0xc0
const LCR_DLAB = 0x80
const LSR_DR = 0x01
const LSR_THRE = 0x20
const LSR_TEMT = 0x40
const MCR_LOOP = 0x10
const MSR_DEFAULT = 0xb0 // DCD | DSR | CTS

/**
 * Bytes typed into the guest: a single-producer, single-consumer ring in a `SharedArrayBuffer`,
 * and the UART's interrupt-enable register mirrored there, so the producing thread knows whether
 * the guest wants an interrupt for them.
 */
export class InputRing {
  static readonly SIZE = 4096
  readonly buffer: SharedArrayBuffer
  readonly #words: Int32Array
  readonly #bytes: Uint8Array

  constructor(buffer = new SharedArrayBuffer(16 + InputRing.SIZE)) {
    this.buffer = buffer
    this.#words = new Int32Array(buffer, 0, 4) // [head, tail, ier]
    this.#bytes = new Uint8Array(buffer, 16, InputRing.SIZE)
  }

  /** Producer: queues what fits of `data`; returns how many bytes were taken. */
  push(data: Uint8Array): number {
    const head = Atomics.load(this.#words, 0)
    let tail = Atomics.load(this.#words, 1)
    let n = 0
    while (n < data.length && tail - head < InputRing.SIZE) {
      this.#bytes[tail % InputRing.SIZE] = data[n++]
      tail++
    }
    Atomics.store(this.#words, 1, tail)
    return n
  }

  /** Consumer: the next byte, or -1. */
  shift(): number {
    const head = Atomics.load(this.#words, 0)
    if (head === Atomics.load(this.#words, 1)) return -1
    const b = this.#bytes[head % InputRing.SIZE]
    Atomics.store(this.#words, 0, head + 1)
    return b
  }

  /** Whether a byte is waiting. */
  get ready(): boolean {
    return Atomics.load(this.#words, 0) !== Atomics.load(this.#words, 1)
  }

  /** The UART's IER, as the guest last set it. */
  get interruptEnable(): number {
    return Atomics.load(this.#words, 2)
  }

  set interruptEnable(value: number) {
    Atomics.store(this.#words, 2, value)
  }
}

export class Uart {
  #ier = 0
  #lcr = 0x03
  #mcr = 0x08
  #scr = 0
  #dll = 0x0c
  #dlm = 0
  #fifo = false
  #threPending = false
  #asserted = false
  #loopback = -1

  /**
   * @param out gets each byte the guest transmits
   * @param pulse raises and lowers the UART's interrupt line (an edge, for the PIC)
   * @param input the bytes typed into the guest
   */
  constructor(
    readonly out: (byte: number) => void,
    readonly pulse: () => void,
    readonly input: InputRing,
  ) {}

  /** A guest read of register `offset` (0–7). */
  read(offset: number): number {
    const dlab = (this.#lcr & LCR_DLAB) !== 0
    let value: number
    switch (offset) {
      case 0:
        if (dlab) value = this.#dll
        else if (this.#loopback >= 0) {
          value = this.#loopback
          this.#loopback = -1
        } else value = Math.max(0, this.input.shift())
        break
      case 1:
        value = dlab ? this.#dlm : this.#ier
        break
      case 2: {
        const id = this.#interruptId()
        // Reading IIR with the empty-transmitter interrupt reported acknowledges it.
        if (id === IIR_THRE) this.#threPending = false
        value = id | (this.#fifo ? IIR_FIFO : 0)
        break
      }
      case 3:
        value = this.#lcr
        break
      case 4:
        value = this.#mcr
        break
      case 5:
        value = LSR_THRE | LSR_TEMT | (this.#rxReady() ? LSR_DR : 0)
        break
      case 6:
        value = (this.#mcr & MCR_LOOP) !== 0 ? this.#loopbackStatus() : MSR_DEFAULT
        break
      default:
        value = this.#scr
    }
    this.#update()
    return value
  }

  /** A guest write of `value` to register `offset` (0–7). */
  write(offset: number, value: number): void {
    const dlab = (this.#lcr & LCR_DLAB) !== 0
    switch (offset) {
      case 0:
        if (dlab) this.#dll = value
        else {
          if ((this.#mcr & MCR_LOOP) !== 0) this.#loopback = value
          else this.out(value)
          this.#threPending = true
        }
        break
      case 1:
        if (dlab) this.#dlm = value
        else {
          // Enabling the transmit interrupt with the register already empty raises it at once.
          if ((value & IER_THRE) !== 0 && (this.#ier & IER_THRE) === 0) this.#threPending = true
          this.#ier = value & 0x0f
          this.input.interruptEnable = this.#ier
        }
        break
      case 2:
        this.#fifo = (value & 0x01) !== 0
        break
      case 3:
        this.#lcr = value
        break
      case 4:
        this.#mcr = value & 0x1f
        break
      case 7:
        this.#scr = value
        break
      default:
        break // LSR and MSR are read-only
    }
    this.#update()
  }

  #rxReady(): boolean {
    return this.#loopback >= 0 || this.input.ready
  }

  #interruptId(): number {
    if ((this.#ier & IER_RDA) !== 0 && this.#rxReady()) return IIR_RDA
    if ((this.#ier & IER_THRE) !== 0 && this.#threPending) return IIR_THRE
    return IIR_NONE
  }

  /** Modem status in loopback: DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD. */
  #loopbackStatus(): number {
    const m = this.#mcr
    return ((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
  }

  /** Raises an edge when an interrupt becomes pending. */
  #update(): void {
    const pending = this.#interruptId() !== IIR_NONE
    if (pending && !this.#asserted) this.pulse()
    this.#asserted = pending
  }

  /** The console thread queued input: an interrupt if one is due (called on the vCPU thread's exits too). */
  poll(): void {
    this.#update()
  }
}
