'use strict'
// A separate process incrementing a shared file counter under the lock.

const fs = require('node:fs')
const { LockserverClient } = require('..')

async function main() {
  const [addr, secret, file, rounds] = process.argv.slice(2)
  const client = new LockserverClient({ addr, secret })
  for (let i = 0; i < Number(rounds); i++) {
    await client.withLock('file-counter', { expire: 10 }, async () => {
      const value = Number(fs.readFileSync(file, 'utf8'))
      await new Promise((resolve) => setTimeout(resolve, 1))
      fs.writeFileSync(file, String(value + 1))
    })
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
