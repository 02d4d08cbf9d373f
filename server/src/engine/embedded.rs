//! The embedded backend: a sharded lock table with FIFO waiter queues, leases, and expiry
//! timers on the monotonic clock, kept in memory and, unless `--storage memory`, made durable
//! by a [`Journal`]: every change appends the new state of what changed, and the request is
//! answered once that is on disk.
//!
//! Each resource hashes to one of [`SHARDS`] shards, each a `std::sync::Mutex` (never held
//! across an `.await`), so independent resources do not serialise. The fencing counter is one
//! atomic shared by all shards. Every shard has its own expiry task that sleeps until the
//! earliest deadline in the shard and is woken only when an earlier one appears; parked waiters
//! are oneshot channels and cost nothing while they wait.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, Notify};
use tokio::time::{sleep_until, timeout_at, Instant};

use super::journal::{wall_now_ms, Journal, Recovered};
use super::leases::{EndedLease, LeaseTable};
use super::records::Record;
use super::{
    AcquireRequest, FencingToken, Grant, LeaseId, LeaseInfo, Lifetime, LockBackend, LockInfo, LockPage,
    RefreshRequest, Refreshed, ReleaseRequest,
};
use crate::error::{Error, Result};

/// How many shards the lock table is split into.
const SHARDS: usize = 64;

/// The embedded lock backend, in memory or durable. Cheap to clone; all clones share one
/// lock table.
///
/// Must be created inside a Tokio runtime: it spawns its expiry tasks, which end when the last
/// clone is dropped.
#[derive(Clone)]
pub struct EmbeddedBackend {
    shared: Arc<Shared>,
}

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

struct Shard {
    /// Never held across an `.await`.
    state: Mutex<ShardState>,
    /// Wakes this shard's expiry task when a deadline earlier than the one it sleeps on appears.
    timer: Arc<Notify>,
}

#[derive(Default)]
struct ShardState {
    /// Boxed: a B-tree filled in name order leaves its nodes half empty, so the entries are
    /// kept small.
    slots: BTreeMap<Arc<str>, Box<Slot>>,
    timers: Timers,
}

/// Every deadline in a shard, earliest first: one entry per slot that has one.
#[derive(Default)]
struct Timers {
    deadlines: BTreeSet<(Instant, Arc<str>)>,
    /// Set when a new earliest deadline was added: the expiry task must re-arm.
    rearm: bool,
}

/// Everything the table knows about one resource, kept small: a million of them must fit
/// in a few hundred megabytes. Invariant: waiters are queued only while the lock is held.
#[derive(Default)]
struct Slot {
    holder: Option<Holder>,
    /// While held: when the hold expires (`None` without expiry or under a lease). While free:
    /// when the value left behind is dropped.
    deadline: Option<Instant>,
    value: Option<Box<str>>,
    /// Boxed, and absent unless someone waits: most locks never have a queue, and the box
    /// keeps the slot 24 bytes smaller than an empty `VecDeque` would.
    #[allow(clippy::box_collection)]
    waiters: Option<Box<VecDeque<Waiter>>>,
}

struct Holder {
    owner: Box<str>,
    token: FencingToken,
    lease: Option<LeaseId>,
}

struct Waiter {
    id: u64,
    owner: String,
    lifetime: Lifetime,
    value: Option<String>,
    reply: oneshot::Sender<Result<Grant>>,
}

/// What an acquire did at once.
enum Acquired {
    Granted(Grant),
    Queued { name: Arc<str>, id: u64, reply: oneshot::Receiver<Result<Grant>> },
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
    pub fn durable(dir: &Path, value_retention: Duration, compact_after: u64) -> Result<Self, String> {
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
        let shards =
            (0..SHARDS).map(|_| Shard { state: Mutex::default(), timer: Arc::new(Notify::new()) }).collect();
        let shared = Arc::new(Shared {
            shards,
            last_token: AtomicU64::new(recovered.max_token),
            last_waiter: AtomicU64::new(0),
            leases: LeaseTable::new(journal.clone()),
            value_retention,
            shutting_down: AtomicBool::new(false),
            journal,
        });
        shared.restore(recovered);
        for (index, shard) in shared.shards.iter().enumerate() {
            tokio::spawn(run_shard_timer(Arc::downgrade(&shared), index, shard.timer.clone()));
        }
        tokio::spawn(run_lease_timer(Arc::downgrade(&shared), shared.leases.timer.clone()));
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
                let queued = QueuedWait { shared: self.shared.clone(), name, id, reply, settled: false };
                let grant = queued.wait_until(wait_until).await?;
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
            Ok(())
        })?;
        self.shared.persist().await
    }

    async fn refresh(&self, request: RefreshRequest) -> Result<Refreshed> {
        let refreshed = self.shared.with_slot(&request.resource, |cx| cx.refresh(&request))?;
        self.shared.persist().await?;
        Ok(refreshed)
    }

    async fn inspect(&self, resource: &str) -> Result<LockInfo> {
        self.shared.with_slot(resource, |cx| cx.info().ok_or(Error::NotHeld))
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
                    let _ = waiter.reply.send(Err(shutting_down()));
                }
            }
        }
    }
}

fn shutting_down() -> Error {
    Error::Unavailable("the server is shutting down; retry on another server or later".into())
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

    /// Rebuilds the table from what the journal recovered, expiring what expired meanwhile.
    fn restore(&self, recovered: Recovered) {
        let (now, wall) = (Instant::now(), wall_now_ms());
        let instant = |deadline_ms: u64| -> Option<Instant> {
            deadline_ms
                .checked_sub(wall)
                .filter(|left| *left > 0)
                .map(|left| now + Duration::from_millis(left))
        };
        let retention_ms = self.value_retention.as_millis() as u64;
        for (id, (ttl_ms, deadline_ms)) in recovered.leases {
            if let Some(deadline) = instant(deadline_ms) {
                self.leases.restore(LeaseId(id), Duration::from_millis(ttl_ms), deadline);
            }
        }
        for (name, record) in recovered.slots {
            let key: Arc<str> = Arc::from(name.as_str());
            let slot = match record {
                Record::Hold { owner, token, deadline_ms, lease, value, .. } => {
                    let lease = lease.map(LeaseId);
                    let alive = match (&lease, deadline_ms) {
                        (Some(lease), _) => self.leases.attach(lease, &key, now).is_ok(),
                        (None, Some(deadline_ms)) => instant(deadline_ms).is_some(),
                        (None, None) => true,
                    };
                    let value = value.map(String::into_boxed_str);
                    if alive {
                        let holder =
                            Holder { owner: owner.into_boxed_str(), token: FencingToken(token), lease };
                        Slot {
                            holder: Some(holder),
                            deadline: deadline_ms.and_then(instant),
                            value,
                            waiters: None,
                        }
                    } else {
                        // Expired while the server was down: the value stays for the next holder.
                        let ended_ms = deadline_ms.unwrap_or(wall).min(wall);
                        let deadline = instant(ended_ms + retention_ms);
                        Slot {
                            holder: None,
                            value: value.filter(|_| deadline.is_some()),
                            deadline,
                            waiters: None,
                        }
                    }
                }
                Record::Free { value, value_deadline_ms, .. } => {
                    let deadline = value_deadline_ms.and_then(instant);
                    let value = value.filter(|_| deadline.is_some() || value_deadline_ms.is_none());
                    Slot { holder: None, value: value.map(String::into_boxed_str), deadline, waiters: None }
                }
                _ => continue,
            };
            if slot.is_vacant() {
                continue;
            }
            let mut state = self.shard_of(&key).state.lock().unwrap_or_else(PoisonError::into_inner);
            state.timers.update(&key, None, slot.timer_deadline());
            state.slots.insert(key, Box::new(slot));
        }
    }

    /// Emits the whole state as records, one shard at a time, for a snapshot.
    fn snapshot(&self, emit: &mut dyn FnMut(&Record)) {
        let mut records = Vec::new();
        for shard in self.shards.iter() {
            {
                let state = shard.state.lock().unwrap_or_else(PoisonError::into_inner);
                let (now, wall) = (Instant::now(), wall_now_ms());
                records.extend(state.slots.iter().map(|(name, slot)| slot.record(name, now, wall)));
            }
            records.drain(..).for_each(|record| emit(&record));
        }
        self.leases.records(Instant::now(), wall_now_ms()).iter().for_each(emit);
    }

    fn shard_of(&self, name: &str) -> &Shard {
        let mut hasher = DefaultHasher::new();
        name.hash(&mut hasher);
        &self.shards[hasher.finish() as usize % self.shards.len()]
    }

    /// Runs `f` on the slot of `name` (created if absent) under its shard's mutex, after
    /// settling anything already due; then keeps the shard's timers in step with the slot,
    /// drops the slot once it holds nothing, and wakes the expiry task if it must re-arm.
    fn with_slot<R>(&self, name: &str, f: impl FnOnce(&mut SlotCx<'_>) -> R) -> R {
        let shard = self.shard_of(name);
        let mut guard = shard.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *guard;
        let key = match state.slots.get_key_value(name) {
            Some((key, _)) => key.clone(),
            None => {
                let key: Arc<str> = Arc::from(name);
                state.slots.insert(key.clone(), Box::default());
                key
            }
        };
        let slot = state.slots.get_mut(name).expect("the slot was just found or inserted");
        let before = slot.timer_deadline();
        let now = Instant::now();
        let mut cx = SlotCx { slot, name: &key, shared: self, now, dirty: false };
        cx.settle();
        let result = f(&mut cx);
        if let (true, Some(journal)) = (cx.dirty, &self.journal) {
            journal.append(&cx.slot.record(&key, now, wall_now_ms()));
        }
        let after = cx.slot.timer_deadline();
        let vacant = cx.slot.is_vacant();
        state.timers.update(&key, before, after);
        if vacant {
            state.slots.remove(name);
        }
        let rearm = std::mem::take(&mut state.timers.rearm);
        drop(guard);
        if rearm {
            shard.timer.notify_one();
        }
        result
    }

    /// Settles every slot of shard `index` whose deadline has passed; returns the next deadline.
    fn expire_due(&self, index: usize) -> Option<Instant> {
        loop {
            let due = {
                let state = self.shards[index].state.lock().unwrap_or_else(PoisonError::into_inner);
                match state.timers.deadlines.first() {
                    Some((at, name)) if *at <= Instant::now() => (*at, name.clone()),
                    Some((at, _)) => return Some(*at),
                    None => return None,
                }
            };
            self.with_slot(&due.1, |_| ());
            // Settling moved the deadline; should it not have, drop it rather than spin.
            let mut state = self.shards[index].state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.timers.deadlines.first() == Some(&due) {
                state.timers.deadlines.pop_first();
            }
        }
    }

    /// Releases what an ended lease held and refuses its queued waiters.
    fn end_lease(&self, ended: EndedLease) {
        for name in &ended.locks {
            self.with_slot(name, |cx| {
                if cx.slot.holder.as_ref().is_some_and(|h| h.lease.as_ref() == Some(&ended.id)) {
                    cx.end_hold(true);
                }
            });
        }
        let lifetime = Lifetime::Lease(ended.id);
        for name in &ended.waiting {
            self.with_slot(name, |cx| {
                let (refused, kept): (Vec<_>, Vec<_>) =
                    cx.slot.take_waiters().into_iter().partition(|w| w.lifetime == lifetime);
                kept.into_iter().for_each(|waiter| cx.slot.queue().push_back(waiter));
                for waiter in refused {
                    let _ = waiter.reply.send(Err(Error::NoSuchLease));
                }
            });
        }
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> LockPage {
        let now = Instant::now();
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut locks = Vec::new();
        for shard in self.shards.iter() {
            let state = shard.state.lock().unwrap_or_else(PoisonError::into_inner);
            let held = state
                .slots
                .range::<str, _>((start, Bound::Unbounded))
                .take_while(|(name, _)| name.starts_with(prefix))
                .filter_map(|(name, slot)| slot.info(name, self, now))
                .take(limit + 1);
            locks.extend(held);
        }
        locks.sort_by(|a, b| a.resource.cmp(&b.resource));
        locks.truncate(limit + 1);
        let next = if locks.len() > limit {
            locks.pop();
            locks.last().map(|lock| lock.resource.clone())
        } else {
            None
        };
        LockPage { locks, next }
    }
}

/// One slot under its shard's mutex, with what the operations on it need.
struct SlotCx<'a> {
    slot: &'a mut Slot,
    name: &'a Arc<str>,
    shared: &'a Shared,
    now: Instant,
    /// Set by every change to the slot: its new state is journaled.
    dirty: bool,
}

impl SlotCx<'_> {
    /// Expires a hold whose deadline has passed and drops a value whose retention has ended.
    fn settle(&mut self) {
        if self.slot.holder.is_some() && self.slot.deadline.is_some_and(|at| at <= self.now) {
            self.end_hold(true);
        }
        if self.slot.holder.is_none() && self.slot.deadline.is_some_and(|at| at <= self.now) {
            self.slot.value = None;
            self.slot.deadline = None;
            self.dirty = true;
        }
    }

    fn acquire(
        &mut self,
        owner: String,
        lifetime: Lifetime,
        value: Option<String>,
        may_queue: bool,
    ) -> Result<Acquired> {
        let Some(holder) = &self.slot.holder else {
            return self.grant(owner, lifetime, value).map(Acquired::Granted);
        };
        if *holder.owner == *owner {
            return self.renew(lifetime, value).map(Acquired::Granted);
        }
        if !may_queue {
            return Err(self.locked());
        }
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(shutting_down());
        }
        if let Lifetime::Lease(lease) = &lifetime {
            self.shared.leases.note_waiting(lease, self.name, self.now)?;
        }
        let id = self.shared.last_waiter.fetch_add(1, Ordering::Relaxed) + 1;
        let (reply, receiver) = oneshot::channel();
        self.slot.queue().push_back(Waiter { id, owner, lifetime, value, reply });
        Ok(Acquired::Queued { name: self.name.clone(), id, reply: receiver })
    }

    /// Makes `owner` the holder of the free lock under a new fencing token.
    fn grant(&mut self, owner: String, lifetime: Lifetime, value: Option<String>) -> Result<Grant> {
        debug_assert!(self.slot.holder.is_none());
        let (deadline, lease) = self.bind(&lifetime)?;
        if let Some(value) = value {
            self.slot.value = Some(value.into_boxed_str());
        }
        self.slot.deadline = deadline;
        let token = FencingToken(self.shared.last_token.fetch_add(1, Ordering::SeqCst) + 1);
        if let Some(journal) = &self.shared.journal {
            journal.note_token(token.0);
        }
        self.slot.holder = Some(Holder { owner: owner.into_boxed_str(), token, lease });
        self.dirty = true;
        Ok(self.grant_info())
    }

    /// The holder acquires again: same token, lifetime reset, value replaced when given.
    fn renew(&mut self, lifetime: Lifetime, value: Option<String>) -> Result<Grant> {
        let (deadline, lease) = self.bind(&lifetime)?;
        let holder = self.slot.holder.as_mut().expect("renew is called on a held lock");
        if let Some(old) = holder.lease.take().filter(|old| lease.as_ref() != Some(old)) {
            self.shared.leases.detach(&old, self.name);
        }
        holder.lease = lease;
        self.slot.deadline = deadline;
        if let Some(value) = value {
            self.slot.value = Some(value.into_boxed_str());
        }
        self.dirty = true;
        Ok(self.grant_info())
    }

    /// The deadline and lease of a hold that starts now; attaches the lock to its lease.
    fn bind(&self, lifetime: &Lifetime) -> Result<(Option<Instant>, Option<LeaseId>)> {
        Ok(match lifetime {
            Lifetime::Unbounded => (None, None),
            Lifetime::Expire(ttl) => (Some(self.now + *ttl), None),
            Lifetime::Lease(lease) => {
                self.shared.leases.attach(lease, self.name, self.now)?;
                (None, Some(lease.clone()))
            }
        })
    }

    fn grant_info(&self) -> Grant {
        let holder = self.slot.holder.as_ref().expect("a grant describes a held lock");
        Grant {
            resource: self.name.to_string(),
            owner: holder.owner.to_string(),
            token: holder.token,
            expires_in: holder.expires_in(self.slot.deadline, self.shared, self.now),
            value: self.slot.value.as_deref().map(str::to_string),
        }
    }

    fn locked(&self) -> Error {
        match &self.slot.holder {
            Some(holder) => Error::Locked {
                owner: holder.owner.to_string(),
                expires_in: holder.expires_in(self.slot.deadline, self.shared, self.now),
            },
            None => Error::NotHeld,
        }
    }

    fn info(&self) -> Option<LockInfo> {
        self.slot.info(self.name, self.shared, self.now)
    }

    /// Succeeds when `owner` holds the lock (under `token`, when given).
    fn check_holder(&self, owner: &str, token: Option<FencingToken>) -> Result<&Holder> {
        let holder = self.slot.holder.as_ref().ok_or(Error::NotHeld)?;
        if *holder.owner != *owner || token.is_some_and(|token| token != holder.token) {
            return Err(Error::NotOwner);
        }
        Ok(holder)
    }

    fn refresh(&mut self, request: &RefreshRequest) -> Result<Refreshed> {
        let under_lease = self.check_holder(&request.owner, request.token)?.lease.is_some();
        if under_lease && request.expire.is_some() {
            return Err(Error::bad_request(
                "this lock lives as long as its lease: keep the lease alive instead of refreshing its expiry",
            ));
        }
        if let Some(expire) = request.expire {
            self.slot.deadline = Some(self.now + expire);
        }
        if let Some(value) = &request.value {
            self.slot.value = Some(value.as_str().into());
        }
        self.dirty = true;
        let holder = self.slot.holder.as_ref().expect("checked above");
        let expires_in = holder.expires_in(self.slot.deadline, self.shared, self.now);
        Ok(Refreshed { token: holder.token, expires_in })
    }

    /// Ends the current hold and hands the lock to the head waiter. The value stays for the
    /// next holder when `keep_value` (always on expiry: the holder may have died mid-job).
    fn end_hold(&mut self, keep_value: bool) {
        let Some(holder) = self.slot.holder.take() else { return };
        self.slot.deadline = None;
        self.dirty = true;
        if let Some(lease) = &holder.lease {
            self.shared.leases.detach(lease, self.name);
        }
        if !keep_value {
            self.slot.value = None;
        }
        self.promote();
        if self.slot.holder.is_none() && self.slot.value.is_some() {
            self.slot.deadline = Some(self.now + self.shared.value_retention);
        }
    }

    /// Grants the free lock to the first waiter still there, in arrival order.
    fn promote(&mut self) {
        while let Some(waiter) = self.slot.next_waiter() {
            if waiter.reply.is_closed() {
                continue;
            }
            let answer = self.grant(waiter.owner, waiter.lifetime, waiter.value);
            let granted = answer.is_ok();
            if waiter.reply.send(answer).is_ok() && granted {
                return;
            }
            if granted {
                // The waiter left between the check and the send: take the grant back.
                let holder = self.slot.holder.take().expect("just granted");
                self.slot.deadline = None;
                if let Some(lease) = &holder.lease {
                    self.shared.leases.detach(lease, self.name);
                }
            }
        }
    }

    /// A queued waiter's time ran out: leave the queue, unless the lock was granted meanwhile.
    fn give_up(&mut self, id: u64, reply: &mut oneshot::Receiver<Result<Grant>>) -> Result<Grant> {
        if self.slot.remove_waiter(id) {
            return Err(self.locked());
        }
        reply.try_recv().unwrap_or_else(|_| Err(shutting_down()))
    }

    /// A queued waiter went away: leave the queue, and give back a grant it never saw.
    fn cancel(&mut self, id: u64, reply: &mut oneshot::Receiver<Result<Grant>>) {
        if self.slot.remove_waiter(id) {
            return;
        }
        if let Ok(Ok(grant)) = reply.try_recv() {
            if self.slot.holder.as_ref().is_some_and(|h| h.token == grant.token) {
                self.end_hold(true);
            }
        }
    }
}

impl Slot {
    /// The one deadline the shard's timers track for this slot.
    fn timer_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The waiter queue, created on first use.
    fn queue(&mut self) -> &mut VecDeque<Waiter> {
        self.waiters.get_or_insert_with(Box::default)
    }

    /// How many requests are queued.
    fn waiting(&self) -> usize {
        self.waiters.as_ref().map_or(0, |queue| queue.len())
    }

    /// The first waiter, removed from the queue (dropped once empty).
    fn next_waiter(&mut self) -> Option<Waiter> {
        let queue = self.waiters.as_mut()?;
        let waiter = queue.pop_front();
        if queue.is_empty() {
            self.waiters = None;
        }
        waiter
    }

    /// Removes the waiter `id` if it is still queued.
    fn remove_waiter(&mut self, id: u64) -> bool {
        let Some(queue) = self.waiters.as_mut() else { return false };
        let Some(position) = queue.iter().position(|w| w.id == id) else { return false };
        queue.remove(position);
        if queue.is_empty() {
            self.waiters = None;
        }
        true
    }

    /// Every waiter, in order, leaving the queue empty.
    fn take_waiters(&mut self) -> VecDeque<Waiter> {
        self.waiters.take().map(|queue| *queue).unwrap_or_default()
    }

    /// The slot's state as a journal record (deadlines on the wall clock).
    fn record(&self, name: &str, now: Instant, wall_ms: u64) -> Record {
        let wall = |at: Instant| wall_ms + at.saturating_duration_since(now).as_millis() as u64;
        match &self.holder {
            Some(holder) => Record::Hold {
                resource: name.to_string(),
                owner: holder.owner.to_string(),
                token: holder.token.0,
                deadline_ms: self.deadline.map(wall),
                lease: holder.lease.as_ref().map(|lease| lease.0.clone()),
                value: self.value.as_deref().map(str::to_string),
            },
            None => Record::Free {
                resource: name.to_string(),
                value: self.value.as_deref().map(str::to_string),
                value_deadline_ms: self.deadline.map(wall),
            },
        }
    }

    fn is_vacant(&self) -> bool {
        self.holder.is_none() && self.value.is_none() && self.waiters.is_none()
    }

    /// The held lock as inspection shows it; `None` when free or past its deadline.
    fn info(&self, name: &str, shared: &Shared, now: Instant) -> Option<LockInfo> {
        let holder = self.holder.as_ref().filter(|_| self.deadline.is_none_or(|at| at > now))?;
        Some(LockInfo {
            resource: name.to_string(),
            owner: holder.owner.to_string(),
            token: holder.token,
            expires_in: holder.expires_in(self.deadline, shared, now),
            value: self.value.as_deref().map(str::to_string),
            waiters: self.waiting(),
            lease: holder.lease.clone(),
        })
    }
}

impl Holder {
    /// Time left on the hold: until its `deadline`, or its lease's; `None` when unbounded.
    fn expires_in(&self, deadline: Option<Instant>, shared: &Shared, now: Instant) -> Option<Duration> {
        match (&self.lease, deadline) {
            (Some(lease), _) => Some(shared.leases.expires_in(lease, now).unwrap_or_default()),
            (None, Some(at)) => Some(at.saturating_duration_since(now)),
            (None, None) => None,
        }
    }
}

impl Timers {
    fn update(&mut self, name: &Arc<str>, before: Option<Instant>, after: Option<Instant>) {
        if before == after {
            return;
        }
        if let Some(at) = before {
            self.deadlines.remove(&(at, name.clone()));
        }
        if let Some(at) = after {
            if self.deadlines.first().is_none_or(|(first, _)| at < *first) {
                self.rearm = true;
            }
            self.deadlines.insert((at, name.clone()));
        }
    }
}

/// A request queued for a lock. Dropping it before it is answered (the client went away)
/// leaves the queue, or gives back a grant that arrived too late to be seen.
struct QueuedWait {
    shared: Arc<Shared>,
    name: Arc<str>,
    id: u64,
    reply: oneshot::Receiver<Result<Grant>>,
    settled: bool,
}

impl QueuedWait {
    async fn wait_until(mut self, deadline: Instant) -> Result<Grant> {
        let answer = timeout_at(deadline, &mut self.reply).await;
        self.settled = true;
        match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(shutting_down()),
            Err(_elapsed) => {
                let (id, reply) = (self.id, &mut self.reply);
                self.shared.with_slot(&self.name, |cx| cx.give_up(id, reply))
            }
        }
    }
}

impl Drop for QueuedWait {
    fn drop(&mut self) {
        if !self.settled {
            let (id, reply) = (self.id, &mut self.reply);
            self.shared.with_slot(&self.name, |cx| cx.cancel(id, reply));
        }
    }
}

async fn run_shard_timer(shared: Weak<Shared>, index: usize, wake: Arc<Notify>) {
    loop {
        let next = match shared.upgrade() {
            Some(shared) => shared.expire_due(index),
            None => return,
        };
        sleep_or_wake(next, &wake).await;
    }
}

async fn run_lease_timer(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let next = match shared.upgrade() {
            Some(shared) => {
                let (ended, next) = shared.leases.take_expired(Instant::now());
                for lease in ended {
                    shared.end_lease(lease);
                }
                next
            }
            None => return,
        };
        sleep_or_wake(next, &wake).await;
    }
}

async fn sleep_or_wake(until: Option<Instant>, wake: &Notify) {
    match until {
        Some(at) => tokio::select! {
            _ = sleep_until(at) => {}
            _ = wake.notified() => {}
        },
        None => wake.notified().await,
    }
}
