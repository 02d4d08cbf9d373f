//! Multi-locks: several locks held exclusively, all or none.
//!
//! A multi-lock request that cannot be granted at once puts a place in the queue of every lock
//! it asks for, all in one step under the shards' mutexes, so any two requests stand in the
//! same order in every queue they share: waiting never forms a cycle, whatever the sets. It
//! holds nothing while it waits. When a lock whose queue it heads is free, that lock's hand-off
//! wakes the request instead of granting it (`slot.rs`'s `MultiWait`); the request then takes
//! every lock at once if it heads every queue and every lock is free, else waits on.

use std::sync::Arc;

use tokio::time::{sleep_until, Instant};

use super::slot::{Answer, MultiWait};
use super::slot_cx::{HoldEnd, Queueing, SlotCx};
use super::Shared;
use crate::engine::{AcquireManyRequest, Claim, Grant, HoldMode, ReleaseManyRequest, Result};

/// A queued multi-lock request's places; dropping it before it is answered leaves the queues.
struct Places<'a> {
    shared: &'a Shared,
    names: Vec<&'a str>,
    id: u64,
    settled: bool,
}

impl Drop for Places<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let id = self.id;
            self.shared.with_slots_at(&self.names, |cxs| {
                for cx in cxs.iter_mut() {
                    cx.leave_queue(id);
                }
            });
        }
    }
}

/// What the first try of a multi-lock did.
enum FirstTry {
    Granted(Vec<Grant>),
    Queued(u64),
}

impl Shared {
    /// Takes every lock of `request` at once, or queues for them all (holding none) until
    /// `wait` runs out. Answers once the grants are on disk.
    pub(super) async fn acquire_many(&self, request: AcquireManyRequest) -> Result<Vec<Grant>> {
        let wait_until = Instant::now() + request.wait;
        let may_queue = !request.wait.is_zero();
        let names: Vec<&str> = request.resources.iter().map(String::as_str).collect();
        let multi = Arc::new(MultiWait::default());
        let (first, position) = self
            .with_durable_slots(&names, true, |cxs| {
                for cx in cxs.iter() {
                    cx.slot.check_limit(Claim::Exclusive)?;
                }
                if cxs.iter().all(|cx| free_for(cx, &request.owner, None)) {
                    return take_all(cxs, &request, None).map(FirstTry::Granted);
                }
                if !may_queue {
                    let busy =
                        cxs.iter().find(|cx| !free_for(cx, &request.owner, None)).expect("one is busy");
                    return Err(busy.slot.locked(self, busy.now));
                }
                let mut id = None;
                for index in 0..cxs.len() {
                    let queueing = Queueing {
                        owner: request.owner.clone(),
                        lifetime: request.lifetime.clone(),
                        value: None,
                        claim: Claim::Exclusive,
                    };
                    match cxs[index].enqueue(queueing, Answer::Many(multi.clone()), id, index == 0) {
                        Ok(queued) => id = Some(queued),
                        Err(error) => {
                            // All places or none: leave the queues joined so far.
                            if let Some(id) = id {
                                cxs[..index].iter_mut().for_each(|cx| _ = cx.leave_queue(id));
                            }
                            return Err(error);
                        }
                    }
                }
                Ok(FirstTry::Queued(id.expect("at least two places")))
            })
            .await?;
        let id = match first {
            FirstTry::Granted(grants) => {
                self.written(position).await?;
                return Ok(grants);
            }
            FirstTry::Queued(id) => id,
        };
        let mut places = Places { shared: self, names, id, settled: false };
        let queued_at = Instant::now();
        loop {
            let timed_out = tokio::select! {
                _ = multi.ready.notified() => false,
                _ = sleep_until(wait_until) => true,
            };
            if let Some(error) = multi.refused() {
                return Err(error);
            }
            let owner = &request.owner;
            let (taken, position) = self
                .with_durable_slots(&places.names, true, |cxs| {
                    if cxs.iter().all(|cx| free_for(cx, owner, Some(id))) {
                        return take_all(cxs, &request, Some(id)).map(Some);
                    }
                    if !timed_out {
                        return Ok(None);
                    }
                    let busy = cxs.iter().find(|cx| !free_for(cx, owner, Some(id))).expect("one is busy");
                    let locked = busy.slot.locked(self, busy.now);
                    for cx in cxs.iter_mut() {
                        cx.leave_queue(id);
                    }
                    Err(locked)
                })
                .await?;
            if let Some(grants) = taken {
                places.settled = true;
                crate::metrics::global().waited(queued_at.elapsed());
                self.written(position).await?;
                return Ok(grants);
            }
        }
    }

    /// Releases every lock of `request`, or none unless the owner holds them all.
    pub(super) async fn release_many(&self, request: ReleaseManyRequest) -> Result<()> {
        let names: Vec<&str> = request.resources.iter().map(String::as_str).collect();
        let ((), position) = self
            .with_durable_slots(&names, true, |cxs| {
                let mut holds = Vec::with_capacity(cxs.len());
                for cx in cxs.iter() {
                    holds.push(cx.check_holder(&request.owner, None)?);
                }
                for (cx, index) in cxs.iter_mut().zip(holds) {
                    cx.end_hold(index, request.keep_value, HoldEnd::Released);
                }
                Ok(())
            })
            .await?;
        self.written(position).await
    }
}

/// Whether the slot can be taken by `owner` now: it holds it alone already, or nobody holds it
/// and nobody waits ahead (queued as `id`: it is at the head).
fn free_for(cx: &SlotCx<'_>, owner: &str, id: Option<u64>) -> bool {
    let slot = &cx.slot;
    if let Some(index) = slot.holder_of(owner) {
        return slot.holders[index].mode == HoldMode::Exclusive;
    }
    if slot.is_held() {
        return false;
    }
    match (slot.head(), id) {
        (None, _) => true,
        (Some(head), Some(id)) => head.id == id,
        (Some(_), None) => false,
    }
}

/// Takes every slot (each is [`free_for`] the owner): grants the free ones, renews those it
/// holds, and removes its places from the queues.
fn take_all(cxs: &mut [SlotCx<'_>], request: &AcquireManyRequest, id: Option<u64>) -> Result<Vec<Grant>> {
    let mut grants = Vec::with_capacity(cxs.len());
    let mut fresh = Vec::with_capacity(cxs.len());
    for (index, cx) in cxs.iter_mut().enumerate() {
        if let Some(id) = id {
            cx.slot.remove_waiter(id);
        }
        let held = cx.slot.holder_of(&request.owner).is_some();
        match cx.take_for(&request.owner, request.lifetime.clone()) {
            Ok(grant) => {
                if !held {
                    fresh.push((index, grant.token));
                }
                grants.push(grant);
            }
            Err(error) => {
                // All or none: give back what this call granted (a cap was reached midway).
                for (index, token) in fresh {
                    cxs[index].withdraw(token);
                }
                return Err(error);
            }
        }
    }
    Ok(grants)
}
