'use strict'
// Starts the real lockserver binary on a free loopback port for the tests.

const { spawn, execFileSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')

const ROOT = path.resolve(__dirname, '..', '..')

function serverBinary() {
  const binary = process.env.LOCKSERVER_BIN || path.join(ROOT, 'target', 'debug', 'lockserver')
  if (!fs.existsSync(binary)) execFileSync('cargo', ['build', '-p', 'lockserver'], { cwd: ROOT, stdio: 'inherit' })
  return binary
}

async function startServer(extraArgs = []) {
  const secret = 'js-' + crypto.randomBytes(16).toString('hex')
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LOCKSERVER_')))
  env.RUST_LOG = 'warn'
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockserver-js-'))
  const child = spawn(serverBinary(), ['--bind', '127.0.0.1', '--port', '0', '--secret', secret, '--data-dir', dataDir, ...extraArgs], {
    env,
    cwd: '/',
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const lines = readline.createInterface({ input: child.stdout })
  const addr = await new Promise((resolve, reject) => {
    lines.on('line', (line) => {
      if (line.startsWith('lockserver listening on ')) resolve(line.split(' ').pop())
    })
    child.on('exit', () => reject(new Error('lockserver exited before listening')))
  })
  return {
    addr,
    secret,
    stop() {
      child.kill('SIGKILL')
      const exited = child.exitCode !== null || child.signalCode !== null
      return new Promise((resolve) => (exited ? resolve() : child.once('exit', resolve))).then(() =>
        fs.rmSync(dataDir, { recursive: true, force: true }),
      )
    },
  }
}

/** Certificates for the TLS tests (scripts/test-certs.sh): ca.pem, server.pem, client.pem, keys. */
function makeCerts() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockserver-js-certs-'))
  execFileSync('bash', [path.join(ROOT, 'scripts', 'test-certs.sh'), dir], { stdio: 'inherit' })
  return dir
}

module.exports = { startServer, makeCerts }
