import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import test from 'ava'
import { ROOT, runChild, tempDir } from './helpers.js'

const CHECK = join(ROOT, 'scripts', 'prepublish-check.mjs')

interface Manifest {
  [field: string]: unknown
}

const FIELDS: Manifest = {
  description: 'd',
  license: 'MIT',
  repository: { type: 'git', url: 'git+https://example.invalid/mapped-region.git' },
  engines: { node: '>=20' },
  keywords: ['mmap'],
}

/** A package root with a main manifest and one npm/<platform> package, changed by `edit`. */
function fixture(edit: (main: Manifest, platform: Manifest) => void = () => {}, binary = true): { dir: string; done: () => void } {
  const t = tempDir()
  const main: Manifest = {
    name: 'mapped-region',
    version: '0.2.0',
    ...FIELDS,
    optionalDependencies: { 'mapped-region-linux-x64-gnu': '0.2.0' },
  }
  const platform: Manifest = {
    name: 'mapped-region-linux-x64-gnu',
    version: '0.2.0',
    ...FIELDS,
    main: 'mapped-region.linux-x64-gnu.node',
    files: ['mapped-region.linux-x64-gnu.node'],
  }
  edit(main, platform)
  const pdir = join(t.dir, 'npm', 'linux-x64-gnu')
  mkdirSync(pdir, { recursive: true })
  writeFileSync(join(t.dir, 'package.json'), JSON.stringify(main))
  writeFileSync(join(pdir, 'package.json'), JSON.stringify(platform))
  if (binary) writeFileSync(join(pdir, 'mapped-region.linux-x64-gnu.node'), 'ELF')
  return t
}

function run(...args: string[]): { status: number | null; problems: string[]; stdout: string } {
  const r = spawnSync(process.execPath, [CHECK, ...args], { encoding: 'utf8' })
  const problems = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('  - '))
    .map((l) => l.slice(4))
  return { status: r.status, problems, stdout: r.stdout }
}

test('prepublish check: a complete package is fit to publish', (t) => {
  const f = fixture()
  t.teardown(f.done)
  const r = run(f.dir)
  t.is(r.status, 0)
  t.is(r.stdout, 'fit to publish\n')
})

test('prepublish check: a missing or empty repository warns, in the main and the platform package, and does not block', (t) => {
  for (const value of [undefined, '', { type: 'git' }, { type: 'git', url: ' ' }]) {
    const f = fixture((main, platform) => {
      main.repository = value
      platform.repository = value
    })
    const r = spawnSync(process.execPath, [CHECK, f.dir], { encoding: 'utf8' })
    f.done()
    t.is(r.status, 0, r.stderr)
    t.is(r.stdout, 'fit to publish\n')
    t.deepEqual(r.stderr.trim().split('\n'), [
      'warning: package.json: "repository" is missing (published without a link to the source)',
      'warning: npm/linux-x64-gnu/package.json: "repository" is missing (published without a link to the source)',
    ])
  }
})

test('prepublish check: a platform package at another version or without its binary is refused', (t) => {
  const f = fixture((_, platform) => {
    platform.version = '0.1.9'
  }, false)
  t.teardown(f.done)
  const r = run(f.dir)
  t.is(r.status, 1)
  t.deepEqual(r.problems, [
    "npm/linux-x64-gnu/package.json: version 0.1.9 is not the main package's 0.2.0",
    'npm/linux-x64-gnu/package.json: "mapped-region.linux-x64-gnu.node" is not built (npx napi artifacts)',
  ])
})

test('prepublish check: the arm64 binary ships only if the suite ran on that very binary (scripts/arm64-test.sh)', (t) => {
  const f = fixture()
  t.teardown(f.done)
  const pdir = join(f.dir, 'npm', 'linux-arm64-gnu')
  mkdirSync(pdir, { recursive: true })
  const name = 'mapped-region.linux-arm64-gnu.node'
  writeFileSync(
    join(pdir, 'package.json'),
    JSON.stringify({ name: 'mapped-region-linux-arm64-gnu', version: '0.2.0', ...FIELDS, main: name, files: [name] }),
  )
  writeFileSync(join(pdir, name), 'ELF for arm64')
  const main = JSON.parse(readFileSync(join(f.dir, 'package.json'), 'utf8')) as Manifest
  main.optionalDependencies = { 'mapped-region-linux-x64-gnu': '0.2.0', 'mapped-region-linux-arm64-gnu': '0.2.0' }
  writeFileSync(join(f.dir, 'package.json'), JSON.stringify(main))
  const record = join(f.dir, 'mapped-region.linux-arm64-gnu.tested.json')
  t.deepEqual(run(f.dir).problems, [`npm/linux-arm64-gnu/${name}: no record that the suite ran on it (bash scripts/arm64-test.sh)`])
  writeFileSync(record, JSON.stringify({ sha256: createHash('sha256').update('another build').digest('hex') }))
  t.deepEqual(run(f.dir).problems, [
    `npm/linux-arm64-gnu/${name}: not the binary the suite ran on (bash scripts/arm64-test.sh tested sha256 ${createHash('sha256').update('another build').digest('hex')})`,
  ])
  writeFileSync(record, JSON.stringify({ sha256: createHash('sha256').update('ELF for arm64').digest('hex') }))
  const r = run(f.dir)
  t.is(r.status, 0)
  t.is(r.stdout, 'fit to publish\n')
})

test('prepublish check: optionalDependencies must name exactly the platform packages at the version', (t) => {
  const cases: [Record<string, string> | undefined, string[]][] = [
    [undefined, ['package.json: optionalDependencies lacks mapped-region-linux-x64-gnu (npx napi prepublish)']],
    [{ 'mapped-region-linux-x64-gnu': '0.1.0' }, ['package.json: optionalDependencies has mapped-region-linux-x64-gnu@0.1.0, not 0.2.0']],
    [
      { 'mapped-region-linux-x64-gnu': '0.2.0', 'mapped-region-darwin-arm64': '0.2.0' },
      ['package.json: optionalDependencies names mapped-region-darwin-arm64, which npm/ does not hold'],
    ],
  ]
  for (const [optional, expected] of cases) {
    const f = fixture((main) => {
      main.optionalDependencies = optional
    })
    const r = run(f.dir)
    t.is(r.status, 1)
    t.deepEqual(r.problems, expected)
    // Before `napi prepublish` writes them, optionalDependencies are not judged.
    t.is(run('--before-platforms', f.dir).status, 0)
    f.done()
  }
})

test('prepublish check: the real manifests lack nothing but what a release fills in', (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Manifest
  // The root is never published itself: the staged package is (scripts/stage-package.mjs).
  t.regex((pkg.scripts as Record<string, string>).prepublishOnly, /Publish the staged package/)
  const r = run('--before-platforms', ROOT)
  // The platform binary is a release artifact (npx napi artifacts); anything else is a defect.
  // (`repository` only warns: the public URL is not known yet.)
  for (const p of r.problems) t.regex(p, /is not built \(npx napi artifacts\)$/)
  t.is(r.status, r.problems.length === 0 ? 0 : 1)
})

test('the staged manifest is what a consumer needs: no scripts or dev config, the binary as an optional dependency', async (t) => {
  const { publishedManifest } = (await import(join(ROOT, 'scripts', 'stage-package.mjs'))) as {
    publishedManifest: () => Manifest
  }
  const m = publishedManifest()
  for (const key of ['scripts', 'ava', 'devDependencies', 'overrides', 'os', 'cpu', 'napi']) t.false(key in m, key)
  t.deepEqual(m.optionalDependencies, { 'mapped-region-linux-arm64-gnu': m.version, 'mapped-region-linux-x64-gnu': m.version })
  t.deepEqual(Object.keys(m.exports as object), ['.', './package.json'])
  t.is((m.exports as Record<string, Record<string, Record<string, string>>>)['.'].import.types, './dist/index.d.mts')
})

test("a platform without a binary gets an error naming the supported targets, not napi-rs's text (in a child)", (t) => {
  const r = runChild(`
    // Make the loader find nothing: hide the binary from require.
    const Module = require('node:module')
    const orig = Module._resolveFilename
    Module._resolveFilename = function (request, ...rest) {
      if (/mapped-region[.-]linux-[a-z0-9]+-gnu/.test(request)) throw Object.assign(new Error('not found: ' + request), { code: 'MODULE_NOT_FOUND' })
      return orig.call(this, request, ...rest)
    }
    for (const k of Object.keys(require.cache)) delete require.cache[k]
    try { require(ROOT + 'dist/index.js'); console.log('loaded') } catch (e) { console.log(e.code + ' ' + e.message) }
  `)
  t.is(r.status, 0, r.stderr)
  t.regex(r.stdout, /^ERR_MMAP_NO_BINARY mapped-region: no prebuilt binary loads on this platform/)
  t.regex(r.stdout, /linux-x64-gnu \(x86-64 Linux\) and linux-arm64-gnu \(64-bit Arm Linux\), both for glibc 2\.17 or newer/)
  t.notRegex(r.stdout, /npm has a bug|wasm/i)
})

test('the shipped binaries hold no code generator: entryTypings/entryCalls are built only by scripts/typings.mjs', (t) => {
  const binaries = readdirSync(ROOT).filter((f) => /^mapped-region\..*\.node$/.test(f))
  t.true(binaries.length > 0, 'a built binary')
  for (const file of binaries) {
    const bytes = readFileSync(join(ROOT, file))
    for (const text of ['entryTypings', 'entryCalls', 'Generated from crate/node/src/entries.rs']) {
      t.is(bytes.indexOf(text), -1, `${file} holds "${text}"`)
    }
  }
  // The generator's build does hold it (so the search above can find it where it is).
  const generator = join(ROOT, 'target', 'debug', 'libmapped_region_node.so')
  if (existsSync(generator)) t.not(readFileSync(generator).indexOf('entryTypings'), -1)
})
