//! The in-memory backend: a sharded lock table with FIFO waiter queues, leases, and expiry
//! timers on the monotonic clock.
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, Notify};
use tokio::time::{sleep_until, timeout_at, Instant};

use super::leases::{EndedLease, LeaseTable};
use super::{
    AcquireRequest, FencingToken, Grant, LeaseId, LeaseInfo, Lifetime, LockBackend, LockInfo, LockPage,
    RefreshRequest, Refreshed, ReleaseRequest,
};
use crate::error::{Error, Result};

/// How many shards the lock table is split into.
const SHARDS: usize = 64;

/// The in-memory lock backend. Cheap to clone; all clones share one lock table.
///
/// Must be created inside a Tokio runtime: it spawns its expiry tasks, which end when the last
/// clone is dropped.
#[derive(Clone)]
pub struct MemoryBackend {
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
}

struct Shard {
    /// Never held across an `.await`.
    state: Mutex<ShardState>,
    /// Wakes this shard's expiry task when a deadline earlier than the one it sleeps on appears.
    timer: Arc<Notify>,
}

#[derive(Default)]
struct ShardState {
    slots: BTreeMap<Arc<str>, Slot>,
    timers: Timers,
}

/// Every deadline in a shard, earliest first: one entry per slot that has one.
#[derive(Default)]
struct Timers {
    deadlines: BTreeSet<(Instant, Arc<str>)>,
    /// Set when a new earliest deadline was added: the expiry task must re-arm.
    rearm: bool,
}

/// Everything the table knows about one resource. Invariant: waiters are queued only while
/// the lock is held.
#[derive(Default)]
struct Slot {
    holder: Option<Holder>,
    value: Option<String>,
    /// While nobody holds the lock: when the value left behind is dropped.
    value_deadline: Option<Instant>,
    waiters: VecDeque<Waiter>,
}

struct Holder {
    owner: String,
    token: FencingToken,
    /// When the hold expires; `None` without expiry or under a lease.
    deadline: Option<Instant>,
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

impl MemoryBackend {
    /// Creates an empty lock table whose released values are kept for `value_retention`.
    pub fn new(value_retention: Duration) -> Self {
        let shards =
            (0..SHARDS).map(|_| Shard { state: Mutex::default(), timer: Arc::new(Notify::new()) }).collect();
        let shared = Arc::new(Shared {
            shards,
            last_token: AtomicU64::new(0),
            last_waiter: AtomicU64::new(0),
            leases: LeaseTable::default(),
            value_retention,
            shutting_down: AtomicBool::new(false),
        });
        for (index, shard) in shared.shards.iter().enumerate() {
            tokio::spawn(run_shard_timer(Arc::downgrade(&shared), index, shard.timer.clone()));
        }
        tokio::spawn(run_lease_timer(Arc::downgrade(&shared), shared.leases.timer.clone()));
        MemoryBackend { shared }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The expiry tasks hold only weak references: wake them so they see it and end.
        for shard in self.shards.iter() {
            shard.timer.notify_one();
        }
        self.leases.timer.notify_one();
    }
}

#[async_trait]
impl LockBackend for MemoryBackend {
    async fn acquire(&self, request: AcquireRequest) -> Result<Grant> {
        let AcquireRequest { resource, owner, lifetime, wait, value } = request;
        let wait_until = Instant::now() + wait;
        let may_queue = !wait.is_zero();
        let acquired =
            self.shared.with_slot(&resource, |cx| cx.acquire(owner, lifetime, value, may_queue))?;
        match acquired {
            Acquired::Granted(grant) => Ok(grant),
            Acquired::Queued { name, id, reply } => {
                let queued = QueuedWait { shared: self.shared.clone(), name, id, reply, settled: false };
                queued.wait_until(wait_until).await
            }
        }
    }

    async fn release(&self, request: ReleaseRequest) -> Result<()> {
        self.shared.with_slot(&request.resource, |cx| {
            cx.check_holder(&request.owner, request.token)?;
            cx.end_hold(request.keep_value);
            Ok(())
        })
    }

    async fn refresh(&self, request: RefreshRequest) -> Result<Refreshed> {
        self.shared.with_slot(&request.resource, |cx| cx.refresh(&request))
    }

    async fn inspect(&self, resource: &str) -> Result<LockInfo> {
        self.shared.with_slot(resource, |cx| cx.info().ok_or(Error::NotHeld))
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<LockPage> {
        Ok(self.shared.list(prefix, after, limit))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseInfo> {
        Ok(self.shared.leases.grant(ttl, Instant::now()))
    }

    async fn keepalive(&self, lease: &LeaseId) -> Result<Duration> {
        self.shared.leases.keepalive(lease, Instant::now())
    }

    async fn revoke(&self, lease: &LeaseId) -> Result<()> {
        let ended = self.shared.leases.revoke(lease, Instant::now())?;
        self.shared.end_lease(ended);
        Ok(())
    }

    async fn lease_info(&self, lease: &LeaseId) -> Result<LeaseInfo> {
        self.shared.leases.info(lease, Instant::now())
    }

    async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        for shard in self.shared.shards.iter() {
            let mut state = shard.state.lock().unwrap_or_else(PoisonError::into_inner);
            for slot in state.slots.values_mut() {
                for waiter in slot.waiters.drain(..) {
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
                state.slots.insert(key.clone(), Slot::default());
                key
            }
        };
        let slot = state.slots.get_mut(name).expect("the slot was just found or inserted");
        let before = slot.timer_deadline();
        let mut cx = SlotCx { slot, name: &key, shared: self, now: Instant::now() };
        cx.settle();
        let result = f(&mut cx);
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
                let (refused, kept) = cx.slot.waiters.drain(..).partition(|w| w.lifetime == lifetime);
                cx.slot.waiters = kept;
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
}

impl SlotCx<'_> {
    /// Expires a hold whose deadline has passed and drops a value whose retention has ended.
    fn settle(&mut self) {
        if self.slot.holder.as_ref().and_then(|h| h.deadline).is_some_and(|at| at <= self.now) {
            self.end_hold(true);
        }
        if self.slot.holder.is_none() && self.slot.value_deadline.is_some_and(|at| at <= self.now) {
            self.slot.value = None;
            self.slot.value_deadline = None;
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
        if holder.owner == owner {
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
        self.slot.waiters.push_back(Waiter { id, owner, lifetime, value, reply });
        Ok(Acquired::Queued { name: self.name.clone(), id, reply: receiver })
    }

    /// Makes `owner` the holder of the free lock under a new fencing token.
    fn grant(&mut self, owner: String, lifetime: Lifetime, value: Option<String>) -> Result<Grant> {
        debug_assert!(self.slot.holder.is_none());
        let (deadline, lease) = self.bind(&lifetime)?;
        if value.is_some() {
            self.slot.value = value;
        }
        self.slot.value_deadline = None;
        let token = FencingToken(self.shared.last_token.fetch_add(1, Ordering::SeqCst) + 1);
        self.slot.holder = Some(Holder { owner, token, deadline, lease });
        Ok(self.grant_info())
    }

    /// The holder acquires again: same token, lifetime reset, value replaced when given.
    fn renew(&mut self, lifetime: Lifetime, value: Option<String>) -> Result<Grant> {
        let (deadline, lease) = self.bind(&lifetime)?;
        let holder = self.slot.holder.as_mut().expect("renew is called on a held lock");
        if let Some(old) = holder.lease.take().filter(|old| lease.as_ref() != Some(old)) {
            self.shared.leases.detach(&old, self.name);
        }
        holder.deadline = deadline;
        holder.lease = lease;
        if value.is_some() {
            self.slot.value = value;
        }
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
            owner: holder.owner.clone(),
            token: holder.token,
            expires_in: holder.expires_in(self.shared, self.now),
            value: self.slot.value.clone(),
        }
    }

    fn locked(&self) -> Error {
        match &self.slot.holder {
            Some(holder) => Error::Locked {
                owner: holder.owner.clone(),
                expires_in: holder.expires_in(self.shared, self.now),
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
        if holder.owner != owner || token.is_some_and(|token| token != holder.token) {
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
        let holder = self.slot.holder.as_mut().expect("checked above");
        if let Some(expire) = request.expire {
            holder.deadline = Some(self.now + expire);
        }
        if request.value.is_some() {
            self.slot.value = request.value.clone();
        }
        let holder = self.slot.holder.as_ref().expect("checked above");
        Ok(Refreshed { token: holder.token, expires_in: holder.expires_in(self.shared, self.now) })
    }

    /// Ends the current hold and hands the lock to the head waiter. The value stays for the
    /// next holder when `keep_value` (always on expiry: the holder may have died mid-job).
    fn end_hold(&mut self, keep_value: bool) {
        let Some(holder) = self.slot.holder.take() else { return };
        if let Some(lease) = &holder.lease {
            self.shared.leases.detach(lease, self.name);
        }
        if !keep_value {
            self.slot.value = None;
        }
        self.promote();
        if self.slot.holder.is_none() && self.slot.value.is_some() {
            self.slot.value_deadline = Some(self.now + self.shared.value_retention);
        }
    }

    /// Grants the free lock to the first waiter still there, in arrival order.
    fn promote(&mut self) {
        while let Some(waiter) = self.slot.waiters.pop_front() {
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
                if let Some(lease) = &holder.lease {
                    self.shared.leases.detach(lease, self.name);
                }
            }
        }
    }

    /// A queued waiter's time ran out: leave the queue, unless the lock was granted meanwhile.
    fn give_up(&mut self, id: u64, reply: &mut oneshot::Receiver<Result<Grant>>) -> Result<Grant> {
        if let Some(position) = self.slot.waiters.iter().position(|w| w.id == id) {
            self.slot.waiters.remove(position);
            return Err(self.locked());
        }
        reply.try_recv().unwrap_or_else(|_| Err(shutting_down()))
    }

    /// A queued waiter went away: leave the queue, and give back a grant it never saw.
    fn cancel(&mut self, id: u64, reply: &mut oneshot::Receiver<Result<Grant>>) {
        if let Some(position) = self.slot.waiters.iter().position(|w| w.id == id) {
            self.slot.waiters.remove(position);
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
        match &self.holder {
            Some(holder) => holder.deadline,
            None => self.value_deadline,
        }
    }

    fn is_vacant(&self) -> bool {
        self.holder.is_none() && self.value.is_none() && self.waiters.is_empty()
    }

    /// The held lock as inspection shows it; `None` when free or past its deadline.
    fn info(&self, name: &str, shared: &Shared, now: Instant) -> Option<LockInfo> {
        let holder = self.holder.as_ref().filter(|h| h.deadline.is_none_or(|at| at > now))?;
        Some(LockInfo {
            resource: name.to_string(),
            owner: holder.owner.clone(),
            token: holder.token,
            expires_in: holder.expires_in(shared, now),
            value: self.value.clone(),
            waiters: self.waiters.len(),
            lease: holder.lease.clone(),
        })
    }
}

impl Holder {
    /// Time left on the hold: until its deadline, or its lease's; `None` when unbounded.
    fn expires_in(&self, shared: &Shared, now: Instant) -> Option<Duration> {
        match (&self.lease, self.deadline) {
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
