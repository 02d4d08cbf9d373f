'use strict'
// Acquire+release cycles per second from one Node process: the lockserver client against a
// plain fetch() client making the same two calls. Prints one JSON line.
//
//   node js_cycles.js ADDR SECRET [SECONDS]

const path = require('node:path')
const { LockserverClient } = require(path.join(__dirname, '..', '..', 'client-js'))

async function rate(cycle, seconds) {
  await cycle() // warm up
  let count = 0
  const started = performance.now()
  while (performance.now() - started < seconds * 1000 && count < 1_000_000) {
    await cycle()
    count++
  }
  return count / ((performance.now() - started) / 1000)
}

async function main() {
  const [addr, secret, secs] = process.argv.slice(2)
  const seconds = Number(secs || 3)
  const base = addr.includes('://') ? addr : `http://${addr}`
  const headers = { 'X-LOCKSERVER-SECRET': secret, 'content-type': 'application/json' }
  const client = new LockserverClient({ addr, secret, owner: 'js-bench' })

  const ours = async () => {
    await client.acquire('js-bench-ours')
    await client.release('js-bench-ours')
  }
  const body = JSON.stringify({ resource: 'js-bench-plain', owner: 'js-plain' })
  const plain = async () => {
    for (const route of ['/acquire', '/release']) {
      const response = await fetch(base + route, { method: 'POST', headers, body })
      if (!response.ok) throw new Error(`${route}: ${response.status}`)
      await response.arrayBuffer()
    }
  }
  const plainRate = await rate(plain, seconds)
  const oursRate = await rate(ours, seconds)
  console.log(JSON.stringify({ ours: Math.round(oursRate), plain_fetch: Math.round(plainRate), ratio: +(oursRate / plainRate).toFixed(2) }))
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
