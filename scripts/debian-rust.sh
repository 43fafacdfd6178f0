#!/usr/bin/env bash
# Installs Debian bookworm-security's rustc-web toolchain, pinned and sha256-checked, outside the
# repository (unpacked with dpkg-deb, no root, nothing installed system-wide): a rustc with the
# standard library's source (rust-web-src), which `-Zbuild-std` needs — rustup here cannot add
# components. Used by scripts/tsan.sh (a ThreadSanitizer-instrumented std). If the pinned
# packages have left the archive (security updates replace them), the current ones are taken
# and the script says so. Prints the path of a `rustc` wrapper.
set -euo pipefail
VERSION=1.96.0+dfsg1-1~deb12u2
LLVM=1:22.1.8-1~deb12u1
PINNED="rustc-web=$VERSION libstd-rust-web-1.96=$VERSION libstd-rust-web-dev=$VERSION rust-web-src=$VERSION libllvm22=$LLVM"
declare -A SHA256=(
  [rustc-web]=8fefe1d6377fe4082f5a9d2a47e095e2d20319eaab9754bd2f0275155c9adf90
  [libstd-rust-web-1.96]=3755f30434ae29574c91b0beb86632bee401607b0ac35c3e52810f9a53fae0d1
  [libstd-rust-web-dev]=e38dbeaaad673fc63fb47c5140cf34da271ac71c3ecafc828b762c2fb01fe77a
  [rust-web-src]=9de8597c464d0a9283672973ed7e50092b49a92b95861429043fe8b57468a208
  [libllvm22]=729ec3e943d320515c2bbdc96acfffd7ce34861e62bd5c42726bf586d644dfe2
)
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mapped-region/toolchain"
ROOT="$CACHE/debian-rust"
WRAPPER="$CACHE/bin/rustc-debian"
if [ -x "$WRAPPER" ] && "$WRAPPER" --version > /dev/null 2>&1 && [ -d "$ROOT/usr/lib/rustlib/src/rust/library" ]; then
  echo "$WRAPPER"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# shellcheck disable=SC2086
if apt-get download $PINNED > /dev/null 2>&1; then
  for deb in *.deb; do
    name=${deb%%_*}
    echo "${SHA256[$name]}  $deb" | sha256sum --check --quiet - >&2
  done
else
  echo "debian-rust: the pinned rustc-web $VERSION has left the archive; taking the current one (unpinned, unchecked)" >&2
  std=$(apt-cache depends libstd-rust-web-dev | awk '/Depends: libstd-rust-web-[0-9]/ {print $2; exit}')
  llvm=$(apt-cache depends "$std" | awk '/Depends: libllvm/ {print $2; exit}')
  apt-get download rustc-web libstd-rust-web-dev rust-web-src "$std" "$llvm" > /dev/null
fi
rm -rf "$ROOT"
mkdir -p "$ROOT" "$CACHE/bin"
for deb in *.deb; do dpkg-deb -x "$deb" "$ROOT"; done
llvm_lib=$(dirname "$(find "$ROOT/usr/lib" -name 'libLLVM*.so*' | head -1)")
cat > "$WRAPPER" << WRAP
#!/bin/sh
export LD_LIBRARY_PATH="$ROOT/usr/lib/x86_64-linux-gnu:$llvm_lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$ROOT/usr/bin/rustc" "\$@"
WRAP
chmod +x "$WRAPPER"
"$WRAPPER" --version >&2
echo "$WRAPPER"
