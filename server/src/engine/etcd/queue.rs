//! Waiting for a lock, after etcd's concurrency recipe: a waiter key per request, ordered by
//! create revision, put by the request's first try in the same transaction (`holds.rs`).
//!
//! A release hands the lock to the head waiter in its own transaction (`handoff.rs`); the
//! waiter's gateway learns it from its mirror, which its one watch keeps current, and answers.
//! No waiter opens a watch of its own or proposes anything while it waits. The head takes the
//! lock itself only when a hold ended without a hand-off (an etcd lease ended it, or a gateway
//! of an older version released it), in a transaction that checks that its own waiter key
//! (bound to this gateway's session lease) and, for a lease-bound request, its lease are still
//! there: a waiter whose gateway or lease died is never granted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp};
use tokio::time::{sleep, sleep_until, Instant};

use super::keys::{encode, WaiterRecord};
use super::mirror::Situation;
use super::reads::{gets, ms_left, revision, Hold};
use super::timers::Due;
use super::Inner;
use crate::engine::capacity::{self, Permit, WAITER_OVERHEAD};
use crate::engine::clock::wall_now_ms;
use crate::engine::{AcquireRequest, Claim, EngineError, FencingToken, Grant, Lifetime, Result};

/// How long a hold handed to a waiter without expiry or lease stays bound to its gateway's
/// session lease before that gateway rebinds it (if it is still held then).
pub(super) const SETTLE_AFTER: Duration = Duration::from_millis(500);

/// How long a waiter retries etcd errors (a member dying, a leader election) before it gives up
/// with `unavailable`.
const WAITER_PATIENCE: Duration = Duration::from_secs(3);

/// How often a waiter that heard nothing reads its situation from etcd, in case the mirror
/// missed something.
const RECHECK: Duration = Duration::from_secs(2);

/// How long after a hold's deadline the head waiter ends it, if the holder's gateway has not.
const EXPIRY_GRACE: Duration = Duration::from_millis(100);

/// A request's place in a lock's queue: its waiter key, put by its first try. Removed (and a
/// grant it never answered given back) if the request goes away before it is answered.
pub(super) struct Place {
    inner: Arc<Inner>,
    pub(super) name: String,
    /// The waiter id, the last part of the key.
    pub(super) id: String,
    pub(super) key: Vec<u8>,
    /// The encoded [`WaiterRecord`].
    pub(super) record: Vec<u8>,
    /// Set once a transaction that puts the key was sent; cleared when it is taken out again.
    pub(super) sent: AtomicBool,
    pub(super) answered: bool,
    /// Counts the request against `--max-waiters` while it may queue.
    _permit: Permit,
    /// Counts its bytes against `--max-memory` while it may queue.
    _memory: Permit,
}

impl Place {
    /// A place for `request`, counted against the caps on queued requests.
    pub(super) fn new(inner: &Arc<Inner>, request: &AcquireRequest) -> Result<Place> {
        if *inner.shutting_down.borrow() {
            return Err(EngineError::ShuttingDown);
        }
        let max = inner.max_waiters.load(Ordering::Relaxed);
        let permit = inner.waiters.take(max, "queued waiters (--max-waiters)")?;
        let bytes = capacity::footprint(
            WAITER_OVERHEAD,
            &[request.owner.len(), request.value.as_ref().map_or(0, String::len)],
        );
        let max_memory = inner.max_memory.load(Ordering::Relaxed);
        let memory = inner.memory.take_many(bytes, max_memory, "bytes of waiters (--max-memory)")?;
        let id = format!("{:016x}", rand::random::<u64>());
        let (ttl_ms, lease) = match &request.lifetime {
            Lifetime::Unbounded => (None, None),
            Lifetime::Expire(ttl) => (Some(ttl.as_millis() as u64), None),
            Lifetime::Lease(lease) => (None, Some(lease.0.clone())),
        };
        // Shared and permit requests join a group hold themselves; only plain ones are handed off.
        let record = WaiterRecord {
            owner: request.owner.clone(),
            handoff: request.claim == Claim::Exclusive,
            ttl_ms,
            lease,
            value: request.value.clone(),
            shared: request.claim == Claim::Shared,
            limit: request.claim.limit(),
        };
        Ok(Place {
            inner: inner.clone(),
            name: request.resource.clone(),
            key: inner.keys.waiter(&request.resource, &id),
            id,
            record: encode(&record),
            sent: AtomicBool::new(false),
            answered: false,
            _permit: permit,
            _memory: memory,
        })
    }

    /// Takes the waiter key out of the queue now (the try that put it found the lock its own).
    pub(super) async fn leave(&self) {
        if self.sent.load(Ordering::SeqCst) {
            let _ = self.inner.client().delete(self.key.clone(), None).await;
            self.sent.store(false, Ordering::SeqCst);
        }
    }
}

impl Drop for Place {
    /// The request went away unanswered (client gone, error, shutdown): leave the queue, and
    /// give back a grant made to it that it never returned.
    fn drop(&mut self) {
        if self.answered || !self.sent.load(Ordering::SeqCst) {
            return;
        }
        let (inner, name, id, key) =
            (self.inner.clone(), self.name.clone(), self.id.clone(), self.key.clone());
        // No runtime: the process is exiting, and the session lease will clear the key.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            if let Ok(Some(hold)) = inner.leave_queue(&name, &key).await {
                if hold.record.waiter.as_deref() == Some(id.as_str()) {
                    let _ = inner.end_expired(&name, hold.mod_revision).await;
                }
            }
        });
    }
}

impl Inner {
    /// Deletes a waiter key if it is still queued; otherwise returns the lock's hold (which may
    /// have been handed to it).
    async fn leave_queue(&self, name: &str, key: &[u8]) -> Result<Option<Hold>> {
        let txn = Txn::new()
            .when([Compare::version(key.to_vec(), CompareOp::Greater, 0)])
            .and_then([TxnOp::delete(key.to_vec(), None)])
            .or_else([TxnOp::get(self.keys.hold(name), None)]);
        let response = self.txn(txn).await?;
        if response.succeeded() {
            return Ok(None);
        }
        gets(&response)[0].first().map(Hold::parse).transpose()
    }
}

/// The answer to a queued request whose waiter key went without a grant: its gateway's etcd
/// session ended (shared by plain, group and multi-lock waits).
pub(super) fn lost_place() -> EngineError {
    EngineError::Unavailable(
        "this request lost its place in the queue (its gateway's etcd session ended); retry".into(),
    )
}

/// A request queued for a lock.
pub(super) struct Queued {
    inner: Arc<Inner>,
    place: Place,
    /// Its waiter key's create revision: its place in the queue, and its token once granted.
    revision: i64,
}

/// What a look at the lock found.
enum Look {
    Granted(Grant),
    /// Wait for a change, or until this instant.
    Wait(Option<Instant>),
    /// Look again, reading from etcd rather than the mirror.
    Read,
}

impl Queued {
    /// The request queued in `place`, whose key was put at `revision`.
    pub(super) fn new(inner: Arc<Inner>, place: Place, revision: i64) -> Queued {
        Queued { inner, place, revision }
    }

    /// Waits until this request is granted, its lease dies, or `wait_until`.
    pub(super) async fn wait(mut self, request: &AcquireRequest, wait_until: Instant) -> Result<Grant> {
        let inner = self.inner.clone();
        let interest = inner.mirror.interest(&self.place.name, self.revision);
        let mut shutting_down_rx = inner.shutting_down.subscribe();
        let mut failing_since: Option<Instant> = None;
        let lease_bound = matches!(request.lifetime, Lifetime::Lease(_));
        let mut leases_ended = inner.mirror.leases_ended();
        let mut read = false;
        loop {
            if *shutting_down_rx.borrow_and_update() {
                return Err(EngineError::ShuttingDown);
            }
            let notified = interest.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lease_bound && inner.mirror.leases_ended() != leases_ended {
                leases_ended = inner.mirror.leases_ended();
                read = true;
            }
            let wake = match self.look(request, std::mem::take(&mut read)).await {
                Ok(Look::Granted(grant)) => {
                    self.place.answered = true;
                    return Ok(grant);
                }
                Ok(Look::Read) => {
                    read = true;
                    continue;
                }
                Ok(Look::Wait(wake)) => {
                    failing_since = None;
                    wake
                }
                Err(EngineError::Unavailable(message)) => {
                    // A member died or a leader is being elected: look again shortly.
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > WAITER_PATIENCE || Instant::now() >= wait_until {
                        return Err(EngineError::Unavailable(message));
                    }
                    read = true;
                    Some(Instant::now() + Duration::from_millis(200))
                }
                Err(error) => return Err(error),
            };
            let recheck = wake.unwrap_or(Instant::now() + RECHECK);
            tokio::select! {
                _ = &mut notified => {}
                _ = sleep_until(recheck) => read |= wake.is_none(),
                _ = sleep_until(wait_until) => return self.give_up(request).await,
                _ = shutting_down_rx.changed() => return Err(EngineError::ShuttingDown),
            }
        }
    }

    /// Looks at the lock, in the mirror or (`read`) in etcd: answers a hand-off, takes the lock
    /// at the head of the queue when it is free, or ends a hold past its deadline.
    async fn look(&mut self, request: &AcquireRequest, read: bool) -> Result<Look> {
        let situation = if read {
            self.read_situation(request).await?
        } else {
            match self.inner.mirror.situation(&self.place.name, self.revision) {
                Some(situation) => situation,
                None => return Ok(Look::Wait(None)),
            }
        };
        if let Some(hold) = situation.hold.as_ref().filter(|hold| self.is_mine(hold)) {
            return self.handed(request, hold.clone()).await.map(Look::Granted);
        }
        if !situation.queued {
            return if read { Err(lost_place()) } else { Ok(Look::Read) };
        }
        if !situation.head {
            return Ok(Look::Wait(None));
        }
        match situation.hold {
            None => self.take(request).await,
            // A group hold whose tickets all ended with their etcd leases: end it.
            Some(hold) if read && hold.record.group.is_some() => {
                self.inner.group_locked_now(&self.place.name, &hold).await?;
                Ok(Look::Wait(None))
            }
            Some(hold) if hold.expired(wall_now_ms()) => {
                self.inner.end_expired(&self.place.name, hold.mod_revision).await?;
                Ok(Look::Wait(None))
            }
            Some(hold) => Ok(Look::Wait(
                hold.record
                    .deadline_ms
                    .map(|deadline| Instant::now() + ms_left(deadline, wall_now_ms()) + EXPIRY_GRACE),
            )),
        }
    }

    fn is_mine(&self, hold: &Hold) -> bool {
        hold.token == self.revision && hold.record.waiter.as_deref() == Some(self.place.id.as_str())
    }

    /// The lock's hold, whether this request is still queued and at the head, read from etcd;
    /// `NoSuchLease` when the request's lease is gone.
    async fn read_situation(&self, request: &AcquireRequest) -> Result<Situation> {
        let inner = &self.inner;
        let head =
            GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
        let mut reads = vec![
            TxnOp::get(inner.keys.hold(&self.place.name), None),
            TxnOp::get(inner.keys.queue(&self.place.name), Some(head)),
            TxnOp::get(self.place.key.clone(), None),
        ];
        let lease_key = inner.lease_key(&request.lifetime)?;
        reads.extend(lease_key.clone().map(|key| TxnOp::get(key, None)));
        let found = gets(&inner.txn(Txn::new().and_then(reads)).await?);
        if lease_key.is_some() && found[3].is_empty() {
            return Err(EngineError::NoSuchLease);
        }
        Ok(Situation {
            hold: found[0].first().map(Hold::parse).transpose()?,
            queued: !found[2].is_empty(),
            head: found[1].first().is_some_and(|head| head.create_revision() == self.revision),
        })
    }

    /// Takes the free lock at the head of the queue.
    async fn take(&self, request: &AcquireRequest) -> Result<Look> {
        let inner = &self.inner;
        let name = self.place.name.as_str();
        let mut binding = inner.bind(&request.owner, &request.lifetime, Some(&self.place.id)).await?;
        binding.record.token = Some(self.revision);
        let hold_key = inner.keys.hold(name);
        let mut when = vec![
            Compare::create_revision(hold_key.clone(), CompareOp::Equal, 0),
            Compare::create_revision(self.place.key.clone(), CompareOp::Equal, self.revision),
        ];
        when.extend(inner.lease_alive(&request.lifetime)?);
        let mut then = vec![TxnOp::delete(self.place.key.clone(), None)];
        then.extend(inner.grant_ops(name, &binding, request.value.as_deref()));
        let txn = Txn::new().when(when).and_then(then).or_else([TxnOp::get(self.place.key.clone(), None)]);
        let response = inner.txn_bound(txn, &binding).await?;
        if response.succeeded() {
            let value = request.value.as_deref();
            let grant = inner.granted(name, self.revision, &binding, value, &response).await?;
            return Ok(Look::Granted(grant));
        }
        Ok(Look::Read)
    }

    /// Answers a hand-off: keeps the deadline on this gateway's timer, and rebinds a hold with
    /// neither expiry nor lease from this gateway's session lease to nothing if it is still
    /// held [`SETTLE_AFTER`] from now.
    async fn handed(&self, request: &AcquireRequest, hold: Hold) -> Result<Grant> {
        let inner = &self.inner;
        let name = self.place.name.clone();
        let expires_in = match &request.lifetime {
            Lifetime::Expire(ttl) => {
                let left = hold.record.deadline_ms.map_or(*ttl, |deadline| ms_left(deadline, wall_now_ms()));
                let left = left.min(*ttl);
                inner.schedule(Due::Hold(name.clone()), hold.mod_revision, left);
                Some(left)
            }
            Lifetime::Lease(_) => inner.expires_in(&hold).await?,
            Lifetime::Unbounded => {
                settle(inner.clone(), name.clone(), hold.clone());
                None
            }
        };
        let value = match &request.value {
            Some(value) => Some(value.clone()),
            None if hold.record.kept_value => {
                let answer = inner.client().get(inner.keys.value(&name), None).await;
                let answer = answer.map_err(super::etcd_error)?;
                answer.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            }
            None => None,
        };
        Ok(Grant {
            resource: name,
            owner: hold.record.owner,
            token: FencingToken(hold.token as u64),
            expires_in,
            value,
        })
    }

    /// The wait ran out: leave the queue and report who holds the lock (or answer the grant
    /// that came at the last moment).
    async fn give_up(&mut self, request: &AcquireRequest) -> Result<Grant> {
        let left = self.inner.leave_queue(&self.place.name, &self.place.key).await;
        match left {
            Ok(Some(hold)) if self.is_mine(&hold) => {
                let grant = self.handed(request, hold).await?;
                self.place.answered = true;
                return Ok(grant);
            }
            Ok(_) => self.place.answered = true,
            Err(_) => {}
        }
        Err(match self.inner.read_hold(&self.place.name).await {
            Ok(Some(hold)) if hold.record.group.is_some() => {
                match self.inner.group_locked_now(&self.place.name, &hold).await {
                    Ok(Some(locked)) => locked,
                    Ok(None) => EngineError::NotHeld,
                    Err(error) => error,
                }
            }
            Ok(Some(hold)) => match self.inner.expires_in(&hold).await {
                Ok(expires_in) => EngineError::Locked {
                    holders: vec![hold.record.owner.clone()],
                    owner: hold.record.owner,
                    expires_in,
                },
                Err(error) => error,
            },
            Ok(None) => EngineError::NotHeld,
            Err(error) => error,
        })
    }
}

/// Rebinds a handed-off hold without expiry or lease from the waiter's session lease to
/// nothing, [`SETTLE_AFTER`] from now, if it is still held then.
fn settle(inner: Arc<Inner>, name: String, hold: Hold) {
    tokio::spawn(async move {
        sleep(SETTLE_AFTER).await;
        if inner.mirror.hold(&name).is_none_or(|now| now.mod_revision != hold.mod_revision) {
            return;
        }
        let key = inner.keys.hold(&name);
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, hold.mod_revision)])
            .and_then([TxnOp::put(key, encode(&hold.record), Some(PutOptions::new()))]);
        if let Ok(response) = inner.txn(txn).await {
            if response.succeeded() {
                inner.mirror.held(&name, Hold { mod_revision: revision(&response), ..hold });
            }
        }
    });
}
