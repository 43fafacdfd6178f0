/**
 * Compile-time contract, checked by `npm run typecheck` (never run): misuse of
 * the API must be a type error. Each `@ts-expect-error` fails the type check if
 * the line below it compiles.
 */
import { MemoryMapping, type MemoryMappingArena, Protection, Seal, SharedMemory, type Advice, type MappingInfo } from 'mapped-region'

declare const arena: MemoryMappingArena
declare const mapping: MemoryMapping
declare const shm: SharedMemory

const address: bigint = arena.address
const size: number = arena.size
const advice: Advice = 'willneed'
arena.madvise(0, size, advice)
arena.madvise(0, size, 3)
arena.addFdMapping(0, 4096, shm.fd, 0n, Protection.READ_WRITE)
arena.protect(0, 4096, Protection.of(Protection.READ, Protection.EXEC))
shm.addSeals(Seal.of(Seal.GROW, Seal.SEAL))
const entry: MappingInfo = arena.mappings()[0]
const kind: 'fd' | 'anonymous' = entry.kind
const disposable: Disposable = mapping
const copied: number = mapping.readInto(0, new Uint32Array(4))
void [address, kind, disposable, copied]

// @ts-expect-error the address is a bigint, not a number
const wrongAddress: number = arena.address
// @ts-expect-error unknown advice names are rejected
arena.madvise(0, 4096, 'dontneeed')
// @ts-expect-error offsets are numbers, not strings
arena.read('0', 1)
// @ts-expect-error write takes bytes, not strings
arena.write(0, 'text')
// @ts-expect-error readInto fills bytes, not a length
arena.readInto(0, 16)
// @ts-expect-error unknown option
MemoryMapping.anonymous(4096, { protect: Protection.READ })
// @ts-expect-error populate is a boolean
MemoryMapping.anonymous(4096, { populate: 'yes' })
// @ts-expect-error addAnonymous exists only on arenas
mapping.addAnonymous(0, 4096, Protection.READ)
// @ts-expect-error size is read-only
arena.size = 1
// @ts-expect-error SharedMemory options are typed
SharedMemory.create('x', 4096, { sealed: false })
// @ts-expect-error a seal is not a protection
arena.addAnonymous(0, 4096, Seal.GROW)
// @ts-expect-error a protection is not a seal
shm.addSeals(Protection.WRITE)
// @ts-expect-error a plain number is neither (combine with Protection.of / Seal.of)
arena.addAnonymous(0, 4096, 3)
// @ts-expect-error \`|\` makes a plain number
arena.protect(0, 4096, Protection.READ | Protection.EXEC)
void wrongAddress
