//! A shared or permit request queued for a lock: it waits on the gateway's mirror (no watch of
//! its own), answers a permit handed to it, or creates or joins the group hold itself once it
//! heads the queue and the group admits it. See `groups.rs` for what a group hold is.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::time::{sleep_until, Instant};

use super::groups::{admits, Admits, State, Ticket, EXPIRY_GRACE};
use super::keys::encode;
use super::queue::{lost_place, Place, SETTLE_AFTER};
use super::reads::ms_left;
use super::timers::Due;
use super::Inner;
use crate::engine::clock::wall_now_ms;
use crate::engine::{AcquireRequest, EngineError, FencingToken, Grant, Lifetime, Result};

/// How often a queued group request reads the lock when nothing woke it.
const RECHECK: Duration = Duration::from_secs(2);

/// A shared or permit request queued for a lock.
pub(super) struct GroupQueued {
    inner: Arc<Inner>,
    place: Place,
    /// Its waiter key's create revision: its place in the queue, and its token once granted.
    revision: i64,
}

impl GroupQueued {
    pub(super) fn new(inner: Arc<Inner>, place: Place, revision: i64) -> GroupQueued {
        GroupQueued { inner, place, revision }
    }

    /// The permit a release handed this request, if it was (its waiter key is then gone).
    fn handed<'a>(&self, state: &'a State, request: &AcquireRequest) -> Option<&'a Ticket> {
        state.tickets.iter().find(|ticket| ticket.owner == request.owner && ticket.token == self.revision)
    }

    /// Waits until the request heads the queue and the group admits it (then joins it), its
    /// lease dies, or `wait_until`.
    pub(super) async fn wait(mut self, request: &AcquireRequest, wait_until: Instant) -> Result<Grant> {
        let inner = self.inner.clone();
        let name = self.place.name.clone();
        let interest = inner.mirror.interest(&name, self.revision);
        let mut shutting_down = inner.shutting_down.subscribe();
        loop {
            if *shutting_down.borrow_and_update() {
                return Err(EngineError::ShuttingDown);
            }
            let notified = interest.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let state = inner.group_state(&name, Some(&self.place.key), &request.lifetime).await?;
            if !state.lease_alive {
                return Err(EngineError::NoSuchLease);
            }
            if !state.queued {
                if let Some(ticket) = self.handed(&state, request) {
                    self.place.answered = true;
                    return inner.answer_handed(&name, ticket, &state, request).await;
                }
                return Err(lost_place());
            }
            let mut wake = None;
            if state.head.as_ref().is_some_and(|head| head.revision == self.revision) {
                match (&state.hold, admits(state.hold.as_ref(), state.tickets.len(), request.claim)?) {
                    (Some(hold), _) if hold.record.group.is_some() && state.tickets.is_empty() => {
                        inner.heal_group(&name, hold).await?;
                        continue;
                    }
                    (Some(hold), _) if hold.expired(wall_now_ms()) => {
                        inner.end_expired(&name, hold.mod_revision).await?;
                        continue;
                    }
                    (_, Admits::Yes) => {
                        if let Some(grant) =
                            inner.join(&name, &state, request, Some((&self.place, self.revision))).await?
                        {
                            self.place.answered = true;
                            return Ok(grant);
                        }
                        continue;
                    }
                    (Some(hold), Admits::NotNow) => {
                        if inner.expire_overdue(&name, &state).await? {
                            continue;
                        }
                        let wall = wall_now_ms();
                        let deadlines = state.tickets.iter().filter_map(|ticket| ticket.record.deadline_ms);
                        wake = deadlines
                            .chain(hold.record.deadline_ms)
                            .min()
                            .map(|deadline| Instant::now() + ms_left(deadline, wall) + EXPIRY_GRACE);
                    }
                    (None, Admits::NotNow) => {}
                }
            }
            let recheck = wake.unwrap_or(Instant::now() + RECHECK).min(Instant::now() + RECHECK);
            tokio::select! {
                _ = &mut notified => {}
                _ = sleep_until(recheck) => {}
                _ = sleep_until(wait_until) => {
                    let _ = inner.client().delete(self.place.key.clone(), None).await;
                    self.place.answered = true;
                    let state = inner.group_state(&name, None, &Lifetime::Unbounded).await?;
                    if let Some(ticket) = self.handed(&state, request) {
                        // Handed the permit at the last moment.
                        return inner.answer_handed(&name, ticket, &state, request).await;
                    }
                    return Err(inner.group_locked(&state));
                }
                _ = shutting_down.changed() => return Err(EngineError::ShuttingDown),
            }
        }
    }
}

impl Inner {
    /// Answers a permit handed to a queued request: keeps its deadline on this gateway's timer,
    /// and rebinds a permit with neither expiry nor lease from this gateway's session lease to
    /// nothing `SETTLE_AFTER` from now, if it is still held then (as `queue.rs` does for holds).
    async fn answer_handed(
        self: &Arc<Self>,
        name: &str,
        ticket: &Ticket,
        state: &State,
        request: &AcquireRequest,
    ) -> Result<Grant> {
        let expires_in = match &request.lifetime {
            Lifetime::Expire(ttl) => {
                let left =
                    ticket.record.deadline_ms.map_or(*ttl, |deadline| ms_left(deadline, wall_now_ms()));
                let left = left.min(*ttl);
                self.schedule(Due::Ticket(name.to_string(), ticket.owner.clone()), ticket.mod_revision, left);
                Some(left)
            }
            Lifetime::Lease(_) => self.ticket_expires_in(&ticket.record).await?,
            Lifetime::Unbounded => {
                let (inner, key, ticket) =
                    (self.clone(), self.keys.ticket(name, &ticket.owner), ticket.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(SETTLE_AFTER).await;
                    let txn = Txn::new()
                        .when([Compare::mod_revision(key.clone(), CompareOp::Equal, ticket.mod_revision)])
                        .and_then([TxnOp::put(key, encode(&ticket.record), Some(PutOptions::new()))]);
                    let _ = inner.txn(txn).await;
                });
                None
            }
        };
        let value = request.value.clone().or_else(|| state.value.clone());
        Ok(Grant {
            resource: name.to_string(),
            owner: ticket.owner.clone(),
            token: FencingToken(ticket.token as u64),
            expires_in,
            value,
        })
    }
}
