//! Expiry on the monotonic clock: each shard's deadlines, earliest first, and the tasks that
//! settle them (one per shard, plus one for leases), each sleeping until its earliest deadline
//! and woken early only when an earlier one appears.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, Weak};

use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};

use super::Shared;

/// Every deadline in a shard, earliest first: one entry per slot that has one.
#[derive(Default)]
pub(super) struct Timers {
    deadlines: BTreeSet<(Instant, Arc<str>)>,
    /// Set when a new earliest deadline was added: the expiry task must re-arm.
    pub(super) rearm: bool,
}

impl Timers {
    /// A slot's deadline moved from `before` to `after`.
    pub(super) fn update(&mut self, name: &Arc<str>, before: Option<Instant>, after: Option<Instant>) {
        if before == after {
            return;
        }
        if let Some(at) = before {
            self.deadlines.remove(&(at, name.clone()));
        }
        if let Some(at) = after {
            if self.deadlines.first().is_none_or(|(first, _)| at < *first) {
                self.rearm = true;
            }
            self.deadlines.insert((at, name.clone()));
        }
    }
}

/// Starts the expiry task of every shard and the lease expiry task; they end with `shared`.
pub(super) fn spawn_timers(shared: &Arc<Shared>) {
    for (index, shard) in shared.shards.iter().enumerate() {
        tokio::spawn(run_shard_timer(Arc::downgrade(shared), index, shard.timer.clone()));
    }
    tokio::spawn(run_lease_timer(Arc::downgrade(shared), shared.leases.timer.clone()));
}

impl Shared {
    /// Settles every slot of shard `index` whose deadline has passed; returns the next deadline.
    fn expire_due(&self, index: usize) -> Option<Instant> {
        loop {
            let due = {
                let state = self.shards[index].state.lock().unwrap_or_else(PoisonError::into_inner);
                match state.timers.deadlines.first() {
                    Some((at, name)) if *at <= Instant::now() => (*at, name.clone()),
                    Some((at, _)) => return Some(*at),
                    None => return None,
                }
            };
            self.with_slot(&due.1, |_| ());
            // Settling moved the deadline; should it not have, drop it rather than spin.
            let mut state = self.shards[index].state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.timers.deadlines.first() == Some(&due) {
                state.timers.deadlines.pop_first();
            }
        }
    }
}

async fn run_shard_timer(shared: Weak<Shared>, index: usize, wake: Arc<Notify>) {
    loop {
        let next = match shared.upgrade() {
            Some(shared) => shared.expire_due(index),
            None => return,
        };
        sleep_or_wake(next, &wake).await;
    }
}

async fn run_lease_timer(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let next = match shared.upgrade() {
            Some(shared) => {
                let (ended, next) = shared.leases.take_expired(Instant::now());
                for lease in ended {
                    crate::metrics::global().lease_expired();
                    shared.end_lease(lease);
                }
                next
            }
            None => return,
        };
        sleep_or_wake(next, &wake).await;
    }
}

async fn sleep_or_wake(until: Option<Instant>, wake: &Notify) {
    match until {
        Some(at) => tokio::select! {
            _ = sleep_until(at) => {}
            _ = wake.notified() => {}
        },
        None => wake.notified().await,
    }
}
