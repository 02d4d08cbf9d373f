//! The blocking client: the same API as the async one, synchronous.
//!
//! Every call runs on one shared background Tokio runtime (two threads), which also runs the
//! keepalive of guards and leases. Use it from ordinary threads, not from async code (there,
//! use [`crate::Client`]).

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

use crate::error::{Error, Result};
use crate::types::{LeaseInfo, LockInfo, LockPage};

/// The runtime that every blocking call and background keepalive runs on.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lockserver-client")
            .enable_all()
            .build()
            .expect("starting the lockserver client runtime")
    })
}

/// Runs `future` to completion on the shared runtime.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// A blocking lockserver client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: crate::Client,
}

/// Marks a [`LockBuilder`] of the blocking client.
pub struct Blocking;

/// One acquisition through the blocking client; see [`crate::LockBuilder`] for the options.
pub type LockBuilder = crate::LockBuilder<Blocking>;

/// One multi-lock acquisition through the blocking client; see [`crate::MultiLockBuilder`].
pub type MultiLockBuilder = crate::MultiLockBuilder<Blocking>;

impl Client {
    /// A builder: configure it, then call
    /// [`build_blocking`](crate::ClientBuilder::build_blocking).
    pub fn builder() -> crate::ClientBuilder {
        crate::ClientBuilder::default()
    }

    /// A client configured entirely from the environment (or `.env`).
    pub fn from_env() -> Result<Client> {
        crate::ClientBuilder::default().build_blocking()
    }

    pub(crate) fn from_async(inner: crate::Client) -> Client {
        Client { inner }
    }

    /// The async client underneath, sharing the same connections.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// This client's owner id.
    pub fn owner(&self) -> &str {
        self.inner.owner()
    }

    /// Starts building an acquisition of `resource`.
    pub fn lock(&self, resource: impl Into<String>) -> LockBuilder {
        self.inner.lock_as(resource.into())
    }

    /// Starts building an acquisition of one of `limit` permits of the semaphore `resource`;
    /// see [`crate::Client::semaphore`].
    pub fn semaphore(&self, resource: impl Into<String>, limit: u32) -> LockBuilder {
        self.inner.lock_as(resource.into()).permits(limit)
    }

    /// Starts building a multi-lock of `resources`; see [`crate::Client::lock_many`].
    pub fn lock_many<S: AsRef<str>>(&self, resources: &[S]) -> MultiLockBuilder {
        self.inner.lock_many_as(resources)
    }

    /// Grants a lease kept alive in the background and revoked on drop.
    pub fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        block_on(self.inner.grant_lease(ttl)).map(|lease| Lease { inner: Some(lease) })
    }

    /// Describes `resource` if it is held; `None` when it is free.
    pub fn inspect(&self, resource: &str) -> Result<Option<LockInfo>> {
        block_on(self.inner.inspect(resource))
    }

    /// Lists held locks whose names start with `prefix`, in name order, after `after`.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<LockPage> {
        block_on(self.inner.list(prefix, after, limit))
    }
}

impl LockBuilder {
    /// Acquires the lock, blocking until granted (or until [`wait`](crate::LockBuilder::wait)
    /// runs out: [`Error::Locked`]).
    pub fn acquire(self) -> Result<LockGuard> {
        let until = self.deadline();
        block_on(self.acquire_until(until)).map(LockGuard::new)
    }

    /// Acquires the lock if it is free now; `Ok(None)` when someone else holds it.
    pub fn try_acquire(self) -> Result<Option<LockGuard>> {
        match block_on(self.acquire_until(Some(tokio::time::Instant::now()))) {
            Ok(guard) => Ok(Some(LockGuard::new(guard))),
            Err(Error::Locked { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

impl crate::ScopedLock for Client {
    fn lock_for_scope(
        &self,
        resource: &str,
        kind: crate::ScopeKind,
        non_blocking: bool,
        expire: Option<Duration>,
    ) -> Result<LockGuard> {
        kind.apply(self.lock(resource)).for_scope(non_blocking, expire).acquire()
    }
}

/// A held lock; see [`crate::LockGuard`]. Released on drop, synchronously when dropped
/// outside async code.
#[derive(Debug)]
pub struct LockGuard {
    inner: Option<crate::LockGuard>,
}

impl LockGuard {
    fn new(inner: crate::LockGuard) -> Self {
        LockGuard { inner: Some(inner) }
    }

    fn guard(&self) -> &crate::LockGuard {
        self.inner.as_ref().expect("present until released or dropped")
    }

    /// The lock's name.
    pub fn resource(&self) -> &str {
        self.guard().resource()
    }

    /// The owner id this hold was granted to.
    pub fn owner(&self) -> &str {
        self.guard().owner()
    }

    /// The fencing token.
    pub fn token(&self) -> u64 {
        self.guard().token()
    }

    /// The value stored with the lock.
    pub fn value(&self) -> Option<String> {
        self.guard().value()
    }

    /// Replaces the value stored with the lock.
    pub fn set_value(&self, value: impl Into<String>) -> Result<()> {
        block_on(self.guard().set_value(value))
    }

    /// Refreshes the hold now.
    pub fn refresh(&self) -> Result<()> {
        block_on(self.guard().refresh())
    }

    /// Whether the lock is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.guard().is_lost()
    }

    /// Blocks until the lock is lost or `timeout` passes; true when it was lost.
    pub fn wait_lost(&self, timeout: Duration) -> bool {
        block_on(async { tokio::time::timeout(timeout, self.guard().lost()).await.is_ok() })
    }

    /// Keeps the lock past this guard; see [`crate::LockGuard::detach`].
    pub fn detach(mut self) -> u64 {
        self.inner.take().expect("present until released or dropped").detach()
    }

    /// Releases the lock; [`Error::LockLost`] when it was no longer held by this guard.
    pub fn release(mut self) -> Result<()> {
        let guard = self.inner.take().expect("present until released or dropped");
        block_on(guard.release())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(guard) = self.inner.take() {
            if Handle::try_current().is_err() {
                let _ = block_on(guard.release());
            }
            // Inside async code the async guard's drop releases it in the background.
        }
    }
}

impl MultiLockBuilder {
    /// Acquires every lock at once, blocking until granted (or until the wait runs out:
    /// [`Error::Locked`]).
    pub fn acquire(self) -> Result<MultiLockGuard> {
        let until = self.deadline();
        block_on(self.acquire_until(until)).map(|guard| MultiLockGuard { inner: Some(guard) })
    }

    /// Acquires every lock if all are free now; `Ok(None)` otherwise.
    pub fn try_acquire(self) -> Result<Option<MultiLockGuard>> {
        match block_on(self.acquire_until(Some(tokio::time::Instant::now()))) {
            Ok(guard) => Ok(Some(MultiLockGuard { inner: Some(guard) })),
            Err(Error::Locked { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// Held locks of a multi-lock; see [`crate::MultiLockGuard`]. Released on drop, synchronously
/// when dropped outside async code.
#[derive(Debug)]
pub struct MultiLockGuard {
    inner: Option<crate::MultiLockGuard>,
}

impl MultiLockGuard {
    fn guard(&self) -> &crate::MultiLockGuard {
        self.inner.as_ref().expect("present until released or dropped")
    }

    /// The grants, one per lock, in the order asked.
    pub fn grants(&self) -> &[crate::Grant] {
        self.guard().grants()
    }

    /// The fencing tokens, in the order asked.
    pub fn tokens(&self) -> Vec<u64> {
        self.guard().tokens()
    }

    /// The owner id the locks were granted to.
    pub fn owner(&self) -> &str {
        self.guard().owner()
    }

    /// Whether the locks are known to be lost.
    pub fn is_lost(&self) -> bool {
        self.guard().is_lost()
    }

    /// Keeps the locks past this guard; returns the tokens.
    pub fn detach(mut self) -> Vec<u64> {
        self.inner.take().expect("present until released or dropped").detach()
    }

    /// Releases every lock together; [`Error::LockLost`] if they were no longer all held.
    pub fn release(mut self) -> Result<()> {
        let guard = self.inner.take().expect("present until released or dropped");
        block_on(guard.release())
    }
}

impl Drop for MultiLockGuard {
    fn drop(&mut self) {
        if let Some(guard) = self.inner.take() {
            if Handle::try_current().is_err() {
                let _ = block_on(guard.release());
            }
        }
    }
}

/// A granted lease; see [`crate::Lease`]. Revoked on drop, synchronously when dropped outside
/// async code.
#[derive(Debug)]
pub struct Lease {
    inner: Option<crate::Lease>,
}

impl Lease {
    fn lease(&self) -> &crate::Lease {
        self.inner.as_ref().expect("present until revoked or dropped")
    }

    /// The lease id.
    pub fn id(&self) -> &str {
        self.lease().id()
    }

    /// The time to live each keepalive restores.
    pub fn ttl(&self) -> Duration {
        self.lease().ttl()
    }

    /// Keeps the lease alive now.
    pub fn keepalive(&self) -> Result<()> {
        block_on(self.lease().keepalive())
    }

    /// Whether the lease is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.lease().is_lost()
    }

    /// Describes the lease and the locks held under it.
    pub fn info(&self) -> Result<LeaseInfo> {
        block_on(self.lease().info())
    }

    /// Revokes the lease, releasing every lock held under it.
    pub fn revoke(mut self) -> Result<()> {
        let lease = self.inner.take().expect("present until revoked or dropped");
        block_on(lease.revoke())
    }
}

impl AsRef<str> for Lease {
    fn as_ref(&self) -> &str {
        self.id()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(lease) = self.inner.take() {
            if Handle::try_current().is_err() {
                let _ = block_on(lease.revoke());
            }
        }
    }
}
