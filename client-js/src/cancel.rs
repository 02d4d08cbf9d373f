//! `Cancellation`: what `index.js` hands a wait so that an `AbortSignal` can end it.

use napi_derive::napi;
use tokio::sync::watch;

/// Ends the waits it was given to when `cancel()` is called (index.js calls it on `abort`).
#[napi]
pub struct Cancellation {
    cancelled: watch::Sender<bool>,
}

#[napi]
impl Cancellation {
    /// A cancellation not yet cancelled.
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Cancellation { cancelled: watch::channel(false).0 }
    }

    /// Cancels every wait given this cancellation.
    #[napi]
    pub fn cancel(&self) {
        self.cancelled.send_replace(true);
    }
}

impl Cancellation {
    /// Resolves once cancelled.
    pub(crate) fn cancelled(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receiver = self.cancelled.subscribe();
        async move {
            let _ = receiver.wait_for(|cancelled| *cancelled).await;
        }
    }
}
