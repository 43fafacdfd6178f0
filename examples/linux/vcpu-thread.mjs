// The vCPU worker's entry: Node's loader runs a worker's entry itself and does not take .ts files,
// so this imports vcpu.ts through tsx's API.
import { tsImport } from 'tsx/esm/api'

await tsImport('./vcpu.ts', import.meta.url)
