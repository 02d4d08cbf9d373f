//! One resource's state: who holds it (one exclusive holder, shared holders, or a semaphore's
//! permits), each hold with its own deadline, the value stored with it, and its FIFO queue.
//! The operations on it run under the shard's mutex, through a [`SlotCx`](super::slot_cx::SlotCx).

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use smallvec::SmallVec;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::Shared;
use crate::engine::capacity::{self, Permit, LOCK_OVERHEAD};
use crate::engine::{
    Claim, EngineError, FencingToken, Grant, HoldMode, HolderInfo, LeaseId, Lifetime, LockInfo, Result,
};

/// What one holder beyond the first counts against `--max-memory`, beyond its owner's name.
pub(super) const HOLDER_OVERHEAD: usize = 96;

/// Everything the table knows about one resource, kept small: a million of them must fit
/// in a few hundred megabytes (one holder is kept inline). Invariants: waiters are queued only
/// while the lock is held or a multi-lock waits at the head; holders of a lock are one
/// exclusive holder or any number of shared ones; a semaphore has at most `limit` holders.
#[derive(Default)]
pub(super) struct Slot {
    /// Who holds it, oldest grant first.
    pub(super) holders: SmallVec<[Holder; 1]>,
    /// While free: when the value left behind is dropped.
    pub(super) value_until: Option<Instant>,
    pub(super) value: Option<Box<str>>,
    /// Boxed, and absent unless someone waits: most locks never have a queue.
    #[allow(clippy::box_collection)]
    pub(super) waiters: Option<Box<VecDeque<Waiter>>>,
    /// While held or waited for: the semaphore's number of permits; `None` for a lock.
    pub(super) limit: Option<u32>,
}

/// One hold.
pub(super) struct Holder {
    pub(super) owner: Box<str>,
    pub(super) token: FencingToken,
    /// Boxed: few holds have a lease, and the slot stays in a smaller allocation.
    pub(super) lease: Option<Box<LeaseId>>,
    /// When the hold expires (`None` without expiry or under a lease).
    pub(super) deadline: Option<Instant>,
    pub(super) mode: HoldMode,
    /// When the hold was granted ([`since_start_ms`](crate::engine::clock::since_start_ms)),
    /// for `lockserver_hold_seconds`.
    pub(super) granted_ms: u64,
}

/// What a queued request is answered with: its grant, and where the change that made it is in
/// the journal (set once it is appended, before the shard's mutex is released), so that the
/// request is answered only once that is on disk.
pub(super) type Handoff = Result<(Grant, Arc<AtomicU64>)>;

/// Where a queued request's answer goes.
pub(super) enum Answer {
    /// A one-lock request: granted by the slot's own hand-off.
    One(oneshot::Sender<Handoff>),
    /// One place of a multi-lock request: it grants itself, once at the head of every queue.
    Many(Arc<MultiWait>),
}

/// What a queued multi-lock request is woken by.
#[derive(Default)]
pub(super) struct MultiWait {
    /// Notified by [`MultiWait::wake`] and [`MultiWait::refuse`].
    pub(super) ready: Notify,
    /// Set when one of its places was refused (its lease ended, the server shuts down).
    refused: Mutex<Option<EngineError>>,
}

impl MultiWait {
    /// One of its locks is free with it at the head of the queue: try to take them all.
    pub(super) fn wake(&self) {
        self.ready.notify_one();
    }

    /// One of its places was refused: the request ends with `error`.
    pub(super) fn refuse(&self, error: EngineError) {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(error);
        self.ready.notify_one();
    }

    /// Why one of its places was refused, if one was.
    pub(super) fn refused(&self) -> Option<EngineError> {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// A queued request.
pub(super) struct Waiter {
    pub(super) id: u64,
    pub(super) owner: String,
    pub(super) lifetime: Lifetime,
    pub(super) value: Option<String>,
    pub(super) claim: Claim,
    pub(super) answer: Answer,
    /// Counts the waiter against `--max-waiters` while it is queued.
    pub(super) _permit: Option<Permit>,
    /// Counts its bytes against `--max-memory` while it is queued.
    pub(super) _memory: Option<Permit>,
}

impl Waiter {
    /// Whether nobody waits for this answer any more.
    pub(super) fn is_gone(&self) -> bool {
        match &self.answer {
            Answer::One(reply) => reply.is_closed(),
            Answer::Many(_) => false,
        }
    }

    /// Answers the waiter with an error.
    pub(super) fn refuse(self, error: EngineError) {
        match self.answer {
            Answer::One(reply) => _ = reply.send(Err(error)),
            Answer::Many(multi) => multi.refuse(error),
        }
    }
}

impl Slot {
    /// The waiter queue, created on first use.
    pub(super) fn queue(&mut self) -> &mut VecDeque<Waiter> {
        self.waiters.get_or_insert_with(Box::default)
    }

    /// How many requests are queued.
    pub(super) fn waiting(&self) -> usize {
        self.waiters.as_ref().map_or(0, |queue| queue.len())
    }

    /// The first waiter, if any.
    pub(super) fn head(&self) -> Option<&Waiter> {
        self.waiters.as_ref()?.front()
    }

    /// The first waiter, removed from the queue (dropped once empty).
    pub(super) fn next_waiter(&mut self) -> Option<Waiter> {
        let queue = self.waiters.as_mut()?;
        let waiter = queue.pop_front();
        if queue.is_empty() {
            self.waiters = None;
        }
        waiter
    }

    /// Removes the waiter `id` if it is still queued.
    pub(super) fn remove_waiter(&mut self, id: u64) -> Option<Waiter> {
        let queue = self.waiters.as_mut()?;
        let position = queue.iter().position(|w| w.id == id)?;
        let waiter = queue.remove(position);
        if queue.is_empty() {
            self.waiters = None;
        }
        waiter
    }

    /// Every waiter, in order, leaving the queue empty.
    pub(super) fn take_waiters(&mut self) -> VecDeque<Waiter> {
        self.waiters.take().map(|queue| *queue).unwrap_or_default()
    }

    /// Whether the slot holds nothing worth keeping.
    pub(super) fn is_vacant(&self) -> bool {
        self.holders.is_empty() && self.value.is_none() && self.waiters.is_none()
    }

    /// Whether anyone holds it.
    pub(super) fn is_held(&self) -> bool {
        !self.holders.is_empty()
    }

    /// The one deadline the shard's timers track: the earliest hold's, or while free, when the
    /// value left behind is dropped.
    pub(super) fn deadline(&self) -> Option<Instant> {
        if self.holders.is_empty() {
            return self.value_until;
        }
        self.holders.iter().filter_map(|holder| holder.deadline).min()
    }

    /// Whether `claim` can be granted beside the current holders (the queue aside).
    pub(super) fn fits(&self, claim: Claim) -> bool {
        match claim {
            Claim::Exclusive => self.holders.is_empty(),
            Claim::Shared => self.holders.iter().all(|holder| holder.mode == HoldMode::Shared),
            Claim::Permit { limit } => self.holders.len() < limit as usize,
        }
    }

    /// Refuses a claim whose limit is not the resource's while it has holders or waiters.
    pub(super) fn check_limit(&self, claim: Claim) -> Result<()> {
        let busy = self.is_held() || self.waiters.is_some();
        if busy && self.limit != claim.limit() {
            return Err(EngineError::LimitMismatch { current: self.limit });
        }
        Ok(())
    }

    /// The index of `owner`'s hold.
    pub(super) fn holder_of(&self, owner: &str) -> Option<usize> {
        self.holders.iter().position(|holder| *holder.owner == *owner)
    }

    /// The bytes the slot of `name` counts against `--max-memory` (its waiters count their own).
    pub(super) fn footprint(&self, name: &str) -> usize {
        let owners: usize = self.holders.iter().map(|holder| holder.owner.len()).sum();
        let extra = self.holders.len().saturating_sub(1) * HOLDER_OVERHEAD;
        let value = self.value.as_ref().map_or(0, |value| value.len());
        capacity::footprint(LOCK_OVERHEAD + extra, &[name.len(), owners, value])
    }

    /// The refusal of a request that cannot be granted now: who holds it.
    pub(super) fn locked(&self, shared: &Shared, now: Instant) -> EngineError {
        let Some(first) = self.holders.first() else {
            // Free, but a multi-lock waits at the head of the queue.
            let owner = self.head().map_or_else(String::new, |waiter| waiter.owner.clone());
            return EngineError::Locked { owner, expires_in: None, holders: Vec::new() };
        };
        EngineError::Locked {
            owner: first.owner.to_string(),
            expires_in: self.holders.iter().filter_map(|holder| holder.expires_in(shared, now)).min(),
            holders: self.holders.iter().map(|holder| holder.owner.to_string()).collect(),
        }
    }

    /// The held lock as inspection shows it; `None` when free or past its deadline.
    pub(super) fn info(&self, name: &str, shared: &Shared, now: Instant) -> Option<LockInfo> {
        let holders: Vec<HolderInfo> = self
            .holders
            .iter()
            .filter(|holder| holder.deadline.is_none_or(|at| at > now))
            .map(|holder| HolderInfo {
                owner: holder.owner.to_string(),
                token: holder.token,
                expires_in: holder.expires_in(shared, now),
                mode: holder.mode,
                lease: holder.lease.as_deref().cloned(),
            })
            .collect();
        let first = holders.first()?.clone();
        Some(LockInfo {
            resource: name.to_string(),
            owner: first.owner,
            token: first.token,
            expires_in: first.expires_in,
            value: self.value.as_deref().map(str::to_string),
            waiters: self.waiting(),
            lease: first.lease,
            mode: first.mode,
            limit: self.limit,
            holders,
        })
    }
}

impl Holder {
    /// Time left on the hold: until its deadline, or its lease's; `None` when unbounded.
    pub(super) fn expires_in(&self, shared: &Shared, now: Instant) -> Option<Duration> {
        match (&self.lease, self.deadline) {
            (Some(lease), _) => Some(shared.leases.expires_in(lease, now).unwrap_or_default()),
            (None, Some(at)) => Some(at.saturating_duration_since(now)),
            (None, None) => None,
        }
    }
}
