//! A guard or lease behind a shared handle, for bindings whose objects are not owned
//! linearly (a Python `with` block, a JavaScript handle): any clone can use it, and one
//! [`take`](Shared::take) ends it for all.

use std::sync::Arc;

use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::error::{Error, Result};

/// A [`LockGuard`](crate::LockGuard) or [`Lease`](crate::Lease) that may be used from many
/// places and released from any of them. Cheap to clone.
pub struct Shared<T> {
    slot: Arc<RwLock<Option<T>>>,
    /// What using it after it was taken answers.
    gone: Error,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared { slot: self.slot.clone(), gone: self.gone.clone() }
    }
}

impl<T: Send + Sync + 'static> Shared<T> {
    /// An empty cell whose use answers `gone` until something is [put](Self::put) in it.
    pub fn empty(gone: Error) -> Self {
        Shared { slot: Arc::new(RwLock::new(None)), gone }
    }

    /// A cell holding `value`; its use answers `gone` once it is taken.
    pub fn full(value: T, gone: Error) -> Self {
        Shared { slot: Arc::new(RwLock::new(Some(value))), gone }
    }

    /// Puts `value` in the cell, replacing (and dropping) what was there.
    pub async fn put(&self, value: T) {
        *self.slot.write().await = Some(value);
    }

    /// Waits for in-flight uses to end, then lends the value; the `gone` error once taken.
    pub async fn get(&self) -> Result<OwnedRwLockReadGuard<Option<T>, T>> {
        let slot = self.slot.clone().read_owned().await;
        OwnedRwLockReadGuard::try_map(slot, Option::as_ref).map_err(|_| self.gone.clone())
    }

    /// Looks at the value without waiting; `None` when it is taken, or busy being taken.
    pub fn peek<R>(&self, look: impl FnOnce(&T) -> R) -> Option<R> {
        self.slot.try_read().ok()?.as_ref().map(look)
    }

    /// Takes the value out and ends it with `end` (a release, a revoke); `Ok` at once when it
    /// was already taken, so that ending twice is a no-op.
    pub async fn end<F, Fut>(&self, end: F) -> Result<()>
    where
        F: FnOnce(T) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        match self.take().await {
            Some(value) => end(value).await,
            None => Ok(()),
        }
    }

    /// Takes the value out, for every clone; `None` when it was already taken.
    pub async fn take(&self) -> Option<T> {
        self.slot.write().await.take()
    }
}
