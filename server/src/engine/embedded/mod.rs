//! The embedded backend: the lock table in this process, kept in memory and, unless
//! `--storage memory`, made durable by a [`Journal`]: every change appends the new state of what
//! changed, and the request is answered once that is on disk.
//!
//! Where each job lives:
//! - `table.rs`: the sharded table of slots, and running an operation on one slot once no
//!   change to it is still on its way to the disk (a change is seen only once durable);
//! - `slot.rs`: one resource's state: its holders (one exclusive, shared ones, or a
//!   semaphore's permits), value and queue;
//! - `slot_cx.rs`: the operations on a slot (grant, renew, refresh, release, expiry);
//! - `slot_queue.rs`: its queue's side (queue, hand off to the head, leave);
//! - `queued.rs`: a request queued for a lock, and what happens when it gives up or goes away;
//! - `multi.rs`: multi-locks, several locks taken at once or not at all;
//! - `expiry.rs`: the deadlines of each shard and the tasks that expire holds and leases;
//! - `leases.rs`: the lease table;
//! - `durable.rs`: the bridge to the store (rebuild from what it recovered, emit a snapshot);
//! - `store/`: the durable store itself (journal writer, log files, compaction, recovery, and
//!   what happens when a write fails).
//!
//! Each resource hashes to one of `SHARDS` shards, each a `std::sync::Mutex` (never held
//! across an `.await`), so independent resources do not serialise. The fencing counter is one
//! atomic shared by all shards. Every shard has its own expiry task that sleeps until the
//! earliest deadline in the shard and is woken only when an earlier one appears; parked waiters
//! are oneshot channels and cost nothing while they wait.

mod durable;
mod expiry;
mod leases;
mod multi;
mod queued;
mod slot;
mod slot_cx;
mod slot_queue;
mod store;
mod table;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::capacity::{Capacity, Counter};
use super::clock::wall_now_ms;
use super::watch::WatchHub;
use super::{
    AcquireManyRequest, AcquireRequest, EngineError, FencingToken, Grant, Health, LeaseId, LeaseInfo,
    ListRequest, LockBackend, LockInfo, LockPage, RefreshRequest, Refreshed, ReleaseManyRequest,
    ReleaseRequest, Result,
};
use leases::LeaseTable;
use queued::QueuedWait;
use slot_cx::{Acquired, HoldEnd, Queueing};
use store::{DurableState, Journal, Recovered};

pub use store::{repair, Repaired, StoreError};
use table::Shard;

/// The embedded lock backend, in memory or durable. Cheap to clone; all clones share one
/// lock table.
///
/// Must be created inside a Tokio runtime: it spawns its expiry tasks, which end when the last
/// clone is dropped.
#[derive(Clone)]
pub struct EmbeddedBackend {
    shared: Arc<Shared>,
}

/// What every clone of the backend, and its expiry tasks, share.
struct Shared {
    shards: Box<[Shard]>,
    /// The last fencing token issued, for every resource.
    last_token: AtomicU64,
    /// Ids that tell queued waiters apart.
    last_waiter: AtomicU64,
    leases: LeaseTable,
    /// How long a value outlives the hold that left it.
    value_retention: Duration,
    /// Set by `shutdown`: no new waiters are queued.
    shutting_down: AtomicBool,
    /// Where changes are made durable; `None` in memory storage.
    journal: Option<Arc<Journal>>,
    /// How many slots the table holds (locks held, or keeping a value).
    locks: AtomicUsize,
    /// The queued waiters.
    waiters: Counter,
    /// The bytes locks and waiters take (see [`footprint`](super::capacity::footprint)).
    memory: Counter,
    /// The caps on all three.
    max_locks: AtomicUsize,
    max_waiters: AtomicUsize,
    max_memory: AtomicUsize,
    /// Lock events for watchers, staged under the shard's mutex, published once durable.
    events: Arc<WatchHub>,
}

impl EmbeddedBackend {
    /// An empty lock table kept in memory only; released values are kept for
    /// `value_retention`.
    pub fn in_memory(value_retention: Duration) -> Self {
        Self::start(value_retention, None, Recovered::default())
    }

    /// A lock table made durable in `dir`: recovers what the dir holds (holds whose deadline
    /// passed while the server was down are expired, their values kept), then journals every
    /// change. The error names the file that could not be used.
    /// The log is compacted into a snapshot each time it grows by `compact_after` bytes.
    pub fn durable(dir: &Path, value_retention: Duration, compact_after: u64) -> Result<Self, StoreError> {
        let (journal, recovered) = Journal::open(dir, compact_after)?;
        let backend = Self::start(value_retention, Some(journal.clone()), recovered);
        let state: Weak<dyn DurableState> = Arc::downgrade(&backend.shared) as Weak<dyn DurableState>;
        journal.attach(state);
        Ok(backend)
    }

    fn start(value_retention: Duration, journal: Option<Arc<Journal>>, recovered: Recovered) -> Self {
        let shared = Arc::new(Shared {
            shards: table::shards(),
            last_token: AtomicU64::new(recovered.max_token),
            last_waiter: AtomicU64::new(0),
            leases: LeaseTable::new(journal.clone()),
            value_retention,
            shutting_down: AtomicBool::new(false),
            journal,
            locks: AtomicUsize::new(0),
            waiters: Counter::default(),
            memory: Counter::default(),
            max_locks: AtomicUsize::new(usize::MAX),
            max_waiters: AtomicUsize::new(usize::MAX),
            max_memory: AtomicUsize::new(usize::MAX),
            // Ids start at the wall clock's microseconds: they grow across restarts too, so a
            // watcher resuming with an id of an earlier run is told to reset.
            events: Arc::new(WatchHub::new(wall_now_ms().saturating_mul(1000))),
        });
        shared.restore(recovered);
        expiry::spawn_timers(&shared);
        if let Some(journal) = &shared.journal {
            tokio::spawn(publish_when_durable(shared.events.clone(), Arc::downgrade(journal)));
        }
        EmbeddedBackend { shared }
    }
}

impl EmbeddedBackend {
    /// Caps the locks and waiters this backend holds at once, and the memory they take.
    pub fn limit(&self, capacity: Capacity) {
        self.shared.max_locks.store(capacity.max_locks, Ordering::Relaxed);
        self.shared.max_waiters.store(capacity.max_waiters, Ordering::Relaxed);
        self.shared.max_memory.store(capacity.max_memory, Ordering::Relaxed);
    }

    /// The bytes its locks and waiters take, as `--max-memory` counts them.
    pub fn memory_used(&self) -> usize {
        self.shared.memory.used()
    }
}

/// Publishes staged watch events once the journal has their changes on disk, in order; a
/// failed write drops what it lost and tells watchers to reset. Ends with the journal.
async fn publish_when_durable(events: Arc<WatchHub>, journal: Weak<Journal>) {
    loop {
        let Some(position) = events.next_staged().await else { return };
        let Some(journal) = journal.upgrade() else { return };
        match journal.wait_written(position).await {
            Ok(()) => events.durable(journal.durable()),
            Err(_) => events.lost_after(journal.durable()),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The expiry tasks hold only weak references: wake them so they see it and end.
        for shard in self.shards.iter() {
            shard.timer.notify_one();
        }
        self.leases.timer.notify_one();
        self.events.close();
        if let Some(journal) = &self.journal {
            journal.close();
        }
    }
}

#[async_trait]
impl LockBackend for EmbeddedBackend {
    async fn acquire(&self, request: AcquireRequest) -> Result<Grant> {
        let AcquireRequest { resource, owner, lifetime, wait, value, claim } = request;
        let wait_until = Instant::now() + wait;
        let may_queue = !wait.is_zero();
        let shared = &self.shared;
        let queueing = Queueing { owner, lifetime, value, claim };
        let (acquired, position) =
            shared.with_durable_slot(&resource, true, |cx| cx.acquire(queueing, may_queue)).await?;
        match acquired {
            Acquired::Granted(grant) => {
                shared.written(position).await?;
                Ok(grant)
            }
            Acquired::Queued { name, id, reply } => {
                let queued_at = Instant::now();
                let (grant, handoff) =
                    QueuedWait::new(shared.clone(), name, id, reply).wait_until(wait_until).await?;
                crate::metrics::global().waited(queued_at.elapsed());
                // Whoever released made (and journaled) the grant: once the shard's mutex is
                // free, the handoff holds where.
                shared.barrier(&resource);
                shared.written(handoff.load(Ordering::Acquire)).await?;
                Ok(grant)
            }
        }
    }

    async fn acquire_many(&self, request: AcquireManyRequest) -> Result<Vec<Grant>> {
        self.shared.acquire_many(request).await
    }

    async fn release_many(&self, request: ReleaseManyRequest) -> Result<()> {
        self.shared.release_many(request).await
    }

    async fn release(&self, request: ReleaseRequest) -> Result<()> {
        let ((), position) = self
            .shared
            .with_durable_slot(&request.resource, true, |cx| {
                if request.force {
                    cx.check_held()?;
                    cx.end_all(request.keep_value);
                } else {
                    let index = cx.check_holder(&request.owner, request.token)?;
                    cx.end_hold(index, request.keep_value, HoldEnd::Released);
                }
                Ok(())
            })
            .await?;
        self.shared.written(position).await
    }

    async fn refresh(&self, request: RefreshRequest) -> Result<Refreshed> {
        let (refreshed, position) =
            self.shared.with_durable_slot(&request.resource, true, |cx| cx.refresh(&request)).await?;
        self.shared.written(position).await?;
        Ok(refreshed)
    }

    async fn inspect(&self, resource: &str) -> Result<LockInfo> {
        let (info, _) = self
            .shared
            .with_durable_slot(resource, false, |cx| cx.info().ok_or(EngineError::NotHeld))
            .await?;
        Ok(info)
    }

    async fn list(&self, request: ListRequest) -> Result<LockPage> {
        self.shared.list(&request).await
    }

    async fn count_held(&self, prefix: &str, after: Option<&str>, at_most: usize) -> Result<usize> {
        Ok(self.shared.count_held(prefix, after, at_most))
    }

    async fn grant_lease(&self, ttl: Duration, id_prefix: &str) -> Result<LeaseInfo> {
        self.shared.leases_settled().await?;
        let (lease, position) = self.shared.leases.grant(ttl, id_prefix, Instant::now())?;
        self.shared.written(position).await?;
        Ok(lease)
    }

    async fn keepalive(&self, lease: &LeaseId) -> Result<Duration> {
        self.shared.leases_settled().await?;
        let (ttl, position) = self.shared.leases.keepalive(lease, Instant::now())?;
        self.shared.written(position).await?;
        Ok(ttl)
    }

    async fn list_leases(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<LeaseInfo>> {
        Ok(self.shared.leases.list(prefix, after, limit, Instant::now()))
    }

    fn events(&self) -> &Arc<WatchHub> {
        &self.shared.events
    }

    async fn gauges(&self) -> crate::metrics::Gauges {
        let locks_held = self
            .shared
            .shards
            .iter()
            .map(|shard| {
                let state = shard.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.slots.values().filter(|slot| slot.is_held()).count() as u64
            })
            .sum();
        crate::metrics::Gauges {
            locks_held,
            waiters: self.shared.waiters.used() as u64,
            leases: self.shared.leases.len() as u64,
        }
    }

    async fn revoke(&self, lease: &LeaseId) -> Result<()> {
        self.shared.leases_settled().await?;
        let (ended, position) = self.shared.leases.revoke(lease, Instant::now())?;
        let released = self.shared.end_lease(ended);
        self.shared.written(position.max(released)).await
    }

    async fn lease_info(&self, lease: &LeaseId) -> Result<LeaseInfo> {
        self.shared.leases_settled().await?;
        self.shared.leases.info(lease, Instant::now())
    }

    async fn health(&self) -> Health {
        let problem = self.shared.journal.as_ref().and_then(|journal| journal.problem());
        Health { backend: "embedded", problem }
    }

    async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        for shard in self.shared.shards.iter() {
            let mut state = shard.state.lock().unwrap_or_else(PoisonError::into_inner);
            for slot in state.slots.values_mut() {
                for waiter in slot.take_waiters() {
                    waiter.refuse(EngineError::ShuttingDown);
                }
            }
        }
    }
}

impl Shared {
    /// Returns once no change to the lease table is on its way to the disk (leases are read and
    /// changed only in their durable state), or the error if the store cannot be trusted.
    async fn leases_settled(&self) -> Result<()> {
        let Some(journal) = &self.journal else { return Ok(()) };
        journal.check_readable()?;
        journal.wait_for(self.leases.unsynced()).await;
        Ok(())
    }

    /// Returns once no operation on `name`'s shard is in progress, so that whatever such an
    /// operation did (and journaled) is done.
    fn barrier(&self, name: &str) {
        drop(self.shard_of(name).state.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The next fencing token, reserved durably before it can be answered.
    fn next_token(&self) -> FencingToken {
        let token = FencingToken(self.last_token.fetch_add(1, Ordering::SeqCst) + 1);
        if let Some(journal) = &self.journal {
            journal.note_token(token.0);
        }
        token
    }
}

#[cfg(test)]
mod sharing_tests;
#[cfg(test)]
mod tests;
