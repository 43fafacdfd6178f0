#!/usr/bin/env bash
# Installs the package as a user does: `npm pack` the main package and the
# linux-x64-gnu package, install both tarballs into a fresh project with no Rust
# or C toolchain on PATH, offline and with an empty npm cache (so nothing but the
# two tarballs can be installed), then run an ESM and a CJS smoke program.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp "$root/mapped-region.linux-x64-gnu.node" "$root/npm/linux-x64-gnu/"
# The main package is packed as it is published: from its staged form (scripts/stage-package.mjs).
node "$root/scripts/stage-package.mjs" "$work/staging" >/dev/null
(cd "$work/staging" && npm pack --ignore-scripts --pack-destination "$work" >/dev/null)
(cd "$root/npm/linux-x64-gnu" && npm pack --ignore-scripts --pack-destination "$work" >/dev/null)
main_tgz=$(ls "$work"/mapped-region-[0-9]*.tgz)
native_tgz=$(ls "$work"/mapped-region-linux-x64-gnu-*.tgz)
echo "tarballs: $(basename "$main_tgz") $(stat -c %s "$main_tgz") bytes, $(basename "$native_tgz") $(stat -c %s "$native_tgz") bytes"
if tar -tzf "$main_tgz" | grep -E '\.(node|rs|ts)$' | grep -v '\.d\.ts$'; then
  echo "the main tarball ships native binaries, Rust or TypeScript sources" >&2
  exit 1
fi
# The packed manifest: nothing a consumer's npm would run or read for development, the
# binary through optionalDependencies, no os/cpu that would refuse a supported platform.
tar -xzf "$main_tgz" -C "$work" package/package.json
node -e '
  const m = require(process.argv[1])
  const bad = ["scripts", "ava", "devDependencies", "overrides", "os", "cpu", "napi"].filter((k) => k in m)
  if (bad.length) { console.error("the packed package.json has " + bad.join(", ")); process.exit(1) }
  const opt = m.optionalDependencies ?? {}
  for (const p of ["linux-x64-gnu", "linux-arm64-gnu"]) {
    if (opt["mapped-region-" + p] !== m.version) { console.error("optionalDependencies lack the " + p + " binary at " + m.version); process.exit(1) }
  }
  console.log("packed manifest ok: no scripts or dev config; optionalDependencies", JSON.stringify(opt))
' "$work/package/package.json"
# Typings for both module systems (arethetypeswrong) and the package's shape (publint).
NO_COLOR=1 "$root/node_modules/.bin/attw" --profile node16 "$main_tgz"
NO_COLOR=1 "$root/node_modules/.bin/publint" run "$work/staging" --strict

# A PATH with node and npm only: no cargo, rustc, cc, make.
bin="$work/bin"
mkdir -p "$bin"
ln -s "$(command -v node)" "$bin/node"
ln -s "$(command -v npm)" "$bin/npm"
ln -s "$(command -v sh)" "$bin/sh"
for tool in cargo rustc cc gcc make; do
  if PATH="$bin" command -v "$tool" >/dev/null 2>&1; then echo "$tool is still on PATH" >&2; exit 1; fi
done

mkdir "$work/app"
cd "$work/app"
echo '{ "name": "install-test", "private": true }' > package.json
# The arm64 package is an optional dependency that is neither cached nor for this machine: npm
# leaves it out and installs the rest.
PATH="$bin" npm install --offline --no-audit --no-fund --cache "$work/cache" "$main_tgz" "$native_tgz"
# No installed package may run an install script.
scripts=$(PATH="$bin" npm query ':attr(scripts, [install]), :attr(scripts, [preinstall]), :attr(scripts, [postinstall])' --cache "$work/cache")
if [ "$scripts" != "[]" ]; then echo "install scripts found: $scripts" >&2; exit 1; fi

# One smoke body, loaded both ways: ESM (import) and CommonJS (require).
cat > body.txt <<'JS'
const arena = MemoryMappingArena.reserve(16 * PAGE_SIZE)
const shm = SharedMemory.create('smoke', 4 * PAGE_SIZE)
arena.addFdMapping(0, shm.size, shm.fd, 0, Protection.READ_WRITE)
const view = arena.view(0, PAGE_SIZE)
view.write(KIND)
arena.msync(0, PAGE_SIZE)
if (arena.read(0, 3).toString() !== KIND) throw new Error(`${KIND} smoke: wrong bytes`)
arena.close()
shm.close()
console.log(`${KIND} smoke ok, binary from`, require.resolve('mapped-region-linux-x64-gnu').replace(process.cwd(), '.'))
JS
{ echo "import { MemoryMappingArena, SharedMemory, Protection, PAGE_SIZE } from 'mapped-region'"
  echo "import { createRequire } from 'node:module'"
  echo "const require = createRequire(import.meta.url)"
  echo "const KIND = 'esm'"
  cat body.txt; } > smoke.mjs
{ echo "const { MemoryMappingArena, SharedMemory, Protection, PAGE_SIZE } = require('mapped-region')"
  echo "const KIND = 'cjs'"
  cat body.txt; } > smoke.cjs
PATH="$bin" node smoke.mjs
PATH="$bin" node smoke.cjs
