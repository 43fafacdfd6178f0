// `npm run lint` runs this: it fails on Rust code that makes a reference out of a raw
// pointer. Guest memory and JavaScript buffers (which may be views of it) can change
// under any reference at any time, so they travel as the core's `MemSlice`/`MemSliceMut`
// (crate/core/src/slice.rs) and are touched only by raw copies; a reference made from a
// raw pointer is how one would slip back in. Looked for, in every .rs file of the core
// and the binding (crate/, tests included; the KVM examples are not the package's):
//   - `from_raw_parts` / `from_raw_parts_mut` (a slice over a pointer),
//   - `&*p` / `&mut *p` (a reference through a dereferenced pointer),
//   - `::from_ptr(` (an atomic or a `CStr` over a pointer).
// A line may carry one only with a `raw-ref:` comment on it or on the line above, saying
// why that reference is sound (memory Rust owns, an interior-mutable atomic word, …).
//
//   node scripts/check-raw-refs.mjs [root]
//   exit 0: none; 1: each one found, `file:line: text`
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'

const PATTERNS = [/\bfrom_raw_parts(_mut)?\b/, /&\s*(mut\s+)?\*\s*[A-Za-z_(]/, /::from_ptr\s*\(/]
const ALLOW = /\/\/.*\braw-ref:/

/** Every .rs file below `dir`, skipping build output and dependencies. */
function* rustFiles(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'target' || entry.name === 'node_modules' || entry.name.startsWith('.')) continue
    const path = join(dir, entry.name)
    if (entry.isDirectory()) yield* rustFiles(path)
    else if (entry.name.endsWith('.rs')) yield path
  }
}

/** The line without its `//` comment (a comment may name a pattern freely). */
function code(line) {
  const at = line.indexOf('//')
  return at < 0 ? line : line.slice(0, at)
}

const root = resolve(process.argv[2] ?? '.')
const found = []
for (const file of rustFiles(join(root, 'crate'))) {
  const lines = readFileSync(file, 'utf8').split('\n')
  lines.forEach((line, i) => {
    if (!PATTERNS.some((p) => p.test(code(line)))) return
    if (ALLOW.test(line) || (i > 0 && ALLOW.test(lines[i - 1]))) return
    found.push(`${relative(root, file)}:${i + 1}: ${line.trim()}`)
  })
}
if (found.length > 0) {
  console.error('A reference made from a raw pointer (guest memory and JS buffers travel as MemSlice/MemSliceMut;')
  console.error('see CONTRIBUTING, "Memory that may change"). Use the slice types, or justify it with a `raw-ref:` comment:')
  for (const f of found) console.error(`  ${f}`)
  process.exit(1)
}
