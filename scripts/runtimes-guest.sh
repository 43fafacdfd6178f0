# The conformance scripts on Bun and Deno in the emulated arm64 machine (scripts/arm64-test.sh
# puts the runtimes in /runtimes): what scripts/runtimes.sh runs on x64, in busybox sh, with
# the GC crash reproduction 30 times instead of 100 and no fuzzer (emulation is about ten times
# slower; x64 CI runs both in full).
set -e
export NO_COLOR=1 DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1
for rt in bun deno; do
  case $rt in
    bun) run="/runtimes/bun" ;;
    deno) run="/runtimes/deno run -A --v8-flags=--expose-gc" ;;
  esac
  echo "== $rt $(/runtimes/$rt --version | head -1) ($(uname -m))"
  $run __test__/runtimes/conformance.cjs
  $run __test__/runtimes/sigbus.cjs
  i=1
  while [ "$i" -le "${MR_GC_RUNS:-30}" ]; do
    if ! out=$($run __test__/runtimes/gc-views.cjs 2>&1); then
      echo "not ok gc-views run $i:" >&2
      echo "$out" | head -20 >&2
      exit 1
    fi
    i=$((i + 1))
  done
  echo "ok gc-views: ${MR_GC_RUNS:-30} runs in their own processes, none crashed"
done
