//! The lease table: sessions that locks can be bound to, as in etcd and Consul.
//!
//! A lease lives while it is kept alive; when it expires or is revoked, the memory backend
//! releases every lock held under it and refuses every waiter queued under it. Lock order: a
//! shard of the lock table may be locked before this table, never after.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::store::Journal;
use super::store::Record;
use crate::engine::clock::wall_now_ms;
use crate::engine::{EngineError, LeaseId, LeaseInfo, Result};

/// All live leases, behind one mutex: lease calls are rare next to lock calls.
pub(super) struct LeaseTable {
    /// Never held across an `.await`.
    state: Mutex<LeaseState>,
    /// Wakes the lease expiry task when a deadline earlier than the one it sleeps on appears.
    pub(super) timer: Arc<Notify>,
    /// Where grants, keepalives and ends are journaled, under the table's mutex.
    journal: Option<Arc<Journal>>,
}

#[derive(Default)]
struct LeaseState {
    leases: HashMap<LeaseId, Lease>,
    /// Every live lease's deadline, earliest first, for the expiry task.
    deadlines: BTreeSet<(Instant, LeaseId)>,
    /// Where the table's last change is in the journal: lease calls wait until it is on disk.
    unsynced: u64,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    /// The locks held under this lease.
    locks: BTreeSet<Arc<str>>,
    /// Resources where a waiter under this lease may be queued (may name some no longer).
    waiting: HashSet<Arc<str>>,
}

/// What a lease held when it ended: the locks to release and the queues to purge.
pub(super) struct EndedLease {
    pub(super) id: LeaseId,
    pub(super) locks: Vec<Arc<str>>,
    pub(super) waiting: Vec<Arc<str>>,
}

impl LeaseTable {
    pub(super) fn new(journal: Option<Arc<Journal>>) -> Self {
        LeaseTable { state: Mutex::default(), timer: Arc::new(Notify::new()), journal }
    }

    fn state(&self) -> MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Journals a change made under `state`'s mutex; where it is in the journal.
    fn journal(&self, state: &mut LeaseState, record: impl FnOnce() -> Record) -> u64 {
        let Some(journal) = &self.journal else { return 0 };
        state.unsynced = journal.append(&record());
        state.unsynced
    }

    /// Refuses a change while the store cannot write (checked under the table's mutex, so that
    /// a reset after a failed write sees every change made before it).
    fn check_writable(&self) -> Result<()> {
        match &self.journal {
            Some(journal) => journal.check_writable(),
            None => Ok(()),
        }
    }

    /// Where the table's last change is in the journal.
    pub(super) fn unsynced(&self) -> u64 {
        self.state().unsynced
    }

    /// Forgets every lease (the state is being reset to what is on disk).
    pub(super) fn clear(&self) {
        *self.state() = LeaseState::default();
    }

    /// Puts back a lease recovered from the journal.
    pub(super) fn restore(&self, id: LeaseId, ttl: Duration, deadline: Instant) {
        let mut state = self.state();
        state.deadlines.insert((deadline, id.clone()));
        state.leases.insert(id, Lease { ttl, deadline, locks: BTreeSet::new(), waiting: HashSet::new() });
    }

    /// How many leases are alive.
    pub(super) fn len(&self) -> usize {
        self.state().leases.len()
    }

    /// Every live lease as a journal record, for a snapshot.
    pub(super) fn records(&self, now: Instant, wall_ms: u64) -> Vec<Record> {
        self.state().leases.iter().map(|(id, lease)| lease_record(id, lease, now, wall_ms)).collect()
    }

    /// Grants a new lease that expires `ttl` from `now` unless kept alive; also says where the
    /// grant is in the journal.
    pub(super) fn grant(&self, ttl: Duration, id_prefix: &str, now: Instant) -> Result<(LeaseInfo, u64)> {
        let mut state = self.state();
        self.check_writable()?;
        let id = loop {
            let id = LeaseId(format!("{id_prefix}{:016x}", rand::rng().random::<u64>()));
            if !state.leases.contains_key(&id) {
                break id;
            }
        };
        let deadline = now + ttl;
        let earliest = state.deadlines.first().is_none_or(|(first, _)| deadline < *first);
        state.deadlines.insert((deadline, id.clone()));
        let lease = Lease { ttl, deadline, locks: BTreeSet::new(), waiting: HashSet::new() };
        let position = self.journal(&mut state, || lease_record(&id, &lease, now, wall_now_ms()));
        state.leases.insert(id.clone(), lease);
        drop(state);
        if earliest {
            self.timer.notify_one();
        }
        Ok((LeaseInfo { id, ttl, expires_in: ttl, locks: Vec::new() }, position))
    }

    /// Restores the lease's full time to live; also says where that is in the journal.
    pub(super) fn keepalive(&self, id: &LeaseId, now: Instant) -> Result<(Duration, u64)> {
        let mut state = self.state();
        self.check_writable()?;
        let state = &mut *state;
        let lease = live(&mut state.leases, id, now)?;
        state.deadlines.remove(&(lease.deadline, id.clone()));
        lease.deadline = now + lease.ttl;
        state.deadlines.insert((lease.deadline, id.clone()));
        let (ttl, record) = (lease.ttl, lease_record(id, lease, now, wall_now_ms()));
        let position = self.journal(state, || record);
        Ok((ttl, position))
    }

    /// Removes the lease; the caller releases what it held. Also says where that is in the
    /// journal.
    pub(super) fn revoke(&self, id: &LeaseId, now: Instant) -> Result<(EndedLease, u64)> {
        let mut state = self.state();
        self.check_writable()?;
        live(&mut state.leases, id, now)?;
        let position = self.journal(&mut state, || Record::LeaseGone { id: id.0.clone() });
        Ok((remove(&mut state, id).expect("the lease was just found"), position))
    }

    /// Describes a live lease.
    pub(super) fn info(&self, id: &LeaseId, now: Instant) -> Result<LeaseInfo> {
        let mut state = self.state();
        let lease = live(&mut state.leases, id, now)?;
        Ok(LeaseInfo {
            id: id.clone(),
            ttl: lease.ttl,
            expires_in: lease.deadline - now,
            locks: lease.locks.iter().map(|name| name.to_string()).collect(),
        })
    }

    /// Up to `limit` live leases, in id order.
    pub(super) fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now: Instant,
    ) -> Vec<LeaseInfo> {
        let state = self.state();
        let mut alive: Vec<(&LeaseId, &Lease)> = state
            .leases
            .iter()
            .filter(|(id, lease)| {
                lease.deadline > now
                    && id.0.starts_with(prefix)
                    && after.is_none_or(|after| id.0.as_str() > after)
            })
            .collect();
        alive.sort_by(|a, b| a.0.cmp(b.0));
        alive
            .into_iter()
            .take(limit)
            .map(|(id, lease)| LeaseInfo {
                id: id.clone(),
                ttl: lease.ttl,
                expires_in: lease.deadline - now,
                locks: lease.locks.iter().map(|name| name.to_string()).collect(),
            })
            .collect()
    }

    /// Records that `resource` is held under the lease; `NoSuchLease` when it is not alive.
    pub(super) fn attach(&self, id: &LeaseId, resource: &Arc<str>, now: Instant) -> Result<()> {
        let mut state = self.state();
        live(&mut state.leases, id, now)?.locks.insert(resource.clone());
        Ok(())
    }

    /// Forgets that `resource` is held under the lease.
    pub(super) fn detach(&self, id: &LeaseId, resource: &str) {
        if let Some(lease) = self.state().leases.get_mut(id) {
            lease.locks.remove(resource);
        }
    }

    /// Records that a waiter under the lease is queued on `resource`.
    pub(super) fn note_waiting(&self, id: &LeaseId, resource: &Arc<str>, now: Instant) -> Result<()> {
        let mut state = self.state();
        live(&mut state.leases, id, now)?.waiting.insert(resource.clone());
        Ok(())
    }

    /// Time left before the lease expires; `None` when it is not alive.
    pub(super) fn expires_in(&self, id: &LeaseId, now: Instant) -> Option<Duration> {
        let mut state = self.state();
        live(&mut state.leases, id, now).ok().map(|lease| lease.deadline - now)
    }

    /// Removes every lease whose deadline has passed; returns them and the next deadline.
    pub(super) fn take_expired(&self, now: Instant) -> (Vec<EndedLease>, Option<Instant>) {
        let mut state = self.state();
        let mut ended = Vec::new();
        while let Some((deadline, id)) = state.deadlines.first().cloned() {
            if deadline > now {
                return (ended, Some(deadline));
            }
            self.journal(&mut state, || Record::LeaseGone { id: id.0.clone() });
            ended.extend(remove(&mut state, &id));
        }
        (ended, None)
    }
}

fn lease_record(id: &LeaseId, lease: &Lease, now: Instant, wall_ms: u64) -> Record {
    Record::Lease {
        id: id.0.clone(),
        ttl_ms: lease.ttl.as_millis() as u64,
        deadline_ms: wall_ms + lease.deadline.saturating_duration_since(now).as_millis() as u64,
    }
}

/// The lease if it exists and its deadline is ahead of `now`.
fn live<'a>(leases: &'a mut HashMap<LeaseId, Lease>, id: &LeaseId, now: Instant) -> Result<&'a mut Lease> {
    match leases.get_mut(id) {
        Some(lease) if lease.deadline > now => Ok(lease),
        _ => Err(EngineError::NoSuchLease),
    }
}

fn remove(state: &mut LeaseState, id: &LeaseId) -> Option<EndedLease> {
    let lease = state.leases.remove(id)?;
    state.deadlines.remove(&(lease.deadline, id.clone()));
    Some(EndedLease {
        id: id.clone(),
        locks: lease.locks.into_iter().collect(),
        waiting: lease.waiting.into_iter().collect(),
    })
}
