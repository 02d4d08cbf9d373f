'use strict'
// The Node client over HTTPS (a private CA, mutual TLS) and against API keys: each refusal
// has its own code.

const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { test, before, after } = require('node:test')

const { LockserverClient } = require('..')
const { startServer, makeCerts } = require('./server.js')

let certs
let server
before(async () => {
  certs = makeCerts()
  server = await startServer([
    '--tls-cert', path.join(certs, 'server.pem'),
    '--tls-key', path.join(certs, 'server-key.pem'),
    '--tls-client-ca', path.join(certs, 'ca.pem'),
  ])
})
after(async () => {
  await server.stop()
  fs.rmSync(certs, { recursive: true, force: true })
})

test('https with a CA file and a client certificate', async () => {
  assert.ok(server.addr.startsWith('https://'))
  const client = new LockserverClient({
    addr: server.addr,
    secret: server.secret,
    caFile: path.join(certs, 'ca.pem'),
    certFile: path.join(certs, 'client.pem'),
    keyFile: path.join(certs, 'client-key.pem'),
  })
  const lock = await client.lock('over-tls', { expire: 10 })
  assert.ok(lock.token > 0)
  await lock.release()
})

test('a client without the CA is refused', async () => {
  const client = new LockserverClient({
    addr: server.addr,
    secret: server.secret,
    certFile: path.join(certs, 'client.pem'),
    keyFile: path.join(certs, 'client-key.pem'),
  })
  await assert.rejects(client.tryLock('x'), (error) => error.code === 'UNAVAILABLE' && /UnknownIssuer/.test(error.message))
  const withoutCert = new LockserverClient({ addr: server.addr, secret: server.secret, caFile: path.join(certs, 'ca.pem') })
  await assert.rejects(withoutCert.tryLock('y'), { code: 'UNAVAILABLE' })
})

test('roles, quotas and rates have codes of their own', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockserver-js-keys-'))
  const keys = path.join(dir, 'keys.toml')
  fs.writeFileSync(
    keys,
    "[[key]]\nname='reader'\nsecret='r'\nnamespace='n'\nrole='read'\n" +
      "[[key]]\nname='small'\nsecret='s'\nnamespace='n'\nrole='lock'\nmax_locks=1\nrate=3\n",
  )
  const keyed = await startServer(['--keys-file', keys])
  try {
    const reader = new LockserverClient({ addr: keyed.addr, secret: 'r' })
    await assert.rejects(reader.tryLock('a'), { name: 'LockserverError', code: 'FORBIDDEN' })
    const small = new LockserverClient({ addr: keyed.addr, secret: 's' })
    const held = await small.tryLock('one', { expire: 30 })
    await assert.rejects(small.tryLock('two'), { code: 'QUOTA_EXCEEDED' })
    let limited
    for (let i = 0; i < 50 && !limited; i++) {
      await small.inspect('one').catch((error) => (limited = error))
    }
    assert.equal(limited?.code, 'RATE_LIMITED')
    assert.equal(limited.retryAfterMs, 1000)
    assert.ok(held.token > 0)
  } finally {
    await keyed.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
