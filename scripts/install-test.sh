#!/usr/bin/env bash
# Installs the package as a user does: `npm pack` the main package and the
# linux-x64-gnu package, install both tarballs into a fresh project with no Rust
# or C toolchain on PATH, offline and with an empty npm cache (so nothing but the
# two tarballs can be installed), then run an ESM and a CJS smoke program.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
registry_pid=
trap 'if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

cp "$root/mapped-region.linux-x64-gnu.node" "$root/npm/linux-x64-gnu/"
# The main package is packed as it is published: from its staged form (scripts/stage-package.mjs).
node "$root/scripts/stage-package.mjs" "$work/staging" >/dev/null
(cd "$work/staging" && npm pack --ignore-scripts --pack-destination "$work" >/dev/null)
(cd "$root/npm/linux-x64-gnu" && npm pack --ignore-scripts --pack-destination "$work" >/dev/null)
# The arm64 package's manifest only (no binary): the registry Bun and Deno install from lists it,
# and their resolvers must leave it out on x64 by its os/cpu.
mkdir "$work/arm64-manifest"
cp "$root/npm/linux-arm64-gnu/package.json" "$work/arm64-manifest/"
(cd "$work/arm64-manifest" && npm pack --ignore-scripts --pack-destination "$work" >/dev/null)
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

# One smoke body, loaded both ways: ESM (import) and CommonJS (require), on every runtime.
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
// The binary as the package resolves it (Deno's node_modules keeps it beside the package).
const binary = require.resolve('mapped-region-linux-x64-gnu', { paths: [require.resolve('mapped-region')] })
console.log(`${KIND} smoke ok on ${RUNTIME}, binary from`, binary.replace(process.cwd(), '.'))
JS
runtime='const RUNTIME = globalThis.Deno ? `deno ${Deno.version.deno}` : globalThis.Bun ? `bun ${Bun.version}` : `node ${process.version}`'
{ echo "import { MemoryMappingArena, SharedMemory, Protection, PAGE_SIZE } from 'mapped-region'"
  echo "import { createRequire } from 'node:module'"
  echo "const require = createRequire(import.meta.url)"
  echo "const KIND = 'esm'"
  echo "$runtime"
  cat body.txt; } > "$work/smoke.mjs"
{ echo "const { MemoryMappingArena, SharedMemory, Protection, PAGE_SIZE } = require('mapped-region')"
  echo "const KIND = 'cjs'"
  echo "$runtime"
  cat body.txt; } > "$work/smoke.cjs"
cp "$work/smoke.mjs" "$work/smoke.cjs" .
PATH="$bin" node smoke.mjs
PATH="$bin" node smoke.cjs

# Bun and Deno (pinned, from the npm registry: scripts/runtimes.sh): each installs the package by
# name with its own package manager — `bun add mapped-region`, `deno add npm:mapped-region` —
# from a registry on 127.0.0.1 that serves only the three packed tarballs, with an empty cache,
# then runs the same smoke programs and the README's example (TypeScript, `using`), as written.
# MR_INSTALL_RUNTIMES="" skips them.
runtimes=${MR_INSTALL_RUNTIMES-bun deno}
if [ -n "$runtimes" ]; then
  mapfile -t binaries < <(bash "$root/scripts/runtimes.sh" --install)
  bun=${binaries[0]} deno=${binaries[1]}
  node "$root/scripts/local-registry.mjs" "$main_tgz" "$native_tgz" "$work"/mapped-region-linux-arm64-gnu-*.tgz > "$work/registry.url" &
  registry_pid=$!
  for _ in $(seq 50); do [ -s "$work/registry.url" ] && break; sleep 0.1; done
  registry=$(cat "$work/registry.url")
  version=$(node -p 'require(process.argv[1]).version' "$work/package/package.json")
  # The README's example block; its last line calls the VMM's own KVM wrapper, stubbed here.
  { echo "function kvmSetUserMemoryRegion(r: { slot: number; guestPhysAddr: bigint; memorySize: number; userspaceAddr: bigint }): void {"
    echo "  if (typeof r.userspaceAddr !== 'bigint' || r.memorySize !== 256 << 20) throw new Error('README example: wrong region')"
    echo "  console.log('README example ok on', globalThis.Deno ? 'deno' : 'bun')"
    echo "}"
    awk '/^## Example/ { f = 1; next } f && /^```ts/ { p = 1; next } p && /^```/ { exit } p' "$work/staging/README.md"; } > "$work/example.ts"
  grep -q 'MemoryMappingArena.reserve' "$work/example.ts" || { echo "the README's example was not found" >&2; exit 1; }
  for rt in $runtimes; do
    mkdir "$work/app-$rt"
    cd "$work/app-$rt"
    echo '{ "name": "install-test", "private": true }' > package.json
    cp "$work/smoke.mjs" "$work/smoke.cjs" "$work/example.ts" .
    case $rt in
      bun)
        PATH="$bin" BUN_CONFIG_REGISTRY="$registry" BUN_INSTALL_CACHE_DIR="$work/bun-cache" "$bun" add --no-summary "mapped-region@$version"
        run=("$bun") ;;
      deno)
        export DENO_DIR="$work/deno-dir" DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
        PATH="$bin" NPM_CONFIG_REGISTRY="$registry" "$deno" add "npm:mapped-region@$version"
        run=("$deno" run -A) ;;
      *) echo "unknown runtime $rt" >&2; exit 1 ;;
    esac
    test -d node_modules/mapped-region || { echo "$rt installed no node_modules/mapped-region" >&2; exit 1; }
    PATH="$bin" "${run[@]}" smoke.mjs
    PATH="$bin" "${run[@]}" smoke.cjs
    PATH="$bin" "${run[@]}" example.ts > example.out
    tail -1 example.out
    if [ "$rt" = deno ]; then
      # Without its permissions Deno refuses the loader: the error says which flags to give.
      if PATH="$bin" "$deno" run smoke.cjs > denied.out 2>&1; then echo "deno ran without permissions" >&2; exit 1; fi
      grep -q 'Run with --allow-ffi --allow-read --allow-env --allow-sys' denied.out || { cat denied.out >&2; exit 1; }
      echo "deno without permissions: ERR_MMAP_NO_BINARY naming the flags"
    fi
  done
fi
