/* Declarations of what index.js adds around the generated binding. */

/** The stable error codes: the Rust client's codes, upper case (a test checks they match). */
export type LockserverErrorCode =
  | 'LOCKED'
  | 'LIMIT_MISMATCH'
  | 'NOT_HELD'
  | 'NOT_OWNER'
  | 'NO_SUCH_LEASE'
  | 'LOCK_LOST'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'RATE_LIMITED'
  | 'QUOTA_EXCEEDED'
  | 'BAD_REQUEST'
  | 'UNAVAILABLE'
  | 'CANCELLED'
  | 'SERVER'

/** Every error of this package: `code` says which, `message` is the server's text. */
export declare class LockserverError extends Error {
  readonly code: LockserverErrorCode
  /** `LOCKED`: the current holder. */
  readonly owner?: string
  /** `LOCKED`: milliseconds left on the current hold, or null without expiry. */
  readonly expiresInMs?: number | null
  /** `LOCKED`: every current holder (a semaphore's, or a read-write lock's readers). */
  readonly holders?: string[]
  /** `LIMIT_MISMATCH`: the semaphore's limit now, or null when the resource is a lock. */
  readonly limit?: number | null
  /** `RATE_LIMITED`: milliseconds until the server accepts a request again (from `Retry-After`). */
  readonly retryAfterMs?: number | null
  constructor(fields: ErrorFields)
}

/** The package's version. */
export declare const version: string

export interface LockOptions {
  /** Gives the wait up when aborted: the promise rejects with `signal.reason`. */
  signal?: AbortSignal
}

export interface LockserverClient {
  /**
   * Every held lock whose name starts with `prefix`, in name order, fetched `pageSize` (100)
   * at a time as the iteration goes.
   */
  list(prefix?: string, options?: { pageSize?: number }): AsyncIterableIterator<LockInfo>
  /**
   * The events of `resource`, starting with a `reset` that says who holds it now; reconnects by
   * itself and never ends on its own. Aborting `signal` ends the iteration with `signal.reason`.
   */
  watch(resource: string, options?: { signal?: AbortSignal }): AsyncIterableIterator<WatchEvent>
  /** The events of every lock whose name starts with `prefix` (`''`: all of them). */
  watchPrefix(prefix?: string, options?: { signal?: AbortSignal }): AsyncIterableIterator<WatchEvent>
  /**
   * Acquires `resource`, runs `callback` with the lock handle, and releases the lock in
   * `finally`; resolves to the callback's value. If the lock was lost meanwhile, rejects
   * with `LOCK_LOST` (the callback's work may have overlapped another holder's).
   * `options.mode: 'shared'` takes it shared, `options.limit: n` as one of n permits of a
   * semaphore.
   */
  /**
   * One of `limit` permits of the semaphore `resource` (1 to 10,000): up to `limit` holders at
   * once, each with its own token and expiry. Every user must give the same limit
   * (`LIMIT_MISMATCH` otherwise).
   */
  semaphore(resource: string, limit: number, options?: LockOptions | null): Promise<LockHandle>
  withLock<T>(resource: string, options: LockOptions | undefined | null, callback: (lock: LockHandle) => T | Promise<T>): Promise<T>
  withLock<T>(resource: string, callback: (lock: LockHandle) => T | Promise<T>): Promise<T>
  /** `withLock` of a multi-lock: every lock of `resources` at once, released together. */
  withLock<T>(resources: string[], options: LockOptions | undefined | null, callback: (locks: MultiLockHandle) => T | Promise<T>): Promise<T>
  withLock<T>(resources: string[], callback: (locks: MultiLockHandle) => T | Promise<T>): Promise<T>
}
