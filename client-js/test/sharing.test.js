'use strict'
// Semaphores, read-write locks and multi-locks from Node, against the real server binary.

const assert = require('node:assert/strict')
const { test, beforeEach, afterEach } = require('node:test')

const { LockserverClient } = require('..')
const { startServer } = require('./server.js')

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

let server
let client
beforeEach(async () => {
  server = await startServer()
  client = new LockserverClient({ addr: server.addr, secret: server.secret })
})
afterEach(async () => {
  await server.stop()
})

test('a semaphore admits up to its limit', async () => {
  let inside = 0
  let most = 0
  const worker = async () => {
    for (let i = 0; i < 5; i++) {
      await client.withLock('pool', { limit: 3, expire: 10 }, async (permit) => {
        assert.ok(permit.token > 0)
        inside++
        most = Math.max(most, inside)
        await sleep(5)
        inside--
      })
    }
  }
  await Promise.all(Array.from({ length: 8 }, worker))
  assert.equal(most, 3)
})

test('semaphore errors, holders and inspect', async () => {
  const a = await client.semaphore('gpu', 2, { holdUntilReleased: true })
  const b = await client.semaphore('gpu', 2, { holdUntilReleased: true })
  assert.ok(b.token > a.token)
  const info = await client.inspect('gpu')
  assert.equal(info.mode, 'permit')
  assert.equal(info.limit, 2)
  assert.deepEqual(info.holders.map((h) => h.owner), [a.owner, b.owner])
  await assert.rejects(client.semaphore('gpu', 2, { wait: 0 }), (error) => {
    assert.equal(error.code, 'LOCKED')
    assert.deepEqual(error.holders, [a.owner, b.owner])
    return true
  })
  await assert.rejects(client.semaphore('gpu', 3, { wait: 0 }), { code: 'LIMIT_MISMATCH', limit: 2 })
  await a.release()
  await b.release()
  await assert.rejects(client.lock('r', { mode: 'read' }), { code: 'BAD_REQUEST' })
  await assert.rejects(client.semaphore('r', 2, { mode: 'shared' }), { code: 'BAD_REQUEST' })
})

test('readers share, a writer goes alone', async () => {
  const r1 = await client.lock('cfg', { mode: 'shared', expire: 10 })
  const r2 = await client.lock('cfg', { mode: 'shared', expire: 10 })
  assert.equal((await client.inspect('cfg')).holders.length, 2)
  assert.equal(await client.tryLock('cfg'), null)
  const writer = client.lock('cfg', { expire: 10, wait: 5 })
  await sleep(50)
  await assert.rejects(client.lock('cfg', { mode: 'shared', wait: 0 }), { code: 'LOCKED' })
  await r1.release()
  await r2.release()
  const w = await writer
  assert.equal((await client.inspect('cfg')).mode, 'exclusive')
  await w.release()
})

test('lockMany takes all or none, and withLock takes arrays', async () => {
  const locks = await client.lockMany(['a', 'b', 'c'], { expire: 10 })
  assert.equal(locks.tokens.length, 3)
  assert.deepEqual(locks.resources, ['a', 'b', 'c'])
  await assert.rejects(client.lockMany(['c', 'd'], { wait: 0 }), { code: 'LOCKED' })
  assert.equal(await client.inspect('d'), null)
  await locks.release()
  assert.equal(locks.held, false)
  const seen = await client.withLock(['x', 'y'], { expire: 10 }, async (held) => held.tokens.length)
  assert.equal(seen, 2)
  assert.equal(await client.inspect('x'), null)
})
