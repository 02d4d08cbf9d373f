//! The Rust client of lockserver: the one implementation of its protocol (whose wire format is
//! the `lockserver-protocol` crate), which the Python and Node clients wrap.
//!
//! - [`Client`]: async (Tokio), one pooled keep-alive connection pool, built once and reused.
//! - [`blocking::Client`]: the same API, synchronous, usable outside any runtime.
//! - [`LockGuard`]: a held lock, released on drop, kept alive in the background when it has
//!   an expiry, and telling you ([`LockGuard::lost`]) if it is lost anyway.
//! - [`lock_scope!`]: run a block under a lock; evaluates to `Result<T, Error>`.
//! - [`LockserverClient`]: the API of the lock servers our users come from.
//!
//! Configuration not given in code comes from the environment (or a `.env` file):
//! `LOCKSERVER_ADDR` (default `127.0.0.1:8080`), `LOCKSERVER_SECRET`, `LOCKSERVER_OWNER`
//! (default: unique per client, from the hostname, the pid and a random part).
//!
//! # Async
//!
//! ```
//! # let server = lockserver_tests::TestServer::start(&[]);
//! # std::env::set_var("LOCKSERVER_ADDR", &server.base);
//! # std::env::set_var("LOCKSERVER_SECRET", &server.secret);
//! use std::time::Duration;
//! use lockserver_client::{Client, Error};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::from_env()?;
//! let guard = client
//!     .lock("nightly-report")
//!     .expire(Duration::from_secs(30)) // kept alive in the background until released
//!     .wait(Duration::from_secs(10))   // queue for up to 10 s; without it, wait forever
//!     .acquire()
//!     .await?;
//! println!("fencing token {}", guard.token());
//! guard.set_value("step 1 of 3 done").await?; // the next holder sees it if we die
//! tokio::select! {
//!     _ = tokio::time::sleep(Duration::from_millis(10)) => { /* the work */ }
//!     _ = guard.lost() => return Err(Error::LockLost), // stop before doing damage
//! }
//! guard.release().await?;
//!
//! // Non-blocking: Ok(None) when someone else holds it.
//! if let Some(guard) = client.lock("cleanup").try_acquire().await? {
//!     guard.release().await?;
//! }
//!
//! // A lease: locks acquired under it live as long as it is kept alive (in the background).
//! let lease = client.grant_lease(Duration::from_secs(10)).await?;
//! let leader = client.lock("leader").lease(&lease).acquire().await?;
//! # drop(leader);
//! lease.revoke().await?; // releases "leader"
//!
//! // lock_scope! in async code: `.await` works inside the block.
//! let n = lockserver_client::lock_scope!(async &client, "counter", {
//!     tokio::time::sleep(Duration::from_millis(1)).await;
//!     41 + 1
//! })?;
//! assert_eq!(n, 42);
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```
//!
//! # Blocking
//!
//! ```
//! # let server = lockserver_tests::TestServer::start(&[]);
//! # std::env::set_var("LOCKSERVER_ADDR", &server.base);
//! # std::env::set_var("LOCKSERVER_SECRET", &server.secret);
//! use std::time::Duration;
//! use lockserver_client::{blocking, lock_scope, Error};
//!
//! let client = blocking::Client::from_env()?;
//!
//! // Waits as long as it takes, releases at the end of the block.
//! let total = lock_scope!(&client, "ledger", { 1 + 1 })?;
//!
//! // Non-blocking: Err(Error::Locked { owner, .. }) when someone else holds it.
//! let outcome = lock_scope!(&client, "ledger", non_blocking, { "did it" });
//! assert_eq!(outcome?, "did it");
//!
//! // With an expiry, kept alive while the block runs.
//! lock_scope!(&client, "ledger", expire = Duration::from_secs(5), { /* ... */ })?;
//!
//! // Guards, as in async code.
//! let guard = client.lock("ledger").expire(Duration::from_secs(5)).acquire()?;
//! assert!(!guard.is_lost());
//! guard.release()?;
//!
//! // One of 4 permits of a semaphore; a reader of a read-write lock; two locks at once.
//! lock_scope!(&client, "gpu-pool", semaphore = 4, { /* up to 4 at once */ })?;
//! lock_scope!(&client, "config", shared, non_blocking, { /* readers together */ })?;
//! let both = client.lock_many(&["account-a", "account-b"]).acquire()?;
//! assert_eq!(both.tokens().len(), 2);
//! both.release()?;
//! # assert_eq!(total, 2);
//! # Ok::<(), Error>(())
//! ```
//!
//! # The reference API
//!
//! ```
//! # let server = lockserver_tests::TestServer::start(&[]);
//! # std::env::set_var("LOCKSERVER_ADDR", &server.base);
//! # std::env::set_var("LOCKSERVER_SECRET", &server.secret);
//! use lockserver_client::{lock_scope, LockMode, LockserverClient};
//!
//! // Address, owner and secret from the environment when None.
//! let client = LockserverClient::new_with_env(None::<String>, Some("worker-1"), None::<String>);
//! client.acquire("resource")?;
//! client.release("resource")?;
//! client.acquire_with_mode_and_expire("resource", LockMode::NonBlocking, Some(10))?;
//! client.release("resource")?;
//! lock_scope!(&client, "resource", { /* critical section */ })?;
//! # Ok::<(), lockserver_client::Error>(())
//! ```

pub mod blocking;
mod client;
mod error;
mod keepalive;
mod lease;
mod listing;
mod lock;
mod multi;
mod operator;
mod options;
mod reference;
mod shared;
mod tls;
mod types;
mod watch;
mod wire;

pub use client::{Client, ClientBuilder, DEFAULT_ADDR, DEFAULT_GUARD_EXPIRE};
pub use error::{Error, Result};
pub use lease::Lease;
pub use listing::Listing;
pub use lock::{Async, LockBuilder, LockGuard, MAX_WAIT_CHUNK};
pub use lockserver_protocol::bodies::Mode;
pub use lockserver_protocol::SECRET_HEADER;
pub use multi::{MultiLockBuilder, MultiLockGuard};
pub use operator::Health;
pub use options::{seconds, LockOptions};
pub use reference::{LockMode, LockserverClient};
pub use shared::Shared;
pub use types::{Grant, HolderInfo, LeaseInfo, LockInfo, LockPage, Refreshed};
pub use watch::{Watch, WatchEvent, WatchEventKind};

/// What a [`lock_scope!`] holds: the lock alone, as one of its shared holders, or one of a
/// semaphore's permits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    /// The lock alone.
    Exclusive,
    /// As one of its shared holders (a read-write lock's reader).
    Shared,
    /// One of this many permits of a semaphore.
    Semaphore(u32),
}

impl ScopeKind {
    /// Applies the kind to a builder.
    #[doc(hidden)]
    pub fn apply<M>(self, builder: LockBuilder<M>) -> LockBuilder<M> {
        match self {
            ScopeKind::Exclusive => builder,
            ScopeKind::Shared => builder.shared(),
            ScopeKind::Semaphore(limit) => builder.permits(limit),
        }
    }
}

/// A client that [`lock_scope!`] can lock with: the blocking client and the reference client.
pub trait ScopedLock {
    /// Acquires `resource` for a scope, as `kind` says: waiting as long as it takes, or not
    /// at all (`non_blocking`: [`Error::Locked`]), with an optional expiry kept alive meanwhile.
    fn lock_for_scope(
        &self,
        resource: &str,
        kind: ScopeKind,
        non_blocking: bool,
        expire: Option<std::time::Duration>,
    ) -> Result<blocking::LockGuard>;
}

#[doc(hidden)]
pub mod __private {
    use std::time::Duration;

    use crate::{Client, LockGuard, Result, ScopeKind};

    /// The acquisition behind `lock_scope!(async ...)`.
    pub async fn scope_lock(
        client: &Client,
        resource: &str,
        kind: ScopeKind,
        non_blocking: bool,
        expire: Option<Duration>,
    ) -> Result<LockGuard> {
        kind.apply(client.lock(resource)).for_scope(non_blocking, expire).acquire().await
    }
}

/// Runs a block under a lock and releases it after; evaluates to `Result<T, Error>` with the
/// block's value.
///
/// Forms (`client` is a [`blocking::Client`] or a [`LockserverClient`]; with `async`, a
/// [`Client`], and the block may `.await`):
///
/// - `lock_scope!(&client, "res", { ... })`: waits as long as it takes;
/// - `lock_scope!(&client, "res", non_blocking, { ... })`: `Err(Error::Locked {..})` when held;
/// - `lock_scope!(&client, "res", expire = duration, { ... })` (also after `non_blocking,`):
///   the lock expires unless kept alive, which the guard does while the block runs;
/// - `lock_scope!(&client, "res", shared, ...)` and `lock_scope!(&client, "res", semaphore = n,
///   ...)`, followed by any of the forms above (`{ ... }`, `non_blocking, { ... }`, ...): as one
///   of the lock's shared holders, or as one of `n` permits of a semaphore;
/// - `lock_scope!(async &client, "res", ...)`: the same forms in async code.
///
/// It never panics when the server is down or the lock is taken: those are `Err`s. If the
/// lock was lost while the block ran, the result is `Err(Error::LockLost)`: the block's work
/// may have overlapped with another holder's. A `return` or `?` inside the block leaves the
/// scope early and the lock is released in the background.
#[macro_export]
macro_rules! lock_scope {
    (@kind $kind:expr, async $client:expr, $resource:expr, non_blocking, expire = $expire:expr, $body:block) => {
        $crate::__lock_scope_async!($client, $resource, $kind, true, ::core::option::Option::Some($expire), $body)
    };
    (@kind $kind:expr, async $client:expr, $resource:expr, non_blocking, $body:block) => {
        $crate::__lock_scope_async!($client, $resource, $kind, true, ::core::option::Option::None, $body)
    };
    (@kind $kind:expr, async $client:expr, $resource:expr, expire = $expire:expr, $body:block) => {
        $crate::__lock_scope_async!($client, $resource, $kind, false, ::core::option::Option::Some($expire), $body)
    };
    (@kind $kind:expr, async $client:expr, $resource:expr, $body:block) => {
        $crate::__lock_scope_async!($client, $resource, $kind, false, ::core::option::Option::None, $body)
    };
    (@kind $kind:expr, $client:expr, $resource:expr, non_blocking, expire = $expire:expr, $body:block) => {
        $crate::__lock_scope_blocking!($client, $resource, $kind, true, ::core::option::Option::Some($expire), $body)
    };
    (@kind $kind:expr, $client:expr, $resource:expr, non_blocking, $body:block) => {
        $crate::__lock_scope_blocking!($client, $resource, $kind, true, ::core::option::Option::None, $body)
    };
    (@kind $kind:expr, $client:expr, $resource:expr, expire = $expire:expr, $body:block) => {
        $crate::__lock_scope_blocking!($client, $resource, $kind, false, ::core::option::Option::Some($expire), $body)
    };
    (@kind $kind:expr, $client:expr, $resource:expr, $body:block) => {
        $crate::__lock_scope_blocking!($client, $resource, $kind, false, ::core::option::Option::None, $body)
    };
    (async $client:expr, $resource:expr, shared, $($rest:tt)+) => {
        $crate::lock_scope!(@kind $crate::ScopeKind::Shared, async $client, $resource, $($rest)+)
    };
    (async $client:expr, $resource:expr, semaphore = $limit:expr, $($rest:tt)+) => {
        $crate::lock_scope!(@kind $crate::ScopeKind::Semaphore($limit), async $client, $resource, $($rest)+)
    };
    (async $client:expr, $($rest:tt)+) => {
        $crate::lock_scope!(@kind $crate::ScopeKind::Exclusive, async $client, $($rest)+)
    };
    ($client:expr, $resource:expr, shared, $($rest:tt)+) => {
        $crate::lock_scope!(@kind $crate::ScopeKind::Shared, $client, $resource, $($rest)+)
    };
    ($client:expr, $resource:expr, semaphore = $limit:expr, $($rest:tt)+) => {
        $crate::lock_scope!(@kind $crate::ScopeKind::Semaphore($limit), $client, $resource, $($rest)+)
    };
    ($client:expr, $($rest:tt)+) => {
        $crate::lock_scope!(@kind $crate::ScopeKind::Exclusive, $client, $($rest)+)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __lock_scope_blocking {
    ($client:expr, $resource:expr, $kind:expr, $non_blocking:expr, $expire:expr, $body:block) => {
        match $crate::ScopedLock::lock_for_scope(
            $client,
            ::core::convert::AsRef::<str>::as_ref(&$resource),
            $kind,
            $non_blocking,
            $expire,
        ) {
            ::core::result::Result::Ok(guard) => {
                let value = $body;
                guard.release().map(|()| value)
            }
            ::core::result::Result::Err(error) => ::core::result::Result::Err(error),
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __lock_scope_async {
    ($client:expr, $resource:expr, $kind:expr, $non_blocking:expr, $expire:expr, $body:block) => {
        match $crate::__private::scope_lock(
            $client,
            ::core::convert::AsRef::<str>::as_ref(&$resource),
            $kind,
            $non_blocking,
            $expire,
        )
        .await
        {
            ::core::result::Result::Ok(guard) => {
                let value = $body;
                guard.release().await.map(|()| value)
            }
            ::core::result::Result::Err(error) => ::core::result::Result::Err(error),
        }
    };
}
