//! A request queued for a lock, waiting for the hand-off. Dropping it before it is answered
//! (the client went away) leaves the queue, or gives back a grant that arrived too late to be
//! seen.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};

use super::slot::Handoff;
use super::Shared;
use crate::engine::EngineError;

/// A parked waiter: its place in the queue of `name`, and where its answer arrives.
pub(super) struct QueuedWait {
    shared: Arc<Shared>,
    name: Arc<str>,
    id: u64,
    reply: oneshot::Receiver<Handoff>,
    settled: bool,
}

impl QueuedWait {
    pub(super) fn new(
        shared: Arc<Shared>,
        name: Arc<str>,
        id: u64,
        reply: oneshot::Receiver<Handoff>,
    ) -> Self {
        QueuedWait { shared, name, id, reply, settled: false }
    }

    /// Waits for the grant until `deadline`; then leaves the queue, answering who holds it.
    pub(super) async fn wait_until(mut self, deadline: Instant) -> Handoff {
        let answer = timeout_at(deadline, &mut self.reply).await;
        self.settled = true;
        match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(EngineError::ShuttingDown),
            Err(_elapsed) => {
                let (id, reply) = (self.id, &mut self.reply);
                self.shared.with_slot(&self.name, |cx| cx.give_up(id, reply))
            }
        }
    }
}

impl Drop for QueuedWait {
    fn drop(&mut self) {
        if !self.settled {
            let (id, reply) = (self.id, &mut self.reply);
            self.shared.with_slot(&self.name, |cx| cx.cancel(id, reply));
        }
    }
}
