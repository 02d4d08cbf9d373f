//! Acquiring a lock ([`LockBuilder`]) and holding it ([`LockGuard`]).

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use lockserver_protocol::bodies::Mode;

use crate::error::{Error, Result};
use crate::keepalive::{self, Liveness};
use crate::options::LockOptions;
use crate::types::Grant;
use crate::watch::{Target, Watch, WatchEventKind};
use crate::wire::{AcquireRequest, Transport};

/// The longest single server-side wait; longer waits are made of several.
/// Servers started with `--max-wait` below this refuse a wait that long: keep the default.
pub const MAX_WAIT_CHUNK: Duration = Duration::from_secs(30);

/// One acquisition of a lock: set what you need, then [`acquire`](Self::acquire) or
/// [`try_acquire`](Self::try_acquire).
///
/// Each builder gets its own owner id (the client's owner plus a counter): two tasks sharing
/// a client exclude each other, while retries of this acquisition stay idempotent.
///
/// The same builder serves the async client (`acquire().await`) and the
/// [blocking](crate::blocking) one (`acquire()`); `M` says which.
#[must_use = "a LockBuilder does nothing until acquire() or try_acquire()"]
pub struct LockBuilder<M = Async> {
    pub(crate) transport: Arc<Transport>,
    pub(crate) request: AcquireRequest,
    wait: Option<Duration>,
    /// The expiry used when neither `expire`, a lease nor `hold_until_released` is set.
    pub(crate) default_expire: Option<Duration>,
    mode: PhantomData<M>,
}

/// Marks a [`LockBuilder`] of the async client.
pub struct Async;

impl<M> LockBuilder<M> {
    pub(crate) fn new(
        transport: Arc<Transport>,
        resource: String,
        owner: String,
        default_expire: Option<Duration>,
    ) -> Self {
        let request = AcquireRequest { resource, owner, ..AcquireRequest::default() };
        LockBuilder { transport, request, wait: None, default_expire, mode: PhantomData }
    }

    /// Sets whichever of `options` are given (what the bindings' option objects carry).
    pub fn options(mut self, options: &LockOptions) -> Self {
        if let Some(expire) = options.expire {
            self = self.expire(expire);
        }
        if let Some(wait) = options.wait {
            self = self.wait(wait);
        }
        if let Some(value) = &options.value {
            self = self.value(value.clone());
        }
        if let Some(lease) = &options.lease {
            self = self.lease(lease);
        }
        if options.hold_until_released {
            self = self.hold_until_released();
        }
        if let Some(timeout) = options.timeout {
            self = self.timeout(timeout);
        }
        if options.shared {
            self = self.shared();
        }
        if let Some(limit) = options.limit {
            self = self.permits(limit);
        }
        self
    }

    /// The hold expires after this long unless refreshed; the guard refreshes it in the
    /// background until released. Without it, without a lease and without
    /// [`hold_until_released`](Self::hold_until_released), the client's default expiry applies
    /// ([`ClientBuilder::default_expire`](crate::ClientBuilder::default_expire), 30 s).
    pub fn expire(mut self, expire: Duration) -> Self {
        self.request.expire = Some(expire);
        self
    }

    /// The hold has no expiry: it lasts until released, even if this process dies without
    /// releasing it (the at-most-once pattern: a job that must never run twice). An explicit
    /// choice, since a crashed holder then blocks everyone until an operator releases the lock.
    pub fn hold_until_released(mut self) -> Self {
        self.request.expire = None;
        self.default_expire = None;
        self
    }

    /// How long [`acquire`](Self::acquire) waits when the lock is held; without it, forever.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// A value to store with the lock (at most 64 KiB).
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.request.value = Some(value.into());
        self
    }

    /// Binds the hold to a lease (a [`Lease`](crate::Lease) or its id): it lives as long as
    /// the lease does.
    pub fn lease(mut self, lease: impl AsRef<str>) -> Self {
        self.request.lease = Some(lease.as_ref().to_string());
        self
    }

    /// How long each call of this acquisition may take on top of the server-side wait it asks
    /// for (a transport error after that); the client's timeout otherwise
    /// ([`ClientBuilder::timeout`](crate::ClientBuilder::timeout), 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.request.timeout = Some(timeout);
        self
    }

    /// Takes the lock as one of its shared holders (a read-write lock's reader): any number
    /// of shared holders at once, or one exclusive holder. Waiting is first come, first served
    /// across modes: a queued exclusive request holds back shared ones that come after it.
    pub fn shared(mut self) -> Self {
        self.request.mode = Some(Mode::Shared);
        self.request.limit = None;
        self
    }

    /// Takes one of `limit` permits of a semaphore (see [`Client::semaphore`](crate::Client::semaphore)).
    #[doc(hidden)]
    pub fn permits(mut self, limit: u32) -> Self {
        self.request.limit = Some(limit);
        self.request.mode = None;
        self
    }

    /// Overrides the owner id of this acquisition.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.request.owner = owner.into();
        self
    }

    /// The options of a `lock_scope!`: no waiting at all when `non_blocking`, and an expiry
    /// kept alive meanwhile when given.
    #[doc(hidden)]
    pub fn for_scope(mut self, non_blocking: bool, expire: Option<Duration>) -> Self {
        if let Some(expire) = expire {
            self = self.expire(expire);
        }
        if non_blocking {
            self = self.wait(Duration::ZERO);
        }
        self
    }

    pub(crate) async fn acquire_until(mut self, until: Option<Instant>) -> Result<LockGuard> {
        if self.request.expire.is_none() && self.request.lease.is_none() {
            self.request.expire = self.default_expire;
        }
        loop {
            let now = Instant::now();
            self.request.wait = match until {
                Some(until) => until.saturating_duration_since(now).min(MAX_WAIT_CHUNK),
                None => MAX_WAIT_CHUNK,
            };
            let sent_at = now;
            match self.transport.acquire(&self.request).await {
                Ok(grant) => {
                    if let Some(guard) =
                        LockGuard::start(&self.transport, &self.request, grant, sent_at).await?
                    {
                        return Ok(guard);
                    }
                }
                Err(Error::Locked { .. }) if until.is_none_or(|until| Instant::now() < until) => {}
                Err(error) => return Err(error),
            }
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.wait.map(|wait| Instant::now() + wait)
    }
}

impl LockBuilder<Async> {
    /// Acquires the lock, queueing server-side first come, first served. Without
    /// [`wait`](Self::wait) it waits as long as it takes (by repeated server-side waits, never
    /// by polling); with it, it answers [`Error::Locked`] when the wait runs out.
    pub async fn acquire(self) -> Result<LockGuard> {
        let until = self.deadline();
        self.acquire_until(until).await
    }

    /// [`acquire`](Self::acquire), given up with [`Error::Cancelled`] as soon as `cancelled`
    /// resolves. The queued request leaves the server's queue; a grant that raced the
    /// cancellation is released (the owner id is this acquisition's alone, so that release
    /// can touch nothing else).
    pub async fn acquire_unless(self, cancelled: impl std::future::Future<Output = ()>) -> Result<LockGuard> {
        let (transport, resource, owner) =
            (self.transport.clone(), self.request.resource.clone(), self.request.owner.clone());
        tokio::select! {
            acquired = self.acquire() => acquired,
            () = cancelled => {
                tokio::spawn(async move {
                    // Once now, and once after a request still in flight has surely landed.
                    let _ = transport.release(&resource, &owner, None, false).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = transport.release(&resource, &owner, None, false).await;
                });
                Err(Error::Cancelled)
            }
        }
    }

    /// Acquires the lock if it is free now; `Ok(None)` when someone else holds it.
    pub async fn try_acquire(self) -> Result<Option<LockGuard>> {
        match self.acquire_until(Some(Instant::now())).await {
            Ok(guard) => Ok(Some(guard)),
            Err(Error::Locked { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// A held lock. Released on drop (best effort, without blocking); call
/// [`release`](Self::release) to know that it was.
///
/// A lock acquired with an expiry is kept alive in the background, refreshed every third of
/// the expiry; if that fails, [`is_lost`](Self::is_lost) turns true and [`lost`](Self::lost)
/// resolves, no later than the server's own expiry, so the critical section can stop. The
/// guard also watches its lock (`GET /watch`, unless
/// [`ClientBuilder::watch_guards`](crate::ClientBuilder::watch_guards) turned that off): a
/// takeover, a forced release or an expiry is known within milliseconds, not at the next
/// keepalive.
/// Release and refresh always send the guard's fencing token, so a late or repeated call can
/// never touch a newer holder's grant.
pub struct LockGuard {
    hold: Arc<Hold>,
    keepalive: Option<JoinHandle<()>>,
    /// Follows the lock's events and marks it lost when another hold replaces it.
    watcher: Option<JoinHandle<()>>,
    runtime: Handle,
    released: bool,
}

/// What the guard and its keepalive task share.
struct Hold {
    transport: Arc<Transport>,
    resource: String,
    owner: String,
    token: u64,
    expire: Option<Duration>,
    value: Mutex<Option<String>>,
    /// Whether the hold is still known to be alive. Holds without expiry of their own
    /// (unbounded, or under a lease) have no deadline; only their watcher marks them lost.
    liveness: Option<Arc<Liveness>>,
}

impl Hold {
    async fn refresh(&self, value: Option<&str>) -> Result<()> {
        let sent_at = Instant::now();
        self.transport.refresh(&self.resource, &self.owner, Some(self.token), self.expire, value).await?;
        if let (Some(liveness), Some(expire)) = (&self.liveness, self.expire) {
            liveness.extend(sent_at, expire);
        }
        Ok(())
    }
}

impl LockGuard {
    /// Wraps a fresh grant; `None` when it came so late (after a long wait) that it could not
    /// be confirmed before its conservative deadline, and the acquisition should go on.
    async fn start(
        transport: &Arc<Transport>,
        request: &AcquireRequest,
        grant: Grant,
        sent_at: Instant,
    ) -> Result<Option<Self>> {
        let liveness = match (request.expire, grant.expires_in) {
            (Some(_), Some(expires_in)) => Liveness::new(sent_at + expires_in),
            _ => Liveness::new(far_future()),
        };
        let liveness = Some(liveness);
        let hold = Arc::new(Hold {
            transport: transport.clone(),
            resource: grant.resource,
            owner: grant.owner,
            token: grant.token,
            expire: request.expire,
            value: Mutex::new(grant.value),
            liveness,
        });
        if let (Some(liveness), Some(expire)) = (&hold.liveness, hold.expire) {
            // The deadline counts from when the request was sent; after a long wait in the
            // queue it may be close. Confirm the hold before handing it out.
            if liveness.deadline() < Instant::now() + expire / 3 {
                match hold.refresh(None).await {
                    Ok(()) => {}
                    Err(Error::NotHeld | Error::NotOwner) => return Ok(None),
                    Err(error) => return Err(error),
                }
            }
        }
        let keepalive = match (&hold.liveness, hold.expire) {
            (Some(liveness), Some(expire)) => {
                let task_hold = hold.clone();
                Some(keepalive::spawn(liveness.clone(), expire, move || {
                    let hold = task_hold.clone();
                    async move { hold.refresh(None).await }
                }))
            }
            _ => None,
        };
        // Events show a lock's first holder: only an exclusive hold can tell from them that it
        // was replaced. Shared holds and permits rely on their keepalive.
        let exclusive = request.mode.is_none_or(|mode| mode == Mode::Exclusive) && request.limit.is_none();
        let watcher = match (&hold.liveness, transport.watch_guards && exclusive) {
            (Some(liveness), true) => Some(spawn_watcher(hold.clone(), liveness.clone())),
            _ => None,
        };
        Ok(Some(LockGuard { hold, keepalive, watcher, runtime: Handle::current(), released: false }))
    }

    /// The lock's name.
    pub fn resource(&self) -> &str {
        &self.hold.resource
    }

    /// The owner id this hold was granted to.
    pub fn owner(&self) -> &str {
        &self.hold.owner
    }

    /// The fencing token: pass it to the protected resource, which refuses smaller ones.
    pub fn token(&self) -> u64 {
        self.hold.token
    }

    /// The value stored with the lock: the one set at acquisition or by
    /// [`set_value`](Self::set_value), or the one a previous holder left.
    pub fn value(&self) -> Option<String> {
        self.hold.value.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the value stored with the lock (for example, a job's progress, so that the
    /// next holder can resume if this one dies).
    pub async fn set_value(&self, value: impl Into<String>) -> Result<()> {
        let value = value.into();
        self.hold
            .transport
            .refresh(&self.hold.resource, &self.hold.owner, Some(self.hold.token), None, Some(&value))
            .await?;
        *self.hold.value.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
        Ok(())
    }

    /// Keeps the lock past this guard: stops the keepalive and does not release on drop.
    /// The hold then ends by its own expiry, or never (the at-most-once pattern). Returns the
    /// fencing token.
    pub fn detach(mut self) -> u64 {
        self.released = true;
        self.stop_keepalive();
        self.hold.token
    }

    /// Refreshes the hold now (the background keepalive does this on its own).
    pub async fn refresh(&self) -> Result<()> {
        if self.hold.expire.is_none() {
            return Ok(());
        }
        self.hold.refresh(None).await
    }

    /// The latest time the hold is known to last until: when the last answered acquire or
    /// refresh was sent, plus its expiry (the server's own deadline is never earlier). `None`
    /// for a hold without expiry of its own.
    pub fn deadline(&self) -> Option<Instant> {
        self.hold.liveness.as_ref().map(|liveness| liveness.deadline())
    }

    /// Whether the lock is known to be lost (or may be: its deadline passed unrefreshed).
    pub fn is_lost(&self) -> bool {
        self.hold.liveness.as_ref().is_some_and(|liveness| liveness.is_lost())
    }

    /// Resolves when the lock is lost; for a lock without expiry of its own, only when its
    /// watch sees another hold (or none) in its place.
    pub async fn lost(&self) {
        self.when_lost().await
    }

    /// [`lost`](Self::lost) as a future that does not borrow the guard (for bindings).
    pub fn when_lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let liveness = self.hold.liveness.clone();
        async move {
            match liveness {
                Some(liveness) => liveness.lost().await,
                None => std::future::pending().await,
            }
        }
    }

    /// Releases the lock. [`Error::LockLost`] when it was no longer held by this guard:
    /// whatever was done under it may have overlapped with another holder.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.stop_keepalive();
        release(&self.hold).await
    }

    /// Whether the lock has an expiry that the background keepalive maintains.
    pub fn is_kept_alive(&self) -> bool {
        self.keepalive.is_some()
    }

    fn stop_keepalive(&mut self) {
        for task in [self.keepalive.take(), self.watcher.take()].into_iter().flatten() {
            task.abort();
        }
    }
}

/// An instant no hold outlives (about a century away).
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Watches the hold's lock until another hold (or none) is seen in its place; then marks the
/// hold lost. Ends quietly if the server refuses the watch (the keepalive still guards).
fn spawn_watcher(hold: Arc<Hold>, liveness: Arc<Liveness>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut watch = Watch::new(hold.transport.clone(), &Target::Resource(hold.resource.clone()));
        loop {
            match watch.next().await {
                Ok(event) => {
                    let ours = match event.kind {
                        WatchEventKind::Reset => event
                            .locks
                            .iter()
                            .any(|lock| lock.resource == hold.resource && lock.token == hold.token),
                        _ => event.token == Some(hold.token),
                    };
                    if !ours {
                        liveness.mark_lost();
                        return;
                    }
                }
                Err(Error::Unauthorized | Error::Forbidden(_) | Error::BadRequest(_)) => return,
                Err(_) => {}
            }
        }
    })
}

async fn release(hold: &Hold) -> Result<()> {
    match hold.transport.release(&hold.resource, &hold.owner, Some(hold.token), false).await {
        Err(Error::NotHeld | Error::NotOwner) => Err(Error::LockLost),
        other => other,
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop_keepalive();
        if !self.released {
            let hold = self.hold.clone();
            // Spawned, never blocking: a drop may run on an async runtime's thread. If that
            // runtime is gone, the server's expiry frees the lock.
            self.runtime.spawn(async move {
                let _ = release(&hold).await;
            });
        }
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("resource", &self.hold.resource)
            .field("owner", &self.hold.owner)
            .field("token", &self.hold.token)
            .finish()
    }
}
