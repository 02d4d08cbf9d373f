//! Calls by name, outside guards and leases: what an operator's tool (`lockctl`) does on a
//! lock or lease it does not hold a guard for. Applications use guards and [`Lease`]s, which
//! release, keep alive and revoke on their own.
//!
//! [`Lease`]: crate::Lease

use std::time::Duration;

use lockserver_protocol::bodies::HealthReply;

use crate::client::Client;
use crate::error::Result;
use crate::types::LeaseInfo;

/// What `GET /health` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// `embedded` or `etcd`.
    pub backend: String,
    /// The server's version.
    pub version: String,
}

impl From<HealthReply> for Health {
    fn from(reply: HealthReply) -> Self {
        Health { status: reply.status, backend: reply.backend, version: reply.version }
    }
}

impl Client {
    /// The server's health; [`Error::Unavailable`](crate::Error::Unavailable) with the reason
    /// when it cannot serve.
    pub async fn health(&self) -> Result<Health> {
        self.transport().health().await.map(Health::from)
    }

    /// Releases `resource` held by `owner` (only the grant `token`, when given).
    pub async fn release_by_name(&self, resource: &str, owner: &str, token: Option<u64>) -> Result<()> {
        self.transport().release(resource, owner, token, false).await
    }

    /// Grants a lease that nothing keeps alive: it expires after `ttl` unless
    /// [`keepalive_lease`](Self::keepalive_lease) is called.
    pub async fn grant_lease_by_name(&self, ttl: Duration) -> Result<LeaseInfo> {
        self.transport().grant_lease(ttl).await
    }

    /// Keeps the lease `id` alive once; returns its restored time to live.
    pub async fn keepalive_lease(&self, id: &str) -> Result<Duration> {
        self.transport().keepalive(id).await
    }

    /// Revokes the lease `id`, releasing its locks.
    pub async fn revoke_lease(&self, id: &str) -> Result<()> {
        self.transport().revoke(id).await
    }
}
