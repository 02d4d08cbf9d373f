'use strict'
// The Node client against the real server binary.

const assert = require('node:assert/strict')
const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { test, beforeEach, afterEach } = require('node:test')

const { LockserverClient, LockserverError } = require('..')
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

test('the reference acquire and release', async () => {
  const first = new LockserverClient({ addr: server.addr, secret: server.secret, owner: 'worker-1' })
  const second = new LockserverClient({ addr: server.addr, secret: server.secret, owner: 'worker-2' })
  assert.equal(first.owner, 'worker-1')
  assert.equal(await first.acquire('res'), true)
  assert.equal(await first.acquire('res'), true) // the same owner again: idempotent
  assert.equal(await second.acquire('res', false), false)
  await assert.rejects(second.release('res'), { name: 'LockserverError', code: 'NOT_OWNER' })
  await first.release('res')
  await assert.rejects(first.release('res'), (error) => error instanceof LockserverError && error.code === 'NOT_HELD')
  assert.equal(await first.acquire('res', true, 0.5), true)
  const started = Date.now()
  assert.equal(await second.acquire('res'), true) // waits for the expiry
  assert.ok(Date.now() - started >= 300)
  await second.release('res')
})

test('lock handles: token, value, refresh, release', async () => {
  const lock = await client.lock('job', { expire: 5, value: 'started' })
  assert.ok(lock.token > 0)
  assert.equal(lock.resource, 'job')
  assert.equal(lock.value, 'started')
  assert.equal(lock.held, true)
  await lock.setValue('half done')
  assert.equal(lock.value, 'half done')
  await lock.refresh()
  assert.equal(lock.lost, false)
  const info = await client.inspect('job')
  assert.equal(info.owner, lock.owner)
  assert.equal(info.value, 'half done')
  assert.equal(info.token, lock.token)
  await lock.release()
  await lock.release() // a second release is a no-op
  assert.equal(lock.held, false)
  assert.equal(await client.inspect('job'), null)
  await assert.rejects(lock.setValue('late'), { code: 'NOT_HELD' })
})

test('tryLock resolves null while held; a bounded wait rejects LOCKED', async () => {
  const held = await client.tryLock('busy')
  assert.ok(held)
  assert.equal(await client.tryLock('busy'), null)
  await assert.rejects(client.lock('busy', { wait: 0.2 }), { code: 'LOCKED' })
  await held.release()
  const again = await client.tryLock('busy')
  assert.ok(again)
  await again.release()
})

test('withLock returns the value and releases, also when the callback throws', async () => {
  const value = await client.withLock('scoped', { expire: 5 }, async (lock) => {
    assert.ok(lock.token > 0)
    return 42
  })
  assert.equal(value, 42)
  assert.equal(await client.inspect('scoped'), null)
  await assert.rejects(
    client.withLock('scoped', async () => {
      throw new Error('the callback failed')
    }),
    { message: 'the callback failed' },
  )
  assert.equal(await client.inspect('scoped'), null)
})

test('the keepalive holds a short lock; a takeover is noticed', async () => {
  const lock = await client.lock('long', { expire: 1 })
  await sleep(2500)
  assert.equal(lock.lost, false)
  assert.equal((await client.inspect('long')).token, lock.token)
  await lock.release()

  const taken = await client.lock('taken', { expire: 1 })
  const thief = new LockserverClient({ addr: server.addr, secret: server.secret, owner: taken.owner })
  await thief.release('taken')
  await Promise.race([taken.whenLost(), sleep(3000).then(() => assert.fail('whenLost() did not resolve'))])
  assert.equal(taken.lost, true)
  await assert.rejects(taken.release(), { code: 'LOCK_LOST' })
})

test('leases keep themselves alive and release their locks when revoked', async () => {
  const lease = await client.grantLease(1)
  assert.equal(lease.ttl, 1)
  const lock = await client.lock('leader', { lease: lease.id })
  await sleep(2000)
  assert.equal(lease.lost, false)
  assert.equal((await client.inspect('leader')).lease, lease.id)
  await lease.keepalive()
  await lease.revoke()
  assert.equal(await client.inspect('leader'), null)
  await assert.rejects(client.lock('orphan', { lease: lease.id }), { code: 'NO_SUCH_LEASE' })
  await lock.release().catch(() => {})
})

test('16 concurrent tasks and 4 worker processes exclude each other', async () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'lockserver-js-')), 'counter')
  fs.writeFileSync(file, '0')
  const tasks = Array.from({ length: 16 }, async () => {
    const own = new LockserverClient({ addr: server.addr, secret: server.secret })
    for (let i = 0; i < 5; i++) {
      await own.withLock('file-counter', { expire: 10 }, async () => {
        const value = Number(fs.readFileSync(file, 'utf8'))
        await sleep(1)
        fs.writeFileSync(file, String(value + 1))
      })
    }
  })
  const workers = Array.from(
    { length: 4 },
    () =>
      new Promise((resolve, reject) => {
        const child = fork(path.join(__dirname, 'worker.js'), [server.addr, server.secret, file, '10'])
        child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`worker exited ${code}`))))
      }),
  )
  await Promise.all([...tasks, ...workers])
  assert.equal(Number(fs.readFileSync(file, 'utf8')), 16 * 5 + 4 * 10)
})

test('the event loop keeps running while a lock is awaited', async () => {
  const held = await client.lock('slow')
  let ticks = 0
  const timer = setInterval(() => ticks++, 20)
  setTimeout(() => held.release(), 1000)
  const lock = await client.lock('slow')
  clearInterval(timer)
  assert.ok(ticks >= 30, `only ${ticks} ticks while waiting`)
  await lock.release()
})

test('errors when the server is down or the secret is wrong', async () => {
  const wrong = new LockserverClient({ addr: server.addr, secret: 'wrong' })
  await assert.rejects(wrong.acquire('x'), { code: 'UNAUTHORIZED' })
  await server.stop()
  await assert.rejects(client.acquire('x'), (error) => error instanceof LockserverError && error.code === 'UNAVAILABLE')
  await assert.rejects(client.withLock('x', async () => 1), { code: 'UNAVAILABLE' })
  await assert.rejects(client.lock('x', { expire: -1 }), { code: 'BAD_REQUEST' })
})

test('a LOCKED rejection carries the holder and its time left as properties', async () => {
  const held = await client.lock('busy', { expire: 30 })
  const other = new LockserverClient({ addr: server.addr, secret: server.secret })
  await assert.rejects(other.lock('busy', { wait: 0 }), (error) =>
    error instanceof LockserverError &&
    error.code === 'LOCKED' &&
    error.owner === held.owner &&
    error.expiresInMs > 20000)
  await held.release()
})

test('locks expire by default, and are held until released only when asked', async () => {
  const lock = await client.lock('default-expiry')
  const left = (await client.inspect('default-expiry')).expiresIn
  assert.ok(left > 25 && left <= 30, `${left}`)
  await lock.release()
  const forever = await client.lock('forever', { holdUntilReleased: true })
  assert.equal((await client.inspect('forever')).expiresIn ?? null, null)
  await forever.release()
  await assert.rejects(client.lock('both', { expire: 5, holdUntilReleased: true }), { code: 'BAD_REQUEST' })
  const never = new LockserverClient({ addr: server.addr, secret: server.secret, defaultExpire: false })
  const configured = await never.lock('configured')
  assert.equal((await never.inspect('configured')).expiresIn ?? null, null)
  await configured.release()
  // The reference API keeps its meaning: without expire, held until released.
  assert.equal(await client.acquire('reference'), true)
  assert.equal((await client.inspect('reference')).expiresIn ?? null, null)
  await client.release('reference')
})

test('an AbortSignal gives a wait up, and the request leaves the queue', async () => {
  const held = await client.lock('queue')
  const other = new LockserverClient({ addr: server.addr, secret: server.secret })
  const controller = new AbortController()
  const waiting = other.lock('queue', { signal: controller.signal })
  await sleep(200)
  assert.equal((await client.inspect('queue')).waiters, 1)
  const started = Date.now()
  controller.abort()
  await assert.rejects(waiting, (error) => error.name === 'AbortError')
  assert.ok(Date.now() - started < 1000)
  for (let i = 0; i < 50 && (await client.inspect('queue')).waiters !== 0; i++) await sleep(20)
  assert.equal((await client.inspect('queue')).waiters, 0)
  await held.release()
  assert.equal(await client.inspect('queue'), null, 'the cancelled request was never granted')
  // Aborted before the call; and withLock takes the signal too.
  await assert.rejects(other.lock('queue', { signal: AbortSignal.abort() }), (error) => error.name === 'AbortError')
  const again = await client.lock('queue')
  await assert.rejects(
    other.withLock('queue', { signal: AbortSignal.timeout(100) }, async () => assert.fail('never granted')),
    (error) => error.name === 'TimeoutError')
  await again.release()
})

test('list() iterates every page, and nothing outside the prefix', async () => {
  const locks = []
  for (let i = 0; i < 25; i++) locks.push(await client.lock(`jobs/${String(i).padStart(2, '0')}`))
  const elsewhere = await client.lock('elsewhere')
  const names = []
  for await (const info of client.list('jobs/', { pageSize: 10 })) names.push(info.resource)
  assert.deepEqual(names, Array.from({ length: 25 }, (_, i) => `jobs/${String(i).padStart(2, '0')}`))
  for (const lock of locks) await lock.release()
  await elsewhere.release()
  const rest = []
  for await (const info of client.list('jobs/')) rest.push(info)
  assert.deepEqual(rest, [])
})

test('bad arguments are LockserverErrors with code BAD_REQUEST; version and timeouts', async () => {
  assert.throws(() => new LockserverClient({ addr: 5 }), (error) => error instanceof LockserverError && error.code === 'BAD_REQUEST')
  assert.throws(() => new LockserverClient({ addr: server.addr, defaultExpire: true }), { code: 'BAD_REQUEST' })
  await assert.rejects(client.lock(42), (error) => error instanceof LockserverError && error.code === 'BAD_REQUEST')
  await assert.rejects(client.inspect({}), { code: 'BAD_REQUEST' })
  assert.match(require('..').version, /^\d+\.\d+\.\d+$/)

  const net = require('node:net')
  const silent = net.createServer(() => {})
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve))
  const addr = `127.0.0.1:${silent.address().port}`
  const quick = new LockserverClient({ addr, secret: 's', timeout: 0.3 })
  let started = Date.now()
  await assert.rejects(quick.tryLock('r'), { code: 'UNAVAILABLE' })
  assert.ok(Date.now() - started < 5000)
  const slow = new LockserverClient({ addr, secret: 's' })
  started = Date.now()
  await assert.rejects(slow.tryLock('r', { timeout: 0.3 }), { code: 'UNAVAILABLE' })
  assert.ok(Date.now() - started < 5000)
  silent.close()
})

test("the README's Node example runs as written", async () => {
  const readme = fs.readFileSync(path.join(__dirname, '..', '..', 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('### Node'))
  const example = section.match(/```js\n([\s\S]*?)```/)[1]
    .replace("require('lockserver-client')", `require(${JSON.stringify(path.join(__dirname, '..'))})`)
  const script = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'readme-')), 'example.js')
  fs.writeFileSync(script, example)
  const child = fork(script, [], {
    env: { ...process.env, LOCKSERVER_ADDR: server.addr, LOCKSERVER_SECRET: server.secret },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  })
  let output = ''
  child.stdout.on('data', (chunk) => (output += chunk))
  child.stderr.on('data', (chunk) => (output += chunk))
  const code = await new Promise((resolve) => child.on('exit', resolve))
  assert.equal(code, 0, output)
  assert.match(output, /total 2/)
  assert.match(output, /held by/)
})
