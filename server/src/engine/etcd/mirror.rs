//! The gateway's picture of its lock space: every hold and every queued waiter under its
//! prefix, kept up to date by its one watch (`events.rs`) and by its own transactions.
//!
//! It is a hint, never trusted for safety: every write made from it compares in etcd what it
//! assumed (a holder key's mod revision, the head waiter's create revision), and a stale picture
//! costs a retry, not a wrong answer. It lets a release hand the lock to the head waiter in the
//! same transaction, and it wakes this gateway's waiters when their lock changes, without a
//! watch stream of their own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use etcd_client::{Event, EventType, KeyValue};
use tokio::sync::Notify;

use super::keys::{decode, Keys, WaiterRecord};
use super::reads::Hold;

/// A waiter key as the mirror knows it.
#[derive(Debug, Clone)]
pub(super) struct Waiting {
    pub(super) key: Vec<u8>,
    /// The waiter id (the key's last part).
    pub(super) id: String,
    pub(super) record: WaiterRecord,
    /// The create revision: the place in the queue, and the token of the grant it gets.
    pub(super) revision: i64,
    /// The etcd lease the key is bound to: its gateway's session lease.
    pub(super) session: i64,
}

impl Waiting {
    pub(super) fn parse(keys: &Keys, kv: &KeyValue) -> Option<(String, Waiting)> {
        let (name, id) = keys.name_of_waiter(kv.key())?;
        let record = decode(kv.key(), kv.value()).ok()?;
        let waiting = Waiting {
            key: kv.key().to_vec(),
            id,
            record,
            revision: kv.create_revision(),
            session: kv.lease(),
        };
        Some((name, waiting))
    }
}

/// What one of this gateway's waiters sees of its lock.
#[derive(Debug)]
pub(super) struct Situation {
    /// The lock's hold, if any.
    pub(super) hold: Option<Hold>,
    /// Whether the waiter's key is still queued.
    pub(super) queued: bool,
    /// Whether no waiter is queued ahead of it.
    pub(super) head: bool,
}

/// The mirror. Cheap to share: one mutex, held for map operations only.
#[derive(Default)]
pub(super) struct Mirror {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The revision up to which the watch delivered every change.
    applied: i64,
    holds: HashMap<String, Hold>,
    /// Each lock's waiters by create revision.
    queues: HashMap<String, BTreeMap<i64, Waiting>>,
    /// Holds this gateway ended itself, at the revision it ended them, until the watch
    /// delivers that revision (so a late-arriving picture of the hold does not bring it back).
    ended: HashMap<String, i64>,
    /// This gateway's waiters' wake-ups, by lock and by the waiter's place in the queue.
    local: HashMap<String, BTreeMap<i64, Arc<Notify>>>,
    /// How many lease records were deleted so far (lease-bound waiters check theirs then).
    leases_ended: u64,
}

/// One waiter's interest in its lock: wakes it when the lock changes while it is one of this
/// gateway's first two waiters on the lock (the one that may be granted, and the next, which
/// may become the head); forgotten when dropped.
pub(super) struct Interest<'a> {
    mirror: &'a Mirror,
    name: String,
    revision: i64,
    pub(super) notify: Arc<Notify>,
}

impl Drop for Interest<'_> {
    fn drop(&mut self) {
        let mut state = self.mirror.state();
        if let Some(waiters) = state.local.get_mut(&self.name) {
            waiters.remove(&self.revision);
            if waiters.is_empty() {
                state.local.remove(&self.name);
            }
        }
        // The next of this gateway's waiters is now among the first two.
        state.wake(&self.name);
    }
}

impl State {
    /// Wakes this gateway's first two waiters on `name`.
    fn wake(&self, name: &str) {
        for notify in self.local.get(name).into_iter().flat_map(|waiters| waiters.values().take(2)) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter of this gateway.
    fn wake_all(&self) {
        for notify in self.local.values().flat_map(|waiters| waiters.values()) {
            notify.notify_waiters();
        }
    }
}

impl Mirror {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hold of `name`, as last known.
    pub(super) fn hold(&self, name: &str) -> Option<Hold> {
        self.state().holds.get(name).cloned()
    }

    /// The first waiter queued for `name`, as last known.
    pub(super) fn head(&self, name: &str) -> Option<Waiting> {
        self.state().queues.get(name).and_then(|queue| queue.values().next().cloned())
    }

    /// What the waiter queued at `revision` sees; `None` until the watch has
    /// delivered its own queueing.
    pub(super) fn situation(&self, name: &str, revision: i64) -> Option<Situation> {
        let state = self.state();
        if state.applied < revision {
            return None;
        }
        let queue = state.queues.get(name);
        Some(Situation {
            hold: state.holds.get(name).cloned(),
            queued: queue.is_some_and(|queue| queue.contains_key(&revision)),
            head: queue.and_then(|queue| queue.keys().next()) == Some(&revision),
        })
    }

    /// How many lease records were deleted so far.
    pub(super) fn leases_ended(&self) -> u64 {
        self.state().leases_ended
    }

    /// Registers the interest of the waiter queued for `name` at `revision`.
    pub(super) fn interest(&self, name: &str, revision: i64) -> Interest<'_> {
        self.interest_with(name, revision, Arc::new(Notify::new()))
    }

    /// [`Mirror::interest`], woken through `notify` (a multi-lock's one for all its locks).
    pub(super) fn interest_with(&self, name: &str, revision: i64, notify: Arc<Notify>) -> Interest<'_> {
        self.state().local.entry(name.to_string()).or_default().insert(revision, notify.clone());
        Interest { mirror: self, name: name.to_string(), revision, notify }
    }

    /// Replaces the whole picture with what was read at `revision`.
    pub(super) fn load(&self, holds: Vec<(String, Hold)>, waiters: Vec<(String, Waiting)>, revision: i64) {
        let mut state = self.state();
        state.holds = holds.into_iter().collect();
        state.queues.clear();
        for (name, waiting) in waiters {
            state.queues.entry(name).or_default().insert(waiting.revision, waiting);
        }
        state.applied = revision;
        state.ended.clear();
        state.leases_ended += 1;
        state.wake_all();
    }

    /// Applies what the watch delivered.
    pub(super) fn apply(&self, keys: &Keys, events: &[Event]) {
        let mut state = self.state();
        let mut changed = Vec::new();
        let mut lease_ended = false;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            state.applied = state.applied.max(revision);
            let put = event.event_type() == EventType::Put;
            if let Some(name) = keys.name_of_hold(kv.key()) {
                let newer_known = state.holds.get(&name).is_some_and(|hold| hold.mod_revision > revision)
                    || state.ended.get(&name).is_some_and(|ended| *ended > revision);
                if put {
                    if let (Ok(hold), false) = (Hold::parse(kv), newer_known) {
                        state.holds.insert(name.clone(), hold);
                    }
                } else if state.holds.get(&name).is_some_and(|hold| hold.mod_revision < revision) {
                    state.holds.remove(&name);
                }
                changed.push(name);
            } else if let Some((name, id)) = keys.name_of_waiter(kv.key()) {
                if put {
                    if let Some((_, waiting)) = Waiting::parse(keys, kv) {
                        state.queues.entry(name.clone()).or_default().insert(waiting.revision, waiting);
                    }
                } else if let Some(queue) = state.queues.get_mut(&name) {
                    queue.retain(|_, waiting| waiting.id != id);
                    if queue.is_empty() {
                        state.queues.remove(&name);
                    }
                }
                changed.push(name);
            } else if let Some(name) = keys.name_of_ticket(kv.key()) {
                // A group hold's holder joined or left: its waiters look again.
                changed.push(name);
            } else if !put && keys.name_of_lease(kv.key()).is_some() {
                lease_ended = true;
            }
        }
        let applied = state.applied;
        state.ended.retain(|_, revision| *revision > applied);
        if lease_ended {
            state.leases_ended += 1;
            state.wake_all();
            return;
        }
        for name in changed {
            state.wake(&name);
        }
    }

    /// Records a hold this gateway wrote at `revision` (unless the watch got further already).
    pub(super) fn held(&self, name: &str, hold: Hold) {
        let mut state = self.state();
        let revision = hold.mod_revision;
        let newer_known = state.holds.get(name).is_some_and(|known| known.mod_revision >= revision)
            || state.ended.get(name).is_some_and(|ended| *ended >= revision);
        if revision > state.applied && !newer_known {
            state.holds.insert(name.to_string(), hold);
        }
    }

    /// Records a hold this gateway handed to the waiter queued at `waiter_revision`.
    pub(super) fn handed_off(&self, name: &str, hold: Hold, waiter_revision: i64) {
        self.held(name, hold);
        let mut state = self.state();
        if let Some(queue) = state.queues.get_mut(name) {
            queue.remove(&waiter_revision);
            if queue.is_empty() {
                state.queues.remove(name);
            }
        }
        state.wake(name);
    }

    /// Records that this gateway ended the hold of `name` at `revision`.
    pub(super) fn ended(&self, name: &str, revision: i64) {
        let mut state = self.state();
        if revision <= state.applied {
            return;
        }
        if state.holds.get(name).is_some_and(|hold| hold.mod_revision < revision) {
            state.holds.remove(name);
        }
        state.ended.insert(name.to_string(), revision);
        state.wake(name);
    }
}
