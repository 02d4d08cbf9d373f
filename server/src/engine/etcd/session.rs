//! The etcd leases a gateway uses for itself (not the API's leases):
//!
//! - [`Session`]: one lease kept alive by this gateway, to which its waiter keys are bound, so
//!   that the queue forgets the waiters of a gateway that died within [`SESSION_TTL`].
//! - [`Backstops`]: shared leases with a given time to live, granted at most once a second per
//!   time to live (ahead of need, in the background) and bound to holder and value keys. They end a hold (or drop a value) when the
//!   gateway that would have done it on time has died.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::Client;
use tokio::time::{sleep, Instant};
use tracing::warn;

use super::etcd_error;
use super::keepers::Keepers;
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
    pub(super) async fn keep_alive(&self, client: Client, keepers: &Keepers) {
        let period = Duration::from_secs(SESSION_TTL as u64) / 3;
        let mut kept: Option<(i64, Instant)> = None;
        loop {
            sleep(period).await;
            let Some(id) = *self.current.lock().await else { continue };
            let last_kept = match kept {
                Some((kept_id, at)) if kept_id == id => at,
                _ => Instant::now(),
            };
            let gone = match keepers.keep_alive(&client, id).await {
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

/// Shared leases by time to live, each handed out for [`BACKSTOP_REUSE`] after its grant; the
/// next is granted in the background half way through, so requests rarely wait for a grant.
pub(super) struct Backstops {
    granted: Arc<Mutex<HashMap<i64, Backstop>>>,
}

/// One shared lease.
struct Backstop {
    id: i64,
    granted_at: Instant,
    /// Its successor is being granted.
    refilling: bool,
}

impl Backstops {
    pub(super) fn new() -> Backstops {
        Backstops { granted: Arc::default() }
    }

    /// A lease that ends no sooner than `after` from now (and, with etcd's whole seconds and
    /// the reuse window, no later than about two seconds after that).
    pub(super) async fn lease(&self, client: &Client, after: Duration) -> Result<i64> {
        let ttl = after.as_secs() as i64 + 1 + BACKSTOP_REUSE.as_secs() as i64;
        let now = Instant::now();
        if let Some(current) = self.granted.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&ttl) {
            let age = now.duration_since(current.granted_at);
            if age < BACKSTOP_REUSE {
                if age >= BACKSTOP_REUSE / 2 && !current.refilling {
                    current.refilling = true;
                    tokio::spawn(refill(self.granted.clone(), client.clone(), ttl));
                }
                return Ok(current.id);
            }
        }
        let id = client.clone().lease_grant(ttl, None).await.map_err(etcd_error)?.id();
        let backstop = Backstop { id, granted_at: now, refilling: false };
        self.granted.lock().unwrap_or_else(|e| e.into_inner()).insert(ttl, backstop);
        Ok(id)
    }

    /// Forgets a lease etcd no longer knows.
    pub(super) fn forget(&self, id: i64) {
        self.granted.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, backstop| backstop.id != id);
    }
}

/// Grants the successor of the shared lease of `ttl` seconds.
async fn refill(granted: Arc<Mutex<HashMap<i64, Backstop>>>, client: Client, ttl: i64) {
    let started = Instant::now();
    let next = client.clone().lease_grant(ttl, None).await;
    let mut granted = granted.lock().unwrap_or_else(|e| e.into_inner());
    match next {
        Ok(next) => {
            granted.insert(ttl, Backstop { id: next.id(), granted_at: started, refilling: false });
        }
        Err(_) => {
            if let Some(current) = granted.get_mut(&ttl) {
                current.refilling = false;
            }
        }
    }
}
