// Issue 32's crash: 200 MemoryMappings, each with one view, dropped together and collected.
// Under Deno 2.9.6 this killed the process in about one run of ten (V8's
// `Check failed: node->IsInUse()`, or SIGSEGV) before views.rs stopped deleting weak
// references from inside a buffer's finalizer. Run on its own, e.g.
//   deno run -A --v8-flags=--expose-gc __test__/runtimes/gc-views.cjs
const path = require('node:path')
const { MemoryMapping, PAGE_SIZE } = require(path.join(__dirname, '..', '..'))

function gc() {
  if (typeof globalThis.Bun !== 'undefined') globalThis.Bun.gc(true)
  else globalThis.gc()
}
const tick = () => new Promise((resolve) => setTimeout(resolve, 0))

async function main() {
  const rounds = Number(process.env.MR_ROUNDS ?? 3)
  for (let round = 0; round < rounds; round++) {
    ;(() => {
      for (let i = 0; i < 200; i++) {
        const m = MemoryMapping.anonymous(PAGE_SIZE)
        const v = m.view(0, 64)
        v[0] = i
      }
    })()
    for (let i = 0; i < 4; i++) {
      gc()
      await tick()
    }
  }
  console.log('gc-views ok')
}
main()
