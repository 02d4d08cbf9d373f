//! `MultiLockHandle`: the held locks of a multi-lock, around `lockserver_client::MultiLockGuard`.

use lockserver_client::{MultiLockGuard, Shared};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::errors::promise;

/// Several locks held at once. Kept alive in the background when acquired with `expire`.
#[napi]
pub struct MultiLockHandle {
    guard: Shared<MultiLockGuard>,
    resources: Vec<String>,
    owner: String,
    tokens: Vec<i64>,
}

impl MultiLockHandle {
    pub(crate) fn new(guard: MultiLockGuard) -> Self {
        let resources = guard.grants().iter().map(|grant| grant.resource.clone()).collect();
        let tokens = guard.tokens().into_iter().map(|token| token as i64).collect();
        let owner = guard.owner().to_string();
        MultiLockHandle {
            guard: Shared::full(guard, lockserver_client::Error::NotHeld),
            resources,
            owner,
            tokens,
        }
    }
}

#[napi]
impl MultiLockHandle {
    /// The locks' names, in the order asked.
    #[napi(getter)]
    pub fn resources(&self) -> Vec<String> {
        self.resources.clone()
    }

    /// The owner id of the holds.
    #[napi(getter)]
    pub fn owner(&self) -> String {
        self.owner.clone()
    }

    /// The fencing tokens, one per lock, in the order asked.
    #[napi(getter)]
    pub fn tokens(&self) -> Vec<i64> {
        self.tokens.clone()
    }

    /// Whether this handle still holds the locks (false once released).
    #[napi(getter)]
    pub fn held(&self) -> bool {
        self.guard.peek(|_| ()).is_some()
    }

    /// True once the locks are known lost (their keepalive failed).
    #[napi(getter)]
    pub fn lost(&self) -> bool {
        self.guard.peek(MultiLockGuard::is_lost).unwrap_or(false)
    }

    /// Releases every lock together (a no-op when already released); rejects `LOCK_LOST` if
    /// they were lost.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn release<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let guard = self.guard.clone();
        promise(env, async move { guard.end(MultiLockGuard::release).await }, |()| ())
    }
}
