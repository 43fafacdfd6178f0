// `npm publish` runs this first (prepublishOnly): it refuses a release whose
// manifests are not fit for the registry. Checks the main package.json and each
// per-platform package under npm/:
//   - the registry fields are present. `repository` only warns: the public URL is not
//     known while this is written, and publishing must not wait for it; the field stays
//     absent (never guessed) until someone who knows it fills it in;
//   - every npm/<platform> package has the main package's version and its binary;
//   - `optionalDependencies` name exactly the per-platform packages, at that version
//     (`napi prepublish` writes them; a stale one would install the wrong binary);
//   - a binary this machine cannot run (linux-arm64-gnu) ships only if the suite ran on it:
//     scripts/arm64-test.sh writes <binary>.tested.json at the package root, with the sha256
//     of the binary it tested; the platform package's binary must be that one.
//
// With --before-platforms (release step before `napi prepublish`, so that nothing is
// published when the main package would be refused) the optionalDependencies check is
// skipped: they are written by that step.
//
//   node scripts/prepublish-check.mjs [--before-platforms] [package-root]
//   exit 0: fit (warnings on stderr, `warning: …`); 1: the problems, one a line
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

const REQUIRED = ['name', 'version', 'description', 'license', 'engines', 'keywords']

/** The platforms whose binary is tested in an emulated machine, by the script that does it. */
const EMULATED = { 'linux-arm64-gnu': 'bash scripts/arm64-test.sh' }

/** Why the binary `file` of platform `dir` may not ship untested, or null. */
function untested(root, dir, file) {
  const script = EMULATED[dir]
  if (script === undefined) return null
  const recordFile = join(root, file.replace(/\.node$/, '.tested.json'))
  const where = `npm/${dir}/${file}`
  if (!existsSync(recordFile)) return `${where}: no record that the suite ran on it (${script})`
  const record = JSON.parse(readFileSync(recordFile, 'utf8'))
  const sha = createHash('sha256')
    .update(readFileSync(join(root, 'npm', dir, file)))
    .digest('hex')
  return record.sha256 === sha ? null : `${where}: not the binary the suite ran on (${script} tested sha256 ${record.sha256})`
}

/** A repository field npm accepts: a non-empty string or an object with a non-empty url. */
function hasRepository(pkg) {
  const r = pkg.repository
  if (typeof r === 'string') return r.trim() !== ''
  return r !== null && typeof r === 'object' && typeof r.url === 'string' && r.url.trim() !== ''
}

/** What is missing but does not block publishing: a `repository` field, per manifest. */
export function warnings(root) {
  const read = (file) => JSON.parse(readFileSync(join(root, file), 'utf8'))
  const npmDir = join(root, 'npm')
  const files = ['package.json']
  if (existsSync(npmDir)) {
    for (const d of readdirSync(npmDir)) if (existsSync(join(npmDir, d, 'package.json'))) files.push(`npm/${d}/package.json`)
  }
  return files.filter((f) => !hasRepository(read(f))).map((f) => `${f}: "repository" is missing (published without a link to the source)`)
}

/**
 * The problems of the package at `root`, as sentences; empty when it is fit to publish.
 * `optional: false` skips the optionalDependencies check (before `napi prepublish`).
 */
export function check(root, { optional: checkOptional = true } = {}) {
  const problems = []
  const read = (file) => JSON.parse(readFileSync(file, 'utf8'))
  const main = read(join(root, 'package.json'))
  const fields = (pkg, where) => {
    for (const f of REQUIRED) {
      if (pkg[f] === undefined || pkg[f] === '') problems.push(`${where}: "${f}" is missing`)
    }
  }
  fields(main, 'package.json')

  const npmDir = join(root, 'npm')
  const platforms = existsSync(npmDir) ? readdirSync(npmDir).filter((d) => existsSync(join(npmDir, d, 'package.json'))) : []
  if (platforms.length === 0) problems.push('npm/: no per-platform package')
  const names = []
  for (const dir of platforms) {
    const where = `npm/${dir}/package.json`
    const pkg = read(join(npmDir, dir, 'package.json'))
    fields(pkg, where)
    names.push(pkg.name)
    if (pkg.version !== main.version) problems.push(`${where}: version ${pkg.version} is not the main package's ${main.version}`)
    for (const file of pkg.files ?? [pkg.main]) {
      if (!file || !existsSync(join(npmDir, dir, file))) problems.push(`${where}: "${file}" is not built (npx napi artifacts)`)
      else {
        const why = untested(root, dir, file)
        if (why !== null) problems.push(why)
      }
    }
  }

  if (!checkOptional) return problems
  const optional = main.optionalDependencies ?? {}
  for (const name of names) {
    if (optional[name] === undefined) problems.push(`package.json: optionalDependencies lacks ${name} (npx napi prepublish)`)
    else if (optional[name] !== main.version)
      problems.push(`package.json: optionalDependencies has ${name}@${optional[name]}, not ${main.version}`)
  }
  for (const name of Object.keys(optional)) {
    if (!names.includes(name)) problems.push(`package.json: optionalDependencies names ${name}, which npm/ does not hold`)
  }
  return problems
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const args = process.argv.slice(2)
  const before = args.includes('--before-platforms')
  const root = args.find((a) => !a.startsWith('--')) ?? '.'
  const problems = check(resolve(root), { optional: !before })
  for (const w of warnings(resolve(root))) process.stderr.write(`warning: ${w}\n`)
  if (problems.length > 0) {
    process.stderr.write(`not fit to publish:\n${problems.map((p) => `  - ${p}`).join('\n')}\n`)
    process.exit(1)
  }
  process.stdout.write('fit to publish\n')
}
