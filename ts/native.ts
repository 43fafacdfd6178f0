import { createRequire } from 'node:module'
import type * as Binding from '../index.js'
import type { ErrorCode } from './errors.js'

// The napi-generated loader sits at the package root, next to `dist/`. Its typings
// (index.d.ts) are generated too: napi-rs writes the classes, records and cold functions,
// and scripts/typings.mjs appends the raw entry points declared in crate/node/src/entries.rs.
const load = createRequire(__filename)

/** The prebuilt binaries this version ships, and what each needs. */
const SUPPORTED = 'linux-x64-gnu (x86-64 Linux) and linux-arm64-gnu (64-bit Arm Linux), both for glibc 2.17 or newer'

/**
 * Loads the binding; where there is no binary for this platform, says so plainly (napi-rs's
 * own text blames npm, and mentions a WebAssembly fallback this package does not have).
 */
function loadBinding(): typeof Binding {
  try {
    return load('../index.js') as typeof Binding
  } catch (e) {
    const refused = deniedPermission(e)
    if (refused !== undefined) {
      // Deno without the permissions a Node-API addon's loader needs: napi-rs's loader reads the
      // environment and loads the binary; a refusal there looks like a missing binary.
      const err = new Error(
        `mapped-region: Deno refused a permission the package needs to load its binary (${refused}). ` +
          'Run with --allow-ffi --allow-read --allow-env --allow-sys (or -A).',
        { cause: e },
      ) as Error & { code: ErrorCode }
      err.code = 'ERR_MMAP_NO_BINARY'
      throw err
    }
    let glibc: string | undefined
    try {
      glibc = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header?.glibcVersionRuntime
    } catch {
      // Deno without --allow-sys refuses the report: the platform is named without it.
    }
    const libc = process.platform !== 'linux' ? '' : glibc === undefined ? '-musl' : `-gnu, glibc ${glibc}`
    const here = `${process.platform}-${process.arch}${libc}`
    const err = new Error(
      `mapped-region: no prebuilt binary loads on this platform (${here}). This version ships ${SUPPORTED}; each is ` +
        `a package (mapped-region-linux-x64-gnu, mapped-region-linux-arm64-gnu) installed as an optional dependency — ` +
        `check that yours is in node_modules and that optional dependencies were not omitted. To build from source: ` +
        `clone the repository and run npm install.`,
      { cause: e },
    ) as Error & { code: ErrorCode }
    err.code = 'ERR_MMAP_NO_BINARY'
    throw err
  }
}

/**
 * The message of a Deno permission refusal among `e` and its causes, if any: `NotCapable` for
 * env and sys access, a plain `Error` ("Requires ffi access to …") from `require` of a `.node`.
 */
function deniedPermission(e: unknown): string | undefined {
  if (!('Deno' in globalThis)) return undefined
  for (let cause = e, depth = 0; cause instanceof Error && depth < 32; cause = cause.cause, depth++) {
    if (cause.name === 'NotCapable' || /^Requires \w+ access to /.test(cause.message)) return cause.message.split('\n')[0]
  }
  return undefined
}

/** The native binding. Internal: use the facade classes. */
export const native = loadBinding()

export type NativeSharedMemory = Binding.NativeSharedMemory
