'use strict'
// The package entry: the generated native binding (binding.js), with its errors turned into
// LockserverError instances and withLock() added. No protocol logic lives here: every call
// goes to the Rust client.

const native = require('./binding.js')

class LockserverError extends Error {
  constructor(code, message) {
    super(message)
    this.name = 'LockserverError'
    this.code = code
  }
}

// The binding rejects with messages of the form "[CODE] text".
const CODED = /^\[([A-Z_]+)\] ([\s\S]*)$/

function translate(error) {
  const match = error instanceof Error && CODED.exec(error.message)
  return match ? new LockserverError(match[1], match[2]) : error
}

function translateRejections(prototype, names) {
  for (const name of names) {
    const call = prototype[name]
    prototype[name] = async function (...args) {
      try {
        return await call.apply(this, args)
      } catch (error) {
        throw translate(error)
      }
    }
  }
}

translateRejections(native.LockserverClient.prototype, ['acquire', 'release', 'lock', 'tryLock', 'grantLease', 'inspect'])
translateRejections(native.LockHandle.prototype, ['setValue', 'refresh', 'release', 'whenLost'])
translateRejections(native.Lease.prototype, ['keepalive', 'revoke'])

native.LockserverClient.prototype.withLock = async function (resource, options, callback) {
  if (typeof options === 'function') {
    callback = options
    options = undefined
  }
  const lock = await this.lock(resource, options)
  let result
  try {
    result = await callback(lock)
  } catch (error) {
    await lock.release().catch(() => {})
    throw error
  }
  await lock.release()
  return result
}

class LockserverClient extends native.LockserverClient {
  constructor(options) {
    try {
      super(options)
    } catch (error) {
      throw translate(error)
    }
  }
}

module.exports = { ...native, LockserverClient, LockserverError }
