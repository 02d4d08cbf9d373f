//! The sharded lock table: which shard a resource lives in, and running an operation on one
//! slot under its shard's mutex, keeping the shard's deadlines and the journal in step.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::expiry::Timers;
use super::leases::EndedLease;
use super::slot::Slot;
use super::slot_cx::SlotCx;
use super::Shared;
use crate::engine::clock::wall_now_ms;
use crate::engine::{EngineError, Lifetime, ListRequest, LockPage, Result};

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
    /// Where in the journal the last change of each slot that may not be on disk yet is. Others
    /// wait for it before they act on or read that slot: a change is seen only once durable.
    /// Kept beside the slots, not in them: few slots are in flight at once.
    pub(super) unsynced: HashMap<Arc<str>, u64>,
}

/// A slot taken out of its shard for an operation, with what putting it back needs.
struct Opened {
    key: Arc<str>,
    slot: Box<Slot>,
    /// It did not exist before.
    fresh: bool,
    /// Its deadline before the operation.
    before: Option<Instant>,
    /// Its bytes before the operation.
    bytes_before: usize,
    /// Where its last change is in the journal, if that may not be on disk yet.
    unsynced: u64,
}

impl Opened {
    /// Takes the slot of `name` out of `state` (a new one if absent).
    fn take(state: &mut ShardState, name: &str) -> Opened {
        let unsynced = state.unsynced.get(name).copied().unwrap_or(0);
        match state.slots.remove_entry(name) {
            Some((key, slot)) => Opened {
                before: slot.deadline(),
                bytes_before: slot.footprint(&key),
                key,
                slot,
                fresh: false,
                unsynced,
            },
            None => Opened {
                key: Arc::from(name),
                slot: Box::default(),
                fresh: true,
                before: None,
                bytes_before: 0,
                unsynced,
            },
        }
    }
}

/// How many in-flight positions a shard keeps before it forgets those already on disk.
const UNSYNCED_KEPT: usize = 256;

/// The empty shards of a new table.
pub(super) fn shards() -> Box<[Shard]> {
    (0..SHARDS).map(|_| Shard { state: Mutex::default(), timer: Arc::new(Notify::new()) }).collect()
}

impl Shared {
    pub(super) fn shard_of(&self, name: &str) -> &Shard {
        &self.shards[self.shard_index(name)]
    }

    /// The index of the shard `name` lives in.
    pub(super) fn shard_index(&self, name: &str) -> usize {
        let mut hasher = DefaultHasher::new();
        name.hash(&mut hasher);
        hasher.finish() as usize % self.shards.len()
    }

    /// Every shard's mutex, taken in order (the one order in which several are ever held).
    pub(super) fn lock_all(&self) -> Vec<MutexGuard<'_, ShardState>> {
        self.shards.iter().map(|shard| shard.state.lock().unwrap_or_else(PoisonError::into_inner)).collect()
    }

    /// How far the journal is on disk (everything, in memory storage).
    pub(super) fn durable(&self) -> u64 {
        self.journal.as_ref().map_or(u64::MAX, |journal| journal.durable())
    }

    /// Runs `f` on the slot of `name` (created if absent) under its shard's mutex, after
    /// settling anything already due; then journals the slot if `f` changed it, keeps the
    /// shard's timers in step with the slot, drops the slot once it holds nothing, and wakes the
    /// expiry task if it must re-arm. It does not wait for the disk: see [`Self::with_durable_slot`].
    pub(super) fn with_slot<R>(&self, name: &str, f: impl FnOnce(&mut SlotCx<'_>) -> R) -> R {
        self.with_slot_at(name, f).0
    }

    /// [`Self::with_slot`], also saying where the change is in the journal (0: no change).
    fn with_slot_at<R>(&self, name: &str, f: impl FnOnce(&mut SlotCx<'_>) -> R) -> (R, u64) {
        self.with_slots_at(&[name], |cxs| f(cxs.first_mut().expect("one slot")))
    }

    /// Runs `f` on the slots of `names` (distinct) at once, under their shards' mutexes taken
    /// in index order, the one order in which several are ever held. Their changes are
    /// journaled together (one frame: recovered all or none) and published in one step.
    /// Returns where they are in the journal (0: no change).
    pub(super) fn with_slots_at<R>(
        &self,
        names: &[&str],
        f: impl FnOnce(&mut [SlotCx<'_>]) -> R,
    ) -> (R, u64) {
        let mut shard_indexes: Vec<usize> = names.iter().map(|name| self.shard_index(name)).collect();
        shard_indexes.sort_unstable();
        shard_indexes.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, ShardState>)> = shard_indexes
            .iter()
            .map(|&index| (index, self.shards[index].state.lock().unwrap_or_else(PoisonError::into_inner)))
            .collect();
        let now = Instant::now();
        let mut opened: Vec<Opened> = names
            .iter()
            .map(|name| {
                let index = self.shard_index(name);
                let (_, state) = guards.iter_mut().find(|(i, _)| *i == index).expect("its shard is locked");
                Opened::take(state, name)
            })
            .collect();
        let mut cxs: Vec<SlotCx<'_>> = opened
            .iter_mut()
            .map(|open| SlotCx::new(&mut open.slot, &open.key, self, now, open.unsynced, open.fresh))
            .collect();
        for cx in cxs.iter_mut() {
            cx.settle();
        }
        let result = f(&mut cxs);
        let mut position = 0;
        if let Some(journal) = &self.journal {
            let wall = wall_now_ms();
            let records: Vec<_> =
                cxs.iter().filter(|cx| cx.dirty).map(|cx| cx.slot.record(cx.name, now, wall)).collect();
            if !records.is_empty() {
                position = journal.append_all(&records);
            }
        }
        for cx in cxs.iter_mut() {
            if let Some(handoff) = &cx.handoff {
                handoff.store(position, Ordering::Release);
            }
            if !cx.changes.is_empty() {
                cx.stage_events(if cx.dirty { position } else { 0 });
            }
        }
        let written: Vec<u64> = cxs.iter().map(|cx| if cx.dirty { position } else { 0 }).collect();
        drop(cxs);
        for (open, written) in opened.into_iter().zip(written) {
            let index = self.shard_index(&open.key);
            let (_, state) = guards.iter_mut().find(|(i, _)| *i == index).expect("its shard is locked");
            self.put_back(state, open, written);
        }
        let rearm: Vec<usize> = guards
            .iter_mut()
            .filter_map(|(index, state)| std::mem::take(&mut state.timers.rearm).then_some(*index))
            .collect();
        drop(guards);
        for index in rearm {
            self.shards[index].timer.notify_one();
        }
        (result, position)
    }

    /// Puts a slot back after an operation: its bytes, its deadline in the shard's timers,
    /// where its last change is in the journal (`written`, 0: none pending), the count of
    /// slots; a slot that holds nothing is dropped.
    fn put_back(&self, state: &mut ShardState, open: Opened, written: u64) {
        let Opened { key, slot, fresh, before, bytes_before, .. } = open;
        let vacant = slot.is_vacant();
        self.memory.adjust(bytes_before, if vacant { 0 } else { slot.footprint(&key) });
        state.timers.update(&key, before, slot.deadline());
        if written > 0 {
            if state.unsynced.len() >= UNSYNCED_KEPT {
                let durable = self.durable();
                state.unsynced.retain(|_, at| *at > durable);
            }
            state.unsynced.insert(key.clone(), written);
        }
        match (fresh, vacant) {
            (true, false) => _ = self.locks.fetch_add(1, Ordering::Relaxed),
            (false, true) => _ = self.locks.fetch_sub(1, Ordering::Relaxed),
            _ => {}
        }
        if !vacant {
            state.slots.insert(key, slot);
        }
    }

    /// Runs `f` on the slot of `name` once no change to it is still on its way to the disk,
    /// so that `f` sees and builds on durable state only. With `writes`, it refuses while the
    /// store cannot write. Returns what `f` returned and where its change is in the journal
    /// (0: no change).
    pub(super) async fn with_durable_slot<R>(
        &self,
        name: &str,
        writes: bool,
        f: impl FnOnce(&mut SlotCx<'_>) -> Result<R>,
    ) -> Result<(R, u64)> {
        self.with_durable_slots(&[name], writes, |cxs| f(cxs.first_mut().expect("one slot"))).await
    }

    /// [`Self::with_durable_slot`] for several slots at once (see [`Self::with_slots_at`]).
    pub(super) async fn with_durable_slots<R>(
        &self,
        names: &[&str],
        writes: bool,
        f: impl FnOnce(&mut [SlotCx<'_>]) -> Result<R>,
    ) -> Result<(R, u64)> {
        let Some(journal) = &self.journal else {
            let (result, _) = self.with_slots_at(names, f);
            return result.map(|result| (result, 0));
        };
        let mut f = Some(f);
        loop {
            journal.check_readable()?;
            let (outcome, position) = self.with_slots_at(names, |cxs| {
                let unsynced = cxs.iter().map(|cx| cx.unsynced).max().unwrap_or(0);
                if unsynced > journal.durable() {
                    return Err(unsynced);
                }
                if writes {
                    if let Err(refused) = journal.check_writable() {
                        return Ok(Err(refused));
                    }
                }
                Ok((f.take().expect("runs once"))(cxs))
            });
            match outcome {
                Ok(result) => return result.map(|result| (result, position)),
                Err(unsynced) => journal.wait_for(unsynced).await,
            }
        }
    }

    /// Resolves once the change at `position` is on disk; the storage error if it was lost.
    pub(super) async fn written(&self, position: u64) -> Result<()> {
        match &self.journal {
            Some(journal) if position > 0 => journal.wait_written(position).await,
            _ => Ok(()),
        }
    }

    /// Releases what an ended lease held and refuses its queued waiters.
    /// Returns where the last of these changes is in the journal.
    pub(super) fn end_lease(&self, ended: EndedLease) -> u64 {
        let mut last = 0;
        for name in &ended.locks {
            let ((), position) = self.with_slot_at(name, |cx| cx.end_lease(&ended.id));
            last = last.max(position);
        }
        let lifetime = Lifetime::Lease(ended.id);
        for name in &ended.waiting {
            self.with_slot(name, |cx| cx.refuse_waiters(&lifetime, EngineError::NoSuchLease));
        }
        last
    }

    /// One page of held locks whose names start with `prefix`, in name order, after `after`,
    /// once every change to them is on disk.
    pub(super) async fn list(&self, request: &ListRequest) -> Result<LockPage> {
        loop {
            if let Some(journal) = &self.journal {
                journal.check_readable()?;
            }
            match self.list_now(request) {
                Ok(page) => return Ok(page),
                Err(unsynced) => {
                    self.journal.as_ref().expect("only journaled changes wait").wait_for(unsynced).await
                }
            }
        }
    }

    /// How many locks are held under names starting with `prefix` (after `after`), up to
    /// `at_most`.
    pub(super) fn count_held(&self, prefix: &str, after: Option<&str>, at_most: usize) -> usize {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut count = 0;
        for shard in self.shards.iter() {
            let state = shard.state.lock().unwrap_or_else(PoisonError::into_inner);
            count += state
                .slots
                .range::<str, _>((start, Bound::Unbounded))
                .take_while(|(name, _)| name.starts_with(prefix))
                .filter(|(_, slot)| slot.is_held())
                .take(at_most - count.min(at_most))
                .count();
            if count >= at_most {
                break;
            }
        }
        count
    }

    /// The page as it is now; the furthest journal position to wait for, if it shows a change
    /// that is not on disk yet.
    fn list_now(&self, request: &ListRequest) -> Result<LockPage, u64> {
        let (prefix, after, limit) = (request.prefix.as_str(), request.after.as_deref(), request.limit);
        let now = Instant::now();
        let durable = self.durable();
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut locks = Vec::new();
        let mut unsynced = 0;
        for shard in self.shards.iter() {
            let state = shard.state.lock().unwrap_or_else(PoisonError::into_inner);
            let held = state
                .slots
                .range::<str, _>((start, Bound::Unbounded))
                .take_while(|(name, _)| name.starts_with(prefix))
                .filter_map(|(name, slot)| {
                    let at = state.unsynced.get(name).copied().unwrap_or(0);
                    if at > durable {
                        unsynced = unsynced.max(at);
                    }
                    let mut info = slot.info(name, self, now)?;
                    if !request.values {
                        info.value = None; // not copied: pages of large values stay small
                    }
                    Some(info)
                })
                .take(limit + 1);
            locks.extend(held);
        }
        if unsynced > 0 {
            return Err(unsynced);
        }
        locks.sort_by(|a, b| a.resource.cmp(&b.resource));
        locks.truncate(limit + 1);
        Ok(request.page(locks))
    }
}
