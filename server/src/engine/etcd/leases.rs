//! The API's leases on etcd: each is an etcd lease with a record beside it that keeps its exact
//! time to live and wall-clock deadline, which the gateway that last kept it alive enforces on
//! a timer. Ending a lease deletes its record first (the instant it ends for every gateway),
//! then revokes the etcd lease, which deletes the holder keys bound to it.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::keys::{decode, encode, lease_name, lease_number, LeaseRecord};
use super::reads::{ms_left, revision};
use super::timers::Due;
use super::{etcd_error, lease_not_found, Inner};
use crate::engine::clock::wall_now_ms;
use crate::engine::{EngineError, LeaseId, LeaseInfo, Result};

impl Inner {
    pub(super) async fn grant_lease(&self, ttl: Duration, id_prefix: &str) -> Result<LeaseInfo> {
        let inner = self;
        let seconds = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let id = inner.client().lease_grant(seconds, None).await.map_err(etcd_error)?.id();
        let record = LeaseRecord {
            ttl_ms: ttl.as_millis() as u64,
            deadline_ms: wall_now_ms() + ttl.as_millis() as u64,
        };
        let name = format!("{id_prefix}{}", lease_name(id));
        let options = PutOptions::new().with_lease(id);
        let put = inner.client().put(inner.keys.lease(&name), encode(&record), Some(options)).await;
        let revision = put.map_err(etcd_error)?.header().map_or(0, |header| header.revision());
        inner.schedule(Due::Lease(name.clone()), revision, ttl);
        Ok(LeaseInfo { id: LeaseId(name), ttl, expires_in: ttl, locks: Vec::new() })
    }

    pub(super) async fn keepalive(&self, lease: &LeaseId) -> Result<Duration> {
        let inner = self;
        let id = lease_number(&lease.0)?;
        loop {
            let (record, mod_revision) = inner.live_lease(&lease.0).await?;
            match inner.keepers.keep_alive(&inner.client(), id).await {
                None => {
                    return Err(EngineError::Unavailable("etcd did not answer the lease keepalive".into()))
                }
                Some(ttl) if ttl <= 0 => return Err(EngineError::NoSuchLease),
                Some(_) => {}
            }
            let ttl = Duration::from_millis(record.ttl_ms);
            let renewed = LeaseRecord { deadline_ms: wall_now_ms() + record.ttl_ms, ..record };
            let key = inner.keys.lease(&lease.0);
            let response = inner
                .txn(
                    Txn::new()
                        .when([Compare::mod_revision(key.clone(), CompareOp::Equal, mod_revision)])
                        .and_then([TxnOp::put(
                            key,
                            encode(&renewed),
                            Some(PutOptions::new().with_lease(id)),
                        )]),
                )
                .await?;
            if response.succeeded() {
                inner.schedule(Due::Lease(lease.0.clone()), revision(&response), ttl);
                return Ok(ttl);
            }
        }
    }

    pub(super) async fn revoke(&self, lease: &LeaseId) -> Result<()> {
        if self.end_lease(&lease.0, None).await? {
            Ok(())
        } else {
            Err(EngineError::NoSuchLease)
        }
    }

    pub(super) async fn lease_info(&self, lease: &LeaseId) -> Result<LeaseInfo> {
        let inner = self;
        let id = lease_number(&lease.0)?;
        let (record, _) = inner.live_lease(&lease.0).await?;
        let options = etcd_client::LeaseTimeToLiveOptions::new().with_keys();
        let attached = inner.client().lease_time_to_live(id, Some(options)).await.map_err(etcd_error)?;
        let mut locks: Vec<String> = attached
            .keys()
            .iter()
            .filter_map(|key| inner.keys.name_of_hold(key).or_else(|| inner.keys.name_of_ticket(key)))
            .collect();
        locks.sort();
        locks.dedup();
        Ok(LeaseInfo {
            id: lease.clone(),
            ttl: Duration::from_millis(record.ttl_ms),
            expires_in: ms_left(record.deadline_ms, wall_now_ms()),
            locks,
        })
    }

    /// A lease's record and its mod revision, if the lease is alive.
    pub(super) async fn live_lease(&self, name: &str) -> Result<(LeaseRecord, i64)> {
        lease_number(name)?;
        let response = self.client().get(self.keys.lease(name), None).await.map_err(etcd_error)?;
        let kv = response.kvs().first().ok_or(EngineError::NoSuchLease)?;
        let record: LeaseRecord = decode(kv.key(), kv.value())?;
        if record.deadline_ms <= wall_now_ms() {
            self.end_lease(name, Some(kv.mod_revision())).await?;
            return Err(EngineError::NoSuchLease);
        }
        Ok((record, kv.mod_revision()))
    }

    /// Ends a lease (if its record is still at `mod_revision`, when given): its record goes
    /// first, which is the instant the lease ends for every gateway; then etcd revokes it,
    /// deleting the holder keys bound to it. False when the lease was already gone.
    pub(super) async fn end_lease(&self, name: &str, mod_revision: Option<i64>) -> Result<bool> {
        let id = lease_number(name)?;
        let key = self.keys.lease(name);
        let compare = match mod_revision {
            Some(revision) => Compare::mod_revision(key.clone(), CompareOp::Equal, revision),
            None => Compare::version(key.clone(), CompareOp::Greater, 0),
        };
        let response =
            self.txn(Txn::new().when([compare]).and_then([TxnOp::delete(key.clone(), None)])).await?;
        if !response.succeeded() {
            return Ok(false);
        }
        self.cancel(&key);
        self.keepers.forget(id);
        match self.client().lease_revoke(id).await {
            Err(error) if !lease_not_found(&error) => return Err(etcd_error(error)),
            _ => {}
        }
        Ok(true)
    }
}
