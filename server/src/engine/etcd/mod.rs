//! The etcd backend: lockserver instances as stateless gateways in front of an etcd cluster.
//!
//! Every gateway on the same etcd cluster and key prefix serves one lock space. The state lives
//! in etcd only (see `keys.rs` for the layout); a gateway keeps nothing but timers and the
//! requests it is serving, so any gateway can die and clients go on through another.
//!
//! - Granting is one etcd transaction: "if nobody holds the lock and nobody queues for it, write
//!   the holder key; otherwise put this request's waiter key". The holder key's create revision
//!   (or, for a hold handed to a waiter, that waiter key's create revision) is the fencing token.
//! - Waiting follows etcd's concurrency recipe: a waiter key per request, ordered by create
//!   revision and bound to the gateway's session lease. A release hands the lock to the head
//!   waiter in its own transaction, so a hand-off is one commit; the waiter's gateway learns it
//!   from its one long-lived watch (through the mirror), with no watch or proposal per wait.
//!   The head takes the lock itself only when a hold ended without a hand-off, in a
//!   transaction that checks its waiter key and lease are still there: a waiter whose gateway
//!   or lease died is never granted.
//! - Expiry: the gateway that set a deadline ends the hold on its own timer (monotonic clock,
//!   within milliseconds), in a transaction that checks the holder key was not rewritten since.
//!   Should that gateway die, an etcd lease bound to the holder key ends the hold at most
//!   [`BACKSTOP_SLACK`] after its deadline; any gateway that reads a hold past its deadline ends
//!   it at once too.
//! - The API's leases are etcd leases; a record beside each keeps its exact ttl and deadline,
//!   which the gateway that last kept it alive enforces on a timer.
//!
//! Where each job lives: `holds.rs` (holder transactions), `handoff.rs` (ending a hold and
//! handing it to the head waiter in one transaction), `queue.rs` (the waiter recipe),
//! `groups.rs` (shared holders and semaphore permits: group holds; `group_queue.rs` their
//! waiting, `group_release.rs` their ending and hand-off), `multi.rs` (multi-locks),
//! `mirror.rs` (the gateway's picture of every hold and waiter), `events.rs` (the gateway's one
//! watch, which keeps the mirror and feeds `GET /watch`), `reads.rs` (inspection and listing),
//! `leases.rs` (the API's leases), `timers.rs` (deletions on this gateway's clock), `keys.rs`
//! (the key layout), `session.rs` (the gateway's own leases), `keepers.rs` (open keepalive
//! streams), `endpoints.rs` (which members are in use, and which leads), `member_channel.rs`
//! (the gRPC channel to a member: one write per call, one connection per thread),
//! `batches.rs` (lock transactions sent together under load). This file holds the options,
//! setup and the [`LockBackend`] impl.

mod batches;
mod endpoints;
mod events;
mod group_queue;
mod group_release;
mod groups;
mod handoff;
mod holds;
mod keepers;
mod keys;
mod leases;
mod member_channel;
mod mirror;
mod multi;
mod queue;
mod reads;
mod session;
mod timers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, GetOptions, TlsOptions, Txn, TxnResponse};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use self::batches::Batches;
use self::group_queue::GroupQueued;
use self::handoff::Ending;
use self::holds::Attempt;
use self::keepers::Keepers;
use self::keys::Keys;
use self::mirror::Mirror;
use self::queue::{Place, Queued};
use self::reads::Hold;
use self::session::{Backstops, Session};
use super::capacity::{Capacity, Counter};
use super::clock::wall_now_ms;
use super::watch::{LockEvent, WatchHub};
use super::{
    AcquireManyRequest, AcquireRequest, Claim, EngineError, Grant, Health, LeaseId, LeaseInfo, ListRequest,
    LockBackend, LockInfo, LockPage, RefreshRequest, Refreshed, ReleaseManyRequest, ReleaseRequest, Result,
};
use crate::metrics::{self, Gauges, How};

/// How late after its deadline the etcd lease backstop ends a hold whose gateway died: etcd
/// counts leases in whole seconds, and backstop leases are shared for a second.
pub const BACKSTOP_SLACK: Duration = Duration::from_secs(3);

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

/// Why the etcd backend cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdSetupError {
    /// No endpoint was configured.
    #[error("--etcd-endpoints names no endpoint; give the URL of at least one etcd member")]
    NoEndpoints,
    /// The etcd client could not be set up (a malformed endpoint, unreadable TLS settings).
    #[error("cannot set up the etcd client for {endpoints:?}: {source}")]
    Client {
        /// The endpoints given.
        endpoints: Vec<String>,
        /// What the etcd client said.
        #[source]
        source: etcd_client::Error,
    },
}

/// How long connecting to an etcd member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one etcd call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle connection to etcd is pinged, and how long the answer may take.
const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// The etcd backend. Cheap to clone; clones share one etcd connection.
#[derive(Clone)]
pub struct EtcdBackend {
    inner: Arc<Inner>,
}

/// What the backend's clones and its timer tasks share.
struct Inner {
    /// Itself, for the timer tasks it spawns.
    me: std::sync::Weak<Inner>,
    /// The etcd client over every member that answers (see `endpoints.rs`).
    balanced: Client,
    /// The current leader's URL and a client of it alone, when known: requests sent there
    /// skip a follower's forwarding hop, and the watch sees commits first.
    leader: Arc<watch::Sender<Option<(String, Client)>>>,
    keys: Keys,
    /// Lock transactions in flight, and those waiting to go together (`batches.rs`).
    batches: Batches,
    session: Session,
    backstops: Backstops,
    /// Open keepalive streams, one per etcd lease kept alive.
    keepers: Keepers,
    /// The deletions this gateway will make on time, by key: (the key's mod revision, timer).
    timers: Mutex<HashMap<Vec<u8>, (i64, AbortHandle)>>,
    value_retention: Duration,
    /// Set by `shutdown`: queued waiters are answered `unavailable`.
    shutting_down: watch::Sender<bool>,
    /// The requests this gateway has queued, and their cap.
    waiters: Counter,
    max_waiters: AtomicUsize,
    /// The bytes the queued requests take, and their cap.
    memory: Counter,
    max_memory: AtomicUsize,
    /// Lock events for this gateway's watchers, from its one watch on the holder keys.
    events: Arc<WatchHub>,
    /// Every hold and waiter as this gateway last saw them, from the same watch.
    mirror: Mirror,
    /// The revision through which that watch delivered every change.
    followed: Arc<watch::Sender<i64>>,
}

/// Counts an operation of this backend by its outcome (`lockserver_etcd_requests_total`). A
/// refusal the caller caused (locked, not held, ...) counts as `ok`: etcd answered.
fn counted<T>(op: &'static str, outcome: Result<T>) -> Result<T> {
    let etcd_failed = matches!(outcome, Err(EngineError::Unavailable(_) | EngineError::TooMany(_)));
    metrics::global().etcd(op, !etcd_failed);
    outcome
}

/// Maps an etcd client error: `too_many` when etcd's database is full (its quota, the bound on
/// how much the etcd backend holds), `unavailable` otherwise.
pub(super) fn etcd_error(error: etcd_client::Error) -> EngineError {
    match &error {
        etcd_client::Error::GRpcStatus(status) if status.message().contains("database space exceeded") => {
            EngineError::TooMany(format!(
                "etcd's database is full (its --quota-backend-bytes): release locks, or compact and \
                 defragment etcd and disarm its NOSPACE alarm ({})",
                status.message()
            ))
        }
        _ => EngineError::Unavailable(format!("etcd cannot be reached or refused the request: {error}")),
    }
}

fn lease_not_found(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status) if status.message().contains("lease not found"))
}

impl EtcdBackend {
    /// Connects to etcd (lazily: the gateway starts, and reports `unavailable`, while etcd is
    /// down) and starts the session keepalive.
    pub async fn connect(options: EtcdOptions) -> Result<Self, EtcdSetupError> {
        if options.endpoints.is_empty() {
            return Err(EtcdSetupError::NoEndpoints);
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE, KEEP_ALIVE)
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
            .map_err(|source| EtcdSetupError::Client { endpoints: options.endpoints.clone(), source })?;
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            balanced: client,
            leader: Arc::new(watch::channel(None).0),
            keys: Keys::new(&options.prefix),
            batches: Batches::default(),
            session: Session::new(),
            backstops: Backstops::new(),
            keepers: Keepers::default(),
            timers: Mutex::default(),
            value_retention: options.value_retention,
            shutting_down: watch::channel(false).0,
            waiters: Counter::default(),
            max_waiters: AtomicUsize::new(usize::MAX),
            memory: Counter::default(),
            max_memory: AtomicUsize::new(usize::MAX),
            events: Arc::new(WatchHub::new(1)),
            mirror: Mirror::default(),
            followed: Arc::new(watch::channel(0).0),
        });
        tokio::spawn(events::follow(Arc::downgrade(&inner), inner.events.clone()));
        let keeper = inner.clone();
        tokio::spawn(
            async move { keeper.session.keep_alive(keeper.balanced.clone(), &keeper.keepers).await },
        );
        let (balanced, leader) = (inner.balanced.clone(), inner.leader.clone());
        let plain = options.tls.is_none();
        tokio::spawn(endpoints::monitor(balanced, leader, options.endpoints, connect, plain));
        Ok(EtcdBackend { inner })
    }
}

impl EtcdBackend {
    /// Caps the requests this gateway queues at once and the memory they take (locks are
    /// etcd's to count: its quota bounds them, answered `too_many` once reached).
    pub fn limit(&self, capacity: Capacity) {
        self.inner.max_waiters.store(capacity.max_waiters, Ordering::Relaxed);
        self.inner.max_memory.store(capacity.max_memory, Ordering::Relaxed);
    }
}

#[async_trait]
impl LockBackend for EtcdBackend {
    async fn acquire(&self, request: AcquireRequest) -> Result<Grant> {
        let group = request.claim != Claim::Exclusive;
        let metrics = metrics::global();
        let wait_until = Instant::now() + request.wait;
        let place = match request.wait.is_zero() {
            true => None,
            false => Some(Place::new(&self.inner, &request)?),
        };
        let attempt = async {
            loop {
                let attempt = match group {
                    true => self.inner.try_group(&request, place.as_ref()).await?,
                    false => self.inner.try_acquire(&request, place.as_ref()).await?,
                };
                match attempt {
                    Attempt::Granted(grant) => return Ok(Ok(grant)),
                    Attempt::Held(locked) => return Err(locked),
                    Attempt::Queued(revision) => return Ok(Err(revision)),
                    Attempt::Retry => continue,
                }
            }
        };
        let revision = match counted("acquire", attempt.await)? {
            Ok(grant) => {
                metrics.granted(How::immediate);
                return Ok(grant);
            }
            Err(revision) => revision,
        };
        let queued_at = Instant::now();
        let place = place.expect("only a request with a place queues");
        let queued = match group {
            true => GroupQueued::new(self.inner.clone(), place, revision).wait(&request, wait_until).await,
            false => Queued::new(self.inner.clone(), place, revision).wait(&request, wait_until).await,
        };
        let grant = counted("acquire_queued", queued)?;
        metrics.granted(How::handoff);
        metrics.waited(queued_at.elapsed());
        Ok(grant)
    }

    async fn acquire_many(&self, request: AcquireManyRequest) -> Result<Vec<Grant>> {
        let grants = counted("acquire_many", self.inner.acquire_many(&request).await)?;
        grants.iter().for_each(|_| metrics::global().granted(How::immediate));
        Ok(grants)
    }

    async fn release_many(&self, request: ReleaseManyRequest) -> Result<()> {
        counted("release_many", self.inner.release_many(&request).await)?;
        request.resources.iter().for_each(|_| metrics::global().ended(false, None));
        Ok(())
    }

    async fn release(&self, request: ReleaseRequest) -> Result<()> {
        let owner = (!request.force).then_some(request.owner.as_str());
        let owned = |hold: &Hold| hold.held_by(owner, request.token, wall_now_ms()).is_ok();
        let released = async {
            // The mirror's picture first: a release is then one transaction.
            let pictured = self.inner.mirror.hold(&request.resource);
            if pictured.as_ref().is_some_and(|hold| hold.record.group.is_some()) {
                if let Some(()) = self.inner.release_group(&request).await? {
                    return Ok(());
                }
            }
            let mut known = pictured.filter(owned);
            loop {
                let hold = match known.take() {
                    Some(hold) => hold,
                    None => match self.inner.current_hold(&request.resource, owner, request.token).await {
                        // A group hold has no owner of its own: its holders are its tickets.
                        Err(EngineError::NotOwner) => match self.inner.release_group(&request).await? {
                            Some(()) => return Ok(()),
                            None => return Err(EngineError::NotOwner),
                        },
                        other => other?,
                    },
                };
                if hold.record.group.is_some() {
                    match self.inner.release_group(&request).await? {
                        Some(()) => return Ok(()),
                        None => continue,
                    }
                }
                let ending = Ending {
                    mod_revision: hold.mod_revision,
                    lease: hold.record.lease.as_deref(),
                    keep_value: request.keep_value,
                };
                if self.inner.end_hold(&request.resource, ending).await? {
                    return Ok(());
                }
            }
        };
        counted("release", released.await)?;
        metrics::global().ended(false, None);
        Ok(())
    }

    async fn refresh(&self, request: RefreshRequest) -> Result<Refreshed> {
        let refreshed = async {
            loop {
                match self.inner.try_refresh(&request).await {
                    Ok(Some(refreshed)) => return Ok(refreshed),
                    Ok(None) => {}
                    // A group hold has no owner of its own: its holders are its tickets.
                    Err(EngineError::NotOwner) => match self.inner.refresh_group(&request).await? {
                        Some(refreshed) => return Ok(refreshed),
                        None => return Err(EngineError::NotOwner),
                    },
                    Err(error) => return Err(error),
                }
            }
        };
        counted("refresh", refreshed.await)
    }

    async fn inspect(&self, resource: &str) -> Result<LockInfo> {
        counted("inspect", self.inner.inspect(resource).await)
    }

    async fn list(&self, request: ListRequest) -> Result<LockPage> {
        counted("list", self.inner.list(&request).await)
    }

    async fn count_held(&self, prefix: &str, after: Option<&str>, _at_most: usize) -> Result<usize> {
        let counted_held = async {
            let (from, end) = (self.inner.keys.holds_from(prefix, after), self.inner.keys.holds_end(prefix));
            let options = GetOptions::new().with_range(end).with_count_only();
            let answer = self.inner.client().get(from, Some(options)).await.map_err(etcd_error)?;
            Ok(usize::try_from(answer.count()).unwrap_or(usize::MAX))
        };
        counted("count_held", counted_held.await)
    }

    async fn grant_lease(&self, ttl: Duration, id_prefix: &str) -> Result<LeaseInfo> {
        counted("grant_lease", self.inner.grant_lease(ttl, id_prefix).await)
    }

    async fn keepalive(&self, lease: &LeaseId) -> Result<Duration> {
        counted("keepalive", self.inner.keepalive(lease).await)
    }

    async fn revoke(&self, lease: &LeaseId) -> Result<()> {
        counted("revoke", self.inner.revoke(lease).await)
    }

    async fn lease_info(&self, lease: &LeaseId) -> Result<LeaseInfo> {
        counted("lease_info", self.inner.lease_info(lease).await)
    }

    async fn list_leases(
        &self,
        id_prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LeaseInfo>> {
        let listed = async {
            let prefix = self.inner.keys.leases_prefix();
            let (from, end) = self.inner.keys.leases_range(id_prefix, after);
            let options = GetOptions::new().with_range(end).with_keys_only().with_limit(limit as i64 * 2);
            let answer = self.inner.client().get(from, Some(options)).await.map_err(etcd_error)?;
            let mut leases = Vec::new();
            for kv in answer.kvs() {
                let Some(name) = kv.key().strip_prefix(prefix.as_slice()) else { continue };
                let Ok(name) = std::str::from_utf8(name) else { continue };
                match self.inner.lease_info(&LeaseId(name.to_string())).await {
                    Ok(lease) if leases.len() < limit => leases.push(lease),
                    Ok(_) | Err(EngineError::NoSuchLease) => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(leases)
        };
        counted("list_leases", listed.await)
    }

    fn events(&self) -> &Arc<WatchHub> {
        &self.inner.events
    }

    async fn events_caught_up(&self) {
        self.inner.caught_up().await;
    }

    async fn events_after(&self, after: u64) -> Option<Vec<LockEvent>> {
        self.inner.events_after(after).await
    }

    async fn gauges(&self) -> Gauges {
        let count = |prefix: Vec<u8>| {
            let mut client = self.inner.client();
            async move {
                let options = GetOptions::new().with_prefix().with_count_only();
                client.get(prefix, Some(options)).await.map_or(0, |answer| answer.count().max(0) as u64)
            }
        };
        Gauges {
            locks_held: count(self.inner.keys.holds_prefix()).await,
            waiters: self.inner.waiters.used() as u64,
            leases: count(self.inner.keys.leases_prefix()).await,
        }
    }

    async fn health(&self) -> Health {
        let mut client = self.inner.client();
        let probe = client
            .get(self.inner.keys.lease(&keys::lease_name(0)), Some(GetOptions::new().with_count_only()));
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
    /// The client to send requests with: the leader's own when known, else the balanced one.
    fn client(&self) -> Client {
        let leader = self.leader.borrow();
        leader.as_ref().map_or(&self.balanced, |(_, client)| client).clone()
    }

    /// Runs a transaction; an etcd error is `unavailable`.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.client().txn(txn).await.map_err(etcd_error)
    }
}
