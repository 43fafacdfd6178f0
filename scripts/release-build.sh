#!/usr/bin/env bash
# The release binary of `linux-x64-gnu`: built against glibc 2.17 with
# `cargo zigbuild` (toolchain from scripts/zig-toolchain.sh, pinned), checked
# with `objdump -T` to need no newer glibc symbol, and put where the loader and
# the platform package take it from (mapped-region.linux-x64-gnu.node).
set -euo pipefail
cd "$(dirname "$0")/.."
BASELINE=2.17
TOOLS=$(bash scripts/zig-toolchain.sh)
export PATH="$TOOLS:$PATH"
cargo zigbuild --release --target "x86_64-unknown-linux-gnu.$BASELINE" -p mapped-region-node
so=target/x86_64-unknown-linux-gnu/release/libmapped_region_node.so
bash scripts/check-glibc.sh "$so" "$BASELINE"
cp "$so" mapped-region.linux-x64-gnu.node
