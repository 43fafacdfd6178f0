#!/usr/bin/env bash
# Fetches the Linux example's guest files from Debian with `apt-get download` — the cloud kernel
# and busybox-static at pinned versions, checked by sha256 — into a cache outside the repository,
# unpacks them without root (`dpkg-deb -x`) and builds the busybox initramfs
# (examples/linux/initramfs.ts). Security-suite kernels leave the archive when a newer one is
# published: then the current `linux-image-cloud-amd64` is taken, and the output says so.
# Nothing Debian ships is committed. Prints the directory holding vmlinuz, System.map and
# initramfs.cpio.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KERNEL=linux-image-6.1.0-57-cloud-amd64
KERNEL_VERSION=6.1.192-3
KERNEL_SHA256=4fdd0172a8c3f41a97e92465b2ac1867e1c10d82d7aeed3d26ee7a5d14df1754
BUSYBOX_VERSION=1:1.35.0-4+deb12u1+b1
BUSYBOX_SHA256=3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mapped-region/linux"
mkdir -p "$CACHE"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

kernel_deb=$(ls "$CACHE"/linux-image-*.deb 2> /dev/null | head -1 || true)
if [ -z "$kernel_deb" ]; then
  if apt-get download "$KERNEL=$KERNEL_VERSION" > /dev/null 2>&1; then
    echo "$KERNEL_SHA256  $(ls linux-image-*.deb)" | sha256sum --check --quiet - >&2
    echo "fetch: $KERNEL $KERNEL_VERSION (pinned, sha256 checked)" >&2
  else
    current=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [ -n "$current" ] || { echo "fetch: neither $KERNEL $KERNEL_VERSION nor linux-image-cloud-amd64 can be downloaded" >&2; exit 1; }
    apt-get download "$current" > /dev/null
    echo "fetch: the pinned $KERNEL $KERNEL_VERSION has left the archive; took the current $current instead (not sha256-pinned)" >&2
  fi
  mv linux-image-*.deb "$CACHE/"
  kernel_deb=$(ls "$CACHE"/linux-image-*.deb | head -1)
fi
busybox_deb=$(ls "$CACHE"/busybox-static_*.deb 2> /dev/null | head -1 || true)
if [ -z "$busybox_deb" ]; then
  apt-get download "busybox-static=$BUSYBOX_VERSION" > /dev/null
  echo "$BUSYBOX_SHA256  $(ls busybox-static_*.deb)" | sha256sum --check --quiet - >&2
  mv busybox-static_*.deb "$CACHE/"
  busybox_deb=$(ls "$CACHE"/busybox-static_*.deb | head -1)
fi
if [ ! -f "$CACHE/vmlinuz" ] || [ ! -f "$CACHE/System.map" ] || [ ! -f "$CACHE/busybox" ]; then
  dpkg-deb -x "$kernel_deb" kernel
  dpkg-deb -x "$busybox_deb" busybox
  cp kernel/boot/vmlinuz-* "$CACHE/vmlinuz"
  cp kernel/boot/System.map-* "$CACHE/System.map"
  basename kernel/boot/vmlinuz-* | sed 's/^vmlinuz-//' > "$CACHE/VERSION"
  cp busybox/bin/busybox "$CACHE/busybox"
fi
if [ ! -f "$CACHE/initramfs.cpio" ] || [ "$here/initramfs.ts" -nt "$CACHE/initramfs.cpio" ] || [ "$here/layout.ts" -nt "$CACHE/initramfs.cpio" ]; then
  (cd "$here" && node --import=tsx initramfs.ts "$CACHE/busybox" "$CACHE/initramfs.cpio")
fi
echo "$CACHE"
