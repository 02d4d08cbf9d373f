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

/// A held lock as seen by inspection and listing.
#[derive(Debug, Clone, PartialEq)]
pub struct LockInfo {
    /// The lock's name.
    pub resource: String,
    /// The holder.
    pub owner: String,
    /// The fencing token of the hold.
    pub token: FencingToken,
    /// Time left before the hold expires; `None` when it has no expiry of its own.
    pub expires_in: Option<Duration>,
    /// The value stored with the resource.
    pub value: Option<String>,
    /// How many requests are queued for it.
    pub waiters: usize,
    /// The lease the hold is bound to, if any.
    pub lease: Option<LeaseId>,
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
