#!/usr/bin/env bash
# Runs the runtime-neutral conformance scripts (__test__/runtimes/*.cjs) on Bun and Deno, at
# pinned versions taken from the npm registry by package name (`@oven/bun-linux-x64`,
# `@deno/linux-x64-glibc`; npm checks each tarball's integrity against the registry), cached
# outside the repository like scripts/node-matrix.sh does for Node. The addon and the facade
# must be built (npm run build). The ava suite itself is Node-only: see CONTRIBUTING
# ("Other runtimes") for what each runtime runs and what it skips.
#   bash scripts/runtimes.sh                 # both runtimes, every script
#   MR_RUNTIMES=deno bash scripts/runtimes.sh
#   bash scripts/runtimes.sh --install       # only install, print the two binaries' paths
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/runtime-versions.sh
. scripts/runtime-versions.sh
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mapped-region"

# install NAME VERSION PACKAGE PATH-IN-PACKAGE: the binary's path on stdout.
install() {
  local name=$1 version=$2 pkg=$3 inner=$4
  local dir="$CACHE/$name/$version"
  if [ ! -x "$dir/$inner" ]; then
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$pkg@$version" > /dev/null && tar xzf ./*.tgz)
    chmod +x "$tmp/package/$inner"
    mkdir -p "$(dirname "$dir")"
    rm -rf "$dir"
    mv "$tmp/package" "$dir"
    rm -rf "$tmp"
  fi
  echo "$dir/$inner"
}
bun_bin() { install bun "$BUN_VERSION" @oven/bun-linux-x64 bin/bun; }
deno_bin() { install deno "$DENO_VERSION" @deno/linux-x64-glibc deno; }

if [ "${1:-}" = "--install" ]; then
  bun_bin
  deno_bin
  exit 0
fi

# run RUNTIME: every script on one runtime; fails on the first failure.
run() {
  local name=$1 bin
  local -a cmd
  case $name in
    # Every script under a time limit: a hang (a deadlock in a finalizer, say) is a failure.
    bun) bin=$(bun_bin); cmd=(timeout 300 "$bin") ;;
    deno) bin=$(deno_bin); cmd=(timeout 300 "$bin" run -A --v8-flags=--expose-gc) ;;
    *) echo "unknown runtime $name" >&2; return 2 ;;
  esac
  echo "== $name $("$bin" --version | head -1)"
  local started=$SECONDS
  "${cmd[@]}" __test__/runtimes/conformance.cjs
  "${cmd[@]}" __test__/runtimes/sigbus.cjs
  # Issue 32's crash, each run in its own process: 100 clean runs in a row.
  local runs=${MR_GC_RUNS:-100} i
  for ((i = 1; i <= runs; i++)); do
    if ! out=$("${cmd[@]}" __test__/runtimes/gc-views.cjs 2>&1); then
      echo "not ok gc-views run $i of $runs:" >&2
      echo "$out" | head -20 >&2
      return 1
    fi
  done
  echo "ok gc-views: $runs runs in their own processes, none crashed"
  # The hostile-argument fuzzer (__test__/fuzz/child.cjs) on a few seeds.
  local seed
  for seed in ${MR_FUZZ_RUNTIME_SEEDS:-1 2 3 4}; do
    if ! out=$("${cmd[@]}" __test__/fuzz/child.cjs "$PWD/dist/index.js" "$seed" "${MR_FUZZ_OPS:-4000}" 2>&1); then
      echo "not ok fuzz seed $seed (replay: ${cmd[*]} __test__/fuzz/child.cjs dist/index.js $seed ${MR_FUZZ_OPS:-4000}):" >&2
      echo "$out" | grep -v '^ *at ' | tail -20 >&2
      return 1
    fi
    echo "$out" | tail -1
  done
  echo "== $name: done in $((SECONDS - started)) s"
}

export NO_COLOR=1 DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1
for rt in ${MR_RUNTIMES:-bun deno}; do
  run "$rt"
done
