//! Lock events for watchers (`GET /watch`): what changed, on which lock, and the hold after the
//! change, each with an id that only grows. Both backends publish into one [`WatchHub`]: the
//! embedded one from the engine, once a change is durable; the etcd one from its gateway-wide
//! watch, with ids made of etcd revisions.
//!
//! The hub keeps a bounded history for watchers that reconnect with the last id they saw, and
//! fans events out on bounded broadcast channels, one per watched resource and one for prefix
//! watchers: a change wakes only those who may want it, a watcher that falls behind is told to
//! reset, and the engine never waits for anyone. While nobody has watched for [`IDLE_AFTER`], nothing is
//! recorded at all: changes then cost one atomic load.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;

use crate::engine::clock::since_start_ms;

/// How long after the last watcher left events are still recorded (for reconnects).
pub const IDLE_AFTER: Duration = Duration::from_secs(60);
/// Events kept for watchers that reconnect.
const HISTORY: usize = 16_384;
/// Events a watcher may fall behind before it is told to reset.
const BACKLOG: usize = 4_096;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Granted at once: it was free.
    Acquired,
    /// Released by its holder (or forced by an admin).
    Released,
    /// Its deadline passed.
    Expired,
    /// Its holder extended it, acquired it again or replaced its value.
    Refreshed,
    /// Granted to the head waiter.
    Handoff,
    /// Its lease ended.
    Revoked,
}

/// A hold as an event shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventHold {
    /// The holder.
    pub owner: String,
    /// Its fencing token.
    pub token: u64,
    /// Time left when the event was made; `None` without an expiry of its own.
    pub expires_in: Option<Duration>,
}

/// One change to one lock.
#[derive(Debug, Clone, PartialEq)]
pub struct LockEvent {
    /// Grows with every event of this server (on etcd: the revision, times 256, plus the
    /// event's place in it).
    pub id: u64,
    /// What changed.
    pub kind: EventKind,
    /// The lock's stored name.
    pub resource: Arc<str>,
    /// The hold after the change; `None` when free.
    pub hold: Option<EventHold>,
    /// The value after the change (on etcd: as read a moment after it).
    pub value: Option<Arc<str>>,
    /// Requests queued after the change (on etcd: as read a moment after it; `None` if that
    /// read failed).
    pub waiters: Option<usize>,
    /// The event as the layer that sends it renders it, made once and shared by every watcher
    /// (the name a watcher sees is the same for all who may see it: the stored name's own
    /// namespace is stripped).
    pub rendered: OnceLock<Arc<[u8]>>,
}

/// What a watcher receives.
#[derive(Debug, Clone)]
pub enum Signal {
    /// A change.
    Event(Arc<LockEvent>),
    /// Events were lost (a failed write, a broken etcd watch): read the state again.
    Reset,
    /// The server is shutting down: the watch ends.
    End,
}

/// Where a new watcher starts.
pub enum Start {
    /// Every event after the one it named, still in the history.
    Replay(Vec<Arc<LockEvent>>),
    /// Its last id is unknown (too old, or none given with one expected): read the state.
    Reset,
}

/// The events of one server.
pub struct WatchHub {
    state: Mutex<HubState>,
    /// To the prefix watchers (each filters by its prefix).
    sender: broadcast::Sender<Signal>,
    /// Whether events are recorded: someone watches, or watched less than [`IDLE_AFTER`] ago.
    active: AtomicBool,
    /// When the last watcher left ([`since_start_ms`]), if none is left; 0 otherwise.
    idle_since_ms: AtomicU64,
    /// Woken when an event is staged, or the hub closes.
    staged: Notify,
    closed: AtomicBool,
}

struct HubState {
    next_id: u64,
    /// Every event from this id on is in `history`: a watcher that saw the one before can
    /// resume. `u64::MAX` while recording has not started (nothing is known).
    known_from: u64,
    /// Published events, oldest first.
    history: VecDeque<Arc<LockEvent>>,
    /// Events waiting for their change to reach the disk, in id order, with its position.
    pending: VecDeque<(u64, Arc<LockEvent>)>,
    watchers: usize,
    /// To the watchers of one resource, by its stored name.
    by_resource: HashMap<Arc<str>, broadcast::Sender<Signal>>,
}

/// What a watcher follows.
#[derive(Debug, Clone)]
pub enum Scope {
    /// One lock, by stored name.
    Resource(Arc<str>),
    /// Locks by prefix (the watcher filters).
    Prefix,
}

impl WatchHub {
    /// A hub whose first event id is `first_id` (the embedded backend starts at the wall
    /// clock's microseconds, so ids grow across restarts too).
    pub fn new(first_id: u64) -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        WatchHub {
            state: Mutex::new(HubState {
                next_id: first_id.max(1),
                known_from: u64::MAX,
                history: VecDeque::new(),
                pending: VecDeque::new(),
                watchers: 0,
                by_resource: HashMap::new(),
            }),
            sender,
            active: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            staged: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Whether events are being recorded now; when false, publishing may be skipped.
    pub fn active(&self) -> bool {
        if !self.active.load(Ordering::Relaxed) {
            return false;
        }
        let idle_since = self.idle_since_ms.load(Ordering::Relaxed);
        if idle_since > 0
            && since_start_ms(Instant::now()).saturating_sub(idle_since) > IDLE_AFTER.as_millis() as u64
        {
            let mut state = self.lock();
            if state.watchers == 0 {
                // From now on changes go unrecorded: leave a hole in the ids, so that nobody
                // resumes across it.
                self.active.store(false, Ordering::Relaxed);
                state.next_id += 1;
                Self::forget(&mut state);
                return false;
            }
        }
        true
    }

    /// The next id, for a change about to be published or staged (`id: 0` in `event`).
    fn assign(state: &mut HubState, mut event: LockEvent) -> Arc<LockEvent> {
        if event.id == 0 {
            event.id = state.next_id;
            state.next_id += 1;
        } else {
            state.next_id = state.next_id.max(event.id + 1);
        }
        Arc::new(event)
    }

    /// Publishes `event` now. Its `id` is assigned here when 0; a given id must exceed every
    /// earlier one.
    pub fn publish(&self, event: LockEvent) {
        self.stage(0, event);
    }

    /// Stages `event`, made by the change at journal `position`: it is published once
    /// [`WatchHub::durable`] passes that position, after every event staged before it.
    pub fn stage(&self, position: u64, event: LockEvent) {
        let mut state = self.lock();
        let event = Self::assign(&mut state, event);
        if position == 0 && state.pending.is_empty() {
            self.send(&mut state, event);
        } else {
            state.pending.push_back((position, event));
            self.staged.notify_one();
        }
    }

    /// Waits until an event is staged; the journal position the oldest one waits for.
    /// `None` once the hub is closed.
    pub async fn next_staged(&self) -> Option<u64> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            if let Some((position, _)) = self.lock().pending.front() {
                return Some(*position);
            }
            self.staged.notified().await;
        }
    }

    /// Ends [`WatchHub::next_staged`]'s waits: the backend is gone.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.staged.notify_one();
    }

    /// The journal is on disk up to `durable`: publishes what waited for it.
    pub fn durable(&self, durable: u64) {
        let mut state = self.lock();
        while state.pending.front().is_some_and(|(position, _)| *position <= durable) {
            let (_, event) = state.pending.pop_front().expect("just looked");
            self.send(&mut state, event);
        }
    }

    /// A write failed: what is staged beyond `durable` never happened. Tells every watcher to
    /// read the state again.
    pub fn lost_after(&self, durable: u64) {
        self.durable(durable);
        let mut state = self.lock();
        state.pending.clear();
        Self::forget(&mut state);
        self.send_reset(&state);
    }

    /// Tells every watcher to read the state again (events were missed).
    pub fn reset(&self) {
        let mut state = self.lock();
        Self::forget(&mut state);
        self.send_reset(&state);
    }

    fn send_reset(&self, state: &HubState) {
        self.send_all(state, Signal::Reset);
    }

    /// Ends every watch (the server is shutting down), so that none holds its connection open.
    pub fn end_all(&self) {
        self.send_all(&self.lock(), Signal::End);
    }

    fn send_all(&self, state: &HubState, signal: Signal) {
        let _ = self.sender.send(signal.clone());
        for sender in state.by_resource.values() {
            let _ = sender.send(signal.clone());
        }
    }

    /// Empties the history: nobody can resume from before now.
    fn forget(state: &mut HubState) {
        state.history.clear();
        state.known_from = u64::MAX;
    }

    /// The id of the last event (0 before any).
    pub fn last_id(&self) -> u64 {
        self.lock().next_id - 1
    }

    /// A new watcher: where it starts, and its channel. `after` is the last id it saw, if any;
    /// with `None` it starts from now.
    pub fn subscribe(self: &Arc<Self>, after: Option<u64>, scope: Scope) -> (Start, Watcher) {
        let mut state = self.lock();
        state.watchers += 1;
        if !self.active.swap(true, Ordering::Relaxed) {
            // Recording starts now: what happened before is not known.
            state.history.clear();
            state.known_from = u64::MAX;
        }
        self.idle_since_ms.store(0, Ordering::Relaxed);
        let sender = match &scope {
            Scope::Prefix => self.sender.clone(),
            Scope::Resource(name) => {
                state.by_resource.entry(name.clone()).or_insert_with(|| broadcast::channel(BACKLOG).0).clone()
            }
        };
        let receiver = sender.subscribe();
        let start = match after {
            None => Start::Replay(Vec::new()),
            Some(after) if after.saturating_add(1) >= state.known_from && after < state.next_id => {
                Start::Replay(state.history.iter().filter(|event| event.id > after).cloned().collect())
            }
            Some(_) => Start::Reset,
        };
        (start, Watcher { receiver, sender, hub: self.clone(), scope })
    }

    fn send(&self, state: &mut HubState, event: Arc<LockEvent>) {
        if state.known_from == u64::MAX {
            state.known_from = event.id;
        }
        if state.history.len() == HISTORY {
            if let Some(oldest) = state.history.pop_front() {
                state.known_from = oldest.id + 1;
            }
        }
        state.history.push_back(event.clone());
        if let Some(sender) = state.by_resource.get(&event.resource) {
            let _ = sender.send(Signal::Event(event.clone()));
        }
        let _ = self.sender.send(Signal::Event(event));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One watcher's channel; leaving is counted when it is dropped.
pub struct Watcher {
    /// The events after its start.
    pub receiver: broadcast::Receiver<Signal>,
    /// The channel's sending side, to count who else listens on it.
    sender: broadcast::Sender<Signal>,
    hub: Arc<WatchHub>,
    scope: Scope,
}

impl Watcher {
    /// How many watchers share this one's channel (itself included).
    pub fn audience(&self) -> usize {
        self.sender.receiver_count()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        state.watchers -= 1;
        if let Scope::Resource(name) = &self.scope {
            // This watcher's receiver is the last one: nobody else watches the resource.
            if state.by_resource.get(name).is_some_and(|sender| sender.receiver_count() <= 1) {
                // (`self.sender` is a clone of that sender: it does not count as a receiver.)
                state.by_resource.remove(name);
            }
        }
        if state.watchers == 0 {
            self.hub.idle_since_ms.store(since_start_ms(Instant::now()).max(1), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(resource: &str) -> LockEvent {
        LockEvent {
            id: 0,
            kind: EventKind::Acquired,
            resource: resource.into(),
            hold: None,
            value: None,
            waiters: Some(0),
            rendered: OnceLock::new(),
        }
    }

    #[tokio::test]
    async fn staged_events_wait_for_the_disk_in_order() {
        let hub = Arc::new(WatchHub::new(100));
        let (_, mut watcher) = hub.subscribe(None, Scope::Prefix);
        hub.stage(11, event("a"));
        hub.stage(10, event("b"));
        hub.publish(event("c"));
        hub.durable(10);
        assert!(watcher.receiver.try_recv().is_err(), "b waits behind a");
        hub.durable(11);
        let ids: Vec<u64> = (0..3)
            .map(|_| match watcher.receiver.try_recv().unwrap() {
                Signal::Event(event) => event.id,
                Signal::Reset | Signal::End => 0,
            })
            .collect();
        assert_eq!(ids, [100, 101, 102]);
    }

    #[test]
    fn a_resource_watcher_gets_only_its_resource() {
        let hub = Arc::new(WatchHub::new(1));
        let (_, mut mine) = hub.subscribe(None, Scope::Resource("a".into()));
        let (_, mut all) = hub.subscribe(None, Scope::Prefix);
        hub.publish(event("b"));
        hub.publish(event("a"));
        assert!(matches!(mine.receiver.try_recv(), Ok(Signal::Event(e)) if &*e.resource == "a"));
        assert!(mine.receiver.try_recv().is_err());
        assert!(matches!(all.receiver.try_recv(), Ok(Signal::Event(e)) if &*e.resource == "b"));
        hub.reset();
        assert!(matches!(mine.receiver.try_recv(), Ok(Signal::Reset)));
        drop(mine);
        assert!(hub.lock().by_resource.is_empty(), "the last watcher of a resource takes its channel");
    }

    #[test]
    fn a_reconnect_replays_what_is_still_known() {
        let hub = Arc::new(WatchHub::new(1));
        let (_, first) = hub.subscribe(None, Scope::Prefix);
        for name in ["a", "b", "c"] {
            hub.publish(event(name));
        }
        drop(first);
        match hub.subscribe(Some(1), Scope::Prefix).0 {
            Start::Replay(events) => assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3]),
            Start::Reset => panic!("the history holds 2 and 3"),
        }
        assert!(
            matches!(hub.subscribe(Some(3), Scope::Prefix).0, Start::Replay(events) if events.is_empty())
        );
        assert!(matches!(hub.subscribe(Some(99), Scope::Prefix).0, Start::Reset), "an id from the future");
        assert!(
            matches!(hub.subscribe(Some(0), Scope::Prefix).0, Start::Replay(events) if events.len() == 3)
        );
        hub.reset();
        assert!(matches!(hub.subscribe(Some(1), Scope::Prefix).0, Start::Reset), "forgotten");
        assert!(matches!(hub.subscribe(Some(3), Scope::Prefix).0, Start::Reset), "events were lost after 3");
    }
}
