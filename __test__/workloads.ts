/**
 * Workloads shared by the reliability tests (short runs, in `npm test`) and the
 * soak (`npm run soak`, long runs).
 */
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { setImmediate as yieldToLoop } from 'node:timers/promises'
import { MemoryMappingArena, PAGE_SIZE, Protection, SharedMemory } from 'mapped-region'
import { ENTRY } from './helpers.js'

const P = PAGE_SIZE

export interface ProcessStat {
  /** Resident set size, KiB. */
  rss: number
  /** Lines of /proc/self/maps. */
  maps: number
  /** Open fds. */
  fds: number
}

export function processStat(): ProcessStat {
  return {
    rss: Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]),
    maps: readFileSync('/proc/self/maps', 'utf8').split('\n').length,
    fds: readdirSync('/proc/self/fd').length,
  }
}

const gc = (globalThis as { gc?: () => void }).gc

/** GC and let views' finalizers run (they run on a later turn of the event loop). */
export async function settle(): Promise<void> {
  if (gc === undefined) throw new Error('run with --expose-gc')
  for (let i = 0; i < 5; i++) {
    gc()
    await yieldToLoop()
  }
}

/**
 * `cycles` add/view/write/remove cycles on one arena, yielding to the event loop
 * every 1000 as a real program does. Calls `sample` every `every` cycles.
 */
export async function overlayCycles(
  cycles: number,
  every = cycles,
  sample: (done: number) => void | Promise<void> = () => {},
): Promise<void> {
  const shm = SharedMemory.create('soak', 16 * P)
  const arena = MemoryMappingArena.reserve(64 * P)
  const bytes = Buffer.from([1, 2, 3])
  try {
    for (let i = 0; i < cycles; i++) {
      const at = (i % 32) * P
      arena.addFdMapping(at, 2 * P, shm.fd, (i % 8) * P, Protection.READ_WRITE)
      const view = arena.view(at, P)
      view[i % P] = i & 0xff
      arena.write(at + 1, bytes)
      arena.removeMapping(at, 2 * P)
      if (i % 1000 === 999) await yieldToLoop()
      if ((i + 1) % every === 0) await sample(i + 1)
    }
  } finally {
    arena.close()
    shm.close()
  }
}

/** The bytes a durability child writes to `page`. */
export function pagePattern(page: number): Buffer {
  const expected = Buffer.alloc(P, (page * 13 + 1) & 0xff)
  expected.write(`page ${page} synced`, 0)
  return expected
}

/**
 * Spawns a child that writes and msyncs the pages of a 64-page file through views
 * of an arena overlay, reports each synced page, and is SIGKILLed after `n`
 * reports. Returns the pages it reported; the caller checks them on disk.
 */
export function killAfterSomeSyncs(path: string, n: number): Promise<number[]> {
  writeFileSync(path, Buffer.alloc(64 * P))
  const body = `
    const mr = require(${JSON.stringify(ENTRY)})
    const fs = require('node:fs')
    const fd = fs.openSync(${JSON.stringify(path)}, 'r+')
    const P = mr.PAGE_SIZE
    const a = mr.MemoryMappingArena.reserve(64 * P)
    a.addFdMapping(0, 64 * P, fd, 0, mr.Protection.READ_WRITE)
    // One pass, never back over a page reported synced: noise written into one after its report
    // would be in the page cache when the child is killed (a fast child used to wrap around).
    for (let page = 0; page < 64; page++) {
      const v = a.view(page * P, P)
      v.fill((page * 13 + 1) & 0xff)
      v.write('page ' + page + ' synced', 0)
      a.msync(page * P, P)
      fs.writeSync(1, page + '\\n')
      // Unsynced noise after the report, into the next page: may or may not reach the disk.
      if (page + 1 < 64) a.view((page + 1) * P, 8).write('dirty!!!')
    }
    // Wait for the SIGKILL.
    setInterval(() => {}, 1 << 30)
  `
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', body], { stdio: ['ignore', 'pipe', 'inherit'] })
    const synced = new Set<number>()
    let buffered = ''
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      const lines = buffered.split('\n')
      buffered = lines.pop() ?? ''
      for (const line of lines) synced.add(Number(line))
      if (synced.size >= n && !child.killed) child.kill('SIGKILL')
    })
    child.on('error', reject)
    child.on('exit', (_code, signal) =>
      signal === 'SIGKILL' ? resolve([...synced]) : reject(new Error(`durability child exited without SIGKILL (${signal})`)),
    )
  })
}
