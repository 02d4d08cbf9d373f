//! Multi-locks on etcd: several plain locks taken in one transaction, or none.
//!
//! A multi-lock that cannot be granted at once puts a waiter key in every lock's queue in one
//! transaction: its keys share one create revision, so any two requests stand in the same order
//! in every queue they share, and waiting never forms a cycle. It holds nothing while it waits.
//! Its waiter keys take no hand-off (`handoff: false`): a release ahead of it just ends the
//! hold, and once it heads every queue and every lock is free it takes them all in one
//! transaction that compares each lock free and each of its waiter keys still there (bound to
//! this gateway's session lease: a multi-lock whose gateway died is never granted). Its tokens
//! are that create revision, for every lock.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp};
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};

use super::holds::Binding;
use super::keys::{encode, WaiterRecord};
use super::queue::lost_place;
use super::reads::{gets, revision, Hold};
use super::timers::Due;
use super::Inner;
use crate::engine::clock::wall_now_ms;
use crate::engine::{
    AcquireManyRequest, EngineError, FencingToken, Grant, Lifetime, ReleaseManyRequest, Result,
};

/// How often a queued multi-lock reads its locks when nothing woke it.
const RECHECK: Duration = Duration::from_secs(2);

/// The locks of a multi-lock as read at one revision.
struct Locks {
    /// Each lock's hold.
    holds: Vec<Option<Hold>>,
    /// Each lock's head waiter's create revision.
    heads: Vec<Option<i64>>,
    /// How many of the request's own waiter keys are there.
    queued: usize,
    lease_alive: bool,
}

/// A queued multi-lock's waiter keys; taken out again if it goes away unanswered.
struct Places {
    inner: Arc<Inner>,
    keys: Vec<Vec<u8>>,
    answered: bool,
}

impl Drop for Places {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let (inner, keys) = (self.inner.clone(), std::mem::take(&mut self.keys));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let deletes: Vec<TxnOp> = keys.into_iter().map(|key| TxnOp::delete(key, None)).collect();
            let _ = inner.txn(Txn::new().and_then(deletes)).await;
        });
    }
}

impl Inner {
    /// Reads every lock's hold and head waiter, the request's own waiter keys and its lease.
    async fn multi_state(&self, names: &[String], own: &[Vec<u8>], lifetime: &Lifetime) -> Result<Locks> {
        let head =
            GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
        let mut reads = Vec::with_capacity(names.len() * 2 + own.len() + 1);
        for name in names {
            reads.push(TxnOp::get(self.keys.hold(name), None));
            reads.push(TxnOp::get(self.keys.queue(name), Some(head.clone())));
        }
        reads.extend(own.iter().map(|key| TxnOp::get(key.clone(), None)));
        let lease_key = self.lease_key(lifetime)?;
        reads.extend(lease_key.clone().map(|key| TxnOp::get(key, None)));
        let found = gets(&self.txn(Txn::new().and_then(reads)).await?);
        let mut holds = Vec::with_capacity(names.len());
        let mut heads = Vec::with_capacity(names.len());
        for index in 0..names.len() {
            holds.push(found[index * 2].first().map(Hold::parse).transpose()?);
            heads.push(found[index * 2 + 1].first().map(|kv| kv.create_revision()));
        }
        let queued =
            found[names.len() * 2..names.len() * 2 + own.len()].iter().filter(|kvs| !kvs.is_empty()).count();
        Ok(Locks {
            holds,
            heads,
            queued,
            lease_alive: lease_key.is_none() || found.last().is_some_and(|kvs| !kvs.is_empty()),
        })
    }

    /// Takes every lock of `request` in one transaction: the free ones granted, those the
    /// owner holds renewed. `queued`: its waiter keys and their revision (the tokens). `None`
    /// when something changed since `locks` was read.
    async fn take_all(
        &self,
        request: &AcquireManyRequest,
        locks: &Locks,
        queued: Option<(&[Vec<u8>], i64)>,
    ) -> Result<Option<Vec<Grant>>> {
        let mut binding = self.bind(&request.owner, &request.lifetime, None).await?;
        let mut when = Vec::new();
        let mut then = Vec::new();
        let mut tokens = Vec::with_capacity(request.resources.len());
        for (name, hold) in request.resources.iter().zip(&locks.holds) {
            let hold_key = self.keys.hold(name);
            let mut record = binding.record.clone();
            match hold {
                Some(hold) => {
                    when.push(Compare::mod_revision(hold_key, CompareOp::Equal, hold.mod_revision));
                    record.token = Some(hold.token);
                    tokens.push(Some(hold.token));
                }
                None => {
                    when.push(Compare::create_revision(hold_key, CompareOp::Equal, 0));
                    if queued.is_none() {
                        when.push(Compare::version(self.keys.queue(name), CompareOp::Equal, 0).with_prefix());
                    }
                    record.token = queued.map(|(_, at)| at);
                    tokens.push(queued.map(|(_, at)| at));
                }
            }
            let each = Binding { record, etcd_lease: binding.etcd_lease, expire: binding.expire };
            then.extend(self.grant_ops(name, &each, None));
        }
        if let Some((keys, at)) = queued {
            for key in keys {
                when.push(Compare::create_revision(key.clone(), CompareOp::Equal, at));
                then.push(TxnOp::delete(key.clone(), None));
            }
        }
        when.extend(self.lease_alive(&request.lifetime)?);
        binding.record.token = None;
        let response = self.txn_bound(Txn::new().when(when).and_then(then), &binding).await?;
        if !response.succeeded() {
            return Ok(None);
        }
        let at = revision(&response);
        let values = gets(&response);
        let mut grants = Vec::with_capacity(tokens.len());
        for (index, (name, token)) in request.resources.iter().zip(tokens).enumerate() {
            let token = token.unwrap_or(at);
            let mut record = binding.record.clone();
            record.token = Some(token);
            self.mirror.held(name, Hold { record, token, mod_revision: at });
            match binding.expire {
                Some(expire) => self.schedule(Due::Hold(name.clone()), at, expire),
                None => self.cancel(&self.keys.hold(name)),
            }
            let value = values
                .get(index)
                .and_then(|kvs| kvs.first())
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
            grants.push(Grant {
                resource: name.clone(),
                owner: request.owner.clone(),
                token: FencingToken(token as u64),
                expires_in: binding.expire,
                value,
            });
        }
        if binding.expire.is_none() {
            let probe = Hold { record: binding.record.clone(), token: at, mod_revision: at };
            let expires_in = self.expires_in(&probe).await?;
            grants.iter_mut().for_each(|grant| grant.expires_in = expires_in);
        }
        Ok(Some(grants))
    }

    /// The `locked` answer for the first lock of `locks` that someone else holds or queues for.
    async fn multi_locked(&self, request: &AcquireManyRequest, locks: &Locks) -> Result<EngineError> {
        for (name, hold) in request.resources.iter().zip(&locks.holds) {
            match hold {
                Some(hold) if hold.record.group.is_some() => {
                    if let Some(locked) = self.group_locked_now(name, hold).await? {
                        return Ok(locked);
                    }
                }
                Some(hold) if hold.record.owner != request.owner => {
                    return Ok(EngineError::Locked {
                        owner: hold.record.owner.clone(),
                        expires_in: self.expires_in(hold).await?,
                        holders: vec![hold.record.owner.clone()],
                    })
                }
                _ => {}
            }
        }
        Ok(EngineError::Locked { owner: String::new(), expires_in: None, holders: Vec::new() })
    }

    /// Whether `hold` lets the multi-lock of `owner` take its lock: free, or the owner's own.
    /// A hold past its deadline is ended first (`Err(())`: look again).
    async fn free_for(&self, name: &str, hold: Option<&Hold>, owner: &str) -> Result<Result<bool, ()>> {
        Ok(match hold {
            None => Ok(true),
            Some(hold) if hold.record.group.is_some() => {
                if self.group_locked_now(name, hold).await?.is_none() {
                    return Ok(Err(()));
                }
                Ok(false)
            }
            Some(hold) if hold.expired(wall_now_ms()) => {
                self.end_expired(name, hold.mod_revision).await?;
                Err(())
            }
            Some(hold) => Ok(hold.record.owner == owner),
        })
    }

    /// Acquires every lock of a multi-lock at once, or queues for them all (holding none).
    pub(super) async fn acquire_many(self: &Arc<Self>, request: &AcquireManyRequest) -> Result<Vec<Grant>> {
        let wait_until = Instant::now() + request.wait;
        loop {
            let locks = self.multi_state(&request.resources, &[], &request.lifetime).await?;
            if !locks.lease_alive {
                return Err(EngineError::NoSuchLease);
            }
            let mut all_free = true;
            let mut again = false;
            for (index, name) in request.resources.iter().enumerate() {
                match self.free_for(name, locks.holds[index].as_ref(), &request.owner).await? {
                    Ok(free) => {
                        all_free &= free && (locks.holds[index].is_some() || locks.heads[index].is_none())
                    }
                    Err(()) => again = true,
                }
            }
            if again {
                continue;
            }
            if all_free {
                match self.take_all(request, &locks, None).await? {
                    Some(grants) => return Ok(grants),
                    None => continue,
                }
            }
            if request.wait.is_zero() {
                return Err(self.multi_locked(request, &locks).await?);
            }
            return self.wait_many(request, wait_until).await;
        }
    }

    /// Queues a waiter key in every lock's queue (one transaction), then waits to take them all.
    async fn wait_many(
        self: &Arc<Self>,
        request: &AcquireManyRequest,
        wait_until: Instant,
    ) -> Result<Vec<Grant>> {
        if *self.shutting_down.borrow() {
            return Err(EngineError::ShuttingDown);
        }
        let id = format!("{:016x}", rand::random::<u64>());
        let (ttl_ms, lease) = match &request.lifetime {
            Lifetime::Unbounded => (None, None),
            Lifetime::Expire(ttl) => (Some(ttl.as_millis() as u64), None),
            Lifetime::Lease(lease) => (None, Some(lease.0.clone())),
        };
        let record = encode(&WaiterRecord {
            owner: request.owner.clone(),
            handoff: false,
            ttl_ms,
            lease,
            value: None,
            shared: false,
            limit: None,
        });
        let keys: Vec<Vec<u8>> = request.resources.iter().map(|name| self.keys.waiter(name, &id)).collect();
        let session = self.session.lease(&self.client()).await?;
        let puts = keys
            .iter()
            .map(|key| TxnOp::put(key.clone(), record.clone(), Some(PutOptions::new().with_lease(session))));
        let mut places = Places { inner: self.clone(), keys: keys.clone(), answered: false };
        let response = match self.client().txn(Txn::new().and_then(puts.collect::<Vec<_>>())).await {
            Err(error) if super::lease_not_found(&error) => {
                places.answered = true;
                self.session.lost(session).await;
                return Err(EngineError::Unavailable("this gateway's etcd session ended; retry".into()));
            }
            other => other.map_err(super::etcd_error)?,
        };
        let at = revision(&response);
        let notify = Arc::new(Notify::new());
        let _interests: Vec<_> = request
            .resources
            .iter()
            .map(|name| self.mirror.interest_with(name, at, notify.clone()))
            .collect();
        let mut shutting_down = self.shutting_down.subscribe();
        let queued_at = Instant::now();
        loop {
            if *shutting_down.borrow_and_update() {
                return Err(EngineError::ShuttingDown);
            }
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let locks = self.multi_state(&request.resources, &keys, &request.lifetime).await?;
            if !locks.lease_alive {
                return Err(EngineError::NoSuchLease);
            }
            if locks.queued < keys.len() {
                return Err(lost_place());
            }
            let mut ready = true;
            let mut again = false;
            for (index, name) in request.resources.iter().enumerate() {
                let head = locks.heads[index] == Some(at);
                match self.free_for(name, locks.holds[index].as_ref(), &request.owner).await? {
                    Ok(free) => ready &= free && head,
                    Err(()) => again = true,
                }
            }
            if again {
                continue;
            }
            if ready {
                if let Some(grants) = self.take_all(request, &locks, Some((&keys, at))).await? {
                    places.answered = true;
                    crate::metrics::global().waited(queued_at.elapsed());
                    return Ok(grants);
                }
                continue;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = sleep_until(Instant::now() + RECHECK) => {}
                _ = sleep_until(wait_until) => {
                    let deletes: Vec<TxnOp> = keys.iter().map(|key| TxnOp::delete(key.clone(), None)).collect();
                    self.txn(Txn::new().and_then(deletes)).await?;
                    places.answered = true;
                    let locks = self.multi_state(&request.resources, &[], &request.lifetime).await?;
                    return Err(self.multi_locked(request, &locks).await?);
                }
                _ = shutting_down.changed() => return Err(EngineError::ShuttingDown),
            }
        }
    }

    /// Releases every lock of a multi-lock in one transaction, or none unless the owner holds
    /// them all.
    pub(super) async fn release_many(&self, request: &ReleaseManyRequest) -> Result<()> {
        loop {
            let locks = self.multi_state(&request.resources, &[], &Lifetime::Unbounded).await?;
            let wall = wall_now_ms();
            let mut when = Vec::new();
            let mut then = Vec::new();
            let mut retention = 0;
            for (name, hold) in request.resources.iter().zip(&locks.holds) {
                let hold = hold.as_ref().ok_or(EngineError::NotHeld)?;
                hold.held_by(Some(&request.owner), None, wall)?;
                when.push(Compare::mod_revision(self.keys.hold(name), CompareOp::Equal, hold.mod_revision));
                let (value_op, lease) = self.ended_value_op(name, request.keep_value).await?;
                retention = lease;
                then.extend([TxnOp::delete(self.keys.hold(name), None), value_op]);
            }
            let txn = Txn::new().when(when).and_then(then);
            let Some(response) = self.txn_with_backstop(txn, retention).await? else { continue };
            if !response.succeeded() {
                continue;
            }
            let at = revision(&response);
            for name in &request.resources {
                self.cancel(&self.keys.hold(name));
                self.mirror.ended(name, at);
                if request.keep_value {
                    self.schedule(Due::Value(name.clone()), at, self.value_retention);
                }
            }
            return Ok(());
        }
    }
}
