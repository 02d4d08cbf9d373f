//! Waiting for a lock, after etcd's concurrency recipe: a waiter key per request, ordered by
//! create revision; each waiter watches only the waiter just ahead of it, and the head waits
//! for the holder key's deletion, so a release wakes one waiter. The head takes the lock in a
//! transaction that also checks that its own waiter key (bound to this gateway's session lease)
//! and, for a lease-bound request, its lease are still there.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchFilterType, WatchOptions,
};
use tokio::time::{sleep, sleep_until, Instant};

use super::keys::{encode, WaiterRecord};
use super::reads::{gets, revision, Hold};
use super::{etcd_error, lease_not_found, Inner};
use crate::engine::capacity::{self, Permit, WAITER_OVERHEAD};
use crate::engine::clock::wall_now_ms;
use crate::engine::{AcquireRequest, EngineError, Grant, Result};

/// How long a waiter retries etcd errors (a member dying, a leader election) before it gives up
/// with `unavailable`.
const WAITER_PATIENCE: Duration = Duration::from_secs(3);

impl Inner {
    /// Resolves when `keys` (one of them) is deleted at or after revision `from`; returns that
    /// key, or an empty key when the watch was cancelled and the caller must look again.
    pub(super) async fn deleted(&self, keys: &[Vec<u8>], from: i64) -> Result<Vec<u8>> {
        let options = || WatchOptions::new().with_start_revision(from).with_filters([WatchFilterType::NoPut]);
        let mut stream =
            self.client.clone().watch(keys[0].clone(), Some(options())).await.map_err(etcd_error)?;
        for key in &keys[1..] {
            stream.watch(key.clone(), Some(options())).await.map_err(etcd_error)?;
        }
        while let Some(response) = stream.message().await.map_err(etcd_error)? {
            if response.canceled() {
                return Ok(Vec::new());
            }
            let deleted = response.events().iter().find(|event| event.event_type() == EventType::Delete);
            if let Some(kv) = deleted.and_then(|event| event.kv()) {
                return Ok(kv.key().to_vec());
            }
        }
        Err(EngineError::Unavailable("etcd closed the watch".into()))
    }
}

/// A request queued for a lock: its waiter key, removed (and a grant it never saw given back)
/// if the request goes away before it is answered.
pub(super) struct Queued {
    inner: Arc<Inner>,
    name: String,
    waiter: String,
    key: Vec<u8>,
    revision: i64,
    answered: bool,
    /// Counts the request against `--max-waiters` while it is queued.
    _permit: Permit,
    /// Counts its bytes against `--max-memory` while it is queued.
    _memory: Permit,
}

/// What the head of the queue found.
enum Step {
    Granted(Grant),
    /// Wait for one of these keys to be deleted, from this revision on; none: look again.
    Wait(Vec<Vec<u8>>, i64),
}

impl Queued {
    /// Puts a waiter key at the end of the queue of `request.resource`.
    pub(super) async fn enter(inner: Arc<Inner>, request: &AcquireRequest) -> Result<Queued> {
        if *inner.shutting_down.borrow() {
            return Err(EngineError::ShuttingDown);
        }
        let max = inner.max_waiters.load(std::sync::atomic::Ordering::Relaxed);
        let permit = inner.waiters.take(max, "queued waiters (--max-waiters)")?;
        let bytes = capacity::footprint(
            WAITER_OVERHEAD,
            &[request.owner.len(), request.value.as_ref().map_or(0, String::len)],
        );
        let max_memory = inner.max_memory.load(std::sync::atomic::Ordering::Relaxed);
        let memory = inner.memory.take_many(bytes, max_memory, "bytes of waiters (--max-memory)")?;
        let waiter = format!("{:016x}", rand::random::<u64>());
        let key = inner.keys.waiter(&request.resource, &waiter);
        let record = encode(&WaiterRecord { owner: request.owner.clone() });
        let mut attempts = 0;
        let put = loop {
            let session = inner.session.lease(&inner.client).await?;
            let options = PutOptions::new().with_lease(session);
            match inner.client.clone().put(key.clone(), record.clone(), Some(options)).await {
                // The session lease ended before the keepalive task noticed: take a new one.
                Err(error) if lease_not_found(&error) && attempts == 0 => inner.session.lost(session).await,
                other => break other.map_err(etcd_error)?,
            }
            attempts += 1;
        };
        let revision = put.header().map_or(0, |header| header.revision());
        Ok(Queued {
            inner,
            name: request.resource.clone(),
            waiter,
            key,
            revision,
            answered: false,
            _permit: permit,
            _memory: memory,
        })
    }

    /// Waits until this request is granted, its lease dies, or `wait_until`.
    pub(super) async fn wait(mut self, request: &AcquireRequest, wait_until: Instant) -> Result<Grant> {
        let mut shutting_down_rx = self.inner.shutting_down.subscribe();
        let mut failing_since: Option<Instant> = None;
        let lease_key = self.inner.lease_key(&request.lifetime)?;
        loop {
            if *shutting_down_rx.borrow_and_update() {
                return Err(EngineError::ShuttingDown);
            }
            let step = self.step(request, lease_key.as_deref()).await;
            let (mut keys, from) = match step {
                Ok(Step::Granted(grant)) => {
                    self.answered = true;
                    return Ok(grant);
                }
                Ok(Step::Wait(keys, from)) => (keys, from),
                Err(EngineError::Unavailable(message)) => {
                    // A member died or a leader is being elected: look again shortly.
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > WAITER_PATIENCE || Instant::now() >= wait_until {
                        return Err(EngineError::Unavailable(message));
                    }
                    sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            failing_since = None;
            if keys.is_empty() {
                continue;
            }
            keys.extend(lease_key.clone());
            tokio::select! {
                deleted = self.inner.deleted(&keys, from) => match deleted {
                    Ok(key) if Some(&key) == lease_key.as_ref() => return Err(EngineError::NoSuchLease),
                    Ok(_) => {}
                    Err(_) => sleep(Duration::from_millis(100)).await,
                },
                _ = sleep_until(wait_until) => return Err(self.give_up().await),
                _ = shutting_down_rx.changed() => return Err(EngineError::ShuttingDown),
            }
        }
    }

    /// Looks at the queue: waits on the waiter just ahead, or, at the head, takes the lock or
    /// waits for its release.
    async fn step(&self, request: &AcquireRequest, lease_key: Option<&[u8]>) -> Result<Step> {
        let inner = &self.inner;
        let ahead = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(self.revision - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1);
        let mut reads = vec![TxnOp::get(inner.keys.queue(&self.name), Some(ahead))];
        reads.extend(lease_key.map(|key| TxnOp::get(key, None)));
        let response = inner.txn(Txn::new().and_then(reads)).await?;
        let found = gets(&response);
        if lease_key.is_some() && found[1].is_empty() {
            return Err(EngineError::NoSuchLease);
        }
        if let Some(ahead) = found[0].first() {
            return Ok(Step::Wait(vec![ahead.key().to_vec()], revision(&response) + 1));
        }

        // At the head of the queue.
        let binding = inner.bind(&request.owner, &request.lifetime, Some(&self.waiter)).await?;
        let hold_key = inner.keys.hold(&self.name);
        let mut when = vec![
            Compare::create_revision(hold_key.clone(), CompareOp::Equal, 0),
            Compare::create_revision(self.key.clone(), CompareOp::Equal, self.revision),
        ];
        when.extend(inner.lease_alive(&request.lifetime)?);
        let mut then = vec![TxnOp::delete(self.key.clone(), None)];
        then.extend(inner.grant_ops(&self.name, &binding, request.value.as_deref()));
        let otherwise = vec![TxnOp::get(hold_key.clone(), None), TxnOp::get(self.key.clone(), None)];
        let txn = Txn::new().when(when).and_then(then).or_else(otherwise);
        let response = inner.txn_bound(txn, &binding).await?;
        if response.succeeded() {
            let value = request.value.as_deref();
            let grant = inner.granted(&self.name, revision(&response), &binding, value, &response).await?;
            return Ok(Step::Granted(grant));
        }
        let found = gets(&response);
        if found[1].is_empty() {
            return Err(EngineError::Unavailable(
                "this request lost its place in the queue (its gateway's etcd session ended); retry".into(),
            ));
        }
        match found[0].first().map(Hold::parse).transpose()? {
            Some(hold) if hold.expired(wall_now_ms()) => {
                inner.end_hold(&self.name, hold.mod_revision, true).await?;
                Ok(Step::Wait(Vec::new(), 0))
            }
            Some(_) => Ok(Step::Wait(vec![hold_key], revision(&response) + 1)),
            // The lease check failed with the lock free: the next look finds the lease gone.
            None => Ok(Step::Wait(Vec::new(), 0)),
        }
    }

    /// The wait ran out: leave the queue and report who holds the lock.
    async fn give_up(&mut self) -> EngineError {
        self.answered = true;
        let _ = self.inner.client.clone().delete(self.key.clone(), None).await;
        match self.inner.read_hold(&self.name).await {
            Ok(Some(hold)) => match self.inner.expires_in(&hold).await {
                Ok(expires_in) => EngineError::Locked { owner: hold.record.owner, expires_in },
                Err(error) => error,
            },
            Ok(None) => EngineError::NotHeld,
            Err(error) => error,
        }
    }
}

impl Drop for Queued {
    /// The request went away unanswered (client gone, error, shutdown): leave the queue, and
    /// give back a grant made to it that it never returned.
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let (inner, name, waiter, key) =
            (self.inner.clone(), self.name.clone(), self.waiter.clone(), std::mem::take(&mut self.key));
        // No runtime: the process is exiting, and the session lease will clear the key.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let _ = inner.client.clone().delete(key, None).await;
            if let Ok(Some(hold)) = inner.read_hold(&name).await {
                if hold.record.waiter.as_deref() == Some(waiter.as_str()) {
                    let _ = inner.end_hold(&name, hold.mod_revision, true).await;
                }
            }
        });
    }
}
