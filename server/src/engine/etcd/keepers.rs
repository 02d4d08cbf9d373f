//! Keepalive streams kept open: one gRPC stream per etcd lease, reused by every keepalive of
//! that lease (the gateway's session lease every few seconds, an API lease on each
//! `/leases/{id}/keepalive`), instead of a new stream each time. A stream that fails is
//! dropped and opened again by the next keepalive; idle streams are closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::time::{timeout, Instant};

/// How long etcd has to answer a keepalive.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// A stream unused this long is closed when another is opened.
const IDLE: Duration = Duration::from_secs(60);

/// One lease's open stream, and when it was last used.
type Kept = Arc<tokio::sync::Mutex<Option<(LeaseKeeper, LeaseKeepAliveStream)>>>;

/// The open keepalive streams, by etcd lease id.
#[derive(Default)]
pub(super) struct Keepers {
    streams: Mutex<HashMap<i64, (Kept, Instant)>>,
}

impl Keepers {
    /// Sends one keepalive for `id`; the ttl etcd answers (0 when the lease is gone), or `None`
    /// when etcd could not be reached.
    pub(super) async fn keep_alive(&self, client: &Client, id: i64) -> Option<i64> {
        let kept = self.stream_of(id);
        let mut stream = kept.lock().await;
        if stream.is_none() {
            *stream = client.clone().lease_keep_alive(id).await.ok();
        }
        let (keeper, answers) = stream.as_mut()?;
        let answered = match keeper.keep_alive().await {
            Ok(()) => timeout(ANSWER_WITHIN, answers.message()).await,
            Err(_) => Ok(Ok(None)),
        };
        match answered {
            Ok(Ok(Some(answer))) => {
                if answer.ttl() <= 0 {
                    *stream = None;
                    drop(stream);
                    self.forget(id);
                }
                Some(answer.ttl())
            }
            _ => {
                *stream = None;
                None
            }
        }
    }

    /// The stream slot of `id`, made if new; closes idle streams when it makes one.
    fn stream_of(&self, id: i64) -> Kept {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some((kept, used)) = streams.get_mut(&id) {
            *used = now;
            return kept.clone();
        }
        streams.retain(|_, (_, used)| now.duration_since(*used) < IDLE);
        let kept = Kept::default();
        streams.insert(id, (kept.clone(), now));
        kept
    }

    /// Closes the stream of a lease that ended.
    pub(super) fn forget(&self, id: i64) {
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}
