//! The API of the HTTP lock servers our users come from, as thin wrappers over the
//! [blocking client](crate::blocking::Client), so that code written for them ports by
//! changing one line.

use std::time::Duration;

use crate::blocking;
use crate::error::{Error, Result};
use crate::Client;

/// Whether an acquire waits for the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Wait until the lock is granted.
    Blocking,
    /// Answer [`Error::Locked`](crate::Error::Locked) at once when the lock is held.
    NonBlocking,
}

impl LockMode {
    /// `Blocking` when `blocking` (the bindings' `blocking=True` flag).
    pub fn from_blocking(blocking: bool) -> Self {
        if blocking {
            LockMode::Blocking
        } else {
            LockMode::NonBlocking
        }
    }
}

/// A client with one fixed owner id, acquiring and releasing by resource name.
#[derive(Clone)]
pub struct LockserverClient {
    client: blocking::Client,
}

impl LockserverClient {
    /// A client for the server at `addr` (`host:port`) acting as `owner`.
    pub fn new(addr: impl Into<String>, owner: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::new_with_env(Some(addr), Some(owner), Some(secret))
    }

    /// Like [`new`](Self::new); what is `None` comes from `LOCKSERVER_ADDR`,
    /// `LOCKSERVER_OWNER` and `LOCKSERVER_SECRET` (or `.env`).
    pub fn new_with_env(
        addr: Option<impl Into<String>>,
        owner: Option<impl Into<String>>,
        secret: Option<impl Into<String>>,
    ) -> Self {
        let builder = crate::ClientBuilder::default().options(
            addr.map(Into::into),
            owner.map(Into::into),
            secret.map(Into::into),
        );
        // Building fails only if the platform's HTTP stack cannot start at all.
        let client = builder.build_blocking().expect("building the lockserver HTTP client");
        LockserverClient { client }
    }

    /// The blocking client underneath, for guards, leases and values.
    pub fn client(&self) -> &blocking::Client {
        &self.client
    }

    /// This client's owner id.
    pub fn owner(&self) -> &str {
        self.client.owner()
    }

    /// Acquires `resource`, waiting until it is granted; held until released.
    pub fn acquire(&self, resource: &str) -> Result<()> {
        self.acquire_with_mode_and_expire(resource, LockMode::Blocking, None)
    }

    /// Acquires `resource` waiting or not; held until released.
    pub fn acquire_with_mode(&self, resource: &str, mode: LockMode) -> Result<()> {
        self.acquire_with_mode_and_expire(resource, mode, None)
    }

    /// Acquires `resource` waiting or not; with `expire`, the lock expires after that many
    /// seconds unless released first (it is not kept alive).
    pub fn acquire_with_mode_and_expire(
        &self,
        resource: &str,
        mode: LockMode,
        expire: Option<u64>,
    ) -> Result<()> {
        let expire = expire.map(Duration::from_secs);
        blocking::block_on(self.client.as_async().acquire_as_owner(resource, mode, expire))
    }

    /// Releases `resource` held by this client's owner.
    pub fn release(&self, resource: &str) -> Result<()> {
        blocking::block_on(self.client.as_async().release_as_owner(resource))
    }
}

impl Client {
    /// Acquires `resource` as this client's own owner id, outside any guard: the lock stays
    /// held after the call, until [`release_as_owner`](Self::release_as_owner) or `expire`
    /// (not kept alive). Acquiring again is idempotent. This is the reference API's acquire,
    /// which every binding's reference wrapper calls.
    pub async fn acquire_as_owner(
        &self,
        resource: &str,
        mode: LockMode,
        expire: Option<Duration>,
    ) -> Result<()> {
        let mut lock =
            self.lock(resource).owner(self.owner()).for_scope(mode == LockMode::NonBlocking, expire);
        if expire.is_none() {
            lock = lock.hold_until_released(); // the reference API's meaning of no expire
        }
        lock.acquire().await.map(|guard| {
            guard.detach();
        })
    }

    /// [`acquire_as_owner`](Self::acquire_as_owner) as the bindings' reference `acquire`
    /// answers: `Ok(false)` when a non-blocking acquire found the lock held elsewhere.
    pub async fn try_acquire_as_owner(
        &self,
        resource: &str,
        mode: LockMode,
        expire: Option<Duration>,
    ) -> Result<bool> {
        match self.acquire_as_owner(resource, mode, expire).await {
            Ok(()) => Ok(true),
            Err(Error::Locked { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Releases `resource` held by this client's own owner id (the reference API's release).
    pub async fn release_as_owner(&self, resource: &str) -> Result<()> {
        self.transport().release(resource, self.owner(), None, false).await
    }
}

impl crate::ScopedLock for LockserverClient {
    fn lock_for_scope(
        &self,
        resource: &str,
        kind: crate::ScopeKind,
        non_blocking: bool,
        expire: Option<Duration>,
    ) -> Result<blocking::LockGuard> {
        self.client.lock_for_scope(resource, kind, non_blocking, expire)
    }
}

impl From<LockserverClient> for blocking::Client {
    fn from(client: LockserverClient) -> Self {
        client.client
    }
}
