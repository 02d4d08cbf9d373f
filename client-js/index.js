'use strict'
// The package entry: the generated native binding (binding.js), the LockserverError class that
// every error it rejects with is an instance of, withLock(), list() as an async iterator, and
// AbortSignal support. No protocol logic lives here: every call goes to the Rust client, which
// also builds the errors (code, owner, expiresInMs).

const { registerErrorClass, Cancellation, version, ...native } = require('./binding.js')

class LockserverError extends Error {
  constructor({ code, message, owner, expiresInMs, retryAfterMs, holders, limit }) {
    super(message)
    this.name = 'LockserverError'
    this.code = code
    if (code === 'LOCKED') {
      this.owner = owner
      this.expiresInMs = expiresInMs ?? null
      this.holders = holders ?? []
    }
    if (code === 'LIMIT_MISMATCH') this.limit = limit ?? null
    if (code === 'RATE_LIMITED') this.retryAfterMs = retryAfterMs ?? null
  }
}

registerErrorClass(LockserverError)

// napi throws its own errors (`StringExpected`, ...) when an argument has the wrong type: make
// every such error a LockserverError with code BAD_REQUEST, as a bad value is.
function argumentError(error) {
  if (error instanceof LockserverError) return error
  return new LockserverError({ code: 'BAD_REQUEST', message: `invalid argument: ${error.message}` })
}

for (const cls of [native.LockserverClient, native.LockHandle, native.MultiLockHandle, native.Lease, native.Listing, native.Watch]) {
  for (const name of Object.getOwnPropertyNames(cls.prototype)) {
    const method = Object.getOwnPropertyDescriptor(cls.prototype, name).value
    if (name === 'constructor' || typeof method !== 'function') continue
    cls.prototype[name] = function (...args) {
      try {
        return method.apply(this, args)
      } catch (error) {
        return Promise.reject(argumentError(error))
      }
    }
  }
}

class LockserverClient extends native.LockserverClient {
  constructor(options) {
    try {
      super(options)
    } catch (error) {
      throw argumentError(error)
    }
  }

  /** Acquires `resource`; `options.signal` (an AbortSignal) gives the wait up. */
  async lock(resource, options) {
    const { signal, ...rest } = options ?? {}
    if (signal === undefined) return super.lock(resource, options)
    signal.throwIfAborted()
    const cancellation = new Cancellation()
    const onAbort = () => cancellation.cancel()
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      return await super.lock(resource, rest, cancellation)
    } catch (error) {
      if (signal.aborted) throw signal.reason
      throw error
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }

  /** One of `limit` permits of the semaphore `resource`; the options are those of `lock`. */
  async semaphore(resource, limit, options) {
    return this.lock(resource, { ...(options ?? {}), limit })
  }

  async withLock(resource, options, callback) {
    if (typeof options === 'function') {
      callback = options
      options = undefined
    }
    const lock = Array.isArray(resource) ? await this.lockMany(resource, options) : await this.lock(resource, options)
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

  /** The events of `resource`, starting with a `reset` (its state); `signal` ends the iteration. */
  async *watch(resource, { signal } = {}) {
    yield* events(this.openWatch(resource), signal)
  }

  /** The events of every lock whose name starts with `prefix`. */
  async *watchPrefix(prefix = '', { signal } = {}) {
    yield* events(this.openWatchPrefix(prefix), signal)
  }

  async *list(prefix = '', { pageSize = 100 } = {}) {
    const listing = this.listing(prefix, pageSize)
    for (let page = await listing.nextPage(); page !== null; page = await listing.nextPage()) {
      yield* page
    }
  }
}

/** Iterates a native watch until `signal` aborts (then rejects with `signal.reason`). */
async function* events(watch, signal) {
  signal?.throwIfAborted()
  const cancellation = new Cancellation()
  const onAbort = () => cancellation.cancel()
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    for (;;) {
      const event = await watch.next(cancellation)
      if (event === null) throw signal?.reason ?? new Error('the watch was closed')
      yield event
    }
  } finally {
    signal?.removeEventListener('abort', onAbort)
    cancellation.cancel()
    watch.close()
  }
}

module.exports = { ...native, LockserverClient, LockserverError, version: version() }
