#!/usr/bin/env bash
# The release binary of `linux-arm64-gnu`: built for aarch64 against glibc 2.17 with `cargo zigbuild`
# (zig pinned, scripts/zig-toolchain.sh), checked with `objdump -T` to need no newer glibc symbol,
# and put where the loader and the platform package take it from
# (mapped-region.linux-arm64-gnu.node). rustup here cannot add the aarch64 standard library, so it
# is built from source (-Zbuild-std) with Debian's rustc-web and rust-web-src (pinned,
# scripts/debian-rust.sh), as the musl check does. Whether it may ship is up to
# scripts/arm64-test.sh, which runs the suite on it in an emulated arm64 machine.
#   bash scripts/arm64-build.sh                  # the addon
#   bash scripts/arm64-build.sh --tests <dir>    # the core crate's test executables, into <dir>
set -euo pipefail
cd "$(dirname "$0")/.."
BASELINE=2.17
RUSTC_DEBIAN=$(bash scripts/debian-rust.sh)
TOOLS=$(bash scripts/zig-toolchain.sh)
export PATH="$TOOLS:$PATH"
target="$PWD/target/arm64"
triple="aarch64-unknown-linux-gnu.$BASELINE"
if [ "${1:-}" = --tests ]; then
  # The core crate's test executables (unit and integration, as `cargo test -p mapped-region`
  # builds them), for the arm64 guest (scripts/arm64-test.sh), copied into the directory $2. They
  # are linked against the guest's glibc (2.36): the tests call libc functions newer than 2.17.
  mkdir -p "$2"
  RUSTC="$RUSTC_DEBIAN" RUSTC_BOOTSTRAP=1 RUSTFLAGS="-D warnings" \
    cargo-zigbuild test --quiet --no-run -Zbuild-std=std,test --target aarch64-unknown-linux-gnu.2.36 \
    --target-dir "$target-tests" -p mapped-region --message-format=json |
    node -e 'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>{for(const l of s.split("\n")){if(!l.startsWith("{"))continue;const m=JSON.parse(l);if(m.reason==="compiler-artifact"&&m.profile.test&&m.executable)console.log(m.executable)}})' |
    while read -r exe; do cp "$exe" "$2/"; done
  [ -n "$(ls "$2")" ] || { echo "arm64-build: no core test executable was built" >&2; exit 1; }
  exit 0
fi
RUSTC="$RUSTC_DEBIAN" RUSTC_BOOTSTRAP=1 RUSTFLAGS="-D warnings" \
  cargo zigbuild --quiet --release -Zbuild-std=std,panic_abort --target "$triple" --target-dir "$target" -p mapped-region-node
so="$target/aarch64-unknown-linux-gnu/release/libmapped_region_node.so"
file "$so" | grep -q 'ELF 64-bit LSB shared object, ARM aarch64' || { echo "arm64-build: $so is not an aarch64 shared object" >&2; exit 1; }
bash scripts/check-glibc.sh "$so" "$BASELINE"
cp "$so" mapped-region.linux-arm64-gnu.node
