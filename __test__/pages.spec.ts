/**
 * Page streams (ts/pages.ts): writePages / readPages between two GuestMemory objects, over a
 * PassThrough, a Unix socket and file descriptors; selections; several streams on one
 * connection; malformed, truncated and foreign input; backpressure; argument checks.
 */
import test, { type ExecutionContext } from 'ava'
import { closeSync, openSync, writeFileSync } from 'node:fs'
import { createServer, connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { PassThrough, Readable, Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { GuestMemory, PAGE_SIZE, Protection, readPages, SharedMemory, writePages } from 'mapped-region'
import { tempDir } from './helpers.js'

const P = PAGE_SIZE
const MAX_RUN = 256 * 1024

/**
 * Guest memory: a SharedMemory region at 0 (`ramPages`), a hole of 32 pages (at least to page 64),
 * an anonymous region of 8 pages.
 */
function guestPair(t: ExecutionContext, ramPages = 32, options: { trackDirty?: boolean } = {}): GuestMemory {
  const ram = SharedMemory.create('pages-test', ramPages * P)
  const second = Math.max(64, ramPages + 32)
  const g = new GuestMemory(
    [
      { guestAddress: 0n, size: ram.size, backing: ram },
      { guestAddress: BigInt(second * P), size: 8 * P, backing: 'anonymous' },
    ],
    { addressSpace: (second + 8) * P, ...options },
  )
  t.teardown(() => {
    g.close()
    ram.close()
  })
  return g
}

/** Every region's bytes, one after another. */
const memory = (g: GuestMemory): Buffer => Buffer.concat(g.regions().map((r) => g.read(r.guestAddress, r.size)))

/** Fills every page of `g` with a pattern of its own (`seed` makes it differ between guests). */
function scribble(g: GuestMemory, seed: number): void {
  for (const r of g.regions()) {
    const bytes = Buffer.alloc(r.size)
    for (let i = 0; i < bytes.length; i += 4) bytes.writeUInt32LE(((Number(r.guestAddress) + i) * 2654435761 + seed) >>> 0, i)
    g.write(r.guestAddress, bytes)
  }
}

/** A page stream of `runs` ([address, bytes] each), as a writer would make it. */
function stream(runs: [bigint, Buffer][], { magic = 'MRPG', version = 1, flags = 0, end = true } = {}): Buffer {
  const header = Buffer.alloc(8)
  header.write(magic, 0, 'latin1')
  header.writeUInt16LE(version, 4)
  header.writeUInt16LE(flags, 6)
  const parts: Buffer[] = [header]
  for (const [addr, data] of runs) {
    const h = Buffer.alloc(12)
    h.writeBigUInt64LE(addr, 0)
    h.writeUInt32LE(data.length, 8)
    parts.push(h, data)
  }
  if (end) {
    const e = Buffer.alloc(12)
    e.writeBigUInt64LE(2n ** 64n - 1n, 0)
    parts.push(e)
  }
  return Buffer.concat(parts)
}

/** A byte stream (not object mode, `Readable.from`'s default) of `chunks`. */
const bytesFrom = (chunks: Buffer[]): Readable => Readable.from(chunks, { objectMode: false })

/** A Unix socket pair: [the client end, the server's end]. */
async function socketPair(t: ExecutionContext): Promise<[Socket, Socket]> {
  const tmp = tempDir()
  const path = join(tmp.dir, 'sock')
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(path, resolve))
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve))
  const client = connect(path)
  const peer = await accepted
  server.close()
  t.teardown(() => {
    client.destroy()
    peer.destroy()
    tmp.done()
  })
  return [client, peer]
}

test('all pages, across a hole, from one GuestMemory to another through a PassThrough', async (t) => {
  const src = guestPair(t)
  const dst = guestPair(t)
  scribble(src, 1)
  scribble(dst, 2)
  t.false(memory(dst).equals(memory(src)))
  const pipe = new PassThrough()
  // The reader starts late: frames wait in the PassThrough meanwhile (none may be reused).
  const written = writePages(src, 'all', pipe)
  await sleep(20)
  const read = await readPages(dst, pipe)
  const summary = await written
  t.deepEqual(summary, { runs: 2, bytes: 40 * P })
  t.deepEqual(read, summary)
  t.true(memory(dst).equals(memory(src)))
  t.is(pipe.readableLength, 0, 'nothing past the end marker was there, nothing is left')
})

test('all pages over a Unix socket, runs longer than 256 KiB split', async (t) => {
  const src = guestPair(t, 160)
  const dst = guestPair(t, 160)
  scribble(src, 3)
  const [a, b] = await socketPair(t)
  const [written, read] = await Promise.all([writePages(src, 'all', a), readPages(dst, b)])
  t.is(written.runs, Math.ceil((160 * P) / MAX_RUN) + 1)
  t.is(written.bytes, 168 * P)
  t.deepEqual(read, written)
  t.true(memory(dst).equals(memory(src)))
})

test('a dirty selection: only the pages takeDirty() names travel, the others stay as they were', async (t) => {
  const src = guestPair(t, 32, { trackDirty: true })
  const dst = guestPair(t)
  scribble(src, 4)
  src.takeDirty()
  // The destination holds other bytes everywhere; the source then writes a few places.
  scribble(dst, 5)
  const before = new Map<number, Buffer>()
  for (const r of dst.regions())
    for (let a = Number(r.guestAddress); a < Number(r.guestAddress) + r.size; a += P) before.set(a, dst.read(a, P))
  src.write(3 * P + 10, Buffer.from('three'))
  src.write(31 * P + P - 2, Buffer.from('ab')) // the last page of the first region
  src.write(64 * P, Buffer.alloc(2 * P + 1, 7)) // three pages of the second
  src.write(10 * P, Buffer.alloc(3 * P, 9)) // a run of three
  const dirty = src.takeDirty()
  const pipe = new PassThrough()
  const [written, read] = await Promise.all([writePages(src, dirty, pipe), readPages(dst, pipe)])
  t.deepEqual(written, { runs: 4, bytes: 8 * P })
  t.deepEqual(read, written)
  const pages = new Set([3, 10, 11, 12, 31, 64, 65, 66])
  for (const [a, old] of before) t.true(dst.read(a, P).equals(pages.has(a / P) ? src.read(a, P) : old), `page ${a / P}`)
  t.deepEqual(await writePages(src, src.takeDirty(), new PassThrough().resume()), { runs: 0, bytes: 0 }, 'nothing dirty: an empty stream')
})

test('page streams follow one another on one connection: a reader stops at its end marker', async (t) => {
  const src = guestPair(t)
  const dst = guestPair(t)
  const [a, b] = await socketPair(t)
  scribble(src, 6)
  await Promise.all([writePages(src, 'all', a), readPages(dst, b)])
  src.write(5 * P, Buffer.from('second round'))
  const dirty = [{ guestAddress: 0n, size: 32 * P, bitmap: new BigUint64Array([1n << 5n]) }]
  // Both streams and a trailer are in flight before the reader starts on the second.
  await writePages(src, dirty, a)
  a.write('trailer')
  const second = await readPages(dst, b)
  t.deepEqual(second, { runs: 1, bytes: P })
  t.true(memory(dst).equals(memory(src)))
  await sleep(10)
  t.is(String(b.read(7)), 'trailer', 'the bytes after the end marker are still in the stream')
})

test('file descriptors: streams written one after another to a file, read back in order', async (t) => {
  const tmp = tempDir()
  t.teardown(tmp.done)
  const path = join(tmp.dir, 'pages')
  const src = guestPair(t)
  const dst = guestPair(t)
  scribble(src, 7)
  const out = openSync(path, 'w')
  await writePages(src, 'all', out)
  const atFirst = memory(src)
  src.write(64 * P + 5, Buffer.from('later'))
  await writePages(src, [{ guestAddress: BigInt(64 * P), size: 8 * P, bitmap: new BigUint64Array([1n]) }], out)
  closeSync(out)
  const input = openSync(path, 'r')
  t.teardown(() => closeSync(input))
  t.deepEqual(await readPages(dst, input), { runs: 2, bytes: 40 * P })
  t.true(memory(dst).equals(atFirst))
  t.deepEqual(await readPages(dst, input), { runs: 1, bytes: P })
  t.true(memory(dst).equals(memory(src)))
  await t.throwsAsync(
    readPages(dst, input),
    { code: 'ERR_INVALID_ARG_VALUE', message: /truncated: it ended 0 bytes into/ },
    'at the end of the file',
  )
  // A descriptor that refuses: the failed syscall in Node's shape (Deno's fs.write leaves errno out).
  const err = (await t.throwsAsync(writePages(src, 'all', input), { code: 'EBADF' })) as NodeJS.ErrnoException
  t.is(err.errno, -9)
  t.is(err.syscall, 'write')
})

test('malformed input: ERR_INVALID_ARG_VALUE, nothing applied past the fault', async (t) => {
  const dst = guestPair(t)
  const page = Buffer.alloc(P, 0xab)
  const cases: [string, Buffer, RegExp][] = [
    ['magic', stream([[0n, page]], { magic: 'NOPE' }), /not a page stream/],
    ['version', stream([[0n, page]], { version: 2 }), /version 2/],
    ['flags', stream([[0n, page]], { flags: 1 }), /flags 0x1/],
    ['an empty run', stream([[BigInt(P), Buffer.alloc(0)]]), /empty run/],
  ]
  for (const [what, bytes, message] of cases) {
    const err = await t.throwsAsync(readPages(dst, bytesFrom([bytes])), { code: 'ERR_INVALID_ARG_VALUE', message }, what)
    t.true(err instanceof TypeError)
  }
  t.true(dst.read(0, P).equals(Buffer.alloc(P)), 'the run after a bad header was not applied')
})

test('truncated input, cut anywhere: a clear error naming where', async (t) => {
  const dst = guestPair(t)
  const whole = stream([
    [0n, Buffer.alloc(2 * P, 1)],
    [BigInt(64 * P), Buffer.alloc(P, 2)],
  ])
  for (const [cut, where] of [
    [0, /0 bytes into the page stream, before the end of the stream header/],
    [5, /5 bytes into the page stream, before the end of the stream header/],
    [8, /before the end of the header of run 0/],
    [14, /before the end of the header of run 0/],
    [20 + P, /the bytes of run 0/],
    [20 + 2 * P + 3, /the header of run 1/],
    [whole.length - 1, /the header of run 2/],
  ] as const) {
    await t.throwsAsync(
      readPages(dst, bytesFrom([whole.subarray(0, cut)])),
      { code: 'ERR_INVALID_ARG_VALUE', message: where },
      `cut at ${cut}`,
    )
  }
  // The same from a file descriptor, and from a stream destroyed mid-way.
  const tmp = tempDir()
  t.teardown(tmp.done)
  writeFileSync(join(tmp.dir, 'cut'), whole.subarray(0, 20 + P))
  const fd = openSync(join(tmp.dir, 'cut'), 'r')
  t.teardown(() => closeSync(fd))
  await t.throwsAsync(readPages(dst, fd), { code: 'ERR_INVALID_ARG_VALUE', message: /truncated.*bytes of run 0/ })
  const pipe = new PassThrough()
  pipe.write(whole.subarray(0, 30))
  setTimeout(() => pipe.destroy(), 10)
  await t.throwsAsync(readPages(dst, pipe), { code: 'ERR_INVALID_ARG_VALUE', message: /truncated/ })
  t.deepEqual(await readPages(dst, bytesFrom([whole])), { runs: 2, bytes: 3 * P }, 'whole, it applies')
})

test('a run outside the destination: ERR_GUEST_ADDRESS before its bytes are read', async (t) => {
  const dst = guestPair(t)
  const page = Buffer.alloc(P, 0xcd)
  for (const [what, addr, data] of [
    ['in the hole', BigInt(40 * P), page],
    ['into the hole from the first region', BigInt(31 * P), Buffer.alloc(2 * P, 1)],
    ['past the last region', BigInt(72 * P), page],
    ['beyond 2^53', 2n ** 60n, page],
    ['at the top of the address space', 2n ** 64n - 2n, page],
  ] as const) {
    const input = new PassThrough()
    input.end(stream([[addr, data]]))
    const err = await t.throwsAsync(readPages(dst, input), { code: 'ERR_GUEST_ADDRESS' }, what)
    t.true(err instanceof RangeError)
    t.is(input.readableLength, data.length + 12, `${what}: its bytes and what follows are left in the stream`)
  }
  t.true(dst.read(31 * P, P).equals(Buffer.alloc(P)), 'a run half outside changed nothing')
})

test('a read-only destination region: ERR_MMAP_ACCESS', async (t) => {
  const ro = new GuestMemory([{ guestAddress: 0n, size: 4 * P, backing: 'anonymous', protection: Protection.READ }])
  t.teardown(() => ro.close())
  await t.throwsAsync(readPages(ro, bytesFrom([stream([[0n, Buffer.alloc(P, 1)]])])), { code: 'ERR_MMAP_ACCESS' })
})

test('backpressure: a slow reader, and the writer never runs more than a frame ahead of the stream', async (t) => {
  const src = guestPair(t, 160)
  const dst = guestPair(t, 160)
  scribble(src, 8)
  const highWaterMark = 16 * 1024
  let most = 0
  const chunks: Buffer[] = []
  const slow = new Writable({
    highWaterMark,
    write(chunk: Buffer, _encoding, done) {
      chunks.push(Buffer.from(chunk)) // the writer does not reuse frames: a copy only for the test's own reading
      setTimeout(done, 2)
    },
  })
  const watch = setInterval(() => {
    most = Math.max(most, slow.writableLength)
  }, 0)
  const origWrite = slow.write.bind(slow)
  slow.write = ((chunk: Buffer, ...rest: never[]) => {
    const ok = origWrite(chunk, ...rest)
    most = Math.max(most, slow.writableLength)
    return ok
  }) as typeof slow.write
  const summary = await writePages(src, 'all', slow)
  clearInterval(watch)
  t.is(summary.bytes, 168 * P)
  t.true(most <= highWaterMark + MAX_RUN + 12, `buffered at most ${most} bytes`)
  t.deepEqual(await readPages(dst, bytesFrom(chunks)), summary)
  t.true(memory(dst).equals(memory(src)))
})

test('backpressure over a socket whose reader is paused: the writer waits, then finishes', async (t) => {
  const src = guestPair(t, 256)
  const dst = guestPair(t, 256)
  scribble(src, 9)
  const [a, b] = await socketPair(t)
  let done = false
  const written = writePages(src, 'all', a).then((s) => {
    done = true
    return s
  })
  await sleep(50)
  t.false(done, 'a megabyte does not fit in the socket buffers while nobody reads')
  t.true(a.writableLength <= a.writableHighWaterMark + MAX_RUN + 12, `${a.writableLength} bytes queued in the socket`)
  const read = await readPages(dst, b)
  t.deepEqual(read, await written)
  t.true(memory(dst).equals(memory(src)))
})

test('arguments: types, shapes and states, refused before anything is written', async (t) => {
  const g = guestPair(t)
  const out = new PassThrough()
  const fake = Object.create(GuestMemory.prototype)
  for (const guest of [null, {}, fake, new Proxy(g, {}), 'guest']) {
    await t.throwsAsync(writePages(guest as never, 'all', out), { code: 'ERR_INVALID_ARG_TYPE' })
    await t.throwsAsync(readPages(guest as never, bytesFrom([])), { code: 'ERR_INVALID_ARG_TYPE' })
  }
  const bitmap = (words: bigint[], extra: object = {}) => [{ guestAddress: 0n, size: 32 * P, bitmap: new BigUint64Array(words), ...extra }]
  const refused: [unknown, string][] = [
    ['some', 'ERR_INVALID_ARG_TYPE'],
    [{}, 'ERR_INVALID_ARG_TYPE'],
    [new Proxy([], {}), 'ERR_INVALID_ARG_TYPE'],
    [[null], 'ERR_INVALID_ARG_TYPE'],
    [[{ guestAddress: 0n, size: 32 * P, bitmap: new Uint32Array(2) }], 'ERR_INVALID_ARG_TYPE'],
    [[{ guestAddress: 0n, size: 32 * P, bitmap: new Proxy(new BigUint64Array(1), {}) }], 'ERR_INVALID_ARG_TYPE'],
    [bitmap([1n, 0n]), 'ERR_INVALID_ARG_VALUE'], // two words for 32 pages
    [bitmap([1n << 32n]), 'ERR_INVALID_ARG_VALUE'], // page 32 of a 32-page region
    [bitmap([1n], { extra: 1 }), 'ERR_INVALID_ARG_VALUE'],
    [bitmap([1n], { guestAddress: 1n }), 'ERR_MMAP_UNALIGNED'],
    [bitmap([1n], { guestAddress: -1n }), 'ERR_OUT_OF_RANGE'],
    [bitmap([1n], { size: 0 }), 'ERR_OUT_OF_RANGE'],
    [bitmap([1n], { size: 1.5 }), 'ERR_OUT_OF_RANGE'],
    [bitmap([1n], { guestAddress: BigInt(40 * P) }), 'ERR_GUEST_ADDRESS'], // a page in the hole
    [bitmap([3n << 30n], { guestAddress: BigInt(2 * P) }), 'ERR_GUEST_ADDRESS'], // pages 32, 33 run into the hole
  ]
  for (const [selection, code] of refused) {
    await t.throwsAsync(
      writePages(g, selection as never, out),
      { code },
      JSON.stringify(selection, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x)),
    )
  }
  t.is(out.readableLength, 0, 'nothing was written')
  for (const target of [undefined, {}, new Proxy(out, {}), bytesFrom([])]) {
    await t.throwsAsync(writePages(g, 'all', target as never), { code: 'ERR_INVALID_ARG_TYPE' })
  }
  for (const target of [-1, 1.5, 2 ** 31]) await t.throwsAsync(writePages(g, 'all', target), { code: 'ERR_OUT_OF_RANGE' })
  const ended = new PassThrough()
  ended.end()
  await t.throwsAsync(writePages(g, 'all', ended), { code: 'ERR_INVALID_ARG_VALUE' })
  await t.throwsAsync(writePages(g, 'all', new PassThrough({ objectMode: true })), { code: 'ERR_INVALID_ARG_VALUE' })
  const flowing = new PassThrough()
  flowing.on('data', () => {})
  await t.throwsAsync(readPages(g, flowing), { code: 'ERR_INVALID_ARG_VALUE', message: /flowing/ })
  const text = new PassThrough()
  text.setEncoding('utf8')
  await t.throwsAsync(readPages(g, text), { code: 'ERR_INVALID_ARG_VALUE' })
  const destroyed = new PassThrough()
  destroyed.destroy()
  await t.throwsAsync(readPages(g, destroyed), { code: 'ERR_INVALID_ARG_VALUE' })
  for (const source of [undefined, {}, new Writable()]) await t.throwsAsync(readPages(g, source as never), { code: 'ERR_INVALID_ARG_TYPE' })
  await t.throwsAsync(readPages(g, -1), { code: 'ERR_OUT_OF_RANGE' })
  await t.throwsAsync(readPages(g, Readable.from([Buffer.alloc(8)])), { code: 'ERR_INVALID_ARG_VALUE', message: /object-mode/ })
  // The caller's bitmap may change after the call: what was checked is what is written.
  const words = new BigUint64Array([1n])
  const pipe = new PassThrough()
  const written = writePages(g, [{ guestAddress: 0n, size: 32 * P, bitmap: words }], pipe)
  words[0] = 0xffff_ffffn
  t.deepEqual(await written, { runs: 1, bytes: P })
  pipe.resume()
  const closed = guestPair(t)
  closed.close()
  await t.throwsAsync(writePages(closed, 'all', out), { code: 'ERR_MMAP_CLOSED' })
  await t.throwsAsync(readPages(closed, bytesFrom([])), { code: 'ERR_MMAP_CLOSED' })
})

test('a target that fails mid-stream rejects with its error; a reader of what it got sees a truncated stream', async (t) => {
  const src = guestPair(t, 160)
  let seen = 0
  const got: Buffer[] = []
  const failing = new Writable({
    write(chunk: Buffer, _encoding, done) {
      got.push(Buffer.from(chunk))
      seen += chunk.length
      done(seen > 300_000 ? Object.assign(new Error('EPIPE: broken pipe, write'), { code: 'EPIPE', errno: -32, syscall: 'write' }) : null)
    },
  })
  failing.on('error', () => {})
  await t.throwsAsync(writePages(src, 'all', failing), { code: 'EPIPE' })
  const dst = guestPair(t, 160)
  await t.throwsAsync(readPages(dst, bytesFrom(got)), { code: 'ERR_INVALID_ARG_VALUE', message: /truncated/ })
})
