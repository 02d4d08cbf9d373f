//! Multi-locks: several locks held at once, exclusively, all or none ([`MultiLockBuilder`],
//! [`MultiLockGuard`]). The server queues a multi-lock in every queue at once, so overlapping
//! multi-locks never deadlock, and a waiting one holds nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::keepalive::{self, Liveness};
use crate::lock::{far_future, Async, LockBuilder, MAX_WAIT_CHUNK};
use crate::options::LockOptions;
use crate::types::Grant;
use crate::wire::Transport;

/// One acquisition of a multi-lock: the same options as a [`LockBuilder`] (expire, wait,
/// lease, timeout, owner), then [`acquire`](Self::acquire) or [`try_acquire`](Self::try_acquire).
#[must_use = "a MultiLockBuilder does nothing until acquire() or try_acquire()"]
pub struct MultiLockBuilder<M = Async> {
    lock: LockBuilder<M>,
}

impl<M> MultiLockBuilder<M> {
    pub(crate) fn new(mut lock: LockBuilder<M>, resources: Vec<String>) -> Self {
        lock.request.resources = resources;
        MultiLockBuilder { lock }
    }

    /// Sets whichever of `options` are given (`value` is refused by the server: a multi-lock
    /// stores none).
    pub fn options(self, options: &LockOptions) -> Self {
        MultiLockBuilder { lock: self.lock.options(options) }
    }

    /// Each hold expires after this long unless refreshed; the guard refreshes them all.
    pub fn expire(self, expire: Duration) -> Self {
        MultiLockBuilder { lock: self.lock.expire(expire) }
    }

    /// The holds have no expiry (see [`LockBuilder::hold_until_released`]).
    pub fn hold_until_released(self) -> Self {
        MultiLockBuilder { lock: self.lock.hold_until_released() }
    }

    /// How long [`acquire`](Self::acquire) waits while any of the locks is held; without it,
    /// forever.
    pub fn wait(self, wait: Duration) -> Self {
        MultiLockBuilder { lock: self.lock.wait(wait) }
    }

    /// Binds the holds to a lease.
    pub fn lease(self, lease: impl AsRef<str>) -> Self {
        MultiLockBuilder { lock: self.lock.lease(lease) }
    }

    /// How long each call may take on top of its server-side wait.
    pub fn timeout(self, timeout: Duration) -> Self {
        MultiLockBuilder { lock: self.lock.timeout(timeout) }
    }

    /// Overrides the owner id of this acquisition.
    pub fn owner(self, owner: impl Into<String>) -> Self {
        MultiLockBuilder { lock: self.lock.owner(owner) }
    }

    pub(crate) async fn acquire_until(self, until: Option<Instant>) -> Result<MultiLockGuard> {
        let LockBuilder { transport, mut request, default_expire, .. } = self.lock;
        if request.expire.is_none() && request.lease.is_none() {
            request.expire = default_expire;
        }
        loop {
            let sent_at = Instant::now();
            request.wait = match until {
                Some(until) => until.saturating_duration_since(sent_at).min(MAX_WAIT_CHUNK),
                None => MAX_WAIT_CHUNK,
            };
            match transport.acquire_many(&request).await {
                Ok(grants) => return Ok(MultiLockGuard::start(&transport, request.expire, grants, sent_at)),
                Err(Error::Locked { .. }) if until.is_none_or(|until| Instant::now() < until) => {}
                Err(error) => return Err(error),
            }
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.lock.deadline()
    }
}

impl MultiLockBuilder<Async> {
    /// Acquires every lock at once, queueing server-side (holding none meanwhile) as long as
    /// [`wait`](Self::wait) allows; [`Error::Locked`] when it runs out.
    pub async fn acquire(self) -> Result<MultiLockGuard> {
        let until = self.deadline();
        self.acquire_until(until).await
    }

    /// Acquires every lock if all are free now; `Ok(None)` otherwise.
    pub async fn try_acquire(self) -> Result<Option<MultiLockGuard>> {
        match self.acquire_until(Some(Instant::now())).await {
            Ok(guard) => Ok(Some(guard)),
            Err(Error::Locked { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// Held locks of a multi-lock, each with its own fencing token. Released together on drop
/// (best effort); call [`release`](Self::release) to know that they were. Holds with an expiry
/// are kept alive in the background; [`is_lost`](Self::is_lost) turns true when that fails.
pub struct MultiLockGuard {
    hold: Arc<MultiHold>,
    keepalive: Option<JoinHandle<()>>,
    runtime: Handle,
    released: bool,
}

struct MultiHold {
    transport: Arc<Transport>,
    grants: Vec<Grant>,
    resources: Vec<String>,
    owner: String,
    expire: Option<Duration>,
    liveness: Arc<Liveness>,
}

impl MultiHold {
    async fn refresh(&self) -> Result<()> {
        let Some(expire) = self.expire else { return Ok(()) };
        let sent_at = Instant::now();
        for grant in &self.grants {
            self.transport
                .refresh(&grant.resource, &self.owner, Some(grant.token), Some(expire), None)
                .await?;
        }
        self.liveness.extend(sent_at, expire);
        Ok(())
    }

    async fn release(&self) -> Result<()> {
        match self.transport.release_many(&self.resources, &self.owner).await {
            Err(Error::NotHeld | Error::NotOwner) => Err(Error::LockLost),
            other => other,
        }
    }
}

impl MultiLockGuard {
    fn start(
        transport: &Arc<Transport>,
        expire: Option<Duration>,
        grants: Vec<Grant>,
        sent_at: Instant,
    ) -> Self {
        let shortest = grants.iter().filter_map(|grant| grant.expires_in).min();
        let liveness = match (expire, shortest) {
            (Some(_), Some(expires_in)) => Liveness::new(sent_at + expires_in),
            _ => Liveness::new(far_future()),
        };
        let hold = Arc::new(MultiHold {
            transport: transport.clone(),
            resources: grants.iter().map(|grant| grant.resource.clone()).collect(),
            owner: grants.first().map(|grant| grant.owner.clone()).unwrap_or_default(),
            grants,
            expire,
            liveness,
        });
        let keepalive = expire.map(|expire| {
            let task_hold = hold.clone();
            keepalive::spawn(hold.liveness.clone(), expire, move || {
                let hold = task_hold.clone();
                async move { hold.refresh().await }
            })
        });
        MultiLockGuard { hold, keepalive, runtime: Handle::current(), released: false }
    }

    /// The grants, one per lock, in the order asked.
    pub fn grants(&self) -> &[Grant] {
        &self.hold.grants
    }

    /// The fencing tokens, one per lock, in the order asked.
    pub fn tokens(&self) -> Vec<u64> {
        self.hold.grants.iter().map(|grant| grant.token).collect()
    }

    /// The owner id the locks were granted to.
    pub fn owner(&self) -> &str {
        &self.hold.owner
    }

    /// Whether the locks are known to be lost (or may be: their deadline passed unrefreshed).
    pub fn is_lost(&self) -> bool {
        self.hold.liveness.is_lost()
    }

    /// Resolves when the locks are lost (never, for holds without expiry).
    pub async fn lost(&self) {
        self.hold.liveness.lost().await
    }

    /// Releases every lock together. [`Error::LockLost`] when they were no longer all held.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.stop_keepalive();
        self.hold.release().await
    }

    /// Keeps the locks past this guard (no keepalive, no release on drop); returns the tokens.
    pub fn detach(mut self) -> Vec<u64> {
        self.released = true;
        self.stop_keepalive();
        self.tokens()
    }

    fn stop_keepalive(&mut self) {
        if let Some(task) = self.keepalive.take() {
            task.abort();
        }
    }
}

impl Drop for MultiLockGuard {
    fn drop(&mut self) {
        self.stop_keepalive();
        if !self.released {
            let hold = self.hold.clone();
            self.runtime.spawn(async move {
                let _ = hold.release().await;
            });
        }
    }
}

impl std::fmt::Debug for MultiLockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiLockGuard")
            .field("resources", &self.hold.resources)
            .field("owner", &self.hold.owner)
            .field("tokens", &self.tokens())
            .finish()
    }
}
