//! The etcd backend: lockserver instances as stateless gateways in front of an etcd cluster.
//!
//! Every gateway on the same etcd cluster and key prefix serves one lock space. The state lives
//! in etcd only (see [`keys`] for the layout); a gateway keeps nothing but timers and the
//! requests it is serving, so any gateway can die and clients go on through another.
//!
//! - Granting is one etcd transaction: "if nobody holds the lock and nobody queues for it, write
//!   the holder key". The holder key's create revision is the fencing token.
//! - Waiting follows etcd's concurrency recipe: a waiter key per request, ordered by create
//!   revision; each waiter watches only the waiter just ahead of it, and the head waits for
//!   the holder key's deletion, so a release wakes one waiter. The head takes the lock in a
//!   transaction that also checks that its own waiter key (bound to this gateway's session
//!   lease) and, for a lease-bound request, its lease are still there: a waiter whose gateway or
//!   lease died is never granted.
//! - Expiry: the gateway that set a deadline ends the hold on its own timer (monotonic clock,
//!   within milliseconds), in a transaction that checks the holder key was not rewritten since.
//!   Should that gateway die, an etcd lease bound to the holder key ends the hold at most
//!   [`BACKSTOP_SLACK`] after its deadline; any gateway that reads a hold past its deadline ends
//!   it at once too.
//! - The API's leases are etcd leases; a record beside each keeps its exact ttl and deadline,
//!   which the gateway that last kept it alive enforces on a timer.

mod endpoints;
mod keys;
mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, SortOrder,
    SortTarget, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchFilterType, WatchOptions,
};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::warn;

use self::keys::{decode, encode, lease_name, lease_number, HoldRecord, Keys, LeaseRecord, WaiterRecord};
use self::session::{keep_alive_once, Backstops, Session};
use super::journal::wall_now_ms;
use super::{
    AcquireRequest, FencingToken, Grant, Health, LeaseId, LeaseInfo, Lifetime, LockBackend, LockInfo,
    LockPage, RefreshRequest, Refreshed, ReleaseRequest,
};
use crate::error::{Error, Result};

/// How late after its deadline the etcd lease backstop ends a hold whose gateway died: etcd
/// counts leases in whole seconds, and backstop leases are shared for a second.
pub const BACKSTOP_SLACK: Duration = Duration::from_secs(3);

/// How long a waiter retries etcd errors (a member dying, a leader election) before it gives up
/// with `unavailable`.
const WAITER_PATIENCE: Duration = Duration::from_secs(3);

/// How to reach etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// `http://host:port` of each member (or some of them).
    pub endpoints: Vec<String>,
    /// The prefix of every key this lock space uses.
    pub prefix: String,
    /// User name and password, when etcd's authentication is on.
    pub user: Option<(String, String)>,
    /// TLS settings, for `https://` endpoints.
    pub tls: Option<TlsOptions>,
    /// How long the value of an ended hold is kept for the next holder.
    pub value_retention: Duration,
}

/// The etcd backend. Cheap to clone; clones share one etcd connection.
#[derive(Clone)]
pub struct EtcdBackend {
    inner: Arc<Inner>,
}

struct Inner {
    /// Itself, for the timer tasks it spawns.
    me: std::sync::Weak<Inner>,
    client: Client,
    keys: Keys,
    session: Session,
    backstops: Backstops,
    /// The deletions this gateway will make on time, by key: (the key's mod revision, timer).
    timers: Mutex<HashMap<Vec<u8>, (i64, AbortHandle)>>,
    value_retention: Duration,
    /// Set by `shutdown`: queued waiters are answered `unavailable`.
    shutting_down: watch::Sender<bool>,
}

/// A deletion a gateway makes on its own timer, if the key was not rewritten since.
#[derive(Debug, Clone)]
enum Due {
    /// A hold's deadline.
    Hold(String),
    /// The end of a value's retention.
    Value(String),
    /// A lease's deadline.
    Lease(i64),
}

/// A holder key as read.
#[derive(Debug, Clone)]
struct Hold {
    record: HoldRecord,
    token: i64,
    mod_revision: i64,
}

impl Hold {
    fn parse(kv: &KeyValue) -> Result<Hold> {
        Ok(Hold {
            record: decode(kv.key(), kv.value())?,
            token: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    fn expired(&self, wall_ms: u64) -> bool {
        self.record.deadline_ms.is_some_and(|deadline| deadline <= wall_ms)
    }
}

/// What a hold is bound to in etcd.
struct Binding {
    record: HoldRecord,
    /// The etcd lease of the holder key (0: none).
    etcd_lease: i64,
    /// When this gateway must end the hold.
    expire: Option<Duration>,
}

/// The outcome of one try at the lock.
enum Attempt {
    Granted(Grant),
    Held(Error),
    Retry,
}

/// Maps an etcd client error to `unavailable`.
pub(super) fn unavailable(error: etcd_client::Error) -> Error {
    Error::Unavailable(format!("etcd cannot be reached or refused the request: {error}"))
}

fn lease_not_found(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status) if status.message().contains("lease not found"))
}

fn shutting_down() -> Error {
    Error::Unavailable("the server is shutting down; retry on another server or later".into())
}

fn ms_left(deadline_ms: u64, wall_ms: u64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(wall_ms))
}

/// The responses of a transaction's branch that read keys, in order.
fn gets(response: &TxnResponse) -> Vec<Vec<KeyValue>> {
    response
        .op_responses()
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(mut get) => Some(get.take_kvs()),
            _ => None,
        })
        .collect()
}

fn revision(response: &TxnResponse) -> i64 {
    response.header().map_or(0, |header| header.revision())
}

impl EtcdBackend {
    /// Connects to etcd (lazily: the gateway starts, and reports `unavailable`, while etcd is
    /// down) and starts the session keepalive.
    pub async fn connect(options: EtcdOptions) -> Result<Self, String> {
        if options.endpoints.is_empty() {
            return Err("--etcd-endpoints names no endpoint".into());
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user, password);
        }
        if let Some(tls) = options.tls.clone() {
            connect = connect.with_tls(tls);
        }
        let client = Client::connect(&options.endpoints, Some(connect.clone()))
            .await
            .map_err(|error| format!("cannot set up the etcd client for {:?}: {error}", options.endpoints))?;
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            client,
            keys: Keys::new(&options.prefix),
            session: Session::new(),
            backstops: Backstops::new(),
            timers: Mutex::default(),
            value_retention: options.value_retention,
            shutting_down: watch::channel(false).0,
        });
        let keeper = inner.clone();
        tokio::spawn(async move { keeper.session.keep_alive(keeper.client.clone()).await });
        tokio::spawn(endpoints::monitor(inner.client.clone(), options.endpoints, connect));
        Ok(EtcdBackend { inner })
    }
}

#[async_trait]
impl LockBackend for EtcdBackend {
    async fn acquire(&self, request: AcquireRequest) -> Result<Grant> {
        let wait_until = Instant::now() + request.wait;
        loop {
            match self.inner.try_acquire(&request).await? {
                Attempt::Granted(grant) => return Ok(grant),
                Attempt::Held(locked) if request.wait.is_zero() => return Err(locked),
                Attempt::Held(_) => break,
                Attempt::Retry => continue,
            }
        }
        Queued::enter(self.inner.clone(), &request).await?.wait(&request, wait_until).await
    }

    async fn release(&self, request: ReleaseRequest) -> Result<()> {
        loop {
            let hold = self.inner.current_hold(&request.resource, &request.owner, request.token).await?;
            if self.inner.end_hold(&request.resource, hold.mod_revision, request.keep_value).await? {
                return Ok(());
            }
        }
    }

    async fn refresh(&self, request: RefreshRequest) -> Result<Refreshed> {
        loop {
            if let Some(refreshed) = self.inner.try_refresh(&request).await? {
                return Ok(refreshed);
            }
        }
    }

    async fn inspect(&self, resource: &str) -> Result<LockInfo> {
        let inner = &self.inner;
        let response = inner
            .txn(Txn::new().and_then([
                TxnOp::get(inner.keys.hold(resource), None),
                TxnOp::get(
                    inner.keys.queue(resource),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                ),
            ]))
            .await?;
        let hold = gets(&response)[0].first().map(Hold::parse).transpose()?;
        let waiters = match &response.op_responses()[1] {
            TxnOpResponse::Get(get) => get.count() as usize,
            _ => 0,
        };
        let hold = hold.filter(|hold| !hold.expired(wall_now_ms())).ok_or(Error::NotHeld)?;
        let mut infos = inner.describe(vec![(resource.to_string(), hold)]).await?;
        let mut info = infos.pop().ok_or(Error::NotHeld)?;
        info.waiters = waiters;
        Ok(info)
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<LockPage> {
        let inner = &self.inner;
        let end = inner.keys.holds_end(prefix);
        let mut from = inner.keys.holds_from(prefix, after);
        let mut held = Vec::new();
        let wall = wall_now_ms();
        while held.len() <= limit {
            let options =
                GetOptions::new().with_range(end.clone()).with_limit((limit + 1 - held.len()) as i64);
            let mut page =
                inner.client.clone().get(from.clone(), Some(options)).await.map_err(unavailable)?;
            let more = page.more();
            let kvs = page.take_kvs();
            for kv in &kvs {
                let hold = Hold::parse(kv)?;
                if let (Some(name), false) = (inner.keys.name_of_hold(kv.key()), hold.expired(wall)) {
                    held.push((name, hold));
                }
            }
            match kvs.last() {
                Some(last) if more => from = [last.key(), b"\0"].concat(),
                _ => break,
            }
        }
        held.truncate(limit + 1);
        let mut locks = inner.describe(held).await?;
        let next = if locks.len() > limit {
            locks.pop();
            locks.last().map(|lock| lock.resource.clone())
        } else {
            None
        };
        Ok(LockPage { locks, next })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseInfo> {
        let inner = &self.inner;
        let seconds = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let id = inner.client.clone().lease_grant(seconds, None).await.map_err(unavailable)?.id();
        let record = LeaseRecord {
            ttl_ms: ttl.as_millis() as u64,
            deadline_ms: wall_now_ms() + ttl.as_millis() as u64,
        };
        let options = PutOptions::new().with_lease(id);
        let put = inner.client.clone().put(inner.keys.lease(id), encode(&record), Some(options)).await;
        let revision = put.map_err(unavailable)?.header().map_or(0, |header| header.revision());
        inner.schedule(Due::Lease(id), revision, ttl);
        Ok(LeaseInfo { id: LeaseId(lease_name(id)), ttl, expires_in: ttl, locks: Vec::new() })
    }

    async fn keepalive(&self, lease: &LeaseId) -> Result<Duration> {
        let inner = &self.inner;
        let id = lease_number(&lease.0)?;
        loop {
            let (record, mod_revision) = inner.live_lease(id).await?;
            match keep_alive_once(&inner.client, id).await {
                None => return Err(Error::Unavailable("etcd did not answer the lease keepalive".into())),
                Some(ttl) if ttl <= 0 => return Err(Error::NoSuchLease),
                Some(_) => {}
            }
            let ttl = Duration::from_millis(record.ttl_ms);
            let renewed = LeaseRecord { deadline_ms: wall_now_ms() + record.ttl_ms, ..record };
            let key = inner.keys.lease(id);
            let response = inner
                .txn(
                    Txn::new()
                        .when([Compare::mod_revision(key.clone(), CompareOp::Equal, mod_revision)])
                        .and_then([TxnOp::put(
                            key,
                            encode(&renewed),
                            Some(PutOptions::new().with_lease(id)),
                        )]),
                )
                .await?;
            if response.succeeded() {
                inner.schedule(Due::Lease(id), revision(&response), ttl);
                return Ok(ttl);
            }
        }
    }

    async fn revoke(&self, lease: &LeaseId) -> Result<()> {
        let id = lease_number(&lease.0)?;
        if self.inner.end_lease(id, None).await? {
            Ok(())
        } else {
            Err(Error::NoSuchLease)
        }
    }

    async fn lease_info(&self, lease: &LeaseId) -> Result<LeaseInfo> {
        let inner = &self.inner;
        let id = lease_number(&lease.0)?;
        let (record, _) = inner.live_lease(id).await?;
        let options = etcd_client::LeaseTimeToLiveOptions::new().with_keys();
        let attached =
            inner.client.clone().lease_time_to_live(id, Some(options)).await.map_err(unavailable)?;
        let mut locks: Vec<String> =
            attached.keys().iter().filter_map(|key| inner.keys.name_of_hold(key)).collect();
        locks.sort();
        Ok(LeaseInfo {
            id: LeaseId(lease_name(id)),
            ttl: Duration::from_millis(record.ttl_ms),
            expires_in: ms_left(record.deadline_ms, wall_now_ms()),
            locks,
        })
    }

    async fn health(&self) -> Health {
        let mut client = self.inner.client.clone();
        let probe = client.get(self.inner.keys.lease(0), Some(GetOptions::new().with_count_only()));
        let problem = match tokio::time::timeout(Duration::from_secs(2), probe).await {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(format!("etcd cannot be reached: {error}")),
            Err(_) => Some("etcd did not answer within 2 s".to_string()),
        };
        Health { backend: "etcd", problem }
    }

    async fn shutdown(&self) {
        self.inner.shutting_down.send_replace(true);
    }
}

impl Inner {
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.client.clone().txn(txn).await.map_err(unavailable)
    }

    /// What the hold of `lifetime` is bound to, starting now.
    async fn bind(&self, owner: &str, lifetime: &Lifetime, waiter: Option<&str>) -> Result<Binding> {
        let mut record = HoldRecord {
            owner: owner.to_string(),
            deadline_ms: None,
            lease: None,
            waiter: waiter.map(str::to_string),
        };
        Ok(match lifetime {
            Lifetime::Unbounded => Binding { record, etcd_lease: 0, expire: None },
            Lifetime::Expire(ttl) => {
                record.deadline_ms = Some(wall_now_ms() + ttl.as_millis() as u64);
                let etcd_lease = self.backstops.lease(&self.client, *ttl).await?;
                Binding { record, etcd_lease, expire: Some(*ttl) }
            }
            Lifetime::Lease(lease) => {
                let id = lease_number(&lease.0)?;
                record.lease = Some(lease_name(id));
                Binding { record, etcd_lease: id, expire: None }
            }
        })
    }

    /// The record key of the lease a lease-bound request names.
    fn lease_key(&self, lifetime: &Lifetime) -> Result<Option<Vec<u8>>> {
        match lifetime {
            Lifetime::Lease(lease) => Ok(Some(self.keys.lease(lease_number(&lease.0)?))),
            _ => Ok(None),
        }
    }

    /// The compare a lease-bound request adds to its transaction: the lease is alive.
    fn lease_alive(&self, lifetime: &Lifetime) -> Result<Option<Compare>> {
        let key = self.lease_key(lifetime)?;
        Ok(key.map(|key| Compare::version(key, CompareOp::Greater, 0)))
    }

    /// The operations that make `binding` the hold of `name`: read the value first (so that
    /// the grant can return it), then write the holder key, then set or keep the value (a kept
    /// value loses its retention lease while held).
    fn grant_ops(&self, name: &str, binding: &Binding, value: Option<&str>) -> Vec<TxnOp> {
        let value_key = self.keys.value(name);
        let value_op = match value {
            Some(value) => TxnOp::put(value_key.clone(), value, None),
            None => TxnOp::txn(
                Txn::new().when([Compare::version(value_key.clone(), CompareOp::Greater, 0)]).and_then([
                    TxnOp::put(value_key.clone(), "", Some(PutOptions::new().with_ignore_value())),
                ]),
            ),
        };
        let put_options = (binding.etcd_lease != 0).then(|| PutOptions::new().with_lease(binding.etcd_lease));
        vec![
            TxnOp::get(value_key, None),
            TxnOp::put(self.keys.hold(name), encode(&binding.record), put_options),
            value_op,
        ]
    }

    /// The grant a successful grant transaction made, and its expiry timer.
    async fn granted(
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

    /// One try at the lock without queueing.
    async fn try_acquire(&self, request: &AcquireRequest) -> Result<Attempt> {
        let name = request.resource.as_str();
        let (hold_key, queue) = (self.keys.hold(name), self.keys.queue(name));
        let binding = self.bind(&request.owner, &request.lifetime, None).await?;
        let mut when = vec![
            Compare::create_revision(hold_key.clone(), CompareOp::Equal, 0),
            Compare::version(queue.clone(), CompareOp::Equal, 0).with_prefix(),
        ];
        let lease_key = self.lease_key(&request.lifetime)?;
        when.extend(self.lease_alive(&request.lifetime)?);
        let head =
            GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
        let mut otherwise = vec![TxnOp::get(hold_key, None), TxnOp::get(queue, Some(head))];
        otherwise.extend(lease_key.clone().map(|key| TxnOp::get(key, None)));
        let txn = Txn::new()
            .when(when)
            .and_then(self.grant_ops(name, &binding, request.value.as_deref()))
            .or_else(otherwise);
        let response = self.txn_bound(txn, &binding).await?;
        if response.succeeded() {
            let grant = self
                .granted(name, revision(&response), &binding, request.value.as_deref(), &response)
                .await?;
            return Ok(Attempt::Granted(grant));
        }
        let reads = gets(&response);
        if lease_key.is_some() && reads.get(2).is_some_and(|kvs| kvs.is_empty()) {
            return Err(Error::NoSuchLease);
        }
        let hold = reads[0].first().map(Hold::parse).transpose()?;
        match hold {
            Some(hold) if hold.expired(wall_now_ms()) => {
                self.end_hold(name, hold.mod_revision, true).await?;
                Ok(Attempt::Retry)
            }
            Some(hold) if hold.record.owner == request.owner => self.renew(request, hold).await,
            Some(hold) => Ok(Attempt::Held(Error::Locked {
                owner: hold.record.owner.clone(),
                expires_in: self.expires_in(&hold).await?,
            })),
            None => match reads[1].first() {
                Some(head) => {
                    let waiter: WaiterRecord = decode(head.key(), head.value())?;
                    Ok(Attempt::Held(Error::Locked { owner: waiter.owner, expires_in: None }))
                }
                None => Ok(Attempt::Retry),
            },
        }
    }

    /// The holder acquires again: same token, lifetime reset, value replaced when given.
    async fn renew(&self, request: &AcquireRequest, hold: Hold) -> Result<Attempt> {
        let name = request.resource.as_str();
        let binding = self.bind(&request.owner, &request.lifetime, None).await?;
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
    async fn txn_bound(&self, txn: Txn, binding: &Binding) -> Result<TxnResponse> {
        match self.client.clone().txn(txn).await {
            Err(error) if lease_not_found(&error) => {
                if binding.record.lease.is_some() {
                    return Err(Error::NoSuchLease);
                }
                self.backstops.forget(binding.etcd_lease);
                Err(Error::Unavailable("a backstop lease expired before use; retry".into()))
            }
            other => other.map_err(unavailable),
        }
    }

    /// The holder key of `name`, if there is one.
    async fn read_hold(&self, name: &str) -> Result<Option<Hold>> {
        let response = self.client.clone().get(self.keys.hold(name), None).await.map_err(unavailable)?;
        response.kvs().first().map(Hold::parse).transpose()
    }

    /// The hold of `name` if `owner` holds it (under `token`, when given).
    async fn current_hold(&self, name: &str, owner: &str, token: Option<FencingToken>) -> Result<Hold> {
        let hold = self.read_hold(name).await?;
        let hold = hold.filter(|hold| !hold.expired(wall_now_ms())).ok_or(Error::NotHeld)?;
        if hold.record.owner != owner || token.is_some_and(|token| token.0 != hold.token as u64) {
            return Err(Error::NotOwner);
        }
        if let Some(lease) = &hold.record.lease {
            if self.live_lease(lease_number(lease)?).await.is_err() {
                return Err(Error::NotHeld);
            }
        }
        Ok(hold)
    }

    /// Ends the hold of `name` if its holder key is still at `mod_revision`; the value stays
    /// (for the retention period) when `keep_value`. False when the key changed meanwhile.
    async fn end_hold(&self, name: &str, mod_revision: i64, keep_value: bool) -> Result<bool> {
        let (hold_key, value_key) = (self.keys.hold(name), self.keys.value(name));
        let value_op = if keep_value {
            let retention = self.backstops.lease(&self.client, self.value_retention).await?;
            let options = PutOptions::new().with_ignore_value().with_lease(retention);
            TxnOp::txn(
                Txn::new()
                    .when([Compare::version(value_key.clone(), CompareOp::Greater, 0)])
                    .and_then([TxnOp::put(value_key, "", Some(options))]),
            )
        } else {
            TxnOp::delete(value_key, None)
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(hold_key.clone(), CompareOp::Equal, mod_revision)])
            .and_then([TxnOp::delete(hold_key.clone(), None), value_op]);
        let response = self.txn(txn).await?;
        if !response.succeeded() {
            return Ok(false);
        }
        self.cancel(&hold_key);
        let value_kept = response
            .op_responses()
            .into_iter()
            .any(|op| matches!(op, TxnOpResponse::Txn(t) if t.succeeded()));
        if value_kept {
            self.schedule(Due::Value(name.to_string()), revision(&response), self.value_retention);
        }
        Ok(true)
    }

    /// One try at a refresh; `None` when the holder key changed meanwhile.
    async fn try_refresh(&self, request: &RefreshRequest) -> Result<Option<Refreshed>> {
        let name = request.resource.as_str();
        let hold = self.current_hold(name, &request.owner, request.token).await?;
        if hold.record.lease.is_some() && request.expire.is_some() {
            return Err(Error::bad_request(
                "this lock lives as long as its lease: keep the lease alive instead of refreshing its expiry",
            ));
        }
        let hold_key = self.keys.hold(name);
        let mut then = Vec::new();
        let mut binding = Binding { record: hold.record.clone(), etcd_lease: 0, expire: request.expire };
        if let Some(expire) = request.expire {
            binding.record.deadline_ms = Some(wall_now_ms() + expire.as_millis() as u64);
            binding.etcd_lease = self.backstops.lease(&self.client, expire).await?;
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
                self.schedule(Due::Hold(name.to_string()), revision(&response), expire);
                Some(expire)
            }
            None => self.expires_in(&hold).await?,
        };
        Ok(Some(Refreshed { token, expires_in }))
    }

    /// Time left on a hold: until its deadline, or its lease's; `None` when unbounded.
    async fn expires_in(&self, hold: &Hold) -> Result<Option<Duration>> {
        let wall = wall_now_ms();
        match (&hold.record.lease, hold.record.deadline_ms) {
            (Some(lease), _) => {
                let left = match self.live_lease(lease_number(lease)?).await {
                    Ok((record, _)) => ms_left(record.deadline_ms, wall),
                    Err(Error::NoSuchLease) => Duration::ZERO,
                    Err(error) => return Err(error),
                };
                Ok(Some(left))
            }
            (None, Some(deadline)) => Ok(Some(ms_left(deadline, wall))),
            (None, None) => Ok(None),
        }
    }

    /// Describes held locks: their waiter counts, values and time left, in one transaction
    /// per batch.
    async fn describe(&self, held: Vec<(String, Hold)>) -> Result<Vec<LockInfo>> {
        const BATCH: usize = 40;
        let mut infos = Vec::with_capacity(held.len());
        for batch in held.chunks(BATCH) {
            let mut ops = Vec::with_capacity(batch.len() * 3);
            for (name, hold) in batch {
                ops.push(TxnOp::get(
                    self.keys.queue(name),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                ));
                ops.push(TxnOp::get(self.keys.value(name), None));
                let lease = hold.record.lease.as_deref().map(lease_number).transpose()?.unwrap_or(0);
                ops.push(TxnOp::get(self.keys.lease(lease), None));
            }
            let response = self.txn(Txn::new().and_then(ops)).await?;
            let answers = response.op_responses();
            let wall = wall_now_ms();
            for (index, (name, hold)) in batch.iter().enumerate() {
                let read = |offset: usize| match &answers[index * 3 + offset] {
                    TxnOpResponse::Get(get) => (get.count(), get.kvs().first().cloned()),
                    _ => (0, None),
                };
                let ((waiters, _), (_, value), (_, lease)) = (read(0), read(1), read(2));
                let expires_in = match (&hold.record.lease, hold.record.deadline_ms) {
                    (Some(_), _) => match lease {
                        Some(kv) => {
                            Some(ms_left(decode::<LeaseRecord>(kv.key(), kv.value())?.deadline_ms, wall))
                        }
                        // The lease ended; its holds are being released.
                        None => continue,
                    },
                    (None, Some(deadline)) => Some(ms_left(deadline, wall)),
                    (None, None) => None,
                };
                infos.push(LockInfo {
                    resource: name.clone(),
                    owner: hold.record.owner.clone(),
                    token: FencingToken(hold.token as u64),
                    expires_in,
                    value: value.map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                    waiters: waiters as usize,
                    lease: hold.record.lease.clone().map(LeaseId),
                });
            }
        }
        Ok(infos)
    }

    /// A lease's record and its mod revision, if the lease is alive.
    async fn live_lease(&self, id: i64) -> Result<(LeaseRecord, i64)> {
        let response = self.client.clone().get(self.keys.lease(id), None).await.map_err(unavailable)?;
        let kv = response.kvs().first().ok_or(Error::NoSuchLease)?;
        let record: LeaseRecord = decode(kv.key(), kv.value())?;
        if record.deadline_ms <= wall_now_ms() {
            self.end_lease(id, Some(kv.mod_revision())).await?;
            return Err(Error::NoSuchLease);
        }
        Ok((record, kv.mod_revision()))
    }

    /// Ends a lease (if its record is still at `mod_revision`, when given): its record goes
    /// first, which is the instant the lease ends for every gateway; then etcd revokes it,
    /// deleting the holder keys bound to it. False when the lease was already gone.
    async fn end_lease(&self, id: i64, mod_revision: Option<i64>) -> Result<bool> {
        let key = self.keys.lease(id);
        let compare = match mod_revision {
            Some(revision) => Compare::mod_revision(key.clone(), CompareOp::Equal, revision),
            None => Compare::version(key.clone(), CompareOp::Greater, 0),
        };
        let response =
            self.txn(Txn::new().when([compare]).and_then([TxnOp::delete(key.clone(), None)])).await?;
        if !response.succeeded() {
            return Ok(false);
        }
        self.cancel(&key);
        match self.client.clone().lease_revoke(id).await {
            Err(error) if !lease_not_found(&error) => return Err(unavailable(error)),
            _ => {}
        }
        Ok(true)
    }

    /// Makes the deletion `due` in `after`, if the key is then still at `mod_revision`;
    /// replaces any earlier timer on the same key.
    fn schedule(&self, due: Due, mod_revision: i64, after: Duration) {
        let key = match &due {
            Due::Hold(name) => self.keys.hold(name),
            Due::Value(name) => self.keys.value(name),
            Due::Lease(id) => self.keys.lease(*id),
        };
        let inner = self.me.clone();
        let timer_key = key.clone();
        let task = tokio::spawn(async move {
            sleep(after).await;
            for attempt in 0..50 {
                let Some(inner) = inner.upgrade() else { return };
                let done = match &due {
                    Due::Hold(name) => inner.end_hold(name, mod_revision, true).await.map(|_| ()),
                    Due::Value(_) => {
                        let txn = Txn::new()
                            .when([Compare::mod_revision(timer_key.clone(), CompareOp::Equal, mod_revision)])
                            .and_then([TxnOp::delete(timer_key.clone(), None)]);
                        inner.txn(txn).await.map(|_| ())
                    }
                    Due::Lease(id) => inner.end_lease(*id, Some(mod_revision)).await.map(|_| ()),
                };
                match done {
                    Ok(()) => {
                        let mut timers = inner.timers.lock().unwrap_or_else(|e| e.into_inner());
                        if timers.get(&timer_key).is_some_and(|(revision, _)| *revision == mod_revision) {
                            timers.remove(&timer_key);
                        }
                        return;
                    }
                    Err(error) => {
                        if attempt == 0 {
                            warn!(?due, %error, "a timed deletion failed; retrying (the etcd lease backstop remains)");
                        }
                        sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        let previous = self
            .timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (mod_revision, task.abort_handle()));
        if let Some((_, previous)) = previous {
            previous.abort();
        }
    }

    /// Drops this gateway's timer on `key`, if any.
    fn cancel(&self, key: &[u8]) {
        if let Some((_, timer)) = self.timers.lock().unwrap_or_else(|e| e.into_inner()).remove(key) {
            timer.abort();
        }
    }

    /// Resolves when `keys` (one of them) is deleted at or after revision `from`; returns that
    /// key, or an empty key when the watch was cancelled and the caller must look again.
    async fn deleted(&self, keys: &[Vec<u8>], from: i64) -> Result<Vec<u8>> {
        let options = || WatchOptions::new().with_start_revision(from).with_filters([WatchFilterType::NoPut]);
        let mut stream =
            self.client.clone().watch(keys[0].clone(), Some(options())).await.map_err(unavailable)?;
        for key in &keys[1..] {
            stream.watch(key.clone(), Some(options())).await.map_err(unavailable)?;
        }
        while let Some(response) = stream.message().await.map_err(unavailable)? {
            if response.canceled() {
                return Ok(Vec::new());
            }
            let deleted = response.events().iter().find(|event| event.event_type() == EventType::Delete);
            if let Some(kv) = deleted.and_then(|event| event.kv()) {
                return Ok(kv.key().to_vec());
            }
        }
        Err(Error::Unavailable("etcd closed the watch".into()))
    }
}

/// A request queued for a lock: its waiter key, removed (and a grant it never saw given back)
/// if the request goes away before it is answered.
struct Queued {
    inner: Arc<Inner>,
    name: String,
    waiter: String,
    key: Vec<u8>,
    revision: i64,
    answered: bool,
}

/// What the head of the queue found.
enum Step {
    Granted(Grant),
    /// Wait for one of these keys to be deleted, from this revision on; none: look again.
    Wait(Vec<Vec<u8>>, i64),
}

impl Queued {
    /// Puts a waiter key at the end of the queue of `request.resource`.
    async fn enter(inner: Arc<Inner>, request: &AcquireRequest) -> Result<Queued> {
        if *inner.shutting_down.borrow() {
            return Err(shutting_down());
        }
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
                other => break other.map_err(unavailable)?,
            }
            attempts += 1;
        };
        let revision = put.header().map_or(0, |header| header.revision());
        Ok(Queued { inner, name: request.resource.clone(), waiter, key, revision, answered: false })
    }

    /// Waits until this request is granted, its lease dies, or `wait_until`.
    async fn wait(mut self, request: &AcquireRequest, wait_until: Instant) -> Result<Grant> {
        let mut shutting_down_rx = self.inner.shutting_down.subscribe();
        let mut failing_since: Option<Instant> = None;
        let lease_key = match &request.lifetime {
            Lifetime::Lease(lease) => Some(self.inner.keys.lease(lease_number(&lease.0)?)),
            _ => None,
        };
        loop {
            if *shutting_down_rx.borrow_and_update() {
                return Err(shutting_down());
            }
            let step = self.step(request, lease_key.as_deref()).await;
            let (mut keys, from) = match step {
                Ok(Step::Granted(grant)) => {
                    self.answered = true;
                    return Ok(grant);
                }
                Ok(Step::Wait(keys, from)) => (keys, from),
                Err(Error::Unavailable(message)) => {
                    // A member died or a leader is being elected: look again shortly.
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > WAITER_PATIENCE || Instant::now() >= wait_until {
                        return Err(Error::Unavailable(message));
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
                    Ok(key) if Some(&key) == lease_key.as_ref() => return Err(Error::NoSuchLease),
                    Ok(_) => {}
                    Err(_) => sleep(Duration::from_millis(100)).await,
                },
                _ = sleep_until(wait_until) => return Err(self.give_up().await),
                _ = shutting_down_rx.changed() => return Err(shutting_down()),
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
            return Err(Error::NoSuchLease);
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
            return Err(Error::Unavailable(
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
    async fn give_up(&mut self) -> Error {
        self.answered = true;
        let _ = self.inner.client.clone().delete(self.key.clone(), None).await;
        match self.inner.read_hold(&self.name).await {
            Ok(Some(hold)) => match self.inner.expires_in(&hold).await {
                Ok(expires_in) => Error::Locked { owner: hold.record.owner, expires_in },
                Err(error) => error,
            },
            Ok(None) => Error::NotHeld,
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
