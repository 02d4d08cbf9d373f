//! Reads: a lock's holder, its time left, and descriptions of held locks for inspection and
//! listing (their waiter counts, values and lease deadlines, fetched in batched transactions).

use std::time::Duration;

use etcd_client::{GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse};

use super::keys::{decode, lease_name, HoldRecord, LeaseRecord};
use super::{etcd_error, Inner};
use crate::engine::clock::wall_now_ms;
use crate::engine::{
    EngineError, FencingToken, HoldMode, HolderInfo, LeaseId, ListRequest, LockInfo, LockPage, Result,
};

pub(super) fn ms_left(deadline_ms: u64, wall_ms: u64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(wall_ms))
}

/// The responses of a transaction's branch that read keys, in order.
pub(super) fn gets(response: &TxnResponse) -> Vec<Vec<KeyValue>> {
    response
        .op_responses()
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(mut get) => Some(get.take_kvs()),
            _ => None,
        })
        .collect()
}

pub(super) fn revision(response: &TxnResponse) -> i64 {
    response.header().map_or(0, |header| header.revision())
}

/// A holder key as read.
#[derive(Debug, Clone)]
pub(super) struct Hold {
    pub(super) record: HoldRecord,
    pub(super) token: i64,
    pub(super) mod_revision: i64,
}

impl Hold {
    pub(super) fn parse(kv: &KeyValue) -> Result<Hold> {
        let record: HoldRecord = decode(kv.key(), kv.value())?;
        Ok(Hold {
            token: record.token.unwrap_or(kv.create_revision()),
            record,
            mod_revision: kv.mod_revision(),
        })
    }

    /// Succeeds when this hold is live at `wall_ms` and `owner` holds it (under `token`, when
    /// given); any live hold when `owner` is `None` (a forced release).
    pub(super) fn held_by(
        &self,
        owner: Option<&str>,
        token: Option<FencingToken>,
        wall_ms: u64,
    ) -> Result<()> {
        if self.expired(wall_ms) {
            return Err(EngineError::NotHeld);
        }
        let Some(owner) = owner else { return Ok(()) };
        if self.record.owner != owner || token.is_some_and(|token| token.0 != self.token as u64) {
            return Err(EngineError::NotOwner);
        }
        Ok(())
    }

    pub(super) fn expired(&self, wall_ms: u64) -> bool {
        self.record.deadline_ms.is_some_and(|deadline| deadline <= wall_ms)
    }
}

impl Inner {
    pub(super) async fn inspect(&self, resource: &str) -> Result<LockInfo> {
        let inner = self;
        let response = inner
            .txn(Txn::new().and_then([
                TxnOp::get(inner.keys.hold(resource), None),
                TxnOp::get(
                    inner.keys.queue(resource),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                ),
            ]))
            .await?;
        let hold = gets(&response)[0].first().map(Hold::parse).transpose()?;
        let waiters = match &response.op_responses()[1] {
            TxnOpResponse::Get(get) => get.count() as usize,
            _ => 0,
        };
        let hold = hold.filter(|hold| !hold.expired(wall_now_ms())).ok_or(EngineError::NotHeld)?;
        let mut infos = inner.describe(vec![(resource.to_string(), hold)], true, usize::MAX).await?;
        let mut info = infos.pop().ok_or(EngineError::NotHeld)?;
        info.waiters = waiters;
        Ok(info)
    }

    pub(super) async fn list(&self, request: &ListRequest) -> Result<LockPage> {
        let (prefix, after, limit) = (request.prefix.as_str(), request.after.as_deref(), request.limit);
        let inner = self;
        let end = inner.keys.holds_end(prefix);
        let mut from = inner.keys.holds_from(prefix, after);
        let mut held = Vec::new();
        let wall = wall_now_ms();
        while held.len() <= limit {
            let options =
                GetOptions::new().with_range(end.clone()).with_limit((limit + 1 - held.len()) as i64);
            let mut page = inner.client().get(from.clone(), Some(options)).await.map_err(etcd_error)?;
            let more = page.more();
            let kvs = page.take_kvs();
            for kv in &kvs {
                let hold = Hold::parse(kv)?;
                if let (Some(name), false) = (inner.keys.name_of_hold(kv.key()), hold.expired(wall)) {
                    held.push((name, hold));
                }
            }
            match kvs.last() {
                Some(last) if more => from = [last.key(), b"\0"].concat(),
                _ => break,
            }
        }
        held.truncate(limit + 1);
        let locks = inner.describe(held, request.values, request.max_bytes).await?;
        Ok(request.page(locks))
    }

    /// The holder key of `name`, if there is one.
    pub(super) async fn read_hold(&self, name: &str) -> Result<Option<Hold>> {
        let response = self.client().get(self.keys.hold(name), None).await.map_err(etcd_error)?;
        response.kvs().first().map(Hold::parse).transpose()
    }

    /// Time left on a hold: until its deadline, or its lease's; `None` when unbounded.
    pub(super) async fn expires_in(&self, hold: &Hold) -> Result<Option<Duration>> {
        self.time_left(hold.record.lease.as_deref(), hold.record.deadline_ms).await
    }

    /// Time left on a hold or ticket bound to `lease` or ending at `deadline_ms`: until its
    /// lease's deadline (zero once the lease is gone), or its own; `None` when unbounded.
    pub(super) async fn time_left(
        &self,
        lease: Option<&str>,
        deadline_ms: Option<u64>,
    ) -> Result<Option<Duration>> {
        let wall = wall_now_ms();
        match (lease, deadline_ms) {
            (Some(lease), _) => match self.live_lease(lease).await {
                Ok((record, _)) => Ok(Some(ms_left(record.deadline_ms, wall))),
                Err(EngineError::NoSuchLease) => Ok(Some(Duration::ZERO)),
                Err(error) => Err(error),
            },
            (None, Some(deadline)) => Ok(Some(ms_left(deadline, wall))),
            (None, None) => Ok(None),
        }
    }

    /// Describes held locks: their waiter counts, values and time left, in one transaction
    /// per batch.
    pub(super) async fn describe(
        &self,
        held: Vec<(String, Hold)>,
        values: bool,
        max_bytes: usize,
    ) -> Result<Vec<LockInfo>> {
        const BATCH: usize = 40;
        let mut infos = Vec::with_capacity(held.len());
        let mut bytes = 0;
        for batch in held.chunks(BATCH) {
            if bytes > max_bytes {
                break; // the page is full: what follows is listed on the next one
            }
            let mut ops = Vec::with_capacity(batch.len() * 3);
            for (name, hold) in batch {
                ops.push(TxnOp::get(
                    self.keys.queue(name),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                ));
                let value_read = if values { None } else { Some(GetOptions::new().with_count_only()) };
                ops.push(TxnOp::get(self.keys.value(name), value_read));
                let no_lease = lease_name(0);
                ops.push(TxnOp::get(
                    self.keys.lease(hold.record.lease.as_deref().unwrap_or(&no_lease)),
                    None,
                ));
            }
            let response = self.txn(Txn::new().and_then(ops)).await?;
            let answers = response.op_responses();
            let wall = wall_now_ms();
            for (index, (name, hold)) in batch.iter().enumerate() {
                let read = |offset: usize| match &answers[index * 3 + offset] {
                    TxnOpResponse::Get(get) => (get.count(), get.kvs().first().cloned()),
                    _ => (0, None),
                };
                let ((waiters, _), (_, value), (_, lease)) = (read(0), read(1), read(2));
                if hold.record.group.is_some() {
                    let value = value.filter(|_| values).map(|kv| {
                        bytes += kv.value().len();
                        String::from_utf8_lossy(kv.value()).into_owned()
                    });
                    infos.extend(self.group_info(name, hold, value, waiters as usize).await?);
                    continue;
                }
                let expires_in = match (&hold.record.lease, hold.record.deadline_ms) {
                    (Some(_), _) => match lease {
                        Some(kv) => {
                            Some(ms_left(decode::<LeaseRecord>(kv.key(), kv.value())?.deadline_ms, wall))
                        }
                        // The lease ended; its holds are being released.
                        None => continue,
                    },
                    (None, Some(deadline)) => Some(ms_left(deadline, wall)),
                    (None, None) => None,
                };
                let holder = HolderInfo {
                    owner: hold.record.owner.clone(),
                    token: FencingToken(hold.token as u64),
                    expires_in,
                    mode: HoldMode::Exclusive,
                    lease: hold.record.lease.clone().map(LeaseId),
                };
                let value = value.filter(|_| values).map(|kv| {
                    bytes += kv.value().len();
                    String::from_utf8_lossy(kv.value()).into_owned()
                });
                infos.push(LockInfo::exclusive(name.clone(), holder, value, waiters as usize));
            }
        }
        Ok(infos)
    }
}
