//! The lock engine: what a lock is, and the [`LockBackend`] trait every storage backend
//! implements.
//!
//! Nothing here knows about HTTP. Requests arrive already validated (names within bounds,
//! durations within the configured limits); the engine decides who holds what, queues waiters,
//! hands locks off, and expires holds and leases on a monotonic clock.
//!
//! - `embedded/`: the lock table in this process, in memory or durable (`embedded/store/`);
//! - `etcd/`: gateways in front of an etcd cluster (Cargo feature `etcd`);
//! - `error.rs`: [`EngineError`], the one error type of the engine;
//! - `clock.rs`: the wall clock, for deadlines that outlive the process;
//! - `capacity.rs`: caps on locks and waiters;
//! - `watch.rs`: lock events for watchers, published by both backends.

mod capacity;
mod clock;
mod embedded;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod watch;

pub use capacity::Capacity;
pub use embedded::{repair, EmbeddedBackend, Repaired, StoreError};
pub use error::{EngineError, Result};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdBackend, EtcdOptions, EtcdSetupError};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// A fencing token: strictly greater than every token the server issued before, for any
/// resource. A protected resource that remembers the highest token it has seen can refuse a
/// stale holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

/// The opaque id of a lease (a session that locks can be bound to).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub String);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What ends a hold unless it is released first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifetime {
    /// Held until released (the at-most-once pattern: acquire and never release).
    Unbounded,
    /// Held for this long after the grant (or the last refresh).
    Expire(Duration),
    /// Held as long as the lease lives.
    Lease(LeaseId),
}

/// What an acquire asks to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The lock alone: a mutex, or a read-write lock's writer.
    Exclusive,
    /// The lock beside other shared holders: a read-write lock's reader.
    Shared,
    /// One of the `limit` permits of a semaphore.
    Permit {
        /// How many permits the semaphore has (every acquire of it gives the same).
        limit: u32,
    },
}

impl Claim {
    /// The semaphore limit this claim expects the resource to have; `None` for a lock.
    pub fn limit(self) -> Option<u32> {
        match self {
            Claim::Permit { limit } => Some(limit),
            Claim::Exclusive | Claim::Shared => None,
        }
    }

    /// How a hold granted for this claim holds its lock.
    pub fn mode(self) -> HoldMode {
        match self {
            Claim::Exclusive => HoldMode::Exclusive,
            Claim::Shared => HoldMode::Shared,
            Claim::Permit { .. } => HoldMode::Permit,
        }
    }
}

/// How a hold shares its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldMode {
    /// Alone.
    Exclusive,
    /// Beside other shared holders.
    Shared,
    /// As one of a semaphore's permits.
    Permit,
}

/// A request to acquire a lock.
#[derive(Debug, Clone)]
pub struct AcquireRequest {
    /// The lock's name.
    pub resource: String,
    /// Who asks; the same owner re-acquiring is idempotent.
    pub owner: String,
    /// What ends the hold.
    pub lifetime: Lifetime,
    /// How long to queue when the lock is held; zero answers at once.
    pub wait: Duration,
    /// A value to store with the lock; `None` keeps the value a previous holder left.
    pub value: Option<String>,
    /// Alone, shared, or as a semaphore's permit.
    pub claim: Claim,
}

/// A request to hold several locks at once, exclusively, all or none (a multi-lock).
#[derive(Debug, Clone)]
pub struct AcquireManyRequest {
    /// The locks' names, distinct.
    pub resources: Vec<String>,
    /// Who asks; already holding all of them is idempotent.
    pub owner: String,
    /// What ends each hold.
    pub lifetime: Lifetime,
    /// How long to queue while any of them is held or queued for; zero answers at once.
    pub wait: Duration,
}

/// A request to release a multi-lock's locks together.
#[derive(Debug, Clone)]
pub struct ReleaseManyRequest {
    /// The locks' names.
    pub resources: Vec<String>,
    /// The holder.
    pub owner: String,
    /// Keep the stored values for the next holders.
    pub keep_value: bool,
}

/// A granted lock.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The lock's name.
    pub resource: String,
    /// The holder.
    pub owner: String,
    /// The fencing token of this hold.
    pub token: FencingToken,
    /// Time left before the hold expires; `None` when it has no expiry of its own.
    pub expires_in: Option<Duration>,
    /// The value stored with the resource.
    pub value: Option<String>,
}

/// A request to release a lock.
#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    /// The lock's name.
    pub resource: String,
    /// The holder.
    pub owner: String,
    /// When given, the release applies only to this hold.
    pub token: Option<FencingToken>,
    /// Keep the stored value for the next holder instead of clearing it.
    pub keep_value: bool,
    /// End the hold whoever holds it (`owner` and `token` are not checked): an admin's forced
    /// release. The head waiter is granted as after any release.
    pub force: bool,
}

/// A request to extend a hold.
#[derive(Debug, Clone)]
pub struct RefreshRequest {
    /// The lock's name.
    pub resource: String,
    /// The holder.
    pub owner: String,
    /// The new time to live, counted from now; `None` keeps the hold's lifetime as it is
    /// (to replace only the value).
    pub expire: Option<Duration>,
    /// When given, the refresh applies only to this hold.
    pub token: Option<FencingToken>,
    /// When given, replaces the stored value.
    pub value: Option<String>,
}

/// The answer to a refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Refreshed {
    /// The fencing token of the hold (unchanged by a refresh).
    pub token: FencingToken,
    /// Time left before the hold expires.
    pub expires_in: Option<Duration>,
}

/// A held lock as seen by inspection and listing. `owner`, `token`, `expires_in` and `lease`
/// describe the first of its holders (the only one of an exclusive lock).
#[derive(Debug, Clone, PartialEq)]
pub struct LockInfo {
    /// The lock's name.
    pub resource: String,
    /// The (first) holder.
    pub owner: String,
    /// The fencing token of the (first) hold.
    pub token: FencingToken,
    /// Time left before the hold expires; `None` when it has no expiry of its own.
    pub expires_in: Option<Duration>,
    /// The value stored with the resource.
    pub value: Option<String>,
    /// How many requests are queued for it.
    pub waiters: usize,
    /// The lease the (first) hold is bound to, if any.
    pub lease: Option<LeaseId>,
    /// How its holders hold it.
    pub mode: HoldMode,
    /// A semaphore's number of permits; `None` for a lock.
    pub limit: Option<u32>,
    /// Every holder, oldest grant first.
    pub holders: Vec<HolderInfo>,
}

/// One holder of a lock, as inspection shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HolderInfo {
    /// The holder.
    pub owner: String,
    /// Its fencing token.
    pub token: FencingToken,
    /// Time left on its hold; `None` when it has no expiry of its own.
    pub expires_in: Option<Duration>,
    /// How it holds the lock.
    pub mode: HoldMode,
    /// The lease its hold is bound to, if any.
    pub lease: Option<LeaseId>,
}

impl LockInfo {
    /// A lock with one exclusive holder, described by its `holder`.
    pub fn exclusive(
        resource: String,
        holder: HolderInfo,
        value: Option<String>,
        waiters: usize,
    ) -> LockInfo {
        LockInfo {
            resource,
            owner: holder.owner.clone(),
            token: holder.token,
            expires_in: holder.expires_in,
            value,
            waiters,
            lease: holder.lease.clone(),
            mode: holder.mode,
            limit: None,
            holders: vec![holder],
        }
    }
}

/// A request for one page of held locks.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRequest {
    /// Only names starting with this.
    pub prefix: String,
    /// Only names after this one.
    pub after: Option<String>,
    /// At most this many locks.
    pub limit: usize,
    /// Whether the page carries the locks' values.
    pub values: bool,
    /// The page ends early once its values hold this many bytes (at least one lock is listed).
    pub max_bytes: usize,
}

impl ListRequest {
    /// Cuts `locks` (in name order, up to `limit + 1` of them, values already left out if the
    /// request asks so) to the page this request asks for; `next` names the last lock listed
    /// when more follow.
    pub fn page(&self, mut locks: Vec<LockInfo>) -> LockPage {
        let mut bytes = 0;
        let mut keep = 0;
        for lock in locks.iter().take(self.limit) {
            bytes += lock.value.as_ref().map_or(0, String::len);
            if keep > 0 && bytes > self.max_bytes {
                break;
            }
            keep += 1;
        }
        let more = locks.len() > keep;
        locks.truncate(keep);
        let next = if more { locks.last().map(|lock| lock.resource.clone()) } else { None };
        LockPage { locks, next }
    }
}

/// One page of held locks in name order.
#[derive(Debug, Clone, PartialEq)]
pub struct LockPage {
    /// The locks on this page.
    pub locks: Vec<LockInfo>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A live lease.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseInfo {
    /// The lease's id.
    pub id: LeaseId,
    /// The time to live each keepalive restores.
    pub ttl: Duration,
    /// Time left before the lease expires unless kept alive.
    pub expires_in: Duration,
    /// The locks held under it, in name order.
    pub locks: Vec<String>,
}

/// How a backend is doing, for `GET /health`.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Which backend: `embedded` or `etcd`.
    pub backend: &'static str,
    /// Why it cannot serve requests now; `None` when it can.
    pub problem: Option<String>,
}

/// A lock backend: the in-memory engine, the durable store, the etcd gateway.
///
/// The HTTP layer calls only this trait; every backend gives the same answers to the same
/// requests, so one integration suite runs against all of them.
#[async_trait]
pub trait LockBackend: Send + Sync + 'static {
    /// Acquires a lock, queueing first come, first served for up to `wait` when it is held.
    ///
    /// Re-acquiring by the current holder is idempotent: same token, lifetime reset.
    /// Dropping the returned future while queued leaves the queue (the client went away).
    async fn acquire(&self, request: AcquireRequest) -> Result<Grant>;
    /// Acquires every lock of a multi-lock at once, or none: queues (holding nothing) for up to
    /// `wait` while any is held or queued for. Grants in the order asked.
    async fn acquire_many(&self, request: AcquireManyRequest) -> Result<Vec<Grant>>;
    /// Releases a multi-lock's locks together; `NotOwner`/`NotHeld` (and nothing released)
    /// unless the owner holds all of them.
    async fn release_many(&self, request: ReleaseManyRequest) -> Result<()>;
    /// Releases a hold and hands the lock to the head waiter.
    async fn release(&self, request: ReleaseRequest) -> Result<()>;
    /// Extends a hold's expiry and optionally replaces its value.
    async fn refresh(&self, request: RefreshRequest) -> Result<Refreshed>;
    /// Describes a held lock; `NotHeld` when nobody holds it.
    async fn inspect(&self, resource: &str) -> Result<LockInfo>;
    /// Lists held locks whose names start with the request's prefix, in name order.
    async fn list(&self, request: ListRequest) -> Result<LockPage>;
    /// How many locks are held under names starting with `prefix` (and sorting after `after`,
    /// when given), counting up to `at_most`: what a namespace's quota is checked against.
    async fn count_held(&self, prefix: &str, after: Option<&str>, at_most: usize) -> Result<usize>;
    /// Grants a lease with this time to live, its id starting with `id_prefix` (the HTTP layer
    /// keeps each namespace's leases under its own prefix).
    async fn grant_lease(&self, ttl: Duration, id_prefix: &str) -> Result<LeaseInfo>;
    /// Restores a lease's full time to live; returns it.
    async fn keepalive(&self, lease: &LeaseId) -> Result<Duration>;
    /// Revokes a lease and releases every lock held under it.
    async fn revoke(&self, lease: &LeaseId) -> Result<()>;
    /// Describes a lease and the locks held under it.
    async fn lease_info(&self, lease: &LeaseId) -> Result<LeaseInfo>;
    /// Up to `limit` leases alive whose ids start with `prefix` (and sort after `after`, when
    /// given), in id order.
    async fn list_leases(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<LeaseInfo>>;
    /// Where this backend publishes its lock events (`GET /watch`).
    fn events(&self) -> &Arc<watch::WatchHub>;
    /// Resolves once [`LockBackend::events`] has published every change made before the call
    /// (etcd: once the gateway's watch has passed etcd's current revision, at most 3 s),
    /// so that a new watcher's state, read after it subscribes, is not older than its events.
    async fn events_caught_up(&self) {}
    /// The events after id `after` from the backend's own history, for a watcher that resumes
    /// from before what [`LockBackend::events`] recorded; `None` when they cannot be known (the
    /// embedded backend keeps no more than its hub's history).
    async fn events_after(&self, after: u64) -> Option<Vec<watch::LockEvent>> {
        let _ = after;
        None
    }
    /// Locks held, waiters queued and leases alive now, for `/metrics`.
    async fn gauges(&self) -> crate::metrics::Gauges;
    /// Whether the backend can serve requests now.
    async fn health(&self) -> Health {
        Health { backend: "embedded", problem: None }
    }
    /// Stops serving: queued waiters are answered `ShuttingDown`, new waits are refused.
    async fn shutdown(&self);
}
