// A minimal npm registry on 127.0.0.1 serving only the tarballs given, for the install test:
// package managers other than npm (Bun, Deno) install the packed packages by name through it,
// with their own resolution of optionalDependencies (os/cpu), and nothing else can be fetched.
//   node scripts/local-registry.mjs a.tgz b.tgz …   prints `http://127.0.0.1:PORT/`, serves until killed
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { basename } from 'node:path'

const packages = new Map()
for (const file of process.argv.slice(2)) {
  const manifest = JSON.parse(execFileSync('tar', ['-xzOf', file, 'package/package.json'], { encoding: 'utf8' }))
  const bytes = readFileSync(file)
  const entry = packages.get(manifest.name) ?? { versions: {}, tarballs: new Map() }
  entry.versions[manifest.version] = {
    ...manifest,
    _id: `${manifest.name}@${manifest.version}`,
    dist: {
      tarball: `/-/${basename(file)}`,
      integrity: `sha512-${createHash('sha512').update(bytes).digest('base64')}`,
      shasum: createHash('sha1').update(bytes).digest('hex'),
    },
  }
  entry.tarballs.set(basename(file), bytes)
  entry.latest = manifest.version
  packages.set(manifest.name, entry)
}

const server = createServer((req, res) => {
  const url = decodeURIComponent(new URL(req.url, 'http://x').pathname)
  const base = `http://127.0.0.1:${server.address().port}`
  for (const [name, entry] of packages) {
    if (url === `/${name}`) {
      const versions = Object.fromEntries(
        Object.entries(entry.versions).map(([v, m]) => [v, { ...m, dist: { ...m.dist, tarball: base + m.dist.tarball } }]),
      )
      res.writeHead(200, { 'content-type': 'application/json' })
      return res.end(JSON.stringify({ name, 'dist-tags': { latest: entry.latest }, versions }))
    }
    const tarball = url.startsWith('/-/') && entry.tarballs.get(url.slice(3))
    if (tarball) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      return res.end(tarball)
    }
  }
  res.writeHead(404, { 'content-type': 'application/json' })
  res.end('{"error":"not found"}')
})
server.listen(0, '127.0.0.1', () => console.log(`http://127.0.0.1:${server.address().port}/`))
