#!/usr/bin/env bash
# Runs the Rust core's tests under valgrind memcheck: any invalid read/write,
# use of uninitialised memory or definite leak fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export MR_UNDER_VALGRIND=1 MR_FUZZ_CASES=40 PROPTEST_CASES=40
# valgrind (3.19) does not know userfaultfd(2) and answers ENOSYS: the kernel
# write-tracking tests (crate/core/src/dirty.rs) then skip, saying so.
export MR_ALLOW_NO_UFFD=1
bins=$(cargo test -p mapped-region --no-run --message-format=json 2>/dev/null \
  | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n")){if(!l)continue;const m=JSON.parse(l);if(m.reason==="compiler-artifact"&&m.executable&&m.profile.test)console.log(m.executable)}})')
for bin in $bins; do
  echo "== valgrind $(basename "$bin")"
  valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --suppressions=scripts/valgrind.supp -q "$bin" --test-threads=1 -q
done
