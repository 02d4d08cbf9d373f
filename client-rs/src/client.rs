//! The async [`Client`]: configuration, and the entry points to locks, leases and reads.
//! The protocol calls themselves live in `wire.rs`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::Rng;

use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::listing::Listing;
use crate::lock::LockBuilder;
use crate::multi::MultiLockBuilder;
use crate::tls::TlsFiles;
use crate::types::{LeaseInfo, LockInfo, LockPage};
use crate::watch::{Target, Watch};
use crate::wire::Transport;

/// The server address used when neither the builder nor `LOCKSERVER_ADDR` gives one.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// How long a call may take on top of any server-side wait it asks for.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The lifetime of a guard acquired without one of its own, renewed in the background: a
/// process that dies holding it frees it within this long (as Redisson's watchdog).
pub const DEFAULT_GUARD_EXPIRE: Duration = Duration::from_secs(30);

/// An async lockserver client over one pooled keep-alive HTTP connection pool.
///
/// Cheap to clone: clones share the pool and the owner id. Build it once and reuse it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Arc<Transport>,
    /// This client's owner id; each acquisition through [`Client::lock`] appends a counter.
    owner: String,
    acquisitions: AtomicU64,
    /// The expiry of guards acquired without a lifetime of their own.
    default_expire: Option<Duration>,
}

/// Configures a [`Client`]. What is not set comes from the environment (or `.env`):
/// `LOCKSERVER_ADDR`, `LOCKSERVER_SECRET`, `LOCKSERVER_OWNER`, and for HTTPS
/// `LOCKSERVER_CA_FILE`, `LOCKSERVER_CERT_FILE`, `LOCKSERVER_KEY_FILE`.
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    addr: Option<String>,
    secret: Option<String>,
    owner: Option<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    retries: Option<u32>,
    timeout: Option<Duration>,
    default_expire: Option<Option<Duration>>,
    watch_guards: Option<bool>,
}

impl ClientBuilder {
    /// The server's address: `host:port` (plain HTTP), `http://host:port` or
    /// `https://host:port`.
    pub fn addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = Some(addr.into());
        self
    }

    /// The shared secret sent in `X-LOCKSERVER-SECRET`.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// The owner id. The default is unique per client (hostname, pid and a random part).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sets whichever of the address, owner and secret are given; the others still come from
    /// the environment. (What the reference API and the bindings' constructors take.)
    pub fn options(mut self, addr: Option<String>, owner: Option<String>, secret: Option<String>) -> Self {
        self.addr = addr.or(self.addr);
        self.owner = owner.or(self.owner);
        self.secret = secret.or(self.secret);
        self
    }

    /// Trusts the CA certificates in this PEM file for `https://` addresses, besides the
    /// system's roots (for a server whose certificate a private CA signed).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate (PEM chain) and key (PEM) to servers that require
    /// one (mutual TLS).
    pub fn client_cert(mut self, cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }

    /// Sets whichever of the CA file, client certificate and key are given; the others still
    /// come from the environment. (What the bindings' constructors take.)
    pub fn tls_files(
        mut self,
        ca_file: Option<String>,
        cert_file: Option<String>,
        key_file: Option<String>,
    ) -> Self {
        self.ca_file = ca_file.map(PathBuf::from).or(self.ca_file);
        self.cert_file = cert_file.map(PathBuf::from).or(self.cert_file);
        self.key_file = key_file.map(PathBuf::from).or(self.key_file);
        self
    }

    /// How many times a call is retried after a transport error (default 3).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// How long a call may take on top of any server-side wait (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The expiry of a guard acquired without a lifetime of its own (no `expire`, no lease, not
    /// [`hold_until_released`](crate::LockBuilder::hold_until_released)), kept alive in the
    /// background while the guard lives. Default [`DEFAULT_GUARD_EXPIRE`] (30 s); `None` holds
    /// such guards until released, even if the process dies.
    pub fn default_expire(mut self, expire: Option<Duration>) -> Self {
        self.default_expire = Some(expire);
        self
    }

    /// Whether each lock guard watches its lock (`GET /watch`, one streaming connection per
    /// guard) so that [`LockGuard::lost`](crate::LockGuard::lost) fires within milliseconds of
    /// a takeover, forced release or expiry (default true). Off, loss is noticed by the
    /// keepalive only.
    pub fn watch_guards(mut self, watch: bool) -> Self {
        self.watch_guards = Some(watch);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client> {
        load_dotenv();
        let addr = self.addr.or_else(|| env("LOCKSERVER_ADDR")).unwrap_or_else(|| DEFAULT_ADDR.to_string());
        let addr = addr.trim().trim_end_matches('/');
        let base = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
        let tls = TlsFiles {
            ca_file: self.ca_file.or_else(|| env("LOCKSERVER_CA_FILE").map(PathBuf::from)),
            cert_file: self.cert_file.or_else(|| env("LOCKSERVER_CERT_FILE").map(PathBuf::from)),
            key_file: self.key_file.or_else(|| env("LOCKSERVER_KEY_FILE").map(PathBuf::from)),
        };
        let http = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(60)).tcp_nodelay(true);
        let http = tls
            .apply(http)?
            .build()
            .map_err(|error| Error::Unavailable(format!("cannot build the HTTP client: {error}")))?;
        let transport = Transport {
            http,
            base,
            secret: self.secret.or_else(|| env("LOCKSERVER_SECRET")),
            retries: self.retries.unwrap_or(3),
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            watch_guards: self.watch_guards.unwrap_or(true),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                transport: Arc::new(transport),
                owner: self.owner.or_else(|| env("LOCKSERVER_OWNER")).unwrap_or_else(default_owner),
                acquisitions: AtomicU64::new(0),
                default_expire: self.default_expire.unwrap_or(Some(DEFAULT_GUARD_EXPIRE)),
            }),
        })
    }

    /// Builds a [`blocking::Client`](crate::blocking::Client).
    pub fn build_blocking(self) -> Result<crate::blocking::Client> {
        self.build().map(crate::blocking::Client::from_async)
    }
}

fn load_dotenv() {
    static LOADED: OnceLock<()> = OnceLock::new();
    LOADED.get_or_init(|| {
        let _ = dotenvy::dotenv();
    });
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

/// `hostname-pid-random`: never the same for two clients, even in one process.
fn default_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| env("HOSTNAME"))
        .or_else(|| env("COMPUTERNAME"))
        .map(|host| host.trim().to_string())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "host".to_string());
    format!("{host}-{}-{:08x}", std::process::id(), rand::rng().random::<u32>())
}

impl Client {
    /// A builder; see [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client configured entirely from the environment (or `.env`).
    pub fn from_env() -> Result<Client> {
        ClientBuilder::default().build()
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.transport.base
    }

    /// This client's owner id.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The protocol calls, for the reference API.
    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// Starts building an acquisition of `resource`; see [`LockBuilder`].
    pub fn lock(&self, resource: impl Into<String>) -> LockBuilder {
        self.lock_as(resource.into())
    }

    /// Starts building an acquisition of one of `limit` permits of the semaphore `resource`
    /// (1 to 10,000): up to `limit` holders at once, each with its own fencing token and
    /// expiry. Every acquisition of a semaphore must give the same limit while it is held or
    /// waited for ([`Error::LimitMismatch`](crate::Error::LimitMismatch) otherwise).
    pub fn semaphore(&self, resource: impl Into<String>, limit: u32) -> LockBuilder {
        self.lock_as(resource.into()).permits(limit)
    }

    /// Starts building a multi-lock: every lock of `resources` held at once, exclusively, or
    /// none; see [`MultiLockBuilder`].
    pub fn lock_many<S: AsRef<str>>(&self, resources: &[S]) -> MultiLockBuilder {
        self.lock_many_as(resources)
    }

    /// A multi-lock builder of either kind, with a fresh owner id.
    pub(crate) fn lock_many_as<M, S: AsRef<str>>(&self, resources: &[S]) -> MultiLockBuilder<M> {
        let resources = resources.iter().map(|name| name.as_ref().to_string()).collect();
        MultiLockBuilder::new(self.lock_as(String::new()), resources)
    }

    /// A builder of either kind (async or blocking), with a fresh owner id for this acquisition:
    /// the client's owner and a counter.
    pub(crate) fn lock_as<M>(&self, resource: String) -> LockBuilder<M> {
        let n = self.inner.acquisitions.fetch_add(1, Ordering::Relaxed) + 1;
        let owner = format!("{}/{n}", self.inner.owner);
        LockBuilder::new(self.inner.transport.clone(), resource, owner, self.inner.default_expire)
    }

    /// Grants a lease that keeps itself alive in the background and is revoked on drop.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let sent_at = tokio::time::Instant::now();
        let info = self.inner.transport.grant_lease(ttl).await?;
        Ok(Lease::start(self.inner.transport.clone(), info, sent_at))
    }

    /// Describes `resource` if it is held; `None` when it is free.
    pub async fn inspect(&self, resource: &str) -> Result<Option<LockInfo>> {
        self.inner.transport.inspect(resource).await
    }

    /// Lists held locks whose names start with `prefix`, in name order, after `after`.
    pub async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<LockPage> {
        self.inner.transport.list(prefix, after, limit).await
    }

    /// Watches one lock: a [`Watch`] of its events, starting with a
    /// [`Reset`](crate::WatchEventKind::Reset) that says who holds it now.
    pub fn watch(&self, resource: impl Into<String>) -> Watch {
        Watch::new(self.inner.transport.clone(), &Target::Resource(resource.into()))
    }

    /// Watches every lock whose name starts with `prefix` (`""`: all of them).
    pub fn watch_prefix(&self, prefix: impl Into<String>) -> Watch {
        Watch::new(self.inner.transport.clone(), &Target::Prefix(prefix.into()))
    }

    /// Every held lock whose names start with `prefix`, in name order, fetched `page_size` at a
    /// time (the server caps a page at 1,000 locks and 1 MiB of values).
    pub fn list_all(&self, prefix: &str, page_size: usize) -> Listing {
        Listing::new(self.inner.transport.clone(), prefix.to_string(), page_size)
    }

    /// Describes a lease and the locks held under it.
    pub async fn lease_info(&self, lease: &str) -> Result<LeaseInfo> {
        self.inner.transport.lease_info(lease).await
    }
}
