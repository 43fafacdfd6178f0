// `npm run docs`: typedoc, without ANSI colour codes where CI is set (typedoc colours its log
// even when it is not a terminal; CI logs should stay plain text).
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'

const require = createRequire(import.meta.url)
const bin = join(dirname(require.resolve('typedoc/package.json')), 'bin', 'typedoc')
const env = { ...process.env }
if (env.CI) env.NO_COLOR = '1'
const r = spawnSync(process.execPath, [bin, ...process.argv.slice(2)], { stdio: 'inherit', env })
process.exit(r.status ?? 1)
