//! The sharded lock table: which shard a resource lives in, and running an operation on one
//! slot under its shard's mutex, keeping the shard's deadlines and the journal in step.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::expiry::Timers;
use super::leases::EndedLease;
use super::slot::{Slot, SlotCx};
use super::Shared;
use crate::engine::clock::wall_now_ms;
use crate::engine::{EngineError, Lifetime, LockPage};

/// How many shards the lock table is split into.
const SHARDS: usize = 64;

/// One shard of the table.
pub(super) struct Shard {
    /// Never held across an `.await`.
    pub(super) state: Mutex<ShardState>,
    /// Wakes this shard's expiry task when a deadline earlier than the one it sleeps on appears.
    pub(super) timer: Arc<Notify>,
}

/// What a shard's mutex guards.
#[derive(Default)]
pub(super) struct ShardState {
    /// Boxed: a B-tree filled in name order leaves its nodes half empty, so the entries are
    /// kept small.
    pub(super) slots: BTreeMap<Arc<str>, Box<Slot>>,
    pub(super) timers: Timers,
}

/// The empty shards of a new table.
pub(super) fn shards() -> Box<[Shard]> {
    (0..SHARDS).map(|_| Shard { state: Mutex::default(), timer: Arc::new(Notify::new()) }).collect()
}

impl Shared {
    pub(super) fn shard_of(&self, name: &str) -> &Shard {
        let mut hasher = DefaultHasher::new();
        name.hash(&mut hasher);
        &self.shards[hasher.finish() as usize % self.shards.len()]
    }

    /// Runs `f` on the slot of `name` (created if absent) under its shard's mutex, after
    /// settling anything already due; then journals the slot if `f` changed it, keeps the
    /// shard's timers in step with the slot, drops the slot once it holds nothing, and wakes the
    /// expiry task if it must re-arm.
    pub(super) fn with_slot<R>(&self, name: &str, f: impl FnOnce(&mut SlotCx<'_>) -> R) -> R {
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
        let before = slot.deadline;
        let now = Instant::now();
        let mut cx = SlotCx::new(slot, &key, self, now);
        cx.settle();
        let result = f(&mut cx);
        if let (true, Some(journal)) = (cx.dirty, &self.journal) {
            journal.append(&cx.slot.record(&key, now, wall_now_ms()));
        }
        let after = cx.slot.deadline;
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

    /// Releases what an ended lease held and refuses its queued waiters.
    pub(super) fn end_lease(&self, ended: EndedLease) {
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
                    let _ = waiter.reply.send(Err(EngineError::NoSuchLease));
                }
            });
        }
    }

    /// One page of held locks whose names start with `prefix`, in name order, after `after`.
    pub(super) fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> LockPage {
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
