//! The bridge between the lock table and its durable store: rebuilding the table from what
//! recovery found (at start-up, and after a failed write, see [`DurableState::reset`]), and
//! writing the table out as records (one record per slot, for the journal and for snapshots).
//! Deadlines cross this bridge as wall-clock milliseconds.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::expiry::Timers;
use super::slot::{Holder, Slot};
use super::store::{DurableState, HeldBy, Record, Recovered, StoreError};
use super::table::ShardState;
use super::Shared;
use crate::engine::clock::since_start_ms;
use crate::engine::clock::wall_now_ms;
use crate::engine::{EngineError, FencingToken, HoldMode, LeaseId};

impl Shared {
    /// Builds the table from what the journal recovered, expiring what expired meanwhile.
    pub(super) fn restore(&self, recovered: Recovered) {
        let mut shards = self.lock_all();
        self.restore_into(recovered, &mut shards);
    }

    /// Fills the (empty, locked) shards from what the journal recovered.
    fn restore_into(&self, recovered: Recovered, shards: &mut [MutexGuard<'_, ShardState>]) {
        let (mut count, mut bytes) = (0, 0);
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
            let (limit, holders, value) = match record {
                Record::Hold { owner, token, deadline_ms, lease, value, .. } => {
                    (None, vec![HeldBy { owner, token, deadline_ms, lease, mode: 0 }], value)
                }
                Record::Held { limit, holders, value, .. } => (limit, holders, value),
                Record::Free { value, value_deadline_ms, .. } => {
                    let deadline = value_deadline_ms.and_then(instant);
                    let value = value.filter(|_| deadline.is_some() || value_deadline_ms.is_none());
                    let slot = Slot {
                        value: value.map(String::into_boxed_str),
                        value_until: deadline,
                        ..Slot::default()
                    };
                    self.insert_restored(shards, key, slot, &mut count, &mut bytes);
                    continue;
                }
                _ => continue,
            };
            let mut slot = Slot { value: value.map(String::into_boxed_str), limit, ..Slot::default() };
            let mut last_end = None;
            for held in holders {
                let lease = held.lease.map(LeaseId);
                let alive = match (&lease, held.deadline_ms) {
                    (Some(lease), _) => self.leases.attach(lease, &key, now).is_ok(),
                    (None, Some(deadline_ms)) => instant(deadline_ms).is_some(),
                    (None, None) => true,
                };
                if !alive {
                    let ended_ms = held.deadline_ms.unwrap_or(wall).min(wall);
                    last_end = last_end.max(Some(ended_ms));
                    continue;
                }
                slot.holders.push(Holder {
                    owner: held.owner.into_boxed_str(),
                    token: FencingToken(held.token),
                    lease: lease.map(Box::new),
                    deadline: held.deadline_ms.and_then(instant),
                    mode: match held.mode {
                        1 => HoldMode::Shared,
                        2 => HoldMode::Permit,
                        _ => HoldMode::Exclusive,
                    },
                    granted_ms: since_start_ms(now),
                });
            }
            if !slot.is_held() {
                // Every hold expired while the server was down: the value stays for the next holder.
                slot.limit = None;
                slot.value_until = last_end.and_then(|ended_ms| instant(ended_ms + retention_ms));
                if slot.value_until.is_none() {
                    slot.value = None;
                }
            }
            self.insert_restored(shards, key, slot, &mut count, &mut bytes);
        }
        self.locks.store(count, Ordering::Relaxed);
        self.memory.adjust(0, bytes);
    }

    /// Puts a restored slot into its shard, unless it holds nothing.
    fn insert_restored(
        &self,
        shards: &mut [MutexGuard<'_, ShardState>],
        key: Arc<str>,
        slot: Slot,
        count: &mut usize,
        bytes: &mut usize,
    ) {
        if slot.is_vacant() {
            return;
        }
        let state = &mut shards[self.shard_index(&key)];
        state.timers.update(&key, None, slot.deadline());
        *bytes += slot.footprint(&key);
        state.slots.insert(key, Box::new(slot));
        *count += 1;
    }

    /// Emits the whole state as records, one shard at a time, for a snapshot.
    fn write_snapshot(&self, emit: &mut dyn FnMut(&Record)) {
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
}

impl DurableState for Shared {
    fn snapshot(&self, emit: &mut dyn FnMut(&Record)) {
        self.write_snapshot(emit);
    }

    fn reset(&self, recovered: Recovered, failure: &StoreError) {
        let mut shards = self.lock_all();
        for state in shards.iter_mut() {
            for slot in state.slots.values_mut() {
                for waiter in slot.take_waiters() {
                    waiter.refuse(EngineError::Storage(failure.clone()));
                }
            }
            state.slots.clear();
            state.timers = Timers::default();
            state.unsynced.clear();
        }
        self.leases.clear();
        // Tokens only grow: those issued in memory stay issued, the reservation covers them.
        self.last_token.fetch_max(recovered.max_token, Ordering::SeqCst);
        self.restore_into(recovered, &mut shards);
        drop(shards);
        for shard in self.shards.iter() {
            shard.timer.notify_one();
        }
        self.leases.timer.notify_one();
    }
}

impl Slot {
    /// The slot's state as a journal record (deadlines on the wall clock).
    pub(super) fn record(&self, name: &str, now: Instant, wall_ms: u64) -> Record {
        let wall = |at: Instant| wall_ms + at.saturating_duration_since(now).as_millis() as u64;
        let value = self.value.as_deref().map(str::to_string);
        match self.holders.as_slice() {
            [] => Record::Free {
                resource: name.to_string(),
                value,
                value_deadline_ms: self.value_until.map(wall),
            },
            [holder] if holder.mode == HoldMode::Exclusive && self.limit.is_none() => Record::Hold {
                resource: name.to_string(),
                owner: holder.owner.to_string(),
                token: holder.token.0,
                deadline_ms: holder.deadline.map(wall),
                lease: holder.lease.as_ref().map(|lease| lease.0.clone()),
                value,
            },
            holders => Record::Held {
                resource: name.to_string(),
                limit: self.limit,
                holders: holders
                    .iter()
                    .map(|holder| HeldBy {
                        owner: holder.owner.to_string(),
                        token: holder.token.0,
                        deadline_ms: holder.deadline.map(wall),
                        lease: holder.lease.as_ref().map(|lease| lease.0.clone()),
                        mode: match holder.mode {
                            HoldMode::Exclusive => 0,
                            HoldMode::Shared => 1,
                            HoldMode::Permit => 2,
                        },
                    })
                    .collect(),
                value,
            },
        }
    }
}
