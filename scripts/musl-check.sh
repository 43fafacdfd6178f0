#!/usr/bin/env bash
# Compile check for x86_64-unknown-linux-musl: the core crate and the addon must build for it.
# Rust's musl standard library is not installable here (rustup cannot add targets, Debian ships
# none), so it is built from source (-Zbuild-std) with Debian's rustc-web and its rust-web-src
# (scripts/debian-rust.sh, pinned), linked by zig (scripts/zig-toolchain.sh, pinned). Nothing is
# shipped from it: no musl build of Node is to be had here to load and test the addon with.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTC_DEBIAN=$(bash scripts/debian-rust.sh)
TOOLS=$(bash scripts/zig-toolchain.sh)
export PATH="$TOOLS:$PATH"
target="$PWD/target/musl-check"
# A cdylib on musl needs the C runtime linked dynamically (-crt-static), as napi-rs's musl
# packages do; the core crate is checked by the same build (the addon depends on it).
RUSTC="$RUSTC_DEBIAN" RUSTC_BOOTSTRAP=1 RUSTFLAGS="-C target-feature=-crt-static" \
  cargo zigbuild --quiet --release -Zbuild-std=std,panic_abort --target x86_64-unknown-linux-musl \
  --target-dir "$target" -p mapped-region -p mapped-region-node
so="$target/x86_64-unknown-linux-musl/release/libmapped_region_node.so"
file "$so" | grep -q 'ELF 64-bit' || { echo "musl-check: no ELF at $so" >&2; exit 1; }
if objdump -p "$so" | grep -q 'NEEDED.*libc.so.6'; then
  echo "musl-check: $so links glibc" >&2
  exit 1
fi
echo "musl-check: $(objdump -p "$so" | awk '/NEEDED/ {print $2}' | tr '\n' ' ')— built for x86_64-unknown-linux-musl"
