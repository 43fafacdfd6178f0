// A tiny runtime-neutral test harness for Node, Bun and Deno (`deno run -A`): serial tests,
// plain asserts, one line per test and a closing `N passed, N failed, N skipped`; exit code 1 on
// any failure. ava does not run on Bun or Deno; these scripts do (scripts/runtimes.sh).
const assert = require('node:assert/strict')
const path = require('node:path')

const runtime = globalThis.Deno ? 'deno' : globalThis.Bun ? 'bun' : 'node'
const version = globalThis.Deno ? globalThis.Deno.version.deno : globalThis.Bun ? globalThis.Bun.version : process.versions.node
const mr = require(path.join(__dirname, '..', '..'))

/** Forces a full collection (Deno and Node need --expose-gc, Bun has Bun.gc). */
function gc() {
  if (globalThis.Bun) globalThis.Bun.gc(true)
  else if (typeof globalThis.gc === 'function') globalThis.gc()
  else throw new Error('no gc(): run with --expose-gc (deno: --v8-flags=--expose-gc)')
}
const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms))

/** Collects garbage and turns the event loop until `done()` holds (at most ~2 s). */
async function collectUntil(done) {
  for (let i = 0; i < 200; i++) {
    gc()
    await tick(i < 20 ? 0 : 10)
    if (done()) return true
  }
  return false
}

/** `fn` throws an Error with this `code` (and `message` matching, if given). */
function throwsCode(fn, code, message) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof Error, `an Error, got ${e}`)
    assert.equal(e.code, code, `code ${e.code}: ${e.message}`)
    if (message) assert.match(e.message, message)
    return true
  })
}

async function rejectsCode(promise, code) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof Error)
    assert.equal(e.code, code, `code ${e.code}: ${e.message}`)
    return true
  })
}

const tests = []
/** Registers a test; `skip` (a reason) skips it on this runtime. */
function test(name, fn, skip) {
  tests.push({ name, fn, skip })
}

async function run(file) {
  let passed = 0
  let failed = 0
  let skipped = 0
  console.log(`# ${path.basename(file)} on ${runtime} ${version}`)
  for (const t of tests) {
    if (t.skip) {
      skipped++
      console.log(`skip ${t.name} — ${t.skip}`)
      continue
    }
    try {
      await t.fn()
      passed++
      console.log(`ok ${t.name}`)
    } catch (e) {
      failed++
      console.log(
        `not ok ${t.name}\n  ${String(e?.stack ?? e)
          .split('\n')
          .join('\n  ')}`,
      )
    }
  }
  console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`)
  process.exitCode = failed > 0 ? 1 : 0
}

/** Whether this process's address space has a mapping starting at `address` (a bigint). */
function mappedAt(address) {
  const hex = address.toString(16)
  return require('node:fs')
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .some((line) => line.startsWith(`${hex}-`))
}

module.exports = { assert, collectUntil, gc, mappedAt, mr, rejectsCode, run, runtime, test, throwsCode, tick, version }
