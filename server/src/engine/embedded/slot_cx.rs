//! The operations on one slot under its shard's mutex, through a [`SlotCx`]: grants, renewals,
//! refreshes, releases and expiry. Its queue's side (queueing, the direct hand-off to the head
//! of the queue, leaving it) is `slot_queue.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use super::slot::{Answer, Handoff, Holder, Slot, HOLDER_OVERHEAD};
use super::Shared;
use crate::engine::capacity::{self, LOCK_OVERHEAD};
use crate::engine::clock::since_start_ms;
use crate::engine::watch::{EventHold, EventKind, LockEvent};
use crate::engine::{
    Claim, EngineError, FencingToken, Grant, HoldMode, LeaseId, Lifetime, LockInfo, RefreshRequest,
    Refreshed, Result,
};
use crate::metrics::{self, How};

/// What `too_many` names when `--max-memory` is reached.
pub(super) const MEMORY: &str = "bytes of locks and waiters (--max-memory)";

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

/// What an acquire did at once.
pub(super) enum Acquired {
    Granted(Grant),
    Queued { name: Arc<str>, id: u64, reply: oneshot::Receiver<Handoff> },
}

/// A request to queue: who, for how long, with what, and where its answer goes.
pub(super) struct Queueing {
    pub(super) owner: String,
    pub(super) lifetime: Lifetime,
    pub(super) value: Option<String>,
    pub(super) claim: Claim,
}

/// One slot under its shard's mutex, with what the operations on it need.
pub(super) struct SlotCx<'a> {
    pub(super) slot: &'a mut Slot,
    pub(super) name: &'a Arc<str>,
    pub(super) shared: &'a Shared,
    pub(super) now: Instant,
    /// Set by every change to the slot: its new state is journaled.
    pub(super) dirty: bool,
    /// Where the slot's last change is in the journal (0: none waits for the disk).
    pub(super) unsynced: u64,
    /// Where this change will be in the journal, for the waiters it granted the lock to.
    pub(super) handoff: Option<Arc<AtomicU64>>,
    /// The slot did not exist before this call: granting it adds a lock to the table.
    fresh: bool,
    /// Whether watchers are listening: then `changes` records what happened, in order.
    watched: bool,
    /// The changes made, as watch events name them (only while `watched`).
    pub(super) changes: Vec<EventKind>,
    /// The holds being ended go with their lease (an ended hold is `revoked`, not `released`).
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
    pub(super) fn changed(&mut self, kind: EventKind) {
        if self.watched {
            self.changes.push(kind);
        }
    }

    /// The watch events of the changes made, with the slot as it is now (journal `position`
    /// made them durable; 0 in memory). An event shows the first holder.
    pub(super) fn stage_events(&mut self, position: u64) {
        let changes = std::mem::take(&mut self.changes);
        for kind in changes {
            let ended = matches!(kind, EventKind::Released | EventKind::Expired | EventKind::Revoked);
            let hold = self.slot.holders.first().filter(|_| !ended).map(|holder| EventHold {
                owner: holder.owner.to_string(),
                token: holder.token.0,
                expires_in: holder.expires_in(self.shared, self.now),
            });
            let event = LockEvent {
                id: 0,
                kind,
                resource: self.name.clone(),
                hold,
                value: self.slot.value.as_deref().map(Arc::from),
                waiters: Some(self.slot.waiting()),
                rendered: OnceLock::new(),
            };
            self.shared.events.stage(position, event);
        }
    }

    /// Expires the holds whose deadline has passed (granting who waits) and drops a value
    /// whose retention has ended.
    pub(super) fn settle(&mut self) {
        let now = self.now;
        let mut expired = false;
        while let Some(index) = self.slot.holders.iter().position(|h| h.deadline.is_some_and(|at| at <= now))
        {
            debug!(resource = %self.name, "hold expired");
            self.remove_holder(index, true, HoldEnd::Expired);
            expired = true;
        }
        if expired {
            self.after_end();
        }
        if !self.slot.is_held() && self.slot.value_until.is_some_and(|at| at <= now) {
            self.slot.value = None;
            self.slot.value_until = None;
            self.dirty = true;
        }
    }

    /// Grants the claim, renews the owner's own hold, refuses it, or queues for it.
    pub(super) fn acquire(&mut self, request: Queueing, may_queue: bool) -> Result<Acquired> {
        self.slot.check_limit(request.claim)?;
        let value_len = request.value.as_ref().map_or(0, String::len);
        if let Some(index) = self.slot.holder_of(&request.owner) {
            if self.slot.holders[index].mode == HoldMode::Shared && request.claim == Claim::Exclusive {
                // An upgrade could deadlock two readers that both ask for it: refused.
                return Err(self.slot.locked(self.shared, self.now));
            }
            self.admit(value_len)?;
            let renewed = self.renew(index, request.lifetime, request.value)?;
            self.changed(EventKind::Refreshed);
            return Ok(Acquired::Granted(renewed));
        }
        if self.slot.waiters.is_none() && self.slot.fits(request.claim) {
            self.check_lock_cap()?;
            let overhead = if self.slot.is_held() { HOLDER_OVERHEAD } else { LOCK_OVERHEAD };
            self.admit(capacity::footprint(overhead, &[self.name.len(), request.owner.len(), value_len]))?;
            let grant = self.grant(request.owner, request.lifetime, request.value, request.claim)?;
            self.changed(EventKind::Acquired);
            debug!(resource = %self.name, owner = %grant.owner, token = grant.token.0, "granted");
            metrics::global().granted(How::immediate);
            return Ok(Acquired::Granted(grant));
        }
        if !may_queue {
            return Err(self.slot.locked(self.shared, self.now));
        }
        let (reply, receiver) = oneshot::channel();
        let id = self.enqueue(request, Answer::One(reply), None, true)?;
        Ok(Acquired::Queued { name: self.name.clone(), id, reply: receiver })
    }

    /// Takes the lock for a multi-lock: renews `owner`'s own hold, or grants the free lock.
    pub(super) fn take_for(&mut self, owner: &str, lifetime: Lifetime) -> Result<Grant> {
        if let Some(index) = self.slot.holder_of(owner) {
            let renewed = self.renew(index, lifetime, None)?;
            self.changed(EventKind::Refreshed);
            return Ok(renewed);
        }
        self.check_lock_cap()?;
        let value_len = self.slot.value.as_ref().map_or(0, |value| value.len());
        self.admit(capacity::footprint(LOCK_OVERHEAD, &[self.name.len(), owner.len(), value_len]))?;
        let grant = self.grant(owner.to_string(), lifetime, None, Claim::Exclusive)?;
        self.changed(EventKind::Acquired);
        metrics::global().granted(How::immediate);
        Ok(grant)
    }

    /// Takes back the hold under `token` that its request never saw.
    pub(super) fn withdraw(&mut self, token: FencingToken) {
        if let Some(index) = self.slot.holders.iter().position(|holder| holder.token == token) {
            self.end_hold(index, true, HoldEnd::Withdrawn);
        }
    }

    /// Refuses, with `too_many`, a grant that would add a lock to a table at `--max-locks`.
    fn check_lock_cap(&self) -> Result<()> {
        let max = self.shared.max_locks.load(Ordering::Relaxed);
        if self.fresh && self.shared.locks.load(Ordering::Relaxed) >= max {
            return Err(EngineError::TooMany(format!(
                "this server already holds {max} locks, its cap (--max-locks); retry later"
            )));
        }
        Ok(())
    }

    /// Refuses, with `too_many`, a change that would take `bytes` more than `--max-memory` allows.
    fn admit(&self, bytes: usize) -> Result<()> {
        self.shared.memory.check(bytes, self.max_memory(), MEMORY)
    }

    pub(super) fn max_memory(&self) -> usize {
        self.shared.max_memory.load(Ordering::Relaxed)
    }

    /// Adds `owner` to the holders under a new fencing token (the claim fits).
    pub(super) fn grant(
        &mut self,
        owner: String,
        lifetime: Lifetime,
        value: Option<String>,
        claim: Claim,
    ) -> Result<Grant> {
        debug_assert!(self.slot.fits(claim));
        let (deadline, lease) = self.bind(&lifetime)?;
        if let Some(value) = value {
            self.slot.value = Some(value.into_boxed_str());
        }
        self.slot.value_until = None;
        self.slot.limit = claim.limit();
        let token = self.shared.next_token();
        self.slot.holders.push(Holder {
            owner: owner.into_boxed_str(),
            token,
            lease: lease.map(Box::new),
            deadline,
            mode: claim.mode(),
            granted_ms: since_start_ms(self.now),
        });
        self.dirty = true;
        Ok(self.grant_info(self.slot.holders.len() - 1))
    }

    /// The holder acquires again: same token, lifetime reset, value replaced when given.
    fn renew(&mut self, index: usize, lifetime: Lifetime, value: Option<String>) -> Result<Grant> {
        let (deadline, lease) = self.bind(&lifetime)?;
        let holder = &mut self.slot.holders[index];
        let old = holder.lease.take().filter(|old| lease.as_ref() != Some(&**old));
        holder.lease = lease.map(Box::new);
        holder.deadline = deadline;
        if let Some(old) = old {
            self.detach_unless_used(&old);
        }
        if let Some(value) = value {
            self.slot.value = Some(value.into_boxed_str());
        }
        self.dirty = true;
        Ok(self.grant_info(index))
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

    /// Detaches the lock from `lease` unless another of its holds is still under it.
    fn detach_unless_used(&self, lease: &LeaseId) {
        if !self.slot.holders.iter().any(|holder| holder.lease.as_deref() == Some(lease)) {
            self.shared.leases.detach(lease, self.name);
        }
    }

    fn grant_info(&self, index: usize) -> Grant {
        let holder = &self.slot.holders[index];
        Grant {
            resource: self.name.to_string(),
            owner: holder.owner.to_string(),
            token: holder.token,
            expires_in: holder.expires_in(self.shared, self.now),
            value: self.slot.value.as_deref().map(str::to_string),
        }
    }

    /// The held lock as inspection shows it; `None` when free.
    pub(super) fn info(&self) -> Option<LockInfo> {
        self.slot.info(self.name, self.shared, self.now)
    }

    /// Succeeds when anyone holds the lock.
    pub(super) fn check_held(&self) -> Result<()> {
        if self.slot.is_held() {
            Ok(())
        } else {
            Err(EngineError::NotHeld)
        }
    }

    /// The index of `owner`'s hold (under `token`, when given).
    pub(super) fn check_holder(&self, owner: &str, token: Option<FencingToken>) -> Result<usize> {
        self.check_held()?;
        let index = self.slot.holder_of(owner).ok_or(EngineError::NotOwner)?;
        if token.is_some_and(|token| token != self.slot.holders[index].token) {
            return Err(EngineError::NotOwner);
        }
        Ok(index)
    }

    /// Extends a hold and/or replaces the lock's value.
    pub(super) fn refresh(&mut self, request: &RefreshRequest) -> Result<Refreshed> {
        let index = self.check_holder(&request.owner, request.token)?;
        if self.slot.holders[index].lease.is_some() && request.expire.is_some() {
            return Err(EngineError::LeaseBound);
        }
        self.admit(request.value.as_ref().map_or(0, String::len))?;
        if let Some(expire) = request.expire {
            self.slot.holders[index].deadline = Some(self.now + expire);
        }
        if let Some(value) = &request.value {
            self.slot.value = Some(value.as_str().into());
        }
        self.dirty = true;
        self.changed(EventKind::Refreshed);
        let holder = &self.slot.holders[index];
        Ok(Refreshed { token: holder.token, expires_in: holder.expires_in(self.shared, self.now) })
    }

    /// Ends the hold at `index` and hands what it frees to the head of the queue. The value
    /// stays for the next holder when `keep_value` (always on expiry: the holder may have died
    /// mid-job), and always while others still hold the lock.
    pub(super) fn end_hold(&mut self, index: usize, keep_value: bool, end: HoldEnd) {
        self.remove_holder(index, keep_value, end);
        self.after_end();
    }

    /// Ends every hold (an admin's forced release).
    pub(super) fn end_all(&mut self, keep_value: bool) {
        while self.slot.is_held() {
            self.remove_holder(0, keep_value, HoldEnd::Released);
        }
        self.after_end();
    }

    /// Ends every hold under `lease` (it was revoked or expired).
    pub(super) fn end_lease(&mut self, lease: &LeaseId) {
        self.revoking = true;
        let mut ended = false;
        while let Some(index) = self.slot.holders.iter().position(|h| h.lease.as_deref() == Some(lease)) {
            self.remove_holder(index, true, HoldEnd::Released);
            ended = true;
        }
        if ended {
            self.after_end();
        }
        self.revoking = false;
    }

    /// Removes one hold, without granting anyone yet.
    pub(super) fn remove_holder(&mut self, index: usize, keep_value: bool, end: HoldEnd) {
        let holder = self.slot.holders.remove(index);
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
        self.dirty = true;
        if let Some(lease) = &holder.lease {
            self.detach_unless_used(lease);
        }
        if !keep_value && !self.slot.is_held() {
            self.slot.value = None;
        }
    }

    /// After holds ended: grants who waits, then, if still free, starts the value's retention.
    pub(super) fn after_end(&mut self) {
        self.promote();
        if !self.slot.is_held() {
            if self.slot.value.is_some() && self.slot.value_until.is_none() {
                self.slot.value_until = Some(self.now + self.shared.value_retention);
            }
            if self.slot.waiters.is_none() {
                self.slot.limit = None;
            }
        }
    }
}
