//! The gateway's one long-lived watch on the holder keys of its prefix, opened at start, turned
//! into lock events for the watchers of this gateway (`GET /watch`). Ids are etcd revisions
//! (times 256, plus the event's place within its revision), so they mean the same on every
//! gateway. A broken watch is opened again from the next revision; if etcd compacted that
//! away, watchers are told to reset.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use etcd_client::{Event, EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
use tokio::time::sleep;

use super::keys::{decode, HoldRecord};
use super::Inner;
use crate::engine::clock::wall_now_ms;
use crate::engine::watch::{EventHold, EventKind, LockEvent, WatchHub};

/// Follows the holder keys until the backend is dropped.
pub(super) async fn follow(inner: Weak<Inner>, events: Arc<WatchHub>) {
    let mut from = 0i64;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let (client, prefix) = (strong.client.clone(), strong.keys.holds_prefix());
        drop(strong);
        let mut options = WatchOptions::new().with_prefix().with_prev_key();
        if from > 0 {
            options = options.with_start_revision(from);
        }
        let Ok(mut stream) = client.clone().watch(prefix, Some(options)).await else {
            sleep(Duration::from_millis(200)).await;
            continue;
        };
        while let Ok(Some(response)) = stream.message().await {
            if response.canceled() && response.compact_revision() == 0 {
                break;
            }
            if response.compact_revision() > 0 {
                // What happened since `from` is gone from etcd: start again from now.
                events.reset();
                from = 0;
                break;
            }
            let Some(last) = response.events().iter().rev().find_map(|event| event.kv()) else { continue };
            from = last.mod_revision() + 1;
            if !events.active() {
                continue;
            }
            let Some(inner) = inner.upgrade() else { return };
            for event in inner.lock_events(response.events()).await {
                events.publish(event);
            }
        }
        sleep(Duration::from_millis(100)).await;
    }
}

impl Inner {
    /// The lock events of a watch response's events, with each lock's value and waiter count
    /// read in one transaction (as they are when read: a moment after the change at most).
    async fn lock_events(&self, watched: &[Event]) -> Vec<LockEvent> {
        let (mut revision, mut index) = (0, 0u64);
        let mut made = Vec::new();
        for event in watched {
            let Some(kv) = event.kv() else { continue };
            if kv.mod_revision() != revision {
                (revision, index) = (kv.mod_revision(), 0);
            }
            let id = (revision as u64) << 8 | index.min(255);
            index += 1;
            let Some(name) = self.keys.name_of_hold(kv.key()) else { continue };
            let (kind, hold) = match event.event_type() {
                EventType::Put => {
                    let Ok(record) = decode::<HoldRecord>(kv.key(), kv.value()) else { continue };
                    let kind = match (kv.create_revision() == kv.mod_revision(), &record.waiter) {
                        (true, Some(_)) => EventKind::Handoff,
                        (true, None) => EventKind::Acquired,
                        (false, _) => EventKind::Refreshed,
                    };
                    let expires_in = record
                        .deadline_ms
                        .map(|deadline| Duration::from_millis(deadline.saturating_sub(wall_now_ms())));
                    let hold =
                        EventHold { owner: record.owner, token: kv.create_revision() as u64, expires_in };
                    (kind, Some(hold))
                }
                EventType::Delete => {
                    let prev = event.prev_kv().map(|prev| decode::<HoldRecord>(prev.key(), prev.value()));
                    let kind = match prev {
                        Some(Ok(prev)) => self.why_ended(&prev).await,
                        _ => EventKind::Released,
                    };
                    (kind, None)
                }
            };
            let resource: Arc<str> = name.into();
            made.push(LockEvent {
                id,
                kind,
                resource,
                hold,
                value: None,
                waiters: None,
                rendered: OnceLock::new(),
            });
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
        let now =
            self.client.clone().get(prefix.clone(), Some(GetOptions::new().with_count_only())).await.ok()?;
        let current = now.header().map_or(0, |header| header.revision());
        let from = (after >> 8) as i64;
        if from == 0 || from > current {
            return None;
        }
        let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(from);
        let mut stream = self.client.clone().watch(prefix, Some(options)).await.ok()?;
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
        match self.client.clone().get(self.keys.lease(lease), Some(options)).await {
            Ok(answer) if answer.count() == 0 => EventKind::Revoked,
            _ => EventKind::Released,
        }
    }
}
