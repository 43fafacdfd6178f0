// Appends the typings of the raw N-API entry points (declared once in
// crate/node/src/entries.rs) to the index.d.ts napi-rs generated, and writes
// ts/calls.ts, the facade's functions that call them (storing their number
// arguments in the scratch slots). Run by `npm run build:native`; both results
// are generated, never edited by hand.
//
// The generator is not part of the shipped addon: it is compiled only with the
// binding's `codegen` feature, into a build of its own (cargo's debug profile,
// target/debug), which this script builds and loads.
import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const root = new URL('..', import.meta.url)
const path = new URL('../index.d.ts', import.meta.url)
const MARK = '\n/* Raw N-API entry points: generated from crate/node/src/entries.rs by scripts/typings.mjs. */\n'

execFileSync('cargo', ['build', '--quiet', '-p', 'mapped-region-node', '--features', 'codegen'], {
  cwd: root,
  stdio: 'inherit',
})
const built = new URL('../target/debug/libmapped_region_node.so', import.meta.url)
const dir = mkdtempSync(join(tmpdir(), 'mr-codegen-'))
const generator = { exports: {} }
try {
  const addon = join(dir, 'codegen.node')
  copyFileSync(built, addon)
  process.dlopen(generator, addon)
} finally {
  rmSync(dir, { recursive: true, force: true })
}
const generated = readFileSync(path, 'utf8')
const base = generated.includes(MARK) ? generated.slice(0, generated.indexOf(MARK)) : generated.trimEnd()
writeFileSync(path, `${base.trimEnd()}\n${MARK}${generator.exports.entryTypings()}`)
writeFileSync(new URL('../ts/calls.ts', import.meta.url), generator.exports.entryCalls())
