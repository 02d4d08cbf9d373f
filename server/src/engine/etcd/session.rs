//! The etcd leases a gateway uses for itself (not the API's leases):
//!
//! - [`Session`]: one lease kept alive by this gateway, to which its waiter keys are bound, so
//!   that the queue forgets the waiters of a gateway that died within [`SESSION_TTL`].
//! - [`Backstops`]: shared leases with a given time to live, granted at most once a second per
//!   time to live and bound to holder and value keys. They end a hold (or drop a value) when the
//!   gateway that would have done it on time has died.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::Client;
use tokio::time::{sleep, Instant};
use tracing::warn;

use super::etcd_error;
use crate::engine::Result;

/// The time to live of a gateway's session lease, in seconds.
pub(super) const SESSION_TTL: i64 = 5;

/// How long a backstop lease is handed out after its grant; added to every backstop's ttl.
const BACKSTOP_REUSE: Duration = Duration::from_secs(1);

/// This gateway's session lease, granted on first use and again after it is lost.
pub(super) struct Session {
    current: tokio::sync::Mutex<Option<i64>>,
}

impl Session {
    pub(super) fn new() -> Session {
        Session { current: tokio::sync::Mutex::new(None) }
    }

    /// The live session lease, granted (and kept alive from then on) when there is none.
    pub(super) async fn lease(&self, client: &Client) -> Result<i64> {
        let mut current = self.current.lock().await;
        if let Some(id) = *current {
            return Ok(id);
        }
        let id = client.clone().lease_grant(SESSION_TTL, None).await.map_err(etcd_error)?.id();
        *current = Some(id);
        Ok(id)
    }

    /// Forgets `id` if it is the current session lease (it expired or could not be kept alive).
    pub(super) async fn lost(&self, id: i64) {
        let mut current = self.current.lock().await;
        if *current == Some(id) {
            *current = None;
        }
    }

    /// Keeps the session lease alive, every third of its ttl; runs for the gateway's life.
    /// A lease etcd says is gone, or that could not be kept alive for a whole ttl, is
    /// forgotten, and the next waiter gets a new one.
    pub(super) async fn keep_alive(&self, client: Client) {
        let period = Duration::from_secs(SESSION_TTL as u64) / 3;
        let mut kept: Option<(i64, Instant)> = None;
        loop {
            sleep(period).await;
            let Some(id) = *self.current.lock().await else { continue };
            let last_kept = match kept {
                Some((kept_id, at)) if kept_id == id => at,
                _ => Instant::now(),
            };
            let gone = match keep_alive_once(&client, id).await {
                Some(ttl) if ttl > 0 => {
                    kept = Some((id, Instant::now()));
                    false
                }
                Some(_) => true,
                None => {
                    kept = Some((id, last_kept));
                    last_kept.elapsed() >= Duration::from_secs(SESSION_TTL as u64)
                }
            };
            if gone {
                warn!(lease = id, "the gateway's etcd session lease was lost; its queued waiters are gone");
                self.lost(id).await;
            }
        }
    }
}

/// Sends one keepalive for `id`; the ttl etcd answers (0 when the lease is gone), or `None`
/// when etcd could not be reached.
pub(super) async fn keep_alive_once(client: &Client, id: i64) -> Option<i64> {
    let (mut keeper, mut stream) = client.clone().lease_keep_alive(id).await.ok()?;
    keeper.keep_alive().await.ok()?;
    let answer = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
    match answer {
        Ok(Ok(Some(response))) => Some(response.ttl()),
        _ => None,
    }
}

/// Shared leases by time to live, each handed out for [`BACKSTOP_REUSE`] after its grant.
pub(super) struct Backstops {
    granted: Mutex<HashMap<i64, (i64, Instant)>>,
}

impl Backstops {
    pub(super) fn new() -> Backstops {
        Backstops { granted: Mutex::default() }
    }

    /// A lease that ends no sooner than `after` from now (and, with etcd's whole seconds and
    /// the reuse window, no later than about two seconds after that).
    pub(super) async fn lease(&self, client: &Client, after: Duration) -> Result<i64> {
        let ttl = after.as_secs() as i64 + 1 + BACKSTOP_REUSE.as_secs() as i64;
        let now = Instant::now();
        if let Some((id, at)) = self.granted.lock().unwrap_or_else(|e| e.into_inner()).get(&ttl) {
            if now.duration_since(*at) < BACKSTOP_REUSE {
                return Ok(*id);
            }
        }
        let id = client.clone().lease_grant(ttl, None).await.map_err(etcd_error)?.id();
        self.granted.lock().unwrap_or_else(|e| e.into_inner()).insert(ttl, (id, now));
        Ok(id)
    }

    /// Forgets a lease etcd no longer knows.
    pub(super) fn forget(&self, id: i64) {
        self.granted.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, (granted, _)| *granted != id);
    }
}
