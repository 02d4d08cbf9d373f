//! Leases: sessions that locks can be bound to, kept alive in the background.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::Result;
use crate::keepalive::{self, Liveness};
use crate::types::LeaseInfo;
use crate::wire::Transport;

/// A granted lease. Kept alive in the background every third of its time to live; revoked
/// on drop (best effort), which releases every lock acquired under it.
pub struct Lease {
    transport: Arc<Transport>,
    id: String,
    ttl: Duration,
    liveness: Arc<Liveness>,
    keepalive: JoinHandle<()>,
    runtime: Handle,
    revoked: bool,
}

impl Lease {
    pub(crate) fn start(transport: Arc<Transport>, info: LeaseInfo, sent_at: Instant) -> Lease {
        let liveness = Liveness::new(sent_at + info.ttl);
        let (task_transport, task_id) = (transport.clone(), info.id.clone());
        let keepalive = keepalive::spawn(liveness.clone(), info.ttl, move || {
            let (transport, id) = (task_transport.clone(), task_id.clone());
            async move { transport.keepalive(&id).await.map(drop) }
        });
        Lease {
            transport,
            id: info.id,
            ttl: info.ttl,
            liveness,
            keepalive,
            runtime: Handle::current(),
            revoked: false,
        }
    }

    /// The lease id, as the server knows it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The time to live each keepalive restores.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Keeps the lease alive now (the background task does this on its own).
    pub async fn keepalive(&self) -> Result<()> {
        let sent_at = Instant::now();
        let ttl = self.transport.keepalive(&self.id).await?;
        self.liveness.extend(sent_at, ttl);
        Ok(())
    }

    /// Whether the lease is known to be lost (or may be: its deadline passed unrenewed).
    pub fn is_lost(&self) -> bool {
        self.liveness.is_lost()
    }

    /// Resolves when the lease is lost.
    pub async fn lost(&self) {
        self.liveness.lost().await
    }

    /// Describes the lease and the locks held under it.
    pub async fn info(&self) -> Result<LeaseInfo> {
        self.transport.lease_info(&self.id).await
    }

    /// Revokes the lease, releasing every lock held under it.
    pub async fn revoke(mut self) -> Result<()> {
        self.revoked = true;
        self.keepalive.abort();
        self.transport.revoke(&self.id).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keepalive.abort();
        if !self.revoked {
            let (transport, id) = (self.transport.clone(), self.id.clone());
            self.runtime.spawn(async move {
                let _ = transport.revoke(&id).await;
            });
        }
    }
}

impl AsRef<str> for Lease {
    /// The lease id, so that a `&Lease` can be passed where an id is expected.
    fn as_ref(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("id", &self.id).field("ttl", &self.ttl).finish()
    }
}
