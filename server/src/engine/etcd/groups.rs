//! Group holds: a read-write lock's shared holders and a semaphore's permits.
//!
//! A group hold is a holder key whose record has a `group` (its limit, for a semaphore) and no
//! owner, so plain locks see the lock as held and queue behind it; each holder has a ticket
//! (`keys.rs`), bound to its own lifetime (a backstop lease, the user's lease, or none), with
//! its own deadline on the granting gateway's timer. Every ticket added rewrites the holder key
//! in the same transaction, which compares the key's mod revision: two additions never both
//! pass, so a semaphore never has more tickets than its limit and no shared holder joins a lock
//! that became exclusive. A ticket leaves by itself (compared only with one other ticket that
//! stays); the last one deletes the holder key in the same transaction, compared the same way
//! (no ticket joined meanwhile). Tickets are inside the gateways' one watch, so a ticket that
//! goes wakes the lock's queued requests.
//!
//! Shared and permit requests queue in the lock's one queue, in revision order with plain
//! requests (first come, first served across modes). A released permit goes to the head permit
//! request in the releasing transaction (its ticket written, its waiter key deleted), and the
//! last holder to leave hands the lock to a plain head request as a plain hold, as `handoff.rs`
//! does; otherwise the head request creates or joins the group itself, in a transaction that
//! checks its waiter key and lease, and removes its waiter key. Tokens are etcd revisions: a
//! fresh ticket's create revision, or the waiter key's create revision for a request that
//! queued.
//!
//! A ticket deleted by its etcd lease (a gateway or lease that died) does not rewrite the holder
//! key; a group hold left without tickets is ended by the next request that reads it
//! ([`Inner::heal_group`]).
//!
//! This file reads a group's state and makes first tries, creating or joining the group;
//! `group_queue.rs` is a queued request's wait, `group_release.rs` ending tickets (release,
//! expiry, refresh) and handing what they free to the head of the queue.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnResponse,
};

use super::holds::{keep_value_op, Attempt, Binding};
use super::keys::{decode, encode, GroupRecord, HoldRecord, TicketRecord, WaiterRecord};
use super::mirror::Waiting;
use super::queue::Place;
use super::reads::{gets, ms_left, revision, Hold};
use super::timers::Due;
use super::Inner;
use crate::engine::clock::wall_now_ms;
use crate::engine::{
    AcquireRequest, Claim, EngineError, FencingToken, Grant, HoldMode, HolderInfo, LeaseId, Lifetime,
    LockInfo, Result,
};

/// How long after a ticket's deadline a request that finds it ends it, if the ticket's gateway
/// has not (as `queue.rs` does for holds).
pub(super) const EXPIRY_GRACE: Duration = Duration::from_millis(100);

/// One holder of a group hold, as read.
#[derive(Debug, Clone)]
pub(super) struct Ticket {
    pub(super) owner: String,
    pub(super) record: TicketRecord,
    pub(super) token: i64,
    pub(super) mod_revision: i64,
}

impl Ticket {
    fn parse(name_prefix: &[u8], kv: &KeyValue) -> Result<Ticket> {
        let record: TicketRecord = decode(kv.key(), kv.value())?;
        let owner =
            String::from_utf8_lossy(kv.key().strip_prefix(name_prefix).unwrap_or_default()).into_owned();
        Ok(Ticket {
            owner,
            token: record.token.unwrap_or(kv.create_revision()),
            record,
            mod_revision: kv.mod_revision(),
        })
    }
}

/// A lock as a group request sees it, read at one revision.
pub(super) struct State {
    pub(super) hold: Option<Hold>,
    /// The tickets, oldest token first.
    pub(super) tickets: Vec<Ticket>,
    /// The head of the queue.
    pub(super) head: Option<Waiting>,
    /// The lock's value.
    pub(super) value: Option<String>,
    /// Whether the request's own waiter key is there (when it has one).
    pub(super) queued: bool,
    /// Whether the request's lease record is there (when it names one).
    pub(super) lease_alive: bool,
}

/// What the group admits now.
pub(super) enum Admits {
    Yes,
    /// Full, or held by a plain lock: wait.
    NotNow,
}

/// Whether a claim can join what holds the lock now; `limit_mismatch` when it never can.
pub(super) fn admits(hold: Option<&Hold>, tickets: usize, claim: Claim) -> Result<Admits> {
    let Some(hold) = hold else { return Ok(Admits::Yes) };
    let Some(group) = hold.record.group else {
        // A plain lock's hold: a shared request waits for it, a permit is of another kind.
        return match claim {
            Claim::Permit { .. } => Err(EngineError::LimitMismatch { current: None }),
            _ => Ok(Admits::NotNow),
        };
    };
    if group.limit != claim.limit() {
        return Err(EngineError::LimitMismatch { current: group.limit });
    }
    Ok(match claim {
        Claim::Permit { limit } if tickets >= limit as usize => Admits::NotNow,
        _ => Admits::Yes,
    })
}

impl Inner {
    /// Reads the lock's holder key, tickets, queue head and, when given, a waiter key and the
    /// request's lease record, at one revision.
    pub(super) async fn group_state(
        &self,
        name: &str,
        own: Option<&[u8]>,
        lifetime: &Lifetime,
    ) -> Result<State> {
        let head =
            GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
        let mut reads = vec![
            TxnOp::get(self.keys.hold(name), None),
            TxnOp::get(self.keys.tickets(name), Some(GetOptions::new().with_prefix())),
            TxnOp::get(self.keys.queue(name), Some(head)),
            TxnOp::get(self.keys.value(name), None),
        ];
        reads.extend(own.map(|key| TxnOp::get(key.to_vec(), Some(GetOptions::new().with_count_only()))));
        let lease_key = self.lease_key(lifetime)?;
        reads.extend(lease_key.clone().map(|key| TxnOp::get(key, None)));
        let response = self.txn(Txn::new().and_then(reads)).await?;
        let counts: Vec<i64> = response
            .op_responses()
            .into_iter()
            .map(|op| match op {
                etcd_client::TxnOpResponse::Get(get) => get.count(),
                _ => 0,
            })
            .collect();
        let found = gets(&response);
        let prefix = self.keys.tickets(name);
        let mut tickets = found[1].iter().map(|kv| Ticket::parse(&prefix, kv)).collect::<Result<Vec<_>>>()?;
        tickets.sort_by_key(|ticket| ticket.token);
        let head = match found[2].first() {
            Some(kv) => match Waiting::parse(&self.keys, kv) {
                Some((_, head)) => Some(head),
                None => {
                    return Err(decode::<WaiterRecord>(kv.key(), kv.value()).err().unwrap_or_else(|| {
                        EngineError::Unavailable("a waiter key of another shape is in the queue".into())
                    }))
                }
            },
            None => None,
        };
        let mut next = 4;
        let queued = match own {
            Some(_) => {
                next += 1;
                counts[4] > 0
            }
            None => false,
        };
        Ok(State {
            hold: found[0].first().map(Hold::parse).transpose()?,
            tickets,
            head,
            value: found[3].first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            queued,
            lease_alive: lease_key.is_none() || !found[next].is_empty(),
        })
    }

    /// One try at a shared hold or a permit, queueing with `place` when it cannot be granted.
    pub(super) async fn try_group(&self, request: &AcquireRequest, place: Option<&Place>) -> Result<Attempt> {
        let name = request.resource.as_str();
        let state = self.group_state(name, None, &request.lifetime).await?;
        if !state.lease_alive {
            return Err(EngineError::NoSuchLease);
        }
        if let Some(ticket) = state.tickets.iter().find(|ticket| ticket.owner == request.owner) {
            // The holder acquiring again: same token, lifetime reset.
            return match self.renew_ticket(name, ticket, &request.lifetime, request.value.as_deref()).await? {
                Some(grant) => Ok(Attempt::Granted(grant)),
                None => Ok(Attempt::Retry),
            };
        }
        if self.expire_overdue(name, &state).await? {
            return Ok(Attempt::Retry);
        }
        if let Some(hold) = state.hold.as_ref().filter(|hold| hold.expired(wall_now_ms())) {
            self.end_expired(name, hold.mod_revision).await?;
            return Ok(Attempt::Retry);
        }
        let admits = admits(state.hold.as_ref(), state.tickets.len(), request.claim)?;
        if let (None, Some(head)) = (&state.hold, &state.head) {
            let limit = head.record.limit;
            if limit != request.claim.limit() && (limit.is_some() || request.claim.limit().is_some()) {
                return Err(EngineError::LimitMismatch { current: limit });
            }
        }
        if state.head.is_none() && matches!(admits, Admits::Yes) {
            if let Some(grant) = self.join(name, &state, request, None).await? {
                return Ok(Attempt::Granted(grant));
            }
            return Ok(Attempt::Retry);
        }
        if let Some(hold) =
            state.hold.as_ref().filter(|hold| hold.record.group.is_some() && state.tickets.is_empty())
        {
            self.heal_group(name, hold).await?;
            return Ok(Attempt::Retry);
        }
        let Some(place) = place else {
            return Err(self.group_locked(&state));
        };
        let session = self.session.lease(&self.client()).await?;
        let txn = Txn::new().when([Compare::version(place.key.clone(), CompareOp::Equal, 0)]).and_then([
            TxnOp::put(place.key.clone(), place.record.clone(), Some(PutOptions::new().with_lease(session))),
        ]);
        place.sent.store(true, std::sync::atomic::Ordering::SeqCst);
        let response = match self.client().txn(txn).await {
            Err(error) if super::lease_not_found(&error) => {
                place.sent.store(false, std::sync::atomic::Ordering::SeqCst);
                self.session.lost(session).await;
                return Ok(Attempt::Retry);
            }
            other => other.map_err(super::etcd_error)?,
        };
        Ok(Attempt::Queued(revision(&response)))
    }

    /// Creates the group hold, or joins it, for `request`: a transaction that compares the
    /// holder key as `state` read it (absent, or at its mod revision), the queue (empty, or
    /// headed by `queued`: its waiter key and revision) and the request's lease. `None` when
    /// something changed meanwhile.
    pub(super) async fn join(
        &self,
        name: &str,
        state: &State,
        request: &AcquireRequest,
        queued: Option<(&Place, i64)>,
    ) -> Result<Option<Grant>> {
        let hold_key = self.keys.hold(name);
        let mut when = vec![match &state.hold {
            None => Compare::create_revision(hold_key.clone(), CompareOp::Equal, 0),
            Some(hold) => Compare::mod_revision(hold_key.clone(), CompareOp::Equal, hold.mod_revision),
        }];
        match queued {
            Some((place, at)) => when.push(Compare::create_revision(place.key.clone(), CompareOp::Equal, at)),
            None => when.push(Compare::version(self.keys.queue(name), CompareOp::Equal, 0).with_prefix()),
        }
        when.extend(self.lease_alive(&request.lifetime)?);
        let binding = self.bind(&request.owner, &request.lifetime, None).await?;
        let group = GroupRecord { limit: request.claim.limit() };
        let record = HoldRecord {
            owner: String::new(),
            deadline_ms: None,
            lease: None,
            waiter: None,
            token: None,
            kept_value: false,
            group: Some(group),
        };
        let ticket = TicketRecord {
            deadline_ms: binding.record.deadline_ms,
            lease: binding.record.lease.clone(),
            token: queued.map(|(_, at)| at),
        };
        let value_key = self.keys.value(name);
        let ticket_options =
            (binding.etcd_lease != 0).then(|| PutOptions::new().with_lease(binding.etcd_lease));
        let mut then = vec![
            TxnOp::get(value_key.clone(), None),
            TxnOp::put(hold_key, encode(&record), None),
            TxnOp::put(self.keys.ticket(name, &request.owner), encode(&ticket), ticket_options),
            match &request.value {
                Some(value) => TxnOp::put(value_key, value.as_str(), None),
                None => keep_value_op(&value_key, 0),
            },
        ];
        if let Some((place, _)) = queued {
            then.push(TxnOp::delete(place.key.clone(), None));
        }
        let response = self.txn_bound(Txn::new().when(when).and_then(then), &binding).await?;
        if !response.succeeded() {
            return Ok(None);
        }
        let at = revision(&response);
        let token = queued.map_or(at, |(_, queued_at)| queued_at);
        if let Some(expire) = binding.expire {
            self.schedule(Due::Ticket(name.to_string(), request.owner.clone()), at, expire);
        }
        let grant = self.ticket_grant(name, token, &ticket, &binding, request.value.as_deref(), &response);
        Ok(Some(grant.await?))
    }

    /// The holder of a ticket acquires again: same token, lifetime reset, value replaced when
    /// given. `None` when the ticket changed meanwhile.
    async fn renew_ticket(
        &self,
        name: &str,
        ticket: &Ticket,
        lifetime: &Lifetime,
        value: Option<&str>,
    ) -> Result<Option<Grant>> {
        let binding = self.bind(&ticket.owner, lifetime, None).await?;
        let key = self.keys.ticket(name, &ticket.owner);
        let record = TicketRecord {
            deadline_ms: binding.record.deadline_ms,
            lease: binding.record.lease.clone(),
            token: Some(ticket.token),
        };
        let mut when = vec![Compare::mod_revision(key.clone(), CompareOp::Equal, ticket.mod_revision)];
        when.extend(self.lease_alive(lifetime)?);
        let options = (binding.etcd_lease != 0).then(|| PutOptions::new().with_lease(binding.etcd_lease));
        let value_key = self.keys.value(name);
        let then = vec![
            TxnOp::get(value_key.clone(), None),
            TxnOp::put(key, encode(&record), options),
            match value {
                Some(value) => TxnOp::put(value_key, value, None),
                None => TxnOp::get(self.keys.value(name), Some(GetOptions::new().with_count_only())),
            },
        ];
        let response = self.txn_bound(Txn::new().when(when).and_then(then), &binding).await?;
        if !response.succeeded() {
            return Ok(None);
        }
        let at = revision(&response);
        match binding.expire {
            Some(expire) => self.schedule(Due::Ticket(name.to_string(), ticket.owner.clone()), at, expire),
            None => self.cancel(&self.keys.ticket(name, &ticket.owner)),
        }
        Ok(Some(self.ticket_grant(name, ticket.token, &record, &binding, value, &response).await?))
    }

    /// The grant a ticket's transaction made for `binding`'s owner: `value` as given, else as
    /// the transaction's first op read it; the expiry asked for, else the ticket's time left.
    async fn ticket_grant(
        &self,
        name: &str,
        token: i64,
        ticket: &TicketRecord,
        binding: &Binding,
        value: Option<&str>,
        response: &TxnResponse,
    ) -> Result<Grant> {
        let value = match value {
            Some(value) => Some(value.to_string()),
            None => gets(response)[0].first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        };
        let expires_in = match binding.expire {
            Some(expire) => Some(expire),
            None => self.ticket_expires_in(ticket).await?,
        };
        Ok(Grant {
            resource: name.to_string(),
            owner: binding.record.owner.clone(),
            token: FencingToken(token as u64),
            expires_in,
            value,
        })
    }

    /// Time left on a ticket: until its deadline, or its lease's; `None` when unbounded.
    pub(super) async fn ticket_expires_in(&self, ticket: &TicketRecord) -> Result<Option<Duration>> {
        self.time_left(ticket.lease.as_deref(), ticket.deadline_ms).await
    }

    /// Ends the tickets past their deadline (by more than [`EXPIRY_GRACE`]: their gateway's
    /// timer did not, it may have died); whether any was ended.
    pub(super) async fn expire_overdue(&self, name: &str, state: &State) -> Result<bool> {
        let now = wall_now_ms();
        let grace = EXPIRY_GRACE.as_millis() as u64;
        let mut ended = false;
        for ticket in &state.tickets {
            if ticket.record.deadline_ms.is_some_and(|deadline| deadline + grace <= now) {
                ended |= self.expire_ticket(name, &ticket.owner, ticket.mod_revision).await?;
            }
        }
        Ok(ended)
    }

    /// The `locked` answer for a group request that may not wait: who holds the lock.
    pub(super) fn group_locked(&self, state: &State) -> EngineError {
        let wall = wall_now_ms();
        match (&state.hold, state.tickets.first()) {
            (Some(hold), _) if hold.record.group.is_none() => EngineError::Locked {
                owner: hold.record.owner.clone(),
                expires_in: hold.record.deadline_ms.map(|deadline| ms_left(deadline, wall)),
                holders: vec![hold.record.owner.clone()],
            },
            (_, Some(first)) => EngineError::Locked {
                owner: first.owner.clone(),
                expires_in: state
                    .tickets
                    .iter()
                    .filter_map(|t| t.record.deadline_ms)
                    .min()
                    .map(|d| ms_left(d, wall)),
                holders: state.tickets.iter().map(|ticket| ticket.owner.clone()).collect(),
            },
            _ => EngineError::Locked {
                owner: state.head.as_ref().map(|head| head.record.owner.clone()).unwrap_or_default(),
                expires_in: None,
                holders: Vec::new(),
            },
        }
    }

    /// The `locked` answer of a plain request that found a group hold (reads its tickets);
    /// `None` when the group had no ticket left and was ended (try again).
    pub(super) async fn group_locked_now(&self, name: &str, hold: &Hold) -> Result<Option<EngineError>> {
        let state = self.group_state(name, None, &Lifetime::Unbounded).await?;
        if state.tickets.is_empty() {
            self.heal_group(name, hold).await?;
            return Ok(None);
        }
        Ok(Some(self.group_locked(&state)))
    }

    /// Ends a group hold that has no ticket left (their etcd leases ended them), if it is
    /// unchanged since read.
    pub(super) async fn heal_group(&self, name: &str, hold: &Hold) -> Result<()> {
        let txn = Txn::new()
            .when([
                Compare::mod_revision(self.keys.hold(name), CompareOp::Equal, hold.mod_revision),
                Compare::version(self.keys.tickets(name), CompareOp::Equal, 0).with_prefix(),
            ])
            .and_then([TxnOp::delete(self.keys.hold(name), None)]);
        let response = self.txn(txn).await?;
        if response.succeeded() {
            self.mirror.ended(name, revision(&response));
        }
        Ok(())
    }

    /// A group hold as inspection shows it: its tickets as holders.
    pub(super) async fn group_info(
        &self,
        name: &str,
        hold: &Hold,
        value: Option<String>,
        waiters: usize,
    ) -> Result<Option<LockInfo>> {
        let state = self.group_state(name, None, &Lifetime::Unbounded).await?;
        let limit = hold.record.group.and_then(|group| group.limit);
        let mode = if limit.is_some() { HoldMode::Permit } else { HoldMode::Shared };
        let mut holders = Vec::with_capacity(state.tickets.len());
        for ticket in &state.tickets {
            holders.push(HolderInfo {
                owner: ticket.owner.clone(),
                token: FencingToken(ticket.token as u64),
                expires_in: self.ticket_expires_in(&ticket.record).await?,
                mode,
                lease: ticket.record.lease.clone().map(LeaseId),
            });
        }
        let Some(first) = holders.first().cloned() else { return Ok(None) };
        Ok(Some(LockInfo {
            resource: name.to_string(),
            owner: first.owner,
            token: first.token,
            expires_in: first.expires_in,
            value,
            waiters,
            lease: first.lease,
            mode,
            limit,
            holders,
        }))
    }
}
