#!/usr/bin/env bash
# Installs the release build's toolchain, pinned, outside the repository:
# zig from the PyPI package `ziglang` (into a venv of the project's own) and
# cargo-zigbuild from crates.io. Run by CI and scripts/release-build.sh, never
# at package-install time. Prints the directory to put on PATH.
set -euo pipefail
ZIG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.1
ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/mapped-region/toolchain"
mkdir -p "$ROOT/bin"
if [ ! -x "$ROOT/venv/bin/python" ] || ! "$ROOT/venv/bin/python" -m ziglang version 2> /dev/null | grep -qx "$ZIG_VERSION"; then
  rm -rf "$ROOT/venv"
  python3 -m venv "$ROOT/venv"
  "$ROOT/venv/bin/pip" install --quiet --disable-pip-version-check "ziglang==$ZIG_VERSION" >&2
fi
# cargo-zigbuild runs `zig` from PATH: a wrapper around the venv's zig.
cat > "$ROOT/bin/zig" <<WRAP
#!/bin/sh
exec "$ROOT/venv/bin/python" -m ziglang "\$@"
WRAP
chmod +x "$ROOT/bin/zig"
if ! "$ROOT/bin/cargo-zigbuild" --version 2> /dev/null | grep -q " $ZIGBUILD_VERSION\$"; then
  cargo install --quiet --locked --root "$ROOT" --version "$ZIGBUILD_VERSION" cargo-zigbuild >&2
fi
echo "$ROOT/bin"
