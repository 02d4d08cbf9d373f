//! `LockserverClient`: the reference calls, and the factories of locks and leases.

use lockserver_client::{seconds, Client, LockMode, LockOptions as ClientLockOptions};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::cancel::Cancellation;
use crate::errors::{promise, to_js};
use crate::info::LockInfo;
use crate::lease::Lease;
use crate::listing::Listing;
use crate::lock::LockHandle;
use crate::multi::MultiLockHandle;
use crate::watch::Watch;

/// Where the server is and who we are; each falls back to `LOCKSERVER_ADDR`,
/// `LOCKSERVER_OWNER`, `LOCKSERVER_SECRET` (or `.env`).
#[napi(object)]
pub struct ClientOptions {
    /// The server: `host:port` (plain HTTP), `http://host:port` or `https://host:port`.
    pub addr: Option<String>,
    /// The owner id; by default unique per client.
    pub owner: Option<String>,
    /// The shared secret sent in `X-LOCKSERVER-SECRET`.
    pub secret: Option<String>,
    /// Seconds a call may take on top of any server-side wait (default 10).
    pub timeout: Option<f64>,
    /// Seconds of expiry, kept alive while held, of a lock taken without `expire`, `lease` or
    /// `holdUntilReleased` (default 30); `false`: such locks are held until released, even if
    /// the process dies.
    #[napi(ts_type = "number | false")]
    pub default_expire: Option<Either<f64, bool>>,
    /// A PEM CA file to trust for `https://` addresses, besides the system's roots (default
    /// `LOCKSERVER_CA_FILE`).
    pub ca_file: Option<String>,
    /// A client certificate (PEM) for servers that require one (default `LOCKSERVER_CERT_FILE`).
    pub cert_file: Option<String>,
    /// The client certificate's key (PEM; default `LOCKSERVER_KEY_FILE`).
    pub key_file: Option<String>,
    /// Each held lock watches itself, so `whenLost()` resolves within milliseconds of a
    /// takeover (default true; one streaming connection per held lock).
    pub watch_locks: Option<bool>,
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
    /// No expiry at all: held until released, even if the process dies (the at-most-once
    /// pattern). Without it, `expire` or `lease`, the client's `defaultExpire` applies (30 s).
    pub hold_until_released: Option<bool>,
    /// Seconds each call may take on top of its server-side wait (the client's otherwise).
    pub timeout: Option<f64>,
    /// `'shared'`: as one of the lock's shared holders (a read-write lock's reader); default
    /// `'exclusive'`.
    #[napi(ts_type = "'exclusive' | 'shared'")]
    pub mode: Option<String>,
    /// One of this many permits of a semaphore (what `semaphore(name, limit)` sets).
    pub limit: Option<u32>,
}

/// A lockserver client.
#[napi]
pub struct LockserverClient {
    client: Client,
}

impl LockserverClient {
    /// A builder of `resource` with `options`, converted (or the conversion's error).
    fn builder(
        &self,
        resource: String,
        options: Option<LockOptions>,
    ) -> lockserver_client::Result<lockserver_client::LockBuilder> {
        Ok(self.client.lock(resource).options(&client_options(options)?))
    }
}

/// The Rust client's options from JavaScript's.
fn client_options(options: Option<LockOptions>) -> lockserver_client::Result<ClientLockOptions> {
    let Some(LockOptions { expire, wait, value, lease, hold_until_released, timeout, mode, limit }) = options
    else {
        return Ok(ClientLockOptions::default());
    };
    if mode.is_some() && limit.is_some() {
        return Err(lockserver_client::Error::InvalidArgument(
            "`mode` and `limit` exclude each other: a semaphore's permits have no mode".into(),
        ));
    }
    let held = hold_until_released.unwrap_or(false);
    let mut options =
        ClientLockOptions::from_seconds(expire, wait, value, lease, held)?.mode(mode.as_deref())?;
    options.timeout = timeout.map(|secs| seconds("timeout", secs)).transpose()?;
    options.limit = limit;
    Ok(options)
}

#[napi]
impl LockserverClient {
    /// A client; what `options` leaves out comes from the environment.
    #[napi(constructor)]
    pub fn new(env: Env, options: Option<ClientOptions>) -> Result<Self> {
        let ClientOptions {
            addr,
            owner,
            secret,
            timeout,
            default_expire,
            ca_file,
            cert_file,
            key_file,
            watch_locks,
        } = options.unwrap_or(ClientOptions {
            addr: None,
            owner: None,
            secret: None,
            timeout: None,
            default_expire: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            watch_locks: None,
        });
        let built = (|| {
            let mut builder = Client::builder()
                .options(addr, owner, secret)
                .tls_files(ca_file, cert_file, key_file)
                .watch_guards(watch_locks.unwrap_or(true));
            if let Some(timeout) = timeout {
                builder = builder.timeout(seconds("timeout", timeout)?);
            }
            match default_expire {
                Some(Either::A(secs)) => {
                    builder = builder.default_expire(Some(seconds("defaultExpire", secs)?))
                }
                Some(Either::B(false)) => builder = builder.default_expire(None),
                Some(Either::B(true)) => {
                    return Err(lockserver_client::Error::InvalidArgument(
                        "`defaultExpire` is a number of seconds, or false".into(),
                    ))
                }
                None => {}
            }
            builder.build()
        })();
        let client = built.map_err(|e| to_js(&env, e))?;
        Ok(LockserverClient { client })
    }

    /// This client's owner id.
    #[napi(getter)]
    pub fn owner(&self) -> String {
        self.client.owner().to_string()
    }

    /// Acquires `resource` as this client's owner, held until `release` (or `expire` seconds).
    /// Blocking (the default) waits as long as it takes; non-blocking resolves false when held.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn acquire<'env>(
        &self,
        env: &'env Env,
        resource: String,
        blocking: Option<bool>,
        expire: Option<f64>,
    ) -> Result<PromiseRaw<'env, bool>> {
        let client = self.client.clone();
        let mode = LockMode::from_blocking(blocking.unwrap_or(true));
        let acquired = async move {
            let expire = expire.map(|expire| seconds("expire", expire)).transpose()?;
            client.try_acquire_as_owner(&resource, mode, expire).await
        };
        promise(env, acquired, |held| held)
    }

    /// Releases `resource` held by this client's owner.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn release<'env>(&self, env: &'env Env, resource: String) -> Result<PromiseRaw<'env, ()>> {
        let client = self.client.clone();
        promise(env, async move { client.release_as_owner(&resource).await }, |()| ())
    }

    /// Acquires `resource`; resolves to a handle whose `release()` ends the hold. A
    /// `cancellation` (index.js makes one from `options.signal`) gives the wait up.
    #[napi(ts_return_type = "Promise<LockHandle>")]
    pub fn lock<'env>(
        &self,
        env: &'env Env,
        resource: String,
        options: Option<LockOptions>,
        cancellation: Option<&Cancellation>,
    ) -> Result<PromiseRaw<'env, LockHandle>> {
        let builder = self.builder(resource, options);
        let cancelled = cancellation.map(Cancellation::cancelled);
        let acquired = async move {
            match cancelled {
                Some(cancelled) => builder?.acquire_unless(cancelled).await,
                None => builder?.acquire().await,
            }
        };
        promise(env, acquired, LockHandle::new)
    }

    /// Acquires `resource` if it is free now; resolves to a handle, or null.
    #[napi(ts_return_type = "Promise<LockHandle | null>")]
    pub fn try_lock<'env>(
        &self,
        env: &'env Env,
        resource: String,
        options: Option<LockOptions>,
    ) -> Result<PromiseRaw<'env, Option<LockHandle>>> {
        let builder = self.builder(resource, options);
        promise(env, async move { builder?.try_acquire().await }, |guard| guard.map(LockHandle::new))
    }

    /// Acquires every lock of `resources` at once, exclusively, or none (waiting while any is
    /// held, holding none meanwhile); resolves to a handle whose `release()` ends them all.
    #[napi(ts_return_type = "Promise<MultiLockHandle>")]
    pub fn lock_many<'env>(
        &self,
        env: &'env Env,
        resources: Vec<String>,
        options: Option<LockOptions>,
    ) -> Result<PromiseRaw<'env, MultiLockHandle>> {
        let builder =
            client_options(options).map(|options| self.client.lock_many(&resources).options(&options));
        promise(env, async move { builder?.acquire().await }, MultiLockHandle::new)
    }

    /// Grants a lease with `ttl` seconds to live, kept alive in the background until revoked.
    #[napi(ts_return_type = "Promise<Lease>")]
    pub fn grant_lease<'env>(&self, env: &'env Env, ttl: f64) -> Result<PromiseRaw<'env, Lease>> {
        let client = self.client.clone();
        let granted = async move { client.grant_lease(seconds("ttl", ttl)?).await };
        promise(env, granted, Lease::new)
    }

    /// The held lock on `resource`, or null when it is free.
    #[napi(ts_return_type = "Promise<LockInfo | null>")]
    pub fn inspect<'env>(
        &self,
        env: &'env Env,
        resource: String,
    ) -> Result<PromiseRaw<'env, Option<LockInfo>>> {
        let client = self.client.clone();
        promise(env, async move { client.inspect(&resource).await }, |info| info.map(LockInfo::from))
    }

    /// The pages of held locks whose names start with `prefix` (index.js's `list()` iterates
    /// them).
    #[napi]
    pub fn listing(&self, prefix: String, page_size: Option<u32>) -> Listing {
        Listing::new(self.client.list_all(&prefix, page_size.unwrap_or(100) as usize))
    }

    /// The events of `resource` (index.js's `watch()` iterates them).
    #[napi]
    pub fn open_watch(&self, resource: String) -> Watch {
        Watch::new(self.client.watch(resource))
    }

    /// The events of every lock whose name starts with `prefix` (index.js's `watchPrefix()`).
    #[napi]
    pub fn open_watch_prefix(&self, prefix: String) -> Watch {
        Watch::new(self.client.watch_prefix(prefix))
    }
}

/// The package's version.
#[napi]
#[cfg_attr(test, allow(dead_code))] // called from JavaScript only
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
