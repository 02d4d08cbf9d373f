//! Node bindings of the lockserver Rust client, built with napi-rs.
//!
//! They convert types, errors and async, nothing more; the modules mirror the Python binding's:
//! - `client.rs`: `LockserverClient` (the reference calls, locks, leases, inspection);
//! - `lock.rs`: `LockHandle`, a held lock (or shared hold, or semaphore permit);
//! - `multi.rs`: `MultiLockHandle`, the held locks of a multi-lock;
//! - `lease.rs`: `Lease`;
//! - `info.rs`: `LockInfo`, a held lock as `inspect` and `list` give it;
//! - `listing.rs`: `Listing`, the pages behind `list()`;
//! - `cancel.rs`: `Cancellation`, how an `AbortSignal` ends a wait;
//! - `errors.rs`: client errors as `LockserverError` instances, and promises that reject with
//!   them.
//!
//! Every call goes to `lockserver_client::Client` on napi's Tokio runtime, so none blocks the
//! event loop.

mod cancel;
mod client;
mod errors;
mod info;
mod lease;
mod listing;
mod lock;
mod multi;
mod watch;
