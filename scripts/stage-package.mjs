// Stages the main package as it is published: `node scripts/stage-package.mjs <dir>` copies
// what `files` lists (the built facade, the napi loader and typings) with README, LICENSE and
// CHANGELOG into <dir>, next to a package.json cut down to what a consumer's npm reads:
// no scripts (`prepare` would try to build from sources that are not there), no ava config,
// no devDependencies or overrides, no `os`/`cpu` (the main package is JavaScript; the loader
// says which platforms have a binary), and `optionalDependencies` on the per-platform
// packages under npm/ at this version. `npm pack`/`npm publish` then run in <dir>.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(fileURLToPath(new URL('..', import.meta.url)))
const dest = resolve(process.argv[2] ?? join(root, 'staging'))
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))

/** The fields a published manifest keeps, in this order. */
const KEEP = [
  'name',
  'version',
  'description',
  'license',
  'keywords',
  'type',
  'repository',
  'homepage',
  'bugs',
  'author',
  'main',
  'types',
  'exports',
  'files',
  'sideEffects',
  'engines',
  'peerDependencies',
  'peerDependenciesMeta',
]

/** The per-platform packages (npm/<platform>/package.json), by name, at this version. */
export function platformPackages() {
  const out = {}
  const dir = join(root, 'npm')
  for (const d of readdirSync(dir)) {
    const file = join(dir, d, 'package.json')
    if (existsSync(file)) out[JSON.parse(readFileSync(file, 'utf8')).name] = pkg.version
  }
  return out
}

/** The manifest as published. */
export function publishedManifest() {
  const out = {}
  for (const key of KEEP) if (pkg[key] !== undefined) out[key] = pkg[key]
  out.optionalDependencies = platformPackages()
  return out
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  mkdirSync(dest, { recursive: true })
  for (const entry of [...pkg.files, 'README.md', 'LICENSE', 'CHANGELOG.md']) {
    cpSync(join(root, entry), join(dest, entry), { recursive: true })
  }
  writeFileSync(join(dest, 'package.json'), `${JSON.stringify(publishedManifest(), null, 2)}\n`)
  console.log(`staged ${pkg.name}@${pkg.version} in ${dest}`)
}
