// conformance.cjs's worker: attaches the arena it is handed, reports, makes a change, closes.
const { parentPort, workerData } = require('node:worker_threads')
const mr = require(workerData.entry)
const P = mr.PAGE_SIZE
const a = mr.MemoryMappingArena.attach(workerData.handle)
parentPort.postMessage({ address: a.address, value: a.readU32(P + 8) })
parentPort.once('message', () => {
  let hole
  try {
    a.read(0, 1)
  } catch (e) {
    hole = e.code
  }
  a.addAnonymous(12 * P, P, mr.Protection.READ_WRITE)
  a.writeU32(12 * P, 77)
  a.close()
  parentPort.postMessage({ hole })
})
