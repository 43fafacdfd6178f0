// deno run -A --v8-flags=--expose-gc repro.cjs   |   node --expose-gc repro.cjs   |   bun repro.cjs
const addon = require('./repro.node')
const gc = globalThis.Bun ? () => globalThis.Bun.gc(true) : globalThis.gc
const tick = () => new Promise((resolve) => setTimeout(resolve, 0))

async function main() {
  // 1. Detach: Node and Bun run the finalizer later, when the buffer is collected.
  const ab = addon.make()
  addon.detach(ab)
  console.log(`finalizers run by napi_detach_arraybuffer itself: ${addon.stats()[0]}`)
  // 2. Collection: 1000 buffers dropped and collected.
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 200; i++) new Uint8Array(addon.make())[0] = i
    for (let i = 0; i < 4; i++) {
      gc()
      await tick()
    }
  }
  const [finalized, offThread] = addon.stats()
  console.log(`finalized ${finalized}, of which off the JS thread ${offThread}`)
}
main()
