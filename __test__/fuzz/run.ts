/**
 * Runs the hostile-argument fuzzer (`child.cjs`) in child processes, two at a time:
 * one seed per child, so that a crash or a hang is a result that names its seed.
 * Replay a failure with `MR_FUZZ_SEED=<seed> npx ava __test__/fuzz.spec.ts`, or
 * directly: `MR_FUZZ_TRACE=1 node --expose-gc __test__/fuzz/child.cjs dist/index.js <seed> <ops>`.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { ENTRY } from '../helpers.js'

const CHILD = fileURLToPath(new URL('./child.cjs', import.meta.url))

export interface FuzzResult {
  seed: number
  ok: boolean
  /** What went wrong: the exit status or signal and the child's output. */
  detail: string
}

function runSeed(seed: number, ops: number, timeoutMs: number): Promise<FuzzResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--expose-gc', CHILD, ENTRY, String(seed), String(ops)], { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      const ok = code === 0 && signal === null && out.includes(`fuzz ok ${seed} `)
      const how = signal === 'SIGKILL' && !ok ? `hung or killed (timeout ${timeoutMs} ms)` : `exit ${code}, signal ${signal}`
      resolve({ seed, ok, detail: `seed ${seed}: ${how}\n${out.slice(-4000)}` })
    })
  })
}

/** Runs `seeds` with `ops` operations each, `parallel` children at a time. */
export async function fuzz(seeds: number[], ops: number, { parallel = 2, timeoutMs = 120_000 } = {}): Promise<FuzzResult[]> {
  const results: FuzzResult[] = []
  let next = 0
  async function worker(): Promise<void> {
    while (next < seeds.length) {
      const seed = seeds[next++]
      results.push(await runSeed(seed, ops, timeoutMs))
    }
  }
  await Promise.all(Array.from({ length: parallel }, worker))
  return results.sort((a, b) => a.seed - b.seed)
}
