import { spawnSync } from 'node:child_process'
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** Absolute path of the built CommonJS entry, for child processes. */
export const ENTRY = fileURLToPath(new URL('../dist/index.js', import.meta.url))

/** The package root. */
export const ROOT = fileURLToPath(new URL('..', import.meta.url))

/**
 * How much slower than this machine the tests run: 1 here; the emulated arm64 guest
 * (scripts/arm64-test.sh) sets MR_TEST_SLOWDOWN. Scales the time limits of child processes,
 * which are there to end a hung child, not to judge speed (nothing is timed in the tests).
 */
export const SLOWDOWN = Math.max(1, Number(process.env.MR_TEST_SLOWDOWN) || 1)

export interface ChildResult {
  status: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/**
 * Runs `body` (CommonJS, with `mr` bound to the package, `ROOT` to its folder and `gc` exposed) in a
 * fresh Node process, so that a crash is a result to assert on, not a dead runner.
 */
export function runChild(body: string, timeoutMs = 60_000, options: { maxFds?: number; nodeFlags?: string[] } = {}): ChildResult {
  const dir = mkdtempSync(join(tmpdir(), 'mr-child-'))
  const file = join(dir, 'child.cjs')
  writeFileSync(file, `'use strict'\nconst ROOT = ${JSON.stringify(ROOT)}\nconst mr = require(${JSON.stringify(ENTRY)})\n${body}\n`)
  try {
    // With maxFds, the child runs under `ulimit -n` (Node cannot lower its own limit).
    const flags = ['--expose-gc', ...(options.nodeFlags ?? [])]
    const [cmd, args] =
      options.maxFds === undefined
        ? [process.execPath, [...flags, file]]
        : ['/bin/sh', ['-c', `ulimit -n ${options.maxFds} && exec "$0" "$@"`, process.execPath, ...flags, file]]
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs * SLOWDOWN })
    return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** A temporary directory removed by the returned function. */
export function tempDir(): { dir: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'mr-test-'))
  return { dir, done: () => rmSync(dir, { recursive: true, force: true }) }
}

/** The `/proc/self/maps` lines whose range overlaps `[start, start + size)`. */
export function mapsOverlapping(start: bigint, size: number): string[] {
  const end = start + BigInt(size)
  return readFileSync('/proc/self/maps', 'utf8')
    .trimEnd()
    .split('\n')
    .filter((line) => {
      const [range] = line.split(' ')
      const [a, b] = range.split('-').map((h) => BigInt(`0x${h}`))
      return a < end && b > start
    })
}

import type { ExecutionContext } from 'ava'
import { constants as osConstants } from 'node:os'

/**
 * Asserts that `fn` throws a failed-syscall error in Node's shape: an `Error`
 * with `code` (errno name), `errno` (negative) and `syscall`.
 */
export function throwsErrno(t: ExecutionContext, fn: () => unknown, code: string, syscall?: string): NodeJS.ErrnoException | undefined {
  const err = t.throws(fn, { code, instanceOf: Error }) as NodeJS.ErrnoException | undefined
  if (err === undefined) return undefined
  const expected = (osConstants.errno as Record<string, number>)[code]
  t.is(err.errno, -expected, `errno of ${code}`)
  if (syscall !== undefined) t.is(err.syscall, syscall)
  else t.is(typeof err.syscall, 'string')
  t.true(err.message.startsWith(`${code}: `), err.message)
  return err
}

/**
 * A temporary file holding `content`, opened with `flags`; the fd is closed and
 * the file removed when the test ends.
 */
export function tempFile(t: ExecutionContext, content: Buffer, flags = 'r+'): { path: string; fd: number } {
  const { dir, done } = tempDir()
  const path = join(dir, 'file')
  writeFileSync(path, content)
  const fd = openSync(path, flags)
  t.teardown(() => {
    try {
      closeSync(fd)
    } catch {
      // The test closed it itself.
    }
    done()
  })
  return { path, fd }
}

/**
 * Whether this run refuses external buffers: the addon's test-only switch
 * `MAPPED_REGION_TEST_NO_EXTERNAL=1` (`scripts/no-external.sh`), which makes it behave as on a
 * runtime with V8's sandbox (Electron): `view()`/`sharedView()` throw `ERR_MMAP_NO_EXTERNAL`,
 * typed access gets no window. Child processes inherit it.
 */
export const NO_EXTERNAL = process.env.MAPPED_REGION_TEST_NO_EXTERNAL === '1'

/** Why a test is skipped in that mode (CONTRIBUTING lists them). */
export const NEEDS_VIEWS = ' — skipped: needs view(), which is ERR_MMAP_NO_EXTERNAL without external buffers'

/**
 * Whether this process (root) can run this very Node binary as `nobody`: tests of what an
 * unprivileged user gets need it. Not where Node lives under a directory only root may enter
 * (the Node matrix's binaries, cached under root's home).
 */
export const NOBODY_CAN_RUN_NODE =
  process.getuid?.() === 0 &&
  existsSync('/usr/sbin/nologin') &&
  spawnSync('su', ['nobody', '-s', '/bin/sh', '-c', 'test -x "$0"', process.execPath]).status === 0
