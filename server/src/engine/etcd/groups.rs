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

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp};
use tokio::time::{sleep_until, Instant};

use super::holds::{keep_value_op, Attempt};
use super::keys::{decode, encode, GroupRecord, HoldRecord, TicketRecord, WaiterRecord};
use super::mirror::Waiting;
use super::queue::{Place, SETTLE_AFTER};
use super::reads::{gets, ms_left, revision, Hold};
use super::timers::Due;
use super::Inner;
use crate::engine::clock::wall_now_ms;
use crate::engine::{
    AcquireRequest, Claim, EngineError, FencingToken, Grant, HoldMode, HolderInfo, LeaseId, Lifetime,
    LockInfo, RefreshRequest, Refreshed, ReleaseRequest, Result,
};

/// How often a queued group request reads the lock when nothing woke it.
const RECHECK: Duration = Duration::from_secs(2);

/// How long after a ticket's deadline a request that finds it ends it, if the ticket's gateway
/// has not (as `queue.rs` does for holds).
const EXPIRY_GRACE: Duration = Duration::from_millis(100);

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
struct State {
    hold: Option<Hold>,
    /// The tickets, oldest token first.
    tickets: Vec<Ticket>,
    /// The head of the queue.
    head: Option<Waiting>,
    /// The lock's value.
    value: Option<String>,
    /// Whether the request's own waiter key is there (when it has one).
    queued: bool,
    /// Whether the request's lease record is there (when it names one).
    lease_alive: bool,
}

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

/// What the group admits now.
enum Admits {
    Yes,
    /// Full, or held by a plain lock: wait.
    NotNow,
}

/// Whether a claim can join what holds the lock now; `limit_mismatch` when it never can.
fn admits(hold: Option<&Hold>, tickets: usize, claim: Claim) -> Result<Admits> {
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
    async fn group_state(&self, name: &str, own: Option<&[u8]>, lifetime: &Lifetime) -> Result<State> {
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
    async fn join(
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
        let value = match &request.value {
            Some(value) => Some(value.clone()),
            None => gets(&response)[0].first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        };
        let expires_in = match binding.expire {
            Some(expire) => Some(expire),
            None => self.ticket_expires_in(&ticket).await?,
        };
        Ok(Some(Grant {
            resource: name.to_string(),
            owner: request.owner.clone(),
            token: FencingToken(token as u64),
            expires_in,
            value,
        }))
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
        let value = match value {
            Some(value) => Some(value.to_string()),
            None => gets(&response)[0].first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        };
        let expires_in = match binding.expire {
            Some(expire) => Some(expire),
            None => self.ticket_expires_in(&record).await?,
        };
        Ok(Some(Grant {
            resource: name.to_string(),
            owner: ticket.owner.clone(),
            token: FencingToken(ticket.token as u64),
            expires_in,
            value,
        }))
    }

    /// Time left on a ticket: until its deadline, or its lease's; `None` when unbounded.
    async fn ticket_expires_in(&self, ticket: &TicketRecord) -> Result<Option<Duration>> {
        self.time_left(ticket.lease.as_deref(), ticket.deadline_ms).await
    }

    /// Ends the tickets past their deadline (by more than [`EXPIRY_GRACE`]: their gateway's
    /// timer did not, it may have died); whether any was ended.
    async fn expire_overdue(&self, name: &str, state: &State) -> Result<bool> {
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
    fn group_locked(&self, state: &State) -> EngineError {
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
                return Err(EngineError::Unavailable(
                    "this request lost its place in the queue (its gateway's etcd session ended); retry"
                        .into(),
                ));
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
