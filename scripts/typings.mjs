// Appends the typings of the raw N-API entry points (declared once in
// crate/node/src/entries.rs, read from the freshly built addon) to the
// index.d.ts napi-rs generated, and writes ts/calls.ts, the facade's
// functions that call them (storing their number arguments in the scratch
// slots). Run by `npm run build:native`; both results are generated, never
// edited by hand.
import { readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const path = new URL('../index.d.ts', import.meta.url)
const MARK = '\n/* Raw N-API entry points: generated from crate/node/src/entries.rs by scripts/typings.mjs. */\n'

const binding = require('../index.js')
const generated = readFileSync(path, 'utf8')
const base = generated.includes(MARK) ? generated.slice(0, generated.indexOf(MARK)) : generated.trimEnd()
writeFileSync(path, `${base.trimEnd()}\n${MARK}${binding.entryTypings()}`)
writeFileSync(new URL('../ts/calls.ts', import.meta.url), binding.entryCalls())
