//! The gateway's one long-lived watch on the holder keys, waiter keys and lease records of its
//! prefix, opened at start: it keeps the mirror (`mirror.rs`) current, and turns the holder
//! keys' changes into lock events for the watchers of this gateway (`GET /watch`). Ids are etcd revisions
//! (times 256, plus the event's place within its revision), so they mean the same on every
//! gateway. A broken watch is opened again from the next revision; if etcd compacted that
//! away, watchers are told to reset.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use etcd_client::{Event, EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
use tokio::sync::watch;
use tokio::time::sleep;

use super::keys::{decode, prefix_end, HoldRecord};
use super::mirror::Waiting;
use super::reads::Hold;
use super::{etcd_error, Inner};
use crate::engine::clock::wall_now_ms;
use crate::engine::watch::{EventHold, EventKind, LockEvent, WatchHub};
use crate::engine::Result;

/// How long a new watcher waits for the gateway's watch to catch up with etcd.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(3);

/// How many keys one read of the mirror's first load fetches.
const MIRROR_PAGE: i64 = 1000;

/// Follows the lock space until the backend is dropped: loads the mirror, then applies every
/// change to it and turns the holder keys' changes into lock events.
pub(super) async fn follow(inner: Weak<Inner>, events: Arc<WatchHub>) {
    let mut from = 0i64;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        if from == 0 {
            match strong.load_mirror().await {
                Ok(revision) => {
                    from = revision + 1;
                    advance(&strong.followed, revision);
                }
                Err(_) => {
                    drop(strong);
                    sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let (client, (start, end)) = (strong.client(), strong.keys.watched_range());
        drop(strong);
        let options = WatchOptions::new().with_range(end).with_prev_key().with_start_revision(from);
        let Ok(mut stream) = client.clone().watch(start, Some(options)).await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (followed, mut leader) = match inner.upgrade() {
            Some(inner) => (inner.followed.clone(), inner.leader.subscribe()),
            None => return,
        };
        leader.mark_unchanged();
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                // Another member leads now: watch there, where commits are seen first.
                _ = leader.changed() => break,
            };
            let Ok(Some(response)) = message else { break };
            if response.canceled() && response.compact_revision() == 0 {
                break;
            }
            if response.compact_revision() > 0 {
                // What happened since `from` is gone from etcd: start again from now.
                events.reset();
                from = 0;
                break;
            }
            // Only events say how far the watch got: etcd 3.4 answers a progress request with
            // its current revision even while events before it are still on their way.
            let Some(last) = response.events().iter().rev().find_map(|event| event.kv()) else { continue };
            from = last.mod_revision() + 1;
            let Some(inner) = inner.upgrade() else { return };
            inner.mirror.apply(&inner.keys, response.events());
            if events.active() {
                for event in inner.lock_events(response.events()).await {
                    events.publish(event);
                }
            }
            advance(&followed, from - 1);
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// Records that the watch has delivered every change through `revision`.
fn advance(followed: &watch::Sender<i64>, revision: i64) {
    followed.send_if_modified(|followed| std::mem::replace(followed, revision.max(*followed)) < revision);
}

impl Inner {
    /// Resolves once this gateway's watch has delivered every change committed before the
    /// call (at most [`CATCH_UP_WITHIN`]). When the last changes were outside the watched keys,
    /// it writes the progress key (inside them) and waits for that.
    pub(super) async fn caught_up(&self) {
        let mut client = self.client();
        let Ok(now) = client.get(self.keys.holds_prefix(), Some(GetOptions::new().with_count_only())).await
        else {
            return;
        };
        let mut current = now.header().map_or(0, |header| header.revision());
        if *self.followed.borrow() >= current {
            return;
        }
        if let Ok(put) = client.put(self.keys.progress(), "", None).await {
            current = put.header().map_or(current, |header| header.revision());
        }
        let mut followed = self.followed.subscribe();
        let reached = followed.wait_for(|followed| *followed >= current);
        if tokio::time::timeout(CATCH_UP_WITHIN, reached).await.is_err() {
            tracing::warn!(
                revision = current,
                followed = *self.followed.borrow(),
                "the gateway's etcd watch did not catch up within {CATCH_UP_WITHIN:?}; a new watcher may see a change twice"
            );
        }
    }

    /// Reads every hold and waiter into the mirror, at one revision, which it returns.
    async fn load_mirror(&self) -> Result<i64> {
        let mut client = self.client();
        let now = client.get(self.keys.holds_prefix(), Some(GetOptions::new().with_count_only())).await;
        let revision = now.map_err(etcd_error)?.header().map_or(0, |header| header.revision());
        let (mut holds, mut waiters) = (Vec::new(), Vec::new());
        for prefix in [self.keys.holds_prefix(), self.keys.waiters_prefix()] {
            let end = prefix_end(prefix.clone());
            let mut from = prefix;
            loop {
                let options =
                    GetOptions::new().with_range(end.clone()).with_revision(revision).with_limit(MIRROR_PAGE);
                let page = client.get(from.clone(), Some(options)).await.map_err(etcd_error)?;
                for kv in page.kvs() {
                    if let Some(name) = self.keys.name_of_hold(kv.key()) {
                        holds.extend(Hold::parse(kv).ok().map(|hold| (name, hold)));
                    } else {
                        waiters.extend(Waiting::parse(&self.keys, kv));
                    }
                }
                match page.kvs().last() {
                    Some(last) if page.more() => from = [last.key(), b"\0"].concat(),
                    _ => break,
                }
            }
        }
        self.mirror.load(holds, waiters, revision);
        Ok(revision)
    }

    /// The lock events of a watch response's events, with each lock's value and waiter count
    /// read in one transaction (as they are when read: a moment after the change at most).
    async fn lock_events(&self, watched: &[Event]) -> Vec<LockEvent> {
        let (mut revision, mut index) = (0, 0u64);
        let mut made = Vec::new();
        for watched in watched {
            let Some(kv) = watched.kv() else { continue };
            if kv.mod_revision() != revision {
                (revision, index) = (kv.mod_revision(), 0);
            }
            let mut id = || {
                index += 1;
                (revision as u64) << 8 | (index - 1).min(255)
            };
            let Some(name) = self.keys.name_of_hold(kv.key()) else {
                id();
                continue;
            };
            let resource: Arc<str> = name.into();
            let event = |id, kind, hold| LockEvent {
                id,
                kind,
                resource: resource.clone(),
                hold,
                value: None,
                waiters: None,
                rendered: OnceLock::new(),
            };
            let (kind, hold) = match watched.event_type() {
                EventType::Put => {
                    let Ok(hold) = Hold::parse(kv) else { continue };
                    if hold.record.group.is_some() {
                        // A group hold (`groups.rs`): its holders are tickets, outside the watch;
                        // the holder key is rewritten as a holder joins or leaves.
                        let kind = if watched.prev_kv().is_some() {
                            EventKind::Refreshed
                        } else {
                            EventKind::Acquired
                        };
                        made.push(event(id(), kind, None));
                        continue;
                    }
                    // A hand-off rewrites the holder key with the next holder's token: the
                    // previous hold ended first.
                    let previous = watched.prev_kv().and_then(|prev| Hold::parse(prev).ok());
                    let kind = match (&previous, &hold.record.waiter) {
                        (None, Some(_)) => EventKind::Handoff,
                        (None, None) => EventKind::Acquired,
                        (Some(previous), Some(_)) if previous.token != hold.token => {
                            made.push(event(id(), self.why_ended(&previous.record).await, None));
                            EventKind::Handoff
                        }
                        (Some(_), _) => EventKind::Refreshed,
                    };
                    let expires_in = hold
                        .record
                        .deadline_ms
                        .map(|deadline| Duration::from_millis(deadline.saturating_sub(wall_now_ms())));
                    let hold = EventHold { owner: hold.record.owner, token: hold.token as u64, expires_in };
                    (kind, Some(hold))
                }
                EventType::Delete => {
                    let prev = watched.prev_kv().map(|prev| decode::<HoldRecord>(prev.key(), prev.value()));
                    let kind = match prev {
                        Some(Ok(prev)) => self.why_ended(&prev).await,
                        _ => EventKind::Released,
                    };
                    (kind, None)
                }
            };
            made.push(event(id(), kind, hold));
        }
        let mut reads = Vec::with_capacity(made.len() * 2);
        for event in &made {
            reads.push(TxnOp::get(self.keys.value(&event.resource), None));
            let count = GetOptions::new().with_prefix().with_count_only();
            reads.push(TxnOp::get(self.keys.queue(&event.resource), Some(count)));
        }
        if let Ok(answer) = self.txn(Txn::new().and_then(reads)).await {
            for (event, pair) in made.iter_mut().zip(answer.op_responses().chunks(2)) {
                if let [TxnOpResponse::Get(value), TxnOpResponse::Get(queue)] = pair {
                    event.value = value
                        .kvs()
                        .first()
                        .and_then(|kv| std::str::from_utf8(kv.value()).ok())
                        .map(Arc::from);
                    event.waiters = Some(queue.count() as usize);
                }
            }
        }
        made
    }

    /// The lock events after id `after`, read back from etcd's history (for a watcher that
    /// resumes from before what this gateway recorded); `None` when etcd compacted them away.
    /// Read until the revision current when asked, or a moment of silence (at most 3 s).
    pub(super) async fn events_after(&self, after: u64) -> Option<Vec<LockEvent>> {
        let prefix = self.keys.holds_prefix();
        let now = self.client().get(prefix.clone(), Some(GetOptions::new().with_count_only())).await.ok()?;
        let current = now.header().map_or(0, |header| header.revision());
        let from = (after >> 8) as i64;
        if from == 0 || from > current {
            return None;
        }
        let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(from);
        let mut stream = self.client().watch(prefix, Some(options)).await.ok()?;
        let mut found = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let silence = tokio::time::Instant::now() + Duration::from_millis(300);
            let response = match tokio::time::timeout_at(silence.min(deadline), stream.message()).await {
                Ok(Ok(Some(response))) => response,
                _ => break,
            };
            if response.compact_revision() > 0 {
                return None;
            }
            let reached = response
                .events()
                .iter()
                .filter_map(|event| event.kv())
                .any(|kv| kv.mod_revision() >= current);
            let watched: Vec<Event> = response
                .events()
                .iter()
                .filter(|event| event.kv().is_some_and(|kv| kv.mod_revision() <= current))
                .cloned()
                .collect();
            found.extend(self.lock_events(&watched).await.into_iter().filter(|event| event.id > after));
            if reached {
                break;
            }
        }
        Some(found)
    }

    /// Why a hold whose key was deleted ended: its deadline passed, its lease is gone, or it
    /// was released.
    async fn why_ended(&self, hold: &HoldRecord) -> EventKind {
        if hold.deadline_ms.is_some_and(|deadline| deadline <= wall_now_ms()) {
            return EventKind::Expired;
        }
        let Some(lease) = &hold.lease else { return EventKind::Released };
        let options = GetOptions::new().with_count_only();
        match self.client().get(self.keys.lease(lease), Some(options)).await {
            Ok(answer) if answer.count() == 0 => EventKind::Revoked,
            _ => EventKind::Released,
        }
    }
}
