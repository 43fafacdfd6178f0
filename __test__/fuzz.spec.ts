/**
 * The hostile-argument fuzzer with a fixed budget: every public method driven with
 * generated values (see fuzz/child.cjs), in child processes. Fails on a crash, a
 * hang, an error without a documented code, or a write that does not read back.
 * Fixed seeds, so a failure replays; `MR_FUZZ_SEED=<n>` runs just that seed,
 * `MR_FUZZ_SEEDS`/`MR_FUZZ_OPS` change the budget. `npm run soak` runs a longer one.
 */
import test from 'ava'
import { fuzz } from './fuzz/run.js'

const OPS = Number(process.env.MR_FUZZ_OPS ?? 4000)
const COUNT = Number(process.env.MR_FUZZ_SEEDS ?? 8)
const BASE = 20261201

test(`hostile-argument fuzzer: ${process.env.MR_FUZZ_SEED ?? `${COUNT} seeds from ${BASE}`}, ${OPS} operations each, no crash, hang, missing code or wrong byte`, async (t) => {
  t.timeout(10 * 60_000)
  const seeds =
    process.env.MR_FUZZ_SEED !== undefined ? [Number(process.env.MR_FUZZ_SEED)] : Array.from({ length: COUNT }, (_, i) => BASE + i)
  const results = await fuzz(seeds, OPS)
  for (const r of results) t.true(r.ok, r.detail)
  t.is(results.length, seeds.length)
})
