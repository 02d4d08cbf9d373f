//! Keeping a lock or a lease alive in the background, and noticing when that fails.
//!
//! A [`Liveness`] holds a conservative local deadline: the time a request that the server
//! answered was *sent*, plus the time to live it granted. The server's own deadline can only
//! be later, so when the local one passes without a successful refresh, the hold may be gone
//! and is reported lost, no later than the server drops it.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::error::{Error, Result};

/// The longest pause before retrying a refresh that failed in transport.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Whether a hold is still known to be alive, and until when.
pub(crate) struct Liveness {
    deadline: Mutex<Instant>,
    lost: watch::Sender<bool>,
}

impl Liveness {
    pub(crate) fn new(deadline: Instant) -> Arc<Self> {
        Arc::new(Liveness { deadline: Mutex::new(deadline), lost: watch::Sender::new(false) })
    }

    pub(crate) fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A refresh sent at `sent_at` succeeded: the hold lasts at least `ttl` from then.
    pub(crate) fn extend(&self, sent_at: Instant, ttl: Duration) {
        let mut deadline = self.deadline.lock().unwrap_or_else(PoisonError::into_inner);
        *deadline = (*deadline).max(sent_at + ttl);
    }

    pub(crate) fn mark_lost(&self) {
        self.lost.send_replace(true);
    }

    pub(crate) fn is_lost(&self) -> bool {
        *self.lost.borrow() || Instant::now() >= self.deadline()
    }

    /// Resolves once the hold is lost.
    pub(crate) async fn lost(&self) {
        let mut lost = self.lost.subscribe();
        let _ = lost.wait_for(|lost| *lost).await;
    }
}

/// Refreshes every third of `ttl` (sooner when the deadline is closer) until the refresh is
/// refused or the deadline passes without one; then marks the hold lost and ends.
pub(crate) fn spawn<F, Fut>(liveness: Arc<Liveness>, ttl: Duration, refresh: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    tokio::spawn(async move {
        let period = ttl / 3;
        // Two periods before the deadline: at once when the grant came late (a long wait).
        let mut next = liveness.deadline().checked_sub(2 * period).unwrap_or_else(Instant::now);
        loop {
            let attempt = async {
                sleep_until(next).await;
                let sent_at = Instant::now();
                (sent_at, refresh().await)
            };
            tokio::select! {
                _ = sleep_until(liveness.deadline()) => break,
                (sent_at, outcome) = attempt => match outcome {
                    Ok(()) => {
                        liveness.extend(sent_at, ttl);
                        next = sent_at + period;
                    }
                    Err(Error::NotHeld | Error::NotOwner | Error::NoSuchLease | Error::LockLost) => break,
                    Err(_) => next = Instant::now() + RETRY_PAUSE.min(period / 2),
                },
            }
        }
        liveness.mark_lost();
    })
}
