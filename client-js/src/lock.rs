//! `LockHandle`: a held lock, around `lockserver_client::LockGuard`.

use lockserver_client::{LockGuard, Shared};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::errors::promise;

/// A held lock. Kept alive in the background when acquired with `expire`.
#[napi]
pub struct LockHandle {
    guard: Shared<LockGuard>,
    resource: String,
    owner: String,
    token: i64,
}

impl LockHandle {
    pub(crate) fn new(guard: LockGuard) -> Self {
        let (resource, owner, token) =
            (guard.resource().to_string(), guard.owner().to_string(), guard.token() as i64);
        LockHandle { guard: Shared::full(guard, lockserver_client::Error::NotHeld), resource, owner, token }
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

    /// True once the lock is known lost (keepalive failed, or its watch saw it taken or ended).
    #[napi(getter)]
    pub fn lost(&self) -> bool {
        self.guard.peek(LockGuard::is_lost).unwrap_or(false)
    }

    /// Replaces the value stored with the lock.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn set_value<'env>(&self, env: &'env Env, value: String) -> Result<PromiseRaw<'env, ()>> {
        let guard = self.guard.clone();
        promise(env, async move { guard.get().await?.set_value(value).await }, |()| ())
    }

    /// Refreshes the hold now (the keepalive does it on its own).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn refresh<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let guard = self.guard.clone();
        promise(env, async move { guard.get().await?.refresh().await }, |()| ())
    }

    /// Releases the lock (a no-op when already released); rejects `LOCK_LOST` if it was lost.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn release<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let guard = self.guard.clone();
        promise(env, async move { guard.end(LockGuard::release).await }, |()| ())
    }

    /// Resolves when the lock is lost: its keepalive failed, or its watch saw another hold (or
    /// none) in its place, within milliseconds of a takeover, forced release or expiry.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn when_lost<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let guard = self.guard.clone();
        let lost = async move {
            let lost = guard.get().await?.when_lost();
            lost.await;
            Ok(())
        };
        promise(env, lost, |()| ())
    }
}
