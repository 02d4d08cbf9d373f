//! Holder transactions: granting a free lock (or queueing in the same transaction), renewing
//! the holder's own hold, refreshing a hold (ending one is `handoff.rs`). Each is one etcd
//! transaction whose compares make it safe to run on any gateway at any time: a grant only if
//! nobody holds and nobody queues, a renewal or refresh only if the holder key was not
//! rewritten since it was read.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnResponse,
};

use super::keys::{decode, encode, lease_number, HoldRecord, WaiterRecord};
use super::queue::Place;
use super::reads::{gets, revision, Hold};
use super::timers::Due;
use super::{etcd_error, lease_not_found, Inner};
use crate::engine::clock::wall_now_ms;
use crate::engine::{
    AcquireRequest, EngineError, FencingToken, Grant, Lifetime, RefreshRequest, Refreshed, Result,
};

/// What a hold is bound to in etcd.
pub(super) struct Binding {
    pub(super) record: HoldRecord,
    /// The etcd lease of the holder key (0: none).
    pub(super) etcd_lease: i64,
    /// When this gateway must end the hold.
    pub(super) expire: Option<Duration>,
}

/// The outcome of one try at the lock.
pub(super) enum Attempt {
    Granted(Grant),
    Held(EngineError),
    /// Queued by the try's own transaction, at this revision.
    Queued(i64),
    Retry,
}

impl Inner {
    /// What the hold of `lifetime` is bound to, starting now.
    pub(super) async fn bind(
        &self,
        owner: &str,
        lifetime: &Lifetime,
        waiter: Option<&str>,
    ) -> Result<Binding> {
        let mut record = HoldRecord {
            owner: owner.to_string(),
            deadline_ms: None,
            lease: None,
            waiter: waiter.map(str::to_string),
            token: None,
            kept_value: false,
            group: None,
        };
        Ok(match lifetime {
            Lifetime::Unbounded => Binding { record, etcd_lease: 0, expire: None },
            Lifetime::Expire(ttl) => {
                record.deadline_ms = Some(wall_now_ms() + ttl.as_millis() as u64);
                let etcd_lease = self.backstops.lease(&self.client(), *ttl).await?;
                Binding { record, etcd_lease, expire: Some(*ttl) }
            }
            Lifetime::Lease(lease) => {
                let id = lease_number(&lease.0)?;
                record.lease = Some(lease.0.clone());
                Binding { record, etcd_lease: id, expire: None }
            }
        })
    }

    /// The record key of the lease a lease-bound request names.
    pub(super) fn lease_key(&self, lifetime: &Lifetime) -> Result<Option<Vec<u8>>> {
        match lifetime {
            Lifetime::Lease(lease) => {
                lease_number(&lease.0)?;
                Ok(Some(self.keys.lease(&lease.0)))
            }
            _ => Ok(None),
        }
    }

    /// The compare a lease-bound request adds to its transaction: the lease is alive.
    pub(super) fn lease_alive(&self, lifetime: &Lifetime) -> Result<Option<Compare>> {
        let key = self.lease_key(lifetime)?;
        Ok(key.map(|key| Compare::version(key, CompareOp::Greater, 0)))
    }

    /// The operations that make `binding` the hold of `name`: read the value first (so that
    /// the grant can return it), then write the holder key, then set or keep the value (a kept
    /// value loses its retention lease while held).
    pub(super) fn grant_ops(&self, name: &str, binding: &Binding, value: Option<&str>) -> Vec<TxnOp> {
        let value_key = self.keys.value(name);
        let value_op = match value {
            Some(value) => TxnOp::put(value_key.clone(), value, None),
            None => keep_value_op(&value_key, 0),
        };
        let put_options = (binding.etcd_lease != 0).then(|| PutOptions::new().with_lease(binding.etcd_lease));
        vec![
            TxnOp::get(value_key, None),
            TxnOp::put(self.keys.hold(name), encode(&binding.record), put_options),
            value_op,
        ]
    }

    /// The hold of `name` if `owner` holds it (under `token`, when given); whoever holds it
    /// when `owner` is `None`. Reads it, and checks that its lease (if any) is alive.
    pub(super) async fn current_hold(
        &self,
        name: &str,
        owner: Option<&str>,
        token: Option<FencingToken>,
    ) -> Result<Hold> {
        let hold = self.read_hold(name).await?.ok_or(EngineError::NotHeld)?;
        hold.held_by(owner, token, wall_now_ms())?;
        if let Some(lease) = &hold.record.lease {
            if self.live_lease(lease).await.is_err() {
                return Err(EngineError::NotHeld);
            }
        }
        Ok(hold)
    }

    /// The grant a successful grant transaction made, and its expiry timer.
    pub(super) async fn granted(
        &self,
        name: &str,
        token: i64,
        binding: &Binding,
        value: Option<&str>,
        response: &TxnResponse,
    ) -> Result<Grant> {
        let revision = revision(response);
        let hold_key = self.keys.hold(name);
        match binding.expire {
            Some(expire) => self.schedule(Due::Hold(name.to_string()), revision, expire),
            None => self.cancel(&hold_key),
        }
        let stored = gets(response).first().and_then(|kvs| kvs.first().map(|kv| kv.value().to_vec()));
        let value = match value {
            Some(value) => Some(value.to_string()),
            None => stored.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        };
        let hold = Hold { record: binding.record.clone(), token, mod_revision: revision };
        self.mirror.held(name, hold.clone());
        let expires_in = match binding.expire {
            // Exactly what was asked for, as the embedded backend answers.
            Some(expire) => Some(expire),
            None => self.expires_in(&hold).await?,
        };
        Ok(Grant {
            resource: name.to_string(),
            owner: binding.record.owner.clone(),
            token: FencingToken(token as u64),
            expires_in,
            value,
        })
    }

    /// One try at the lock. With a `place`, a try that finds the lock held or queued for puts
    /// the request's waiter key in the same transaction (its else branch), and the answer is
    /// `Queued` at that transaction's revision.
    pub(super) async fn try_acquire(
        &self,
        request: &AcquireRequest,
        place: Option<&Place>,
    ) -> Result<Attempt> {
        let name = request.resource.as_str();
        // The holder acquiring again: renewed without queueing, from the mirror's picture.
        let own = self.mirror.hold(name).filter(|hold| hold.record.owner == request.owner);
        if let Some(hold) = own.filter(|hold| !hold.expired(wall_now_ms())) {
            if let Attempt::Granted(grant) = self.renew(request, hold).await? {
                return Ok(Attempt::Granted(grant));
            }
        }
        let (hold_key, queue) = (self.keys.hold(name), self.keys.queue(name));
        let binding = self.bind(&request.owner, &request.lifetime, None).await?;
        let mut when = vec![
            Compare::create_revision(hold_key.clone(), CompareOp::Equal, 0),
            Compare::version(queue.clone(), CompareOp::Equal, 0).with_prefix(),
        ];
        let lease_key = self.lease_key(&request.lifetime)?;
        when.extend(self.lease_alive(&request.lifetime)?);
        let mut otherwise = Vec::new();
        let mut session = 0;
        if let Some(place) = place {
            session = self.session.lease(&self.client()).await?;
            let options = PutOptions::new().with_lease(session);
            otherwise.push(TxnOp::put(place.key.clone(), place.record.clone(), Some(options)));
            place.sent.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let head =
            GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
        otherwise.push(TxnOp::get(hold_key, None));
        if place.is_none() {
            // Who queues, for the `locked` answer (a queued request needs no head: sorting the
            // queue by create revision reads every waiter inside etcd).
            otherwise.push(TxnOp::get(queue, Some(head)));
        }
        otherwise.extend(lease_key.clone().map(|key| TxnOp::get(key, None)));
        let txn = Txn::new()
            .when(when)
            .and_then(self.grant_ops(name, &binding, request.value.as_deref()))
            .or_else(otherwise);
        let response = match self.lock_txn(name, txn).await {
            Err(error) if lease_not_found(&error) => {
                // The request's lease, a backstop lease or the session lease is gone.
                self.backstops.forget(binding.etcd_lease);
                if let Some(place) = place {
                    place.sent.store(false, std::sync::atomic::Ordering::SeqCst);
                }
                if session != 0 {
                    self.session.lost(session).await;
                }
                if let Some(lease) = &binding.record.lease {
                    self.live_lease(lease).await?;
                }
                return Ok(Attempt::Retry);
            }
            other => other.map_err(etcd_error)?,
        };
        let at = revision(&response);
        if response.succeeded() {
            let grant = self.granted(name, at, &binding, request.value.as_deref(), &response).await?;
            return Ok(Attempt::Granted(grant));
        }
        let mut reads = gets(&response).into_iter();
        let hold = reads.next().unwrap_or_default();
        let head = if place.is_none() { reads.next().unwrap_or_default() } else { Vec::new() };
        let lease_gone = lease_key.is_some() && reads.next().unwrap_or_default().is_empty();
        let leave = || async {
            if let Some(place) = place {
                place.leave().await;
            }
        };
        if lease_gone {
            leave().await;
            return Err(EngineError::NoSuchLease);
        }
        let queued = place.is_some();
        let hold = hold.first().map(Hold::parse).transpose()?;
        match hold {
            // Shared holders or a semaphore's permits (`groups.rs`).
            Some(hold) if hold.record.group.is_some() => {
                match hold.record.group.and_then(|group| group.limit) {
                    Some(limit) => {
                        leave().await;
                        Ok(Attempt::Held(EngineError::LimitMismatch { current: Some(limit) }))
                    }
                    None if queued => Ok(Attempt::Queued(at)),
                    None => {
                        Ok(self.group_locked_now(name, &hold).await?.map_or(Attempt::Retry, Attempt::Held))
                    }
                }
            }
            Some(hold) if hold.expired(wall_now_ms()) => {
                self.end_expired(name, hold.mod_revision).await?;
                Ok(if queued { Attempt::Queued(at) } else { Attempt::Retry })
            }
            Some(hold) if hold.record.owner == request.owner => {
                leave().await;
                self.renew(request, hold).await
            }
            _ if queued => Ok(Attempt::Queued(at)),
            Some(hold) => Ok(Attempt::Held(EngineError::Locked {
                owner: hold.record.owner.clone(),
                expires_in: self.expires_in(&hold).await?,
                holders: vec![hold.record.owner.clone()],
            })),
            None => match head.first() {
                Some(head) => {
                    let waiter: WaiterRecord = decode(head.key(), head.value())?;
                    Ok(Attempt::Held(EngineError::Locked {
                        owner: waiter.owner,
                        expires_in: None,
                        holders: Vec::new(),
                    }))
                }
                None => Ok(Attempt::Retry),
            },
        }
    }

    /// The holder acquires again: same token, lifetime reset, value replaced when given.
    pub(super) async fn renew(&self, request: &AcquireRequest, hold: Hold) -> Result<Attempt> {
        let name = request.resource.as_str();
        let mut binding = self.bind(&request.owner, &request.lifetime, None).await?;
        binding.record.token = hold.record.token;
        let mut when = vec![Compare::mod_revision(self.keys.hold(name), CompareOp::Equal, hold.mod_revision)];
        when.extend(self.lease_alive(&request.lifetime)?);
        let txn = Txn::new().when(when).and_then(self.grant_ops(name, &binding, request.value.as_deref()));
        let response = self.txn_bound(txn, &binding).await?;
        if !response.succeeded() {
            return Ok(Attempt::Retry);
        }
        let grant = self.granted(name, hold.token, &binding, request.value.as_deref(), &response).await?;
        Ok(Attempt::Granted(grant))
    }

    /// Runs a transaction that binds keys to `binding`'s etcd lease. When etcd no longer knows
    /// that lease, it is the request's own lease (`NoSuchLease`), or a backstop lease to forget.
    pub(super) async fn txn_bound(&self, txn: Txn, binding: &Binding) -> Result<TxnResponse> {
        match self.client().txn(txn).await {
            Err(error) if lease_not_found(&error) => {
                if binding.record.lease.is_some() {
                    return Err(EngineError::NoSuchLease);
                }
                self.backstops.forget(binding.etcd_lease);
                Err(EngineError::Unavailable("a backstop lease expired before use; retry".into()))
            }
            other => other.map_err(etcd_error),
        }
    }

    /// One try at a refresh; `None` when the holder key changed meanwhile.
    pub(super) async fn try_refresh(&self, request: &RefreshRequest) -> Result<Option<Refreshed>> {
        let name = request.resource.as_str();
        let hold = self.current_hold(name, Some(&request.owner), request.token).await?;
        if hold.record.lease.is_some() && request.expire.is_some() {
            return Err(EngineError::LeaseBound);
        }
        let hold_key = self.keys.hold(name);
        let mut then = Vec::new();
        let mut binding = Binding { record: hold.record.clone(), etcd_lease: 0, expire: request.expire };
        if let Some(expire) = request.expire {
            binding.record.deadline_ms = Some(wall_now_ms() + expire.as_millis() as u64);
            binding.etcd_lease = self.backstops.lease(&self.client(), expire).await?;
            let options = PutOptions::new().with_lease(binding.etcd_lease);
            then.push(TxnOp::put(hold_key.clone(), encode(&binding.record), Some(options)));
        }
        if let Some(value) = &request.value {
            then.push(TxnOp::put(self.keys.value(name), value.as_str(), None));
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(hold_key, CompareOp::Equal, hold.mod_revision)])
            .and_then(then);
        let response = self.txn_bound(txn, &binding).await?;
        if !response.succeeded() {
            return Ok(None);
        }
        let token = FencingToken(hold.token as u64);
        let expires_in = match request.expire {
            Some(expire) => {
                let rewritten = Hold {
                    record: binding.record.clone(),
                    token: hold.token,
                    mod_revision: revision(&response),
                };
                self.mirror.held(name, rewritten);
                self.schedule(Due::Hold(name.to_string()), revision(&response), expire);
                Some(expire)
            }
            None => self.expires_in(&hold).await?,
        };
        Ok(Some(Refreshed { token, expires_in }))
    }
}

/// The op that keeps the value of a lock, if it has one, bound to etcd lease `lease` (0: none,
/// as while held: a kept value loses its retention lease when the lock is held again).
pub(super) fn keep_value_op(value_key: &[u8], lease: i64) -> TxnOp {
    let options = PutOptions::new().with_ignore_value();
    let options = if lease == 0 { options } else { options.with_lease(lease) };
    TxnOp::txn(
        Txn::new()
            .when([Compare::version(value_key.to_vec(), CompareOp::Greater, 0)])
            .and_then([TxnOp::put(value_key.to_vec(), "", Some(options))]),
    )
}
