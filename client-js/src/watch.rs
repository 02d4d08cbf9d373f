//! `Watch`: the events behind `LockserverClient.watch()` and `watchPrefix()` (async iterators
//! in `index.js`), around `lockserver_client::Watch`.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::cancel::Cancellation;
use crate::errors::promise;
use crate::info::LockInfo;

/// One lock event.
#[napi(object)]
pub struct WatchEvent {
    /// Grows with every event of the server.
    pub id: i64,
    /// `reset` (the first event, and whenever events were missed: `locks` is what is held
    /// now), `acquired`, `released`, `expired`, `refreshed`, `handoff` or `revoked`.
    pub event: String,
    /// The lock that changed (null for `reset`).
    pub resource: Option<String>,
    /// The holder after the change; null when free.
    pub owner: Option<String>,
    /// The hold's fencing token; null when free.
    pub token: Option<i64>,
    /// Seconds left on the hold after the change.
    pub expires_in: Option<f64>,
    /// The value after the change (on the etcd backend: as read a moment after it).
    pub value: Option<String>,
    /// Requests queued after the change (on the etcd backend: as read a moment after it).
    pub waiters: Option<u32>,
    /// `reset`: the watched locks held now.
    pub locks: Vec<LockInfo>,
}

impl From<lockserver_client::WatchEvent> for WatchEvent {
    fn from(event: lockserver_client::WatchEvent) -> Self {
        WatchEvent {
            id: event.id as i64,
            event: event.kind.as_str().to_string(),
            resource: event.resource,
            owner: event.owner,
            token: event.token.map(|token| token as i64),
            expires_in: event.expires_in.map(|left| left.as_secs_f64()),
            value: event.value,
            waiters: event.waiters.map(|waiters| waiters as u32),
            locks: event.locks.into_iter().map(LockInfo::from).collect(),
        }
    }
}

/// A watch's events, one `next()` at a time.
#[napi]
pub struct Watch {
    /// `None` once closed.
    watch: Arc<tokio::sync::Mutex<Option<lockserver_client::Watch>>>,
}

impl Watch {
    pub(crate) fn new(watch: lockserver_client::Watch) -> Self {
        Watch { watch: Arc::new(tokio::sync::Mutex::new(Some(watch))) }
    }
}

#[napi]
impl Watch {
    /// The next event; null once `cancellation` is cancelled or the watch closed.
    #[napi(ts_return_type = "Promise<WatchEvent | null>")]
    pub fn next<'env>(
        &self,
        env: &'env Env,
        cancellation: Option<&Cancellation>,
    ) -> Result<PromiseRaw<'env, Option<WatchEvent>>> {
        let watch = self.watch.clone();
        let cancelled = cancellation.map(Cancellation::cancelled);
        let next = async move {
            let mut watch = watch.lock().await;
            let Some(watch) = watch.as_mut() else { return Ok(None) };
            match cancelled {
                Some(cancelled) => tokio::select! {
                    event = watch.next() => event.map(Some),
                    () = cancelled => Ok(None),
                },
                None => watch.next().await.map(Some),
            }
        };
        promise(env, next, |event| event.map(WatchEvent::from))
    }

    /// Ends the watch now (its connection closes), rather than when the object is collected.
    #[napi]
    pub fn close(&self) {
        let watch = self.watch.clone();
        napi::bindgen_prelude::spawn(async move {
            watch.lock().await.take();
        });
    }
}
