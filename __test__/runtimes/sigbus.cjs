// The SIGBUS guard: a file truncated under a mapping makes the fault-safe copies throw EFAULT,
// never kill the process — on the main thread, in a worker, and with a SIGBUS listener
// installed (which replaces the guard's handler: copies must notice and take the syscall path).
// Its own process (scripts/runtimes.sh runs each script apart): a failure here may be a crash.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Worker } = require('node:worker_threads')
const h = require('./harness.cjs')
const { assert, mr, test } = h
const P = mr.PAGE_SIZE

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mr-rt-sigbus-'))
const code = (f) => {
  try {
    f()
    return 'no error'
  } catch (e) {
    return `${e.code} ${e.errno}`
  }
}

test('a truncated file: read, write and readInto throw EFAULT', () => {
  const file = path.join(dir, 'a')
  fs.writeFileSync(file, Buffer.alloc(2 * P, 1))
  const fd = fs.openSync(file, 'r+')
  const m = mr.MemoryMapping.fromFd(fd, 2 * P)
  assert.equal(m.read(0, 1)[0], 1)
  fs.ftruncateSync(fd, 0)
  assert.equal(
    code(() => m.read(0, 8)),
    'EFAULT -14',
  )
  assert.equal(
    code(() => m.write(P, Buffer.from('x'))),
    'EFAULT -14',
  )
  assert.equal(
    code(() => m.readInto(4, Buffer.alloc(8))),
    'EFAULT -14',
  )
  m.close()
  fs.closeSync(fd)
})

test('in a worker thread too', async () => {
  const file = path.join(dir, 'b')
  fs.writeFileSync(file, Buffer.alloc(P, 1))
  const fd = fs.openSync(file, 'r+')
  fs.ftruncateSync(fd, 0)
  const w = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads')
     const mr = require(workerData.entry)
     const m = mr.MemoryMapping.fromFd(workerData.fd, mr.PAGE_SIZE, { checkEof: false })
     try { m.write(0, Buffer.from('x')); parentPort.postMessage('no error') } catch (e) { parentPort.postMessage(e.code) }`,
    { eval: true, workerData: { fd, entry: require.resolve(path.join(__dirname, '..', '..')) } },
  )
  const answer = await new Promise((resolve, reject) => {
    w.once('message', resolve)
    w.once('error', reject)
  })
  await w.terminate()
  assert.equal(answer, 'EFAULT')
  fs.closeSync(fd)
})

let listener
try {
  process.on('SIGBUS', () => {})
  listener = undefined
} catch (e) {
  listener = `this runtime refuses a SIGBUS listener (${e.message})`
}
test(
  'with a SIGBUS listener installed',
  () => {
    const file = path.join(dir, 'c')
    fs.writeFileSync(file, Buffer.alloc(P, 1))
    const fd = fs.openSync(file, 'r+')
    const m = mr.MemoryMapping.fromFd(fd, P)
    fs.ftruncateSync(fd, 0)
    assert.equal(
      code(() => m.readInto(0, Buffer.alloc(8))),
      'EFAULT -14',
    )
    m.close()
    fs.closeSync(fd)
    process.removeAllListeners('SIGBUS')
  },
  listener,
)

h.run(__filename).then(() => fs.rmSync(dir, { recursive: true }))
