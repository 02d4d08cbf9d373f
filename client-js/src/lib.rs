//! Node bindings of the lockserver Rust client, built with napi-rs.
//!
//! They convert types, errors and async, nothing more: every call goes to
//! `lockserver_client::Client` on napi's Tokio runtime, so none blocks the event loop.
//! Errors are rejected with the message `[CODE] text`; `index.js` turns them into
//! `LockserverError` instances whose `code` is `CODE` (`LOCKED`, `NOT_HELD`, ...).

use std::time::Duration;

use lockserver_client::{Client, LockGuard, LockMode, Shared};
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Every client error becomes a JS error whose message starts with `[CODE]`.
fn to_js(error: lockserver_client::Error) -> Error {
    Error::new(Status::GenericFailure, format!("[{}] {error}", error.code().to_uppercase()))
}

fn seconds(name: &str, secs: Option<f64>) -> Result<Option<Duration>> {
    secs.map(|secs| {
        Duration::try_from_secs_f64(secs).map_err(|_| {
            Error::new(
                Status::InvalidArg,
                format!("[BAD_REQUEST] `{name}` must be a non-negative number of seconds"),
            )
        })
    })
    .transpose()
}

/// Where the server is and who we are; each falls back to `LOCKSERVER_ADDR`,
/// `LOCKSERVER_OWNER`, `LOCKSERVER_SECRET` (or `.env`).
#[napi(object)]
pub struct ClientOptions {
    /// `host:port` of the server, with or without `http://`.
    pub addr: Option<String>,
    /// The owner id; by default unique per client.
    pub owner: Option<String>,
    /// The shared secret sent in `X-LOCKSERVER-SECRET`.
    pub secret: Option<String>,
}

/// How to acquire: `expire` and `wait` in seconds (`wait` absent: as long as it takes).
#[napi(object)]
pub struct LockOptions {
    /// Seconds until the hold expires unless refreshed; kept alive in the background.
    pub expire: Option<f64>,
    /// Seconds to wait when held; absent: as long as it takes.
    pub wait: Option<f64>,
    /// A value to store with the lock.
    pub value: Option<String>,
    /// A lease id to bind the hold to.
    pub lease: Option<String>,
}

/// A held lock as the server describes it.
#[napi(object)]
pub struct LockInfo {
    /// The lock's name.
    pub resource: String,
    /// The holder.
    pub owner: String,
    /// The fencing token of the hold.
    pub token: i64,
    /// Seconds left, or null without expiry.
    pub expires_in: Option<f64>,
    /// The value stored with the lock.
    pub value: Option<String>,
    /// How many requests are queued for it.
    pub waiters: u32,
    /// The lease the hold is bound to.
    pub lease: Option<String>,
}

/// A lockserver client.
#[napi]
pub struct LockserverClient {
    client: Client,
}

fn mode(blocking: Option<bool>) -> LockMode {
    if blocking.unwrap_or(true) {
        LockMode::Blocking
    } else {
        LockMode::NonBlocking
    }
}

impl LockserverClient {
    fn builder(
        &self,
        resource: String,
        options: Option<LockOptions>,
    ) -> Result<lockserver_client::LockBuilder> {
        let mut builder = self.client.lock(resource);
        let Some(options) = options else { return Ok(builder) };
        if let Some(expire) = seconds("expire", options.expire)? {
            builder = builder.expire(expire);
        }
        if let Some(wait) = seconds("wait", options.wait)? {
            builder = builder.wait(wait);
        }
        if let Some(value) = options.value {
            builder = builder.value(value);
        }
        if let Some(lease) = options.lease {
            builder = builder.lease(lease);
        }
        Ok(builder)
    }
}

#[napi]
impl LockserverClient {
    /// A client; what `options` leaves out comes from the environment.
    #[napi(constructor)]
    pub fn new(options: Option<ClientOptions>) -> Result<Self> {
        let ClientOptions { addr, owner, secret } =
            options.unwrap_or(ClientOptions { addr: None, owner: None, secret: None });
        let client = Client::builder().options(addr, owner, secret).build().map_err(to_js)?;
        Ok(LockserverClient { client })
    }

    /// This client's owner id.
    #[napi(getter)]
    pub fn owner(&self) -> String {
        self.client.owner().to_string()
    }

    /// Acquires `resource` as this client's owner, held until `release` (or `expire` seconds).
    /// Blocking (the default) waits as long as it takes; non-blocking resolves false when held.
    #[napi]
    pub async fn acquire(
        &self,
        resource: String,
        blocking: Option<bool>,
        expire: Option<f64>,
    ) -> Result<bool> {
        match self.client.acquire_as_owner(&resource, mode(blocking), seconds("expire", expire)?).await {
            Ok(()) => Ok(true),
            Err(lockserver_client::Error::Locked { .. }) => Ok(false),
            Err(error) => Err(to_js(error)),
        }
    }

    /// Releases `resource` held by this client's owner.
    #[napi]
    pub async fn release(&self, resource: String) -> Result<()> {
        self.client.release_as_owner(&resource).await.map_err(to_js)
    }

    /// Acquires `resource`; resolves to a handle whose `release()` ends the hold.
    #[napi]
    pub async fn lock(&self, resource: String, options: Option<LockOptions>) -> Result<LockHandle> {
        let guard = self.builder(resource, options)?.acquire().await.map_err(to_js)?;
        Ok(LockHandle::new(guard).await)
    }

    /// Acquires `resource` if it is free now; resolves to a handle, or null.
    #[napi]
    pub async fn try_lock(
        &self,
        resource: String,
        options: Option<LockOptions>,
    ) -> Result<Option<LockHandle>> {
        match self.builder(resource, options)?.try_acquire().await.map_err(to_js)? {
            Some(guard) => Ok(Some(LockHandle::new(guard).await)),
            None => Ok(None),
        }
    }

    /// Grants a lease with `ttl` seconds to live, kept alive in the background until revoked.
    #[napi]
    pub async fn grant_lease(&self, ttl: f64) -> Result<Lease> {
        let ttl = seconds("ttl", Some(ttl))?.unwrap_or_default();
        let lease = self.client.grant_lease(ttl).await.map_err(to_js)?;
        let (id, ttl) = (lease.id().to_string(), lease.ttl().as_secs_f64());
        let granted = Shared::empty(lockserver_client::Error::NoSuchLease);
        granted.put(lease).await;
        Ok(Lease { granted, id, ttl })
    }

    /// The held lock on `resource`, or null when it is free.
    #[napi]
    pub async fn inspect(&self, resource: String) -> Result<Option<LockInfo>> {
        let info = self.client.inspect(&resource).await.map_err(to_js)?;
        Ok(info.map(|info| LockInfo {
            resource: info.resource,
            owner: info.owner,
            token: info.token as i64,
            expires_in: info.expires_in.map(|left| left.as_secs_f64()),
            value: info.value,
            waiters: info.waiters as u32,
            lease: info.lease,
        }))
    }
}

/// A held lock. Kept alive in the background when acquired with `expire`.
#[napi]
pub struct LockHandle {
    guard: Shared<LockGuard>,
    resource: String,
    owner: String,
    token: i64,
}

impl LockHandle {
    async fn new(guard: LockGuard) -> Self {
        let (resource, owner, token) =
            (guard.resource().to_string(), guard.owner().to_string(), guard.token() as i64);
        let shared = Shared::empty(lockserver_client::Error::NotHeld);
        shared.put(guard).await;
        LockHandle { guard: shared, resource, owner, token }
    }
}

#[napi]
impl LockHandle {
    /// The lock's name.
    #[napi(getter)]
    pub fn resource(&self) -> String {
        self.resource.clone()
    }

    /// The owner id of the hold.
    #[napi(getter)]
    pub fn owner(&self) -> String {
        self.owner.clone()
    }

    /// The fencing token of the hold.
    #[napi(getter)]
    pub fn token(&self) -> i64 {
        self.token
    }

    /// The value stored with the lock.
    #[napi(getter)]
    pub fn value(&self) -> Option<String> {
        self.guard.peek(LockGuard::value).flatten()
    }

    /// Whether this handle still holds the lock (false once released).
    #[napi(getter)]
    pub fn held(&self) -> bool {
        self.guard.peek(|_| ()).is_some()
    }

    /// True once the background keepalive lost the lock.
    #[napi(getter)]
    pub fn lost(&self) -> bool {
        self.guard.peek(LockGuard::is_lost).unwrap_or(false)
    }

    /// Replaces the value stored with the lock.
    #[napi]
    pub async fn set_value(&self, value: String) -> Result<()> {
        self.guard.get().await.map_err(to_js)?.set_value(value).await.map_err(to_js)
    }

    /// Refreshes the hold now (the keepalive does it on its own).
    #[napi]
    pub async fn refresh(&self) -> Result<()> {
        self.guard.get().await.map_err(to_js)?.refresh().await.map_err(to_js)
    }

    /// Releases the lock (a no-op when already released); rejects `LOCK_LOST` if it was lost.
    #[napi]
    pub async fn release(&self) -> Result<()> {
        match self.guard.take().await {
            Some(guard) => guard.release().await.map_err(to_js),
            None => Ok(()),
        }
    }

    /// Resolves when the lock is lost (never, for a lock without expiry).
    #[napi]
    pub async fn when_lost(&self) -> Result<()> {
        let lost = self.guard.get().await.map_err(to_js)?.when_lost();
        lost.await;
        Ok(())
    }
}

/// A lease, kept alive in the background until revoked.
#[napi]
pub struct Lease {
    granted: Shared<lockserver_client::Lease>,
    id: String,
    ttl: f64,
}

#[napi]
impl Lease {
    /// The lease id, to pass as `lease` when locking.
    #[napi(getter)]
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// The time to live in seconds each keepalive restores.
    #[napi(getter)]
    pub fn ttl(&self) -> f64 {
        self.ttl
    }

    /// True once the background keepalive lost the lease.
    #[napi(getter)]
    pub fn lost(&self) -> bool {
        self.granted.peek(lockserver_client::Lease::is_lost).unwrap_or(false)
    }

    /// Keeps the lease alive now (the background task does it on its own).
    #[napi]
    pub async fn keepalive(&self) -> Result<()> {
        self.granted.get().await.map_err(to_js)?.keepalive().await.map_err(to_js)
    }

    /// Revokes the lease, releasing its locks (a no-op when already revoked).
    #[napi]
    pub async fn revoke(&self) -> Result<()> {
        match self.granted.take().await {
            Some(lease) => lease.revoke().await.map_err(to_js),
            None => Ok(()),
        }
    }
}
