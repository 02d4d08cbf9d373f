//! The async [`Client`]: configuration, the protocol calls, and retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::Rng;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::lock::LockBuilder;
use crate::types::{Grant, Keepalive, LeaseInfo, LockInfo, LockPage, Refreshed};

/// The header that carries the shared secret.
pub const SECRET_HEADER: &str = "X-LOCKSERVER-SECRET";
/// The server address used when neither the builder nor `LOCKSERVER_ADDR` gives one.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// How long a call may take on top of any server-side wait it asks for.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// An async lockserver client over one pooled keep-alive HTTP connection pool.
///
/// Cheap to clone: clones share the pool and the owner id. Build it once and reuse it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    base: String,
    secret: Option<String>,
    /// This client's owner id; each acquisition through [`Client::lock`] appends a counter.
    owner: String,
    acquisitions: AtomicU64,
    /// Extra attempts after a transport error.
    retries: u32,
    timeout: Duration,
}

/// Configures a [`Client`]. What is not set comes from the environment (or `.env`):
/// `LOCKSERVER_ADDR`, `LOCKSERVER_SECRET`, `LOCKSERVER_OWNER`.
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    addr: Option<String>,
    secret: Option<String>,
    owner: Option<String>,
    retries: Option<u32>,
    timeout: Option<Duration>,
}

impl ClientBuilder {
    /// The server's address: `host:port`, with or without `http://`.
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

    /// Builds the client.
    pub fn build(self) -> Result<Client> {
        load_dotenv();
        let addr = self.addr.or_else(|| env("LOCKSERVER_ADDR")).unwrap_or_else(|| DEFAULT_ADDR.to_string());
        let addr = addr.trim().trim_end_matches('/');
        let base = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|error| Error::Unavailable(format!("cannot build the HTTP client: {error}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                secret: self.secret.or_else(|| env("LOCKSERVER_SECRET")),
                owner: self.owner.or_else(|| env("LOCKSERVER_OWNER")).unwrap_or_else(default_owner),
                acquisitions: AtomicU64::new(0),
                retries: self.retries.unwrap_or(3),
                timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
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

/// How a call may be retried after a transport error.
#[derive(Clone, Copy, PartialEq)]
enum Retry {
    /// Only when the connection could not be made (the request never left).
    ConnectOnly,
    /// Always: repeating the call does no harm.
    Idempotent,
}

/// One protocol call.
struct Call<'a> {
    method: Method,
    path: &'a str,
    body: Option<Value>,
    /// Server-side waiting the call asks for, added to the timeout.
    wait: Duration,
    retry: Retry,
}

impl<'a> Call<'a> {
    /// A call that may be repeated after a transport error and asks for no server-side wait.
    fn idempotent(method: Method, path: &'a str, body: Option<Value>) -> Self {
        Call { method, path, body, wait: Duration::ZERO, retry: Retry::Idempotent }
    }
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
        &self.inner.base
    }

    /// This client's owner id.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// A fresh owner id for one acquisition: the client's owner and a counter.
    pub(crate) fn acquisition_owner(&self) -> String {
        let n = self.inner.acquisitions.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}/{n}", self.inner.owner)
    }

    /// Starts building an acquisition of `resource`; see [`LockBuilder`].
    pub fn lock(&self, resource: impl Into<String>) -> LockBuilder {
        LockBuilder::new(self.clone(), resource.into())
    }

    /// Grants a lease that keeps itself alive in the background and is revoked on drop.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let sent_at = tokio::time::Instant::now();
        let info = self.grant_lease_raw(ttl).await?;
        Ok(Lease::start(self.clone(), info, sent_at))
    }

    /// Describes `resource` if it is held; `None` when it is free.
    pub async fn inspect(&self, resource: &str) -> Result<Option<LockInfo>> {
        let path = format!("/locks/{}", encode(resource));
        match self.call(Call::idempotent(Method::GET, &path, None)).await {
            Ok(info) => Ok(Some(info)),
            Err(Error::NotHeld) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Lists held locks whose names start with `prefix`, in name order, after `after`.
    pub async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<LockPage> {
        let mut path = format!("/locks?prefix={}&limit={limit}", encode(prefix));
        if let Some(after) = after {
            path.push_str(&format!("&after={}", encode(after)));
        }
        self.call(Call::idempotent(Method::GET, &path, None)).await
    }

    /// One `POST /acquire`: the low-level call under [`LockBuilder`]. Idempotent for a given
    /// owner, so it is retried after transport errors.
    pub async fn acquire_raw(&self, request: &AcquireRequest) -> Result<Grant> {
        let mut body = json!({ "resource": request.resource, "owner": request.owner });
        if let Some(expire) = request.expire {
            body["expire"] = json!(expire.as_secs_f64());
        }
        if !request.wait.is_zero() {
            body["wait"] = json!(request.wait.as_secs_f64());
        }
        if let Some(lease) = &request.lease {
            body["lease"] = json!(lease);
        }
        if let Some(value) = &request.value {
            body["value"] = json!(value);
        }
        self.call(Call {
            method: Method::POST,
            path: "/acquire",
            body: Some(body),
            wait: request.wait,
            retry: Retry::Idempotent,
        })
        .await
    }

    /// One `POST /release`. A retry that finds the lock already gone counts as released.
    pub async fn release_raw(
        &self,
        resource: &str,
        owner: &str,
        token: Option<u64>,
        keep_value: bool,
    ) -> Result<()> {
        let mut body = json!({ "resource": resource, "owner": owner });
        if let Some(token) = token {
            body["token"] = json!(token);
        }
        if keep_value {
            body["keep_value"] = json!(true);
        }
        let call = Call::idempotent(Method::POST, "/release", Some(body));
        match self.call_counting_retries::<Value>(call).await {
            (Ok(_), _) | (Err(Error::NotHeld), true) => Ok(()),
            (Err(error), _) => Err(error),
        }
    }

    /// One `POST /refresh`: extends the hold by `expire` and/or replaces its value.
    pub async fn refresh_raw(
        &self,
        resource: &str,
        owner: &str,
        token: Option<u64>,
        expire: Option<Duration>,
        value: Option<&str>,
    ) -> Result<Refreshed> {
        let mut body = json!({ "resource": resource, "owner": owner });
        if let Some(token) = token {
            body["token"] = json!(token);
        }
        if let Some(expire) = expire {
            body["expire"] = json!(expire.as_secs_f64());
        }
        if let Some(value) = value {
            body["value"] = json!(value);
        }
        self.call(Call::idempotent(Method::POST, "/refresh", Some(body))).await
    }

    /// `POST /leases`. Not idempotent: retried only when the request never left.
    pub async fn grant_lease_raw(&self, ttl: Duration) -> Result<LeaseInfo> {
        let body = json!({ "ttl": ttl.as_secs_f64() });
        self.call(Call {
            method: Method::POST,
            path: "/leases",
            body: Some(body),
            wait: Duration::ZERO,
            retry: Retry::ConnectOnly,
        })
        .await
    }

    /// `POST /leases/{id}/keepalive`; returns the restored time to live.
    pub async fn keepalive_raw(&self, lease: &str) -> Result<Duration> {
        let path = format!("/leases/{}/keepalive", encode(lease));
        let answer: Keepalive = self.call(Call::idempotent(Method::POST, &path, None)).await?;
        Ok(answer.ttl)
    }

    /// `DELETE /leases/{id}`: revokes the lease and releases its locks. A retry that finds
    /// the lease already gone counts as revoked.
    pub async fn revoke_raw(&self, lease: &str) -> Result<()> {
        let path = format!("/leases/{}", encode(lease));
        let call = Call::idempotent(Method::DELETE, &path, None);
        match self.call_counting_retries::<Value>(call).await {
            (Ok(_), _) | (Err(Error::NoSuchLease), true) => Ok(()),
            (Err(error), _) => Err(error),
        }
    }

    /// `GET /leases/{id}`.
    pub async fn lease_info(&self, lease: &str) -> Result<LeaseInfo> {
        let path = format!("/leases/{}", encode(lease));
        self.call(Call::idempotent(Method::GET, &path, None)).await
    }

    async fn call<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T> {
        self.call_counting_retries(call).await.0
    }

    /// Sends the call, retrying transport errors with backoff as its [`Retry`] allows;
    /// also says whether any retry happened.
    async fn call_counting_retries<T: DeserializeOwned>(&self, call: Call<'_>) -> (Result<T>, bool) {
        let mut attempt = 0;
        loop {
            match self.send(&call).await {
                Ok(answer) => return (answer, attempt > 0),
                Err(failure) => {
                    let may_retry = call.retry == Retry::Idempotent || failure.is_connect();
                    if attempt >= self.inner.retries || !may_retry {
                        return (Err(Error::Unavailable(failure.to_string())), attempt > 0);
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
                }
            }
        }
    }

    /// One attempt: the transport error, or the server's answer decoded.
    async fn send<T: DeserializeOwned>(&self, call: &Call<'_>) -> Result<Result<T>, reqwest::Error> {
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), format!("{}{}", self.inner.base, call.path))
            .timeout(self.inner.timeout + call.wait);
        if let Some(secret) = &self.inner.secret {
            request = request.header(SECRET_HEADER, secret);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        if (200..300).contains(&status) {
            Ok(serde_json::from_slice(&bytes)
                .map_err(|error| Error::Server { status, message: format!("unreadable answer: {error}") }))
        } else {
            Ok(Err(Error::from_answer(status, &bytes)))
        }
    }
}

/// The parameters of one `POST /acquire`.
#[derive(Debug, Clone, Default)]
pub struct AcquireRequest {
    /// The lock's name.
    pub resource: String,
    /// The owner asking.
    pub owner: String,
    /// How long the hold lasts unless refreshed; `None` for no expiry.
    pub expire: Option<Duration>,
    /// How long to queue server-side when the lock is held.
    pub wait: Duration,
    /// A lease to bind the hold to.
    pub lease: Option<String>,
    /// A value to store with the lock.
    pub value: Option<String>,
}

/// Percent-encodes one path or query component.
fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
