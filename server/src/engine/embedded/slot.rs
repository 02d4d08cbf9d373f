//! One resource's state machine: who holds it, until when, its value, and its FIFO queue.
//! Grants, renewals, refreshes, releases and the direct hand-off to the head waiter all happen
//! here, under the shard's mutex, through a [`SlotCx`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use super::Shared;
use crate::engine::capacity::{self, Permit, LOCK_OVERHEAD, WAITER_OVERHEAD};
use crate::engine::clock::since_start_ms;
use crate::engine::watch::{EventHold, EventKind, LockEvent};
use crate::engine::{
    EngineError, FencingToken, Grant, LeaseId, Lifetime, LockInfo, RefreshRequest, Refreshed, Result,
};
use crate::metrics::{self, How};

/// What `too_many` names when `--max-memory` is reached.
const MEMORY: &str = "bytes of locks and waiters (--max-memory)";

/// Everything the table knows about one resource, kept small: a million of them must fit
/// in a few hundred megabytes. Invariant: waiters are queued only while the lock is held.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) holder: Option<Holder>,
    /// While held: when the hold expires (`None` without expiry or under a lease). While free:
    /// when the value left behind is dropped. The one deadline the shard's timers track.
    pub(super) deadline: Option<Instant>,
    pub(super) value: Option<Box<str>>,
    /// Boxed, and absent unless someone waits: most locks never have a queue, and the box
    /// keeps the slot 24 bytes smaller than an empty `VecDeque` would.
    #[allow(clippy::box_collection)]
    pub(super) waiters: Option<Box<VecDeque<Waiter>>>,
}

/// The current hold.
pub(super) struct Holder {
    pub(super) owner: Box<str>,
    pub(super) token: FencingToken,
    /// Boxed: few holds have a lease, and the slot stays in a smaller allocation.
    pub(super) lease: Option<Box<LeaseId>>,
    /// When the hold was granted ([`since_start_ms`]), for `lockserver_hold_seconds`.
    pub(super) granted_ms: u64,
}

/// Why a hold ends, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HoldEnd {
    /// Released by its holder, or with its lease.
    Released,
    /// Its deadline passed.
    Expired,
    /// A grant taken back before its waiter saw it: no hold to count.
    Withdrawn,
}

/// What a queued request is answered with: its grant, and where the change that made it is in
/// the journal (set once it is appended, before the shard's mutex is released), so that the
/// request is answered only once that is on disk.
pub(super) type Handoff = Result<(Grant, Arc<AtomicU64>)>;

/// A queued request.
pub(super) struct Waiter {
    id: u64,
    owner: String,
    pub(super) lifetime: Lifetime,
    value: Option<String>,
    pub(super) reply: oneshot::Sender<Handoff>,
    /// Counts the waiter against `--max-waiters` while it is queued.
    _permit: Permit,
    /// Counts its bytes against `--max-memory` while it is queued.
    _memory: Permit,
}

/// What an acquire did at once.
pub(super) enum Acquired {
    Granted(Grant),
    Queued { name: Arc<str>, id: u64, reply: oneshot::Receiver<Handoff> },
}

/// One slot under its shard's mutex, with what the operations on it need.
pub(super) struct SlotCx<'a> {
    pub(super) slot: &'a mut Slot,
    name: &'a Arc<str>,
    shared: &'a Shared,
    now: Instant,
    /// Set by every change to the slot: its new state is journaled.
    pub(super) dirty: bool,
    /// Where the slot's last change is in the journal (0: none waits for the disk).
    pub(super) unsynced: u64,
    /// Where this change will be in the journal, for the waiter it granted the lock to.
    pub(super) handoff: Option<Arc<AtomicU64>>,
    /// The slot did not exist before this call: granting it adds a lock to the table.
    fresh: bool,
    /// Whether watchers are listening: then `changes` records what happened, in order.
    pub(super) watched: bool,
    /// The changes made, as watch events name them (only while `watched`).
    pub(super) changes: Vec<EventKind>,
    /// The hold being ended goes with its lease (an ended hold is `revoked`, not `released`).
    pub(super) revoking: bool,
}

impl<'a> SlotCx<'a> {
    pub(super) fn new(
        slot: &'a mut Slot,
        name: &'a Arc<str>,
        shared: &'a Shared,
        now: Instant,
        unsynced: u64,
        fresh: bool,
    ) -> Self {
        let watched = shared.events.active();
        SlotCx {
            slot,
            name,
            shared,
            now,
            dirty: false,
            unsynced,
            handoff: None,
            fresh,
            watched,
            changes: Vec::new(),
            revoking: false,
        }
    }

    /// Records a change for watchers, if any listen.
    fn changed(&mut self, kind: EventKind) {
        if self.watched {
            self.changes.push(kind);
        }
    }

    /// The watch events of the changes made, with the slot as it is now (journal `position`
    /// made them durable; 0 in memory).
    pub(super) fn stage_events(&mut self, position: u64) {
        let changes = std::mem::take(&mut self.changes);
        for kind in changes {
            let ended = matches!(kind, EventKind::Released | EventKind::Expired | EventKind::Revoked);
            let hold = self.slot.holder.as_ref().filter(|_| !ended).map(|holder| EventHold {
                owner: holder.owner.to_string(),
                token: holder.token.0,
                expires_in: holder.expires_in(self.slot.deadline, self.shared, self.now),
            });
            let event = LockEvent {
                id: 0,
                kind,
                resource: self.name.clone(),
                hold,
                value: self.slot.value.as_deref().map(Arc::from),
                waiters: Some(self.slot.waiters.as_ref().map_or(0, |queue| queue.len())),
                rendered: OnceLock::new(),
            };
            self.shared.events.stage(position, event);
        }
    }

    /// Expires a hold whose deadline has passed and drops a value whose retention has ended.
    pub(super) fn settle(&mut self) {
        if self.slot.holder.is_some() && self.slot.deadline.is_some_and(|at| at <= self.now) {
            debug!(resource = %self.name, "hold expired");
            self.end_hold(true, HoldEnd::Expired);
        }
        if self.slot.holder.is_none() && self.slot.deadline.is_some_and(|at| at <= self.now) {
            self.slot.value = None;
            self.slot.deadline = None;
            self.dirty = true;
        }
    }

    /// Grants the lock, renews the holder's own hold, refuses it, or queues for it.
    pub(super) fn acquire(
        &mut self,
        owner: String,
        lifetime: Lifetime,
        value: Option<String>,
        may_queue: bool,
    ) -> Result<Acquired> {
        let value_len = value.as_ref().map_or(0, String::len);
        let Some(holder) = &self.slot.holder else {
            let max = self.shared.max_locks.load(Ordering::Relaxed);
            if self.fresh && self.shared.locks.load(Ordering::Relaxed) >= max {
                return Err(EngineError::TooMany(format!(
                    "this server already holds {max} locks, its cap (--max-locks); retry later"
                )));
            }
            self.admit(capacity::footprint(LOCK_OVERHEAD, &[self.name.len(), owner.len(), value_len]))?;
            let grant = self.grant(owner, lifetime, value)?;
            self.changed(EventKind::Acquired);
            debug!(resource = %self.name, owner = %grant.owner, token = grant.token.0, "granted");
            metrics::global().granted(How::immediate);
            return Ok(Acquired::Granted(grant));
        };
        if *holder.owner == *owner {
            self.admit(value_len)?;
            let renewed = self.renew(lifetime, value)?;
            self.changed(EventKind::Refreshed);
            return Ok(Acquired::Granted(renewed));
        }
        if !may_queue {
            return Err(self.locked());
        }
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        if let Lifetime::Lease(lease) = &lifetime {
            self.shared.leases.note_waiting(lease, self.name, self.now)?;
        }
        let max = self.shared.max_waiters.load(Ordering::Relaxed);
        let permit = self.shared.waiters.take(max, "queued waiters (--max-waiters)")?;
        let bytes = capacity::footprint(WAITER_OVERHEAD, &[owner.len(), value_len]);
        let memory = self.shared.memory.take_many(bytes, self.max_memory(), MEMORY)?;
        let id = self.shared.last_waiter.fetch_add(1, Ordering::Relaxed) + 1;
        let (reply, receiver) = oneshot::channel();
        self.slot.queue().push_back(Waiter {
            id,
            owner,
            lifetime,
            value,
            reply,
            _permit: permit,
            _memory: memory,
        });
        Ok(Acquired::Queued { name: self.name.clone(), id, reply: receiver })
    }

    /// Refuses, with `too_many`, a change that would take `bytes` more than `--max-memory` allows.
    fn admit(&self, bytes: usize) -> Result<()> {
        self.shared.memory.check(bytes, self.max_memory(), MEMORY)
    }

    fn max_memory(&self) -> usize {
        self.shared.max_memory.load(Ordering::Relaxed)
    }

    /// Makes `owner` the holder of the free lock under a new fencing token.
    fn grant(&mut self, owner: String, lifetime: Lifetime, value: Option<String>) -> Result<Grant> {
        debug_assert!(self.slot.holder.is_none());
        let (deadline, lease) = self.bind(&lifetime)?;
        if let Some(value) = value {
            self.slot.value = Some(value.into_boxed_str());
        }
        self.slot.deadline = deadline;
        let token = self.shared.next_token();
        let granted_ms = since_start_ms(self.now);
        self.slot.holder =
            Some(Holder { owner: owner.into_boxed_str(), token, lease: lease.map(Box::new), granted_ms });
        self.dirty = true;
        Ok(self.grant_info())
    }

    /// The holder acquires again: same token, lifetime reset, value replaced when given.
    fn renew(&mut self, lifetime: Lifetime, value: Option<String>) -> Result<Grant> {
        let (deadline, lease) = self.bind(&lifetime)?;
        let holder = self.slot.holder.as_mut().expect("renew is called on a held lock");
        if let Some(old) = holder.lease.take().filter(|old| lease.as_ref() != Some(&**old)) {
            self.shared.leases.detach(&old, self.name);
        }
        holder.lease = lease.map(Box::new);
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

    fn locked(&self) -> EngineError {
        match &self.slot.holder {
            Some(holder) => EngineError::Locked {
                owner: holder.owner.to_string(),
                expires_in: holder.expires_in(self.slot.deadline, self.shared, self.now),
            },
            None => EngineError::NotHeld,
        }
    }

    /// The held lock as inspection shows it; `None` when free.
    pub(super) fn info(&self) -> Option<LockInfo> {
        self.slot.info(self.name, self.shared, self.now)
    }

    /// Succeeds when anyone holds the lock.
    pub(super) fn check_held(&self) -> Result<&Holder> {
        self.slot.holder.as_ref().ok_or(EngineError::NotHeld)
    }

    /// Succeeds when `owner` holds the lock (under `token`, when given).
    pub(super) fn check_holder(&self, owner: &str, token: Option<FencingToken>) -> Result<&Holder> {
        let holder = self.slot.holder.as_ref().ok_or(EngineError::NotHeld)?;
        if *holder.owner != *owner || token.is_some_and(|token| token != holder.token) {
            return Err(EngineError::NotOwner);
        }
        Ok(holder)
    }

    /// Extends the hold and/or replaces its value.
    pub(super) fn refresh(&mut self, request: &RefreshRequest) -> Result<Refreshed> {
        let under_lease = self.check_holder(&request.owner, request.token)?.lease.is_some();
        if under_lease && request.expire.is_some() {
            return Err(EngineError::LeaseBound);
        }
        self.admit(request.value.as_ref().map_or(0, String::len))?;
        if let Some(expire) = request.expire {
            self.slot.deadline = Some(self.now + expire);
        }
        if let Some(value) = &request.value {
            self.slot.value = Some(value.as_str().into());
        }
        self.dirty = true;
        self.changed(EventKind::Refreshed);
        let holder = self.slot.holder.as_ref().expect("checked above");
        let expires_in = holder.expires_in(self.slot.deadline, self.shared, self.now);
        Ok(Refreshed { token: holder.token, expires_in })
    }

    /// Ends the current hold and hands the lock to the head waiter. The value stays for the
    /// next holder when `keep_value` (always on expiry: the holder may have died mid-job).
    pub(super) fn end_hold(&mut self, keep_value: bool, end: HoldEnd) {
        let Some(holder) = self.slot.holder.take() else { return };
        match end {
            _ if self.revoking => self.changed(EventKind::Revoked),
            HoldEnd::Released => self.changed(EventKind::Released),
            HoldEnd::Expired => self.changed(EventKind::Expired),
            HoldEnd::Withdrawn => {}
        }
        if end != HoldEnd::Withdrawn {
            let held = Duration::from_millis(since_start_ms(self.now).saturating_sub(holder.granted_ms));
            metrics::global().ended(end == HoldEnd::Expired, Some(held));
        }
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
            let handoff = self.handoff.get_or_insert_with(Arc::default).clone();
            let token = self.slot.holder.as_ref().map(|holder| holder.token.0);
            if waiter.reply.send(answer.map(|grant| (grant, handoff))).is_ok() && granted {
                self.changed(EventKind::Handoff);
                debug!(resource = %self.name, token, "handed off to the head waiter");
                metrics::global().granted(How::handoff);
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
    pub(super) fn give_up(&mut self, id: u64, reply: &mut oneshot::Receiver<Handoff>) -> Handoff {
        if self.slot.remove_waiter(id) {
            return Err(self.locked());
        }
        reply.try_recv().unwrap_or(Err(EngineError::ShuttingDown))
    }

    /// A queued waiter went away: leave the queue, and give back a grant it never saw.
    pub(super) fn cancel(&mut self, id: u64, reply: &mut oneshot::Receiver<Handoff>) {
        if self.slot.remove_waiter(id) {
            return;
        }
        if let Ok(Ok((grant, _))) = reply.try_recv() {
            if self.slot.holder.as_ref().is_some_and(|h| h.token == grant.token) {
                self.end_hold(true, HoldEnd::Withdrawn);
            }
        }
    }
}

impl Slot {
    /// The waiter queue, created on first use.
    pub(super) fn queue(&mut self) -> &mut VecDeque<Waiter> {
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
    pub(super) fn take_waiters(&mut self) -> VecDeque<Waiter> {
        self.waiters.take().map(|queue| *queue).unwrap_or_default()
    }

    /// Whether the slot holds nothing worth keeping.
    pub(super) fn is_vacant(&self) -> bool {
        self.holder.is_none() && self.value.is_none() && self.waiters.is_none()
    }

    /// The bytes the slot of `name` counts against `--max-memory` (its waiters count their own).
    pub(super) fn footprint(&self, name: &str) -> usize {
        let owner = self.holder.as_ref().map_or(0, |holder| holder.owner.len());
        let value = self.value.as_ref().map_or(0, |value| value.len());
        capacity::footprint(LOCK_OVERHEAD, &[name.len(), owner, value])
    }

    /// The held lock as inspection shows it; `None` when free or past its deadline.
    pub(super) fn info(&self, name: &str, shared: &Shared, now: Instant) -> Option<LockInfo> {
        let holder = self.holder.as_ref().filter(|_| self.deadline.is_none_or(|at| at > now))?;
        Some(LockInfo {
            resource: name.to_string(),
            owner: holder.owner.to_string(),
            token: holder.token,
            expires_in: holder.expires_in(self.deadline, shared, now),
            value: self.value.as_deref().map(str::to_string),
            waiters: self.waiting(),
            lease: holder.lease.as_deref().cloned(),
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
