# The Bun and Deno versions CI runs (x64: scripts/runtimes.sh; arm64: scripts/arm64-test.sh),
# taken from the npm registry by package name, pinned here once.
BUN_VERSION=1.4.4
DENO_VERSION=2.9.6
