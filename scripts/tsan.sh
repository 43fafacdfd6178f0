#!/usr/bin/env bash
# The binding under ThreadSanitizer: builds the addon with -Zsanitizer=thread against an
# instrumented standard library (-Zbuild-std, with Debian's rustc-web: scripts/debian-rust.sh),
# runs __test__/stress/threads.cjs in Node with the sanitizer's runtime preloaded, and fails on
# any report with a frame of this package's code (Node and V8 are not instrumented: reports
# entirely inside them are listed and left alone; V8's platform job handles are suppressed,
# see below), or if the
# stress run does not end with every mapping released.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTC_DEBIAN=$(bash scripts/debian-rust.sh)
sysroot=$("$RUSTC_DEBIAN" --print sysroot)
rt="$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/lib/librustc-stable_rt.tsan.a"
# Debian's package has no sanitizer runtime archive; rustc links it only into executables
# (the core's test binaries). The rustup toolchain's is the same LLVM runtime.
[ -f "$rt" ] || cp "$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/lib/librustc-stable_rt.tsan.a" "$rt"
libtsan=$(gcc -print-file-name=libtsan.so)
[ -f "$libtsan" ] || { echo "tsan: gcc's libtsan is missing (Debian package libtsan2)" >&2; exit 1; }
target=target/tsan
RUSTC="$RUSTC_DEBIAN" RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=thread" \
  cargo build --quiet -Zbuild-std --target x86_64-unknown-linux-gnu --target-dir "$target" -p mapped-region-node
pkg=$(mktemp -d)
trap 'rm -rf "$pkg"' EXIT
cp -r package.json index.js dist "$pkg/"
cp "$target/x86_64-unknown-linux-gnu/debug/libmapped_region_node.so" "$pkg/mapped-region.linux-x64-gnu.node"
# LLVM's instrumentation calls __tsan_memcpy/memmove/memset, which gcc's runtime lacks: forward
# them to the intercepted libc functions.
cat > "$pkg/shim.c" << 'C'
#include <string.h>
void *__tsan_memcpy(void *d, const void *s, size_t n) { return memcpy(d, s, n); }
void *__tsan_memmove(void *d, const void *s, size_t n) { return memmove(d, s, n); }
void *__tsan_memset(void *d, int c, size_t n) { return memset(d, c, n); }
C
gcc -shared -fPIC -O1 -o "$pkg/shim.so" "$pkg/shim.c"
# V8's platform job handles (DefaultJobState, DefaultJobWorker) and its jobs (their
# destructors: ParallelClearingJob and the like) are joined and freed on different threads,
# synchronised inside Node, which is not instrumented: TSan reports their frees as races. When the garbage collector runs such a job from inside one of this package's
# N-API calls (making a view's external buffer, say), this package's frames sit under V8's on
# one side, and the report would count as ours: both racing accesses are V8's own.
cat > "$pkg/suppressions.txt" << 'S'
race:v8::platform::DefaultJob
race:Job::~
S
log="$pkg/tsan.log"
set +e
TSAN_OPTIONS="report_signal_unsafe=0 halt_on_error=0 exitcode=0 suppressions=$pkg/suppressions.txt" LD_PRELOAD="$libtsan $pkg/shim.so" ROUNDS="${ROUNDS:-200}" \
  node --expose-gc __test__/stress/threads.cjs "$pkg/dist/index.js" > "$log" 2>&1
status=$?
set -e
reports=$(grep -c 'WARNING: ThreadSanitizer' "$log" || true)
# Each report, split on its header: ours if any frame is in this package's code.
ours=$(awk '/WARNING: ThreadSanitizer/ {n++} n && /mapped_region/ {hit[n]=1} END {print length(hit)}' "$log")
echo "tsan: $reports report(s), $ours with a frame of mapped-region; stress: $(grep -o 'stress done [0-9]*' "$log" || echo 'no result')"
if [ "$status" -ne 0 ] || [ "$ours" -ne 0 ] || ! grep -q 'stress done 0$' "$log"; then
  cat "$log" >&2
  exit 1
fi
# The reports left alone, if any (none is a pass too: grep's status must not fail the script).
{ grep -A3 'WARNING: ThreadSanitizer' "$log" || true; } | { grep -E '#[01] ' || true; } |
  sed 's/^/  left alone (inside Node): /' | sort -u | head -10
