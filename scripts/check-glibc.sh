#!/usr/bin/env bash
# Fails if the shared object $1 needs a glibc symbol newer than $2 (objdump -T).
#   bash scripts/check-glibc.sh target/release/libmapped_region_node.so 2.17
set -euo pipefail
so=$1
baseline=$2
newest=$(objdump -T "$so" | grep -o 'GLIBC_[0-9.]*' | sed 's/^GLIBC_//' | sort -uV | tail -1)
if [ "$(printf '%s\n%s\n' "$baseline" "$newest" | sort -V | tail -1)" != "$baseline" ]; then
  echo "check-glibc: $so needs GLIBC_$newest, newer than the $baseline baseline:" >&2
  objdump -T "$so" | grep "GLIBC_$newest" >&2
  exit 1
fi
echo "check-glibc: $so needs glibc >= $newest (baseline $baseline)"
