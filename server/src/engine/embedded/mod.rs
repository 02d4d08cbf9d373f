//! The embedded backend: the lock table in this process, kept in memory and, unless
//! `--storage memory`, made durable by a [`Journal`]: every change appends the new state of what
//! changed, and the request is answered once that is on disk.
//!
//! Where each job lives:
//! - `table.rs`: the sharded table of slots, and running an operation on one slot;
//! - `slot.rs`: one resource's state machine (grant, renew, refresh, release, hand-off);
//! - `queued.rs`: a request queued for a lock, and what happens when it gives up or goes away;
//! - `expiry.rs`: the deadlines of each shard and the tasks that expire holds and leases;
//! - `leases.rs`: the lease table;
//! - `durable.rs`: the bridge to the store (rebuild from what it recovered, emit a snapshot);
//! - `store/`: the durable store itself (journal writer, log files, compaction, recovery).
//!
//! Each resource hashes to one of `SHARDS` shards, each a `std::sync::Mutex` (never held
//! across an `.await`), so independent resources do not serialise. The fencing counter is one
//! atomic shared by all shards. Every shard has its own expiry task that sleeps until the
//! earliest deadline in the shard and is woken only when an earlier one appears; parked waiters
//! are oneshot channels and cost nothing while they wait.

mod durable;
mod expiry;
mod leases;
mod queued;
mod slot;
mod store;
mod table;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{
    AcquireRequest, EngineError, FencingToken, Grant, LeaseId, LeaseInfo, LockBackend, LockInfo, LockPage,
    RefreshRequest, Refreshed, ReleaseRequest, Result,
};
use leases::LeaseTable;
use queued::QueuedWait;
use slot::Acquired;
use store::{Journal, Recovered};

pub use store::StoreError;
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
        let shared = Arc::downgrade(&backend.shared);
        journal.start_compaction(Box::new(move |emit| {
            if let Some(shared) = shared.upgrade() {
                shared.snapshot(emit);
            }
        }));
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
        });
        shared.restore(recovered);
        expiry::spawn_timers(&shared);
        EmbeddedBackend { shared }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The expiry tasks hold only weak references: wake them so they see it and end.
        for shard in self.shards.iter() {
            shard.timer.notify_one();
        }
        self.leases.timer.notify_one();
        if let Some(journal) = &self.journal {
            journal.close();
        }
    }
}

#[async_trait]
impl LockBackend for EmbeddedBackend {
    async fn acquire(&self, request: AcquireRequest) -> Result<Grant> {
        let AcquireRequest { resource, owner, lifetime, wait, value } = request;
        let wait_until = Instant::now() + wait;
        let may_queue = !wait.is_zero();
        let acquired =
            self.shared.with_slot(&resource, |cx| cx.acquire(owner, lifetime, value, may_queue))?;
        let grant = match acquired {
            Acquired::Granted(grant) => grant,
            Acquired::Queued { name, id, reply } => {
                let grant =
                    QueuedWait::new(self.shared.clone(), name, id, reply).wait_until(wait_until).await?;
                // The grant was made (and journaled) by whoever released: wait until it is
                // journaled, under the shard's mutex, before waiting for the disk.
                self.shared.barrier(&resource);
                grant
            }
        };
        self.shared.persist().await?;
        Ok(grant)
    }

    async fn release(&self, request: ReleaseRequest) -> Result<()> {
        self.shared.with_slot(&request.resource, |cx| {
            cx.check_holder(&request.owner, request.token)?;
            cx.end_hold(request.keep_value);
            Ok::<_, EngineError>(())
        })?;
        self.shared.persist().await
    }

    async fn refresh(&self, request: RefreshRequest) -> Result<Refreshed> {
        let refreshed = self.shared.with_slot(&request.resource, |cx| cx.refresh(&request))?;
        self.shared.persist().await?;
        Ok(refreshed)
    }

    async fn inspect(&self, resource: &str) -> Result<LockInfo> {
        self.shared.with_slot(resource, |cx| cx.info().ok_or(EngineError::NotHeld))
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<LockPage> {
        Ok(self.shared.list(prefix, after, limit))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseInfo> {
        let lease = self.shared.leases.grant(ttl, Instant::now());
        self.shared.persist().await?;
        Ok(lease)
    }

    async fn keepalive(&self, lease: &LeaseId) -> Result<Duration> {
        let ttl = self.shared.leases.keepalive(lease, Instant::now())?;
        self.shared.persist().await?;
        Ok(ttl)
    }

    async fn revoke(&self, lease: &LeaseId) -> Result<()> {
        let ended = self.shared.leases.revoke(lease, Instant::now())?;
        self.shared.end_lease(ended);
        self.shared.persist().await
    }

    async fn lease_info(&self, lease: &LeaseId) -> Result<LeaseInfo> {
        self.shared.leases.info(lease, Instant::now())
    }

    async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        for shard in self.shared.shards.iter() {
            let mut state = shard.state.lock().unwrap_or_else(PoisonError::into_inner);
            for slot in state.slots.values_mut() {
                for waiter in slot.take_waiters() {
                    let _ = waiter.reply.send(Err(EngineError::ShuttingDown));
                }
            }
        }
    }
}

impl Shared {
    /// Resolves once every change made so far is on disk (at once in memory storage).
    async fn persist(&self) -> Result<()> {
        match &self.journal {
            Some(journal) => journal.sync().await,
            None => Ok(()),
        }
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
mod tests;
