'use strict'
// The package entry: the generated native binding (binding.js), the LockserverError class that
// every error it rejects with is an instance of, and withLock(). No protocol logic lives here:
// every call goes to the Rust client, which also builds the errors (code, owner, expiresInMs).

const { registerErrorClass, ...native } = require('./binding.js')

class LockserverError extends Error {
  constructor({ code, message, owner, expiresInMs }) {
    super(message)
    this.name = 'LockserverError'
    this.code = code
    if (code === 'LOCKED') {
      this.owner = owner
      this.expiresInMs = expiresInMs ?? null
    }
  }
}

registerErrorClass(LockserverError)

class LockserverClient extends native.LockserverClient {
  async withLock(resource, options, callback) {
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
}

module.exports = { ...native, LockserverClient, LockserverError }
