//! `Lease`: a lease kept alive in the background, around `lockserver_client::Lease`.

use lockserver_client::Shared;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::errors::promise;

/// A lease, kept alive in the background until revoked.
#[napi]
pub struct Lease {
    granted: Shared<lockserver_client::Lease>,
    id: String,
    ttl: f64,
}

impl Lease {
    pub(crate) fn new(lease: lockserver_client::Lease) -> Self {
        let (id, ttl) = (lease.id().to_string(), lease.ttl().as_secs_f64());
        Lease { granted: Shared::full(lease, lockserver_client::Error::NoSuchLease), id, ttl }
    }
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
    #[napi(ts_return_type = "Promise<void>")]
    pub fn keepalive<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let granted = self.granted.clone();
        promise(env, async move { granted.get().await?.keepalive().await }, |()| ())
    }

    /// Revokes the lease, releasing its locks (a no-op when already revoked).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn revoke<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let granted = self.granted.clone();
        promise(env, async move { granted.end(lockserver_client::Lease::revoke).await }, |()| ())
    }
}
