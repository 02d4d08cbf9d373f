'use strict'
// Watching locks from Node: the async iterators, AbortSignal, and whenLost() within 100 ms of a
// forced release.

const assert = require('node:assert/strict')
const { test, beforeEach, afterEach } = require('node:test')

const { LockserverClient } = require('..')
const { startServer } = require('./server.js')

let server
let client
beforeEach(async () => {
  server = await startServer()
  client = new LockserverClient({ addr: server.addr, secret: server.secret })
})
afterEach(async () => {
  await server.stop()
})

async function forceRelease(resource) {
  const answer = await fetch(`${server.addr}/release`, {
    method: 'POST',
    headers: { 'X-LOCKSERVER-SECRET': server.secret, 'Content-Type': 'application/json' },
    body: JSON.stringify({ resource, owner: 'operator', force: true }),
  })
  assert.equal(answer.status, 200)
}

test('a watch yields the state, then each change', async () => {
  const events = client.watch('job')
  const first = (await events.next()).value
  assert.equal(first.event, 'reset')
  assert.deepEqual(first.locks, [])
  const lock = await client.lock('job', { expire: 10 })
  const acquired = (await events.next()).value
  assert.equal(acquired.event, 'acquired')
  assert.equal(acquired.token, lock.token)
  assert.ok(acquired.id > first.id)
  await lock.release()
  assert.equal((await events.next()).value.event, 'released')
  await events.return()
})

test('a prefix watch ends when its signal aborts', async () => {
  const controller = new AbortController()
  const seen = []
  const watching = (async () => {
    for await (const event of client.watchPrefix('jobs/', { signal: controller.signal })) {
      seen.push(event.event === 'reset' ? 'reset' : `${event.event} ${event.resource}`)
      if (seen.length === 2) controller.abort(new Error('enough'))
    }
  })()
  await new Promise((resolve) => setTimeout(resolve, 200))
  await client.tryLock('other', { expire: 10 })
  await client.tryLock('jobs/1', { expire: 10 })
  await assert.rejects(watching, { message: 'enough' })
  assert.deepEqual(seen, ['reset', 'acquired jobs/1'])
})

test('whenLost() resolves within 100 ms of a forced release', async () => {
  const lock = await client.lock('taken', { expire: 30 })
  await new Promise((resolve) => setTimeout(resolve, 200))
  assert.equal(lock.lost, false)
  const lost = lock.whenLost()
  await forceRelease('taken')
  const forced = Date.now()
  await lost
  assert.ok(Date.now() - forced < 100, `lost after ${Date.now() - forced} ms`)
  assert.equal(lock.lost, true)
})
