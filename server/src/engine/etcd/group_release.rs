//! Ending a group hold's tickets (release, expiry, a forced release), refreshing them, and
//! handing what a leaving holder frees to the head of the queue: a released permit to the head
//! permit request, the last reader's lock to a plain head request (as `handoff.rs` does), in
//! the releasing transaction. See `groups.rs` for what a group hold is.

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::holds::keep_value_op;
use super::keys::{encode, TicketRecord};
use super::mirror::Waiting;
use super::reads::{revision, Hold};
use super::timers::Due;
use super::Inner;
use crate::engine::clock::wall_now_ms;
use crate::engine::{EngineError, FencingToken, Lifetime, RefreshRequest, Refreshed, ReleaseRequest, Result};

/// How a ticket's end went.
enum Ending {
    /// Others still hold the lock.
    Left,
    /// The permit went to the head waiter.
    HandedTicket,
    /// The lock went to the head waiter as a plain hold (it, and its waiter's revision).
    HandedHold(Hold, i64),
    /// The group hold ended.
    Last,
}

impl Inner {
    /// Ends `owner`'s ticket (under `token`, when given): the last one ends the group hold
    /// too. `Ok(None)` when the lock is not a group hold (the caller then treats it as a plain
    /// lock's).
    async fn end_ticket(
        &self,
        name: &str,
        owner: &str,
        token: Option<i64>,
        mod_revision: Option<i64>,
        keep_value: bool,
    ) -> Result<Option<()>> {
        let mut handing = true;
        loop {
            let state = self.group_state(name, None, &Lifetime::Unbounded).await?;
            let Some(hold) = state.hold.as_ref().filter(|hold| hold.record.group.is_some()) else {
                return Ok(None);
            };
            let Some(ticket) = state.tickets.iter().find(|ticket| ticket.owner == owner) else {
                return Err(if state.tickets.is_empty() {
                    EngineError::NotHeld
                } else {
                    EngineError::NotOwner
                });
            };
            if token.is_some_and(|token| token != ticket.token)
                || mod_revision.is_some_and(|at| at != ticket.mod_revision)
            {
                return Err(EngineError::NotOwner);
            }
            let hold_key = self.keys.hold(name);
            let ticket_key = self.keys.ticket(name, owner);
            let mut when =
                vec![Compare::mod_revision(ticket_key.clone(), CompareOp::Equal, ticket.mod_revision)];
            let mut then = vec![TxnOp::delete(ticket_key.clone(), None)];
            let mut lease = 0;
            let other = state.tickets.iter().find(|other| other.owner != owner);
            let limit = hold.record.group.and_then(|group| group.limit);
            let value_key = self.keys.value(name);
            let mut ending = Ending::Left;
            match (state.head.as_ref().filter(|_| handing), other) {
                // A permit request of this semaphore heads the queue: it gets this permit in the
                // same transaction (the count does not change), as a plain lock's hand-off.
                (Some(head), _) if limit.is_some() && head.record.limit == limit => {
                    let (record, etcd_lease) = self.handed_ticket(head).await?;
                    when.extend(self.head_compares(head));
                    let options = (etcd_lease != 0).then(|| PutOptions::new().with_lease(etcd_lease));
                    then.extend([
                        TxnOp::put(self.keys.ticket(name, &head.record.owner), encode(&record), options),
                        TxnOp::delete(head.key.clone(), None),
                    ]);
                    then.extend(
                        head.record.value.as_ref().map(|value| TxnOp::put(value_key, value.as_str(), None)),
                    );
                    lease = if head.record.ttl_ms.is_some() { etcd_lease } else { 0 };
                    ending = Ending::HandedTicket;
                }
                // The last holder, and a plain request heads the queue: the lock is handed to it
                // as a plain hold (if nobody joined since the holder key was read).
                (Some(head), None) if head.record.handoff => {
                    let kept_value = keep_value && head.record.value.is_none();
                    let (record, etcd_lease) = self.handoff_record(head, kept_value).await?;
                    when.push(Compare::mod_revision(hold_key.clone(), CompareOp::Equal, hold.mod_revision));
                    when.extend(self.head_compares(head));
                    let value_op = match &head.record.value {
                        Some(value) => TxnOp::put(value_key, value.as_str(), None),
                        None if kept_value => keep_value_op(&value_key, 0),
                        None => TxnOp::delete(value_key, None),
                    };
                    then.extend([
                        TxnOp::put(hold_key, encode(&record), Some(PutOptions::new().with_lease(etcd_lease))),
                        TxnOp::delete(head.key.clone(), None),
                        value_op,
                    ]);
                    lease = if head.record.ttl_ms.is_some() { etcd_lease } else { 0 };
                    ending = Ending::HandedHold(
                        Hold { record, token: head.revision, mod_revision: 0 },
                        head.revision,
                    );
                }
                // Another holder stays (compared: it may be leaving too). Nothing else is
                // compared, so leaving never conflicts with joining; the gateways' watches see
                // the ticket go and wake the queue.
                (_, Some(other)) => {
                    when.push(Compare::version(self.keys.ticket(name, &other.owner), CompareOp::Greater, 0))
                }
                // The last: the holder key goes too, if nobody joined since it was read.
                (_, None) => {
                    when.push(Compare::mod_revision(hold_key.clone(), CompareOp::Equal, hold.mod_revision));
                    let (value_op, retention) = self.ended_value_op(name, keep_value).await?;
                    lease = retention;
                    then.extend([TxnOp::delete(hold_key, None), value_op]);
                    ending = Ending::Last;
                }
            }
            let txn = Txn::new().when(when).and_then(then);
            let Some(response) = self.txn_with_backstop(txn, lease).await? else {
                handing = false; // the head's lease or session is gone: end without a hand-off
                continue;
            };
            if !response.succeeded() {
                if matches!(ending, Ending::HandedTicket | Ending::HandedHold(..)) {
                    handing = false; // the head may have gone: end the ticket without a hand-off
                }
                continue;
            }
            let at = revision(&response);
            self.cancel(&ticket_key);
            match ending {
                Ending::HandedHold(hold, head) => {
                    self.mirror.handed_off(name, Hold { mod_revision: at, ..hold }, head);
                }
                Ending::Last => {
                    self.mirror.ended(name, at);
                    if keep_value {
                        self.schedule(Due::Value(name.to_string()), at, self.value_retention);
                    }
                }
                Ending::Left | Ending::HandedTicket => {}
            }
            return Ok(Some(()));
        }
    }

    /// The compares of a hand-off to `head`: its waiter key is the one read, its lease alive.
    fn head_compares(&self, head: &Waiting) -> Vec<Compare> {
        let mut compares = vec![Compare::create_revision(head.key.clone(), CompareOp::Equal, head.revision)];
        if let Some(lease) = &head.record.lease {
            compares.push(Compare::version(self.keys.lease(lease), CompareOp::Greater, 0));
        }
        compares
    }

    /// The ticket a queued permit request is handed, and the etcd lease it is bound to.
    async fn handed_ticket(&self, head: &Waiting) -> Result<(TicketRecord, i64)> {
        let waiter = &head.record;
        let record = TicketRecord {
            deadline_ms: waiter.ttl_ms.map(|ttl| wall_now_ms() + ttl),
            lease: waiter.lease.clone(),
            token: Some(head.revision),
        };
        Ok((record, self.handed_lease(head).await?))
    }

    /// Releases a shared hold or permit (every one, when forced). `Ok(None)` when the lock is
    /// not a group hold.
    pub(super) async fn release_group(&self, request: &ReleaseRequest) -> Result<Option<()>> {
        let name = request.resource.as_str();
        if !request.force {
            let token = request.token.map(|token| token.0 as i64);
            return self.end_ticket(name, &request.owner, token, None, request.keep_value).await;
        }
        let mut ended = None;
        loop {
            let state = self.group_state(name, None, &Lifetime::Unbounded).await?;
            if state.hold.as_ref().is_none_or(|hold| hold.record.group.is_none()) {
                return Ok(ended);
            }
            let Some(ticket) = state.tickets.first() else {
                if let Some(hold) = &state.hold {
                    self.heal_group(name, hold).await?;
                }
                return Ok(Some(()));
            };
            match self.end_ticket(name, &ticket.owner, None, None, request.keep_value).await {
                Ok(Some(())) | Err(EngineError::NotOwner | EngineError::NotHeld) => ended = Some(()),
                Ok(None) => return Ok(ended),
                Err(error) => return Err(error),
            }
        }
    }

    /// Ends a ticket whose deadline passed, if it is unchanged since `mod_revision`.
    pub(super) async fn expire_ticket(&self, name: &str, owner: &str, mod_revision: i64) -> Result<bool> {
        match self.end_ticket(name, owner, None, Some(mod_revision), true).await {
            Ok(Some(())) => Ok(true),
            Ok(None) | Err(EngineError::NotOwner | EngineError::NotHeld) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Refreshes a shared hold or permit. `Ok(None)` when the lock is not a group hold.
    pub(super) async fn refresh_group(&self, request: &RefreshRequest) -> Result<Option<Refreshed>> {
        let name = request.resource.as_str();
        loop {
            let state = self.group_state(name, None, &Lifetime::Unbounded).await?;
            if state.hold.as_ref().is_none_or(|hold| hold.record.group.is_none()) {
                return Ok(None);
            }
            let ticket = state.tickets.iter().find(|ticket| ticket.owner == request.owner);
            let Some(ticket) = ticket.filter(|t| request.token.is_none_or(|token| token.0 == t.token as u64))
            else {
                return Err(EngineError::NotOwner);
            };
            if ticket.record.lease.is_some() && request.expire.is_some() {
                return Err(EngineError::LeaseBound);
            }
            let key = self.keys.ticket(name, &ticket.owner);
            let mut record = ticket.record.clone();
            record.token = Some(ticket.token);
            let mut then = Vec::new();
            let mut etcd_lease = 0;
            if let Some(expire) = request.expire {
                record.deadline_ms = Some(wall_now_ms() + expire.as_millis() as u64);
                etcd_lease = self.backstops.lease(&self.client(), expire).await?;
                then.push(TxnOp::put(
                    key.clone(),
                    encode(&record),
                    Some(PutOptions::new().with_lease(etcd_lease)),
                ));
            }
            if let Some(value) = &request.value {
                then.push(TxnOp::put(self.keys.value(name), value.as_str(), None));
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, ticket.mod_revision)])
                .and_then(then);
            let Some(response) = self.txn_with_backstop(txn, etcd_lease).await? else { continue };
            if !response.succeeded() {
                continue;
            }
            if let Some(expire) = request.expire {
                self.schedule(
                    Due::Ticket(name.to_string(), ticket.owner.clone()),
                    revision(&response),
                    expire,
                );
            }
            let token = FencingToken(ticket.token as u64);
            return Ok(Some(Refreshed { token, expires_in: self.ticket_expires_in(&record).await? }));
        }
    }
}
