//! The gateway's one long-lived watch on the holder keys of its prefix, opened at start, turned
//! into lock events for the watchers of this gateway (`GET /watch`). Ids are etcd revisions
//! (times 256, plus the event's place within its revision), so they mean the same on every
//! gateway. A broken watch is opened again from the next revision; if etcd compacted that
//! away, watchers are told to reset.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};
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
            let (mut revision, mut index) = (0, 0u64);
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                if kv.mod_revision() != revision {
                    (revision, index) = (kv.mod_revision(), 0);
                }
                from = revision + 1;
                let id = (revision as u64) << 8 | index.min(255);
                index += 1;
                if !events.active() {
                    continue;
                }
                let Some(inner) = inner.upgrade() else { return };
                let Some(name) = inner.keys.name_of_hold(kv.key()) else { continue };
                let lock_event = match event.event_type() {
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
                        LockEvent {
                            id,
                            kind,
                            resource: name.into(),
                            hold: Some(hold),
                            value: None,
                            waiters: None,
                            rendered: OnceLock::new(),
                        }
                    }
                    EventType::Delete => {
                        let kind = match event
                            .prev_kv()
                            .map(|prev| decode::<HoldRecord>(prev.key(), prev.value()))
                        {
                            Some(Ok(prev)) => inner.why_ended(&prev).await,
                            _ => EventKind::Released,
                        };
                        let resource = name.into();
                        LockEvent {
                            id,
                            kind,
                            resource,
                            hold: None,
                            value: None,
                            waiters: None,
                            rendered: OnceLock::new(),
                        }
                    }
                };
                events.publish(lock_event);
            }
        }
        sleep(Duration::from_millis(100)).await;
    }
}

impl Inner {
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
