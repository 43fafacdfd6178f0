// The bench's harness: clocks, paired interleaved comparisons with an A/A
// control, and the builds it needs (the in-process floor addon, the
// separate-process C baseline, the npm peer). No measure is defined here.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const HERE = dirname(fileURLToPath(import.meta.url))
export const BUILD = join(HERE, '.build')
export const QUICK = process.argv.includes('--quick')
mkdirSync(BUILD, { recursive: true })

export const now = () => Number(process.hrtime.bigint())

export function median(v) {
  const s = [...v].sort((a, b) => a - b)
  const n = s.length
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
}

/** The `q` quantile (0..1) by linear interpolation. */
export function quantile(v, q) {
  const s = [...v].sort((a, b) => a - b)
  const i = (s.length - 1) * q
  const lo = Math.floor(i)
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (i - lo)
}

/** Mean ns per call over one batch of `n` calls. */
function batchTime(f, n) {
  const s = now()
  for (let i = 0; i < n; i++) f()
  return (now() - s) / n
}

/**
 * A paired, interleaved comparison of `ours` against `floor`: `rounds` rounds, each timing
 * one batch of `batch` calls of `ours`, one of `floor` and one of `floor` again (the A/A
 * control), in an order that rotates from round to round, so drift and position fall on all
 * three alike. The ratio of a round is ours / floor; the control's, floor again / floor.
 * Returns the medians of the per-call times and of the per-round ratios, with the spread of
 * the ratios (25th–75th percentile).
 */
export function paired(ours, floor, { batch, rounds }) {
  const fns = [ours, floor, floor]
  for (let i = 0; i < batch * 5; i++) for (const f of fns) f()
  const rows = []
  for (let r = 0; r < rounds; r++) {
    const x = [0, 0, 0]
    for (let k = 0; k < 3; k++) {
      const i = (r + k) % 3
      x[i] = batchTime(fns[i], batch)
    }
    rows.push(x)
  }
  return summary(rows, batch)
}

/**
 * {@link paired} for asynchronous operations that take milliseconds (a snapshot's dump): each
 * round awaits one call of `ours`, one of `floor` and one of `floor` again (the A/A control), in
 * a rotating order; the ratio of a round is ours / floor.
 */
export async function pairedAsync(ours, floor, { rounds }) {
  const fns = [ours, floor, floor]
  for (const f of fns) await f()
  const rows = []
  for (let r = 0; r < rounds; r++) {
    const x = [0, 0, 0]
    for (let k = 0; k < 3; k++) {
      const i = (r + k) % 3
      const s = now()
      await fns[i]()
      x[i] = now() - s
    }
    rows.push(x)
  }
  return summary(rows, 1)
}

/** The result of a paired run from its rounds' `[ours, floor, floor again]` times. */
function summary(rows, batch) {
  const ratio = rows.map((x) => x[0] / x[1])
  const control = rows.map((x) => x[2] / x[1])
  return {
    ours: median(rows.map((x) => x[0])),
    floor: median(rows.map((x) => x[1])),
    ratio: median(ratio),
    lo: quantile(ratio, 0.25),
    hi: quantile(ratio, 0.75),
    control: { ratio: median(control), lo: quantile(control, 0.25), hi: quantile(control, 0.75) },
    rounds: rows.length,
    batch,
  }
}

/**
 * A paired comparison of two functions with a one-sided exact sign test of "A is faster"
 * over the pairs (for the npm peer): `rounds` pairs of batches, A then B or B then A by turns.
 * A batch's figure is its mean per call, or with `perCall` the median of per-call times
 * (slow, heavy-tailed syscalls). Returns the medians, the median paired difference (B − A,
 * > 0 when A is faster) and the test.
 */
export function comparePaired(fa, fb, { batch, rounds, perCall }) {
  const time = (f) => {
    if (!perCall) return batchTime(f, batch)
    const t = new Float64Array(batch)
    for (let i = 0; i < batch; i++) {
      const s = now()
      f()
      t[i] = now() - s
    }
    return median(t)
  }
  for (let i = 0; i < batch * 20; i++) {
    fa()
    fb()
  }
  const a = []
  const b = []
  const diff = []
  for (let r = 0; r < rounds; r++) {
    let x
    let y
    if (r % 2) {
      x = time(fa)
      y = time(fb)
    } else {
      y = time(fb)
      x = time(fa)
    }
    a.push(x)
    b.push(y)
    diff.push(y - x)
  }
  const wins = diff.filter((d) => d > 0).length
  const losses = diff.filter((d) => d < 0).length
  return { a: median(a), b: median(b), diff: median(diff), wins, losses, rounds, p: signTail(wins, wins + losses) }
}

/** P(X >= k) for X ~ Binomial(n, 1/2), exactly (summed in log space). */
export function signTail(k, n) {
  let logC = 0 // log C(n, 0)
  let tail = 0
  for (let i = 0; i <= n; i++) {
    if (i >= k) tail += Math.exp(logC - n * Math.LN2)
    logC += Math.log(n - i) - Math.log(i + 1)
  }
  return Math.min(1, tail)
}

/** Median over `rounds` batches of the mean ns per call (an information figure, no floor). */
export function measure(f, { batch = 200, rounds = QUICK ? 11 : 31 } = {}) {
  for (let i = 0; i < batch * 3; i++) f()
  const t = []
  for (let r = 0; r < rounds; r++) t.push(batchTime(f, batch))
  return median(t)
}

/** Median ns of one call of `f`, timed `n` times (for slow operations). */
export function timeEach(f, n) {
  const t = []
  for (let i = 0; i < n; i++) {
    const s = now()
    f()
    t.push(now() - s)
  }
  return median(t)
}

/**
 * The in-process floor: bench/floor.c, a raw N-API addon making the bare syscalls, built
 * here with the system cc against Node's headers and loaded into this process.
 */
export function loadFloor() {
  const out = join(BUILD, 'floor.node')
  const include = [join(dirname(dirname(process.execPath)), 'include', 'node'), '/usr/include/node'].find((d) =>
    existsSync(join(d, 'node_api.h')),
  )
  if (include === undefined) throw new Error('node_api.h not found: install Node with its headers')
  execFileSync('cc', ['-O2', '-Wall', '-shared', '-fPIC', `-I${include}`, '-o', out, join(HERE, 'floor.c')], { stdio: 'inherit' })
  return createRequire(import.meta.url)(out)
}

/** The separate-process C baseline (bench/baseline.c), for information. */
export function buildBaseline(dataFile) {
  const bin = join(BUILD, 'baseline')
  execFileSync('cc', ['-O2', '-Wall', '-o', bin, join(HERE, 'baseline.c')], { stdio: 'inherit' })
  return (mode) => JSON.parse(execFileSync(bin, [dataFile, mode], { encoding: 'utf8' }))
}

/** mmap-io, pinned in bench/peer (its own lockfile), built on first use. */
export function loadPeer() {
  const dir = join(HERE, 'peer')
  const entry = join(dir, 'node_modules', 'mmap-io')
  if (!existsSync(join(entry, 'build', 'Release', 'mmap-io.node'))) {
    const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], {
      cwd: dir,
      encoding: 'utf8',
      // mmap-io's binding.gyp pins an old C++ standard that Node 20's headers reject;
      // headers come from this Node's own install (nothing is downloaded but the packages).
      env: { ...process.env, CXXFLAGS: '-std=gnu++17', npm_config_nodedir: dirname(dirname(process.execPath)) },
    })
    if (r.status !== 0) return { skipped: `mmap-io did not build: ${(r.stderr || '').trim().split('\n').slice(-3).join(' ')}` }
  }
  try {
    const req = createRequire(join(dir, 'package.json'))
    return { mmap: req('mmap-io'), version: req('mmap-io/package.json').version }
  } catch (e) {
    return { skipped: `mmap-io did not load: ${e.message}` }
  }
}
