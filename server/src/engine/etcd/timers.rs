//! Deletions a gateway makes on its own timer (monotonic clock): a hold's (or a group hold's
//! ticket's) deadline, the end of a value's retention, a lease's deadline. Each is made only if the key was not rewritten since
//! the timer was set; etcd lease backstops cover a gateway that dies before its timer fires.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use tokio::time::sleep;
use tracing::warn;

use super::Inner;

/// A deletion a gateway makes on its own timer, if the key was not rewritten since.
#[derive(Debug, Clone)]
pub(super) enum Due {
    /// A hold's deadline.
    Hold(String),
    /// The end of a value's retention.
    Value(String),
    /// A lease's deadline (its API id).
    Lease(String),
    /// A group hold's ticket's deadline (the lock's name and the ticket's owner).
    Ticket(String, String),
}

impl Inner {
    /// Makes the deletion `due` in `after`, if the key is then still at `mod_revision`;
    /// replaces any earlier timer on the same key.
    pub(super) fn schedule(&self, due: Due, mod_revision: i64, after: Duration) {
        let key = match &due {
            Due::Hold(name) => self.keys.hold(name),
            Due::Value(name) => self.keys.value(name),
            Due::Lease(name) => self.keys.lease(name),
            Due::Ticket(name, owner) => self.keys.ticket(name, owner),
        };
        let inner = self.me.clone();
        let timer_key = key.clone();
        let task = tokio::spawn(async move {
            sleep(after).await;
            for attempt in 0..50 {
                let Some(inner) = inner.upgrade() else { return };
                let done = match &due {
                    Due::Hold(name) => inner.end_expired(name, mod_revision).await.map(|ended| {
                        if ended {
                            crate::metrics::global().ended(true, None);
                        }
                    }),
                    Due::Value(_) => {
                        let txn = Txn::new()
                            .when([Compare::mod_revision(timer_key.clone(), CompareOp::Equal, mod_revision)])
                            .and_then([TxnOp::delete(timer_key.clone(), None)]);
                        inner.txn(txn).await.map(|_| ())
                    }
                    Due::Lease(name) => inner.end_lease(name, Some(mod_revision)).await.map(|ended| {
                        if ended {
                            crate::metrics::global().lease_expired();
                        }
                    }),
                    Due::Ticket(name, owner) => {
                        inner.expire_ticket(name, owner, mod_revision).await.map(|ended| {
                            if ended {
                                crate::metrics::global().ended(true, None);
                            }
                        })
                    }
                };
                match done {
                    Ok(()) => {
                        let mut timers = inner.timers.lock().unwrap_or_else(|e| e.into_inner());
                        if timers.get(&timer_key).is_some_and(|(revision, _)| *revision == mod_revision) {
                            timers.remove(&timer_key);
                        }
                        return;
                    }
                    Err(error) => {
                        if attempt == 0 {
                            warn!(?due, %error, "a timed deletion failed; retrying (the etcd lease backstop remains)");
                        }
                        sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        let previous = self
            .timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (mod_revision, task.abort_handle()));
        if let Some((_, previous)) = previous {
            previous.abort();
        }
    }

    /// Drops this gateway's timer on `key`, if any.
    pub(super) fn cancel(&self, key: &[u8]) {
        if let Some((_, timer)) = self.timers.lock().unwrap_or_else(|e| e.into_inner()).remove(key) {
            timer.abort();
        }
    }
}
