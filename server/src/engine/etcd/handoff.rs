//! Ending a hold — a release, an expiry, a grant given back — in one transaction that also
//! hands the lock to the head waiter: the holder key is rewritten for that waiter (its owner,
//! lifetime and value, from its waiter record; its token, the waiter key's create revision) and
//! the waiter key deleted, so a hand-off is one commit, which the waiter's gateway learns from
//! its watch. The head comes from the mirror; the transaction compares that its key is still
//! there, and on a stale picture its else branch returns the real head for the next try.
//!
//! What the handed-over hold is bound to in etcd, so that it never outlives what the waiter
//! asked for and a waiter whose gateway died does not keep the lock:
//! - an expiry: a backstop lease, and a deadline the waiter's gateway keeps on its timer;
//! - a lease: that lease (its record must be alive, compared in the transaction);
//! - neither: the waiter's gateway's session lease, until that gateway rebinds it to nothing
//!   `SETTLE_AFTER` later if it is still held (`queue.rs`), so that short holds cost no
//!   second commit.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};

use super::holds::keep_value_op;
use super::keys::{encode, lease_number, HoldRecord};
use super::mirror::Waiting;
use super::reads::{gets, revision, Hold};
use super::timers::Due;
use super::{lease_not_found, Inner};
use crate::engine::clock::wall_now_ms;
use crate::engine::{EngineError, Result};

/// How a hold ends.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ending<'a> {
    /// The holder key's mod revision when it was read: the hold ends only if it is unchanged.
    pub(super) mod_revision: i64,
    /// For a release of a lease-bound hold: the lease, which must still be alive.
    pub(super) lease: Option<&'a str>,
    /// Whether the value stays for the next holder.
    pub(super) keep_value: bool,
}

/// What to do with the queue in one try.
enum Next {
    /// Nobody is known to queue: end the hold if that is still so.
    Nobody,
    /// Hand the lock to this waiter if it is still the head.
    HandTo(Waiting),
    /// The head cannot take a hand-off (an older gateway's waiter, or its lease is gone): just
    /// end the hold; the head takes the lock itself, or its gateway drops it.
    Leave,
}

impl Inner {
    /// Ends the hold of `name` if its holder key is unchanged since `ending.mod_revision`,
    /// handing the lock to the head waiter. False when the key changed meanwhile, or the lease
    /// of a released hold is gone.
    pub(super) async fn end_hold(&self, name: &str, ending: Ending<'_>) -> Result<bool> {
        let mut next = match self.mirror.head(name) {
            Some(head) if head.record.handoff => Next::HandTo(head),
            Some(_) => Next::Leave,
            None => Next::Nobody,
        };
        for _ in 0..8 {
            let handing = matches!(next, Next::HandTo(_));
            let txn = match self.ending_txn(name, &ending, &next).await {
                Ok(txn) => txn,
                // The waiter's lease cannot be read as a number: it is gone for good.
                Err(EngineError::NoSuchLease) => {
                    next = Next::Leave;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let response = match self.lock_txn(name, txn.0).await {
                Err(error) if lease_not_found(&error) && handing => {
                    // A backstop lease ended before use, or the waiter's session: look again.
                    self.backstops.forget(txn.1);
                    next = Next::Leave;
                    continue;
                }
                other => other.map_err(super::etcd_error)?,
            };
            let at = revision(&response);
            if response.succeeded() {
                self.cancel(&self.keys.hold(name));
                match next {
                    Next::HandTo(head) => {
                        let hold = Hold {
                            record: txn.2.expect("a hand-off record"),
                            token: head.revision,
                            mod_revision: at,
                        };
                        self.mirror.handed_off(name, hold, head.revision);
                    }
                    _ => {
                        self.mirror.ended(name, at);
                        let value_kept = response
                            .op_responses()
                            .into_iter()
                            .any(|op| matches!(op, TxnOpResponse::Txn(t) if t.succeeded()));
                        if value_kept {
                            self.schedule(Due::Value(name.to_string()), at, self.value_retention);
                        }
                    }
                }
                return Ok(true);
            }
            let reads = gets(&response);
            let hold = reads[0].first().map(Hold::parse).transpose()?;
            if hold.is_none_or(|hold| hold.mod_revision != ending.mod_revision) {
                return Ok(false);
            }
            if ending.lease.is_some() && reads.get(2).is_some_and(|kvs| kvs.is_empty()) {
                return Ok(false);
            }
            let head = reads[1].first().and_then(|kv| Waiting::parse(&self.keys, kv)).map(|(_, head)| head);
            next = match (head, next) {
                (None, _) => Next::Nobody,
                // The same head again: what failed is its lease.
                (Some(head), Next::HandTo(tried)) if head.revision == tried.revision => Next::Leave,
                (Some(head), _) if head.record.handoff => Next::HandTo(head),
                (Some(_), _) => Next::Leave,
            };
        }
        Err(EngineError::Unavailable(
            "the lock's queue kept changing while its hold was ending; retry".into(),
        ))
    }

    /// Ends a hold past its deadline, or one given back, if its holder key is unchanged since
    /// `mod_revision`; its value stays for the next holder.
    pub(super) async fn end_expired(&self, name: &str, mod_revision: i64) -> Result<bool> {
        self.end_hold(name, Ending { mod_revision, lease: None, keep_value: true }).await
    }

    /// The op that ends a lock's value with its last hold: kept for `--value-retention` (bound
    /// to a retention lease, returned too: 0 when none) or deleted.
    pub(super) async fn ended_value_op(&self, name: &str, keep_value: bool) -> Result<(TxnOp, i64)> {
        let value_key = self.keys.value(name);
        if !keep_value {
            return Ok((TxnOp::delete(value_key, None), 0));
        }
        let retention = self.backstops.lease(&self.client(), self.value_retention).await?;
        Ok((keep_value_op(&value_key, retention), retention))
    }

    /// Runs a transaction that binds keys to the backstop or retention lease `lease`; `None`
    /// when etcd no longer knew that lease (it is forgotten: build the transaction again).
    pub(super) async fn txn_with_backstop(&self, txn: Txn, lease: i64) -> Result<Option<TxnResponse>> {
        match self.client().txn(txn).await {
            Err(error) if lease_not_found(&error) => {
                self.backstops.forget(lease);
                Ok(None)
            }
            other => other.map(Some).map_err(super::etcd_error),
        }
    }

    /// The transaction of one try, the backstop lease it binds (0: none) and the record it
    /// writes for a hand-off.
    async fn ending_txn(
        &self,
        name: &str,
        ending: &Ending<'_>,
        next: &Next,
    ) -> Result<(Txn, i64, Option<HoldRecord>)> {
        let (hold_key, value_key, queue) =
            (self.keys.hold(name), self.keys.value(name), self.keys.queue(name));
        let mut when = vec![Compare::mod_revision(hold_key.clone(), CompareOp::Equal, ending.mod_revision)];
        let lease_key = ending.lease.map(|lease| self.keys.lease(lease));
        when.extend(lease_key.clone().map(|key| Compare::version(key, CompareOp::Greater, 0)));
        let (then, backstop, record) = match next {
            Next::HandTo(head) => {
                let kept_value = ending.keep_value && head.record.value.is_none();
                let (record, etcd_lease) = self.handoff_record(head, kept_value).await?;
                // Only the head's own key is compared: the head comes from the mirror, whose
                // watch delivers changes in revision order (so no older waiter can be missing
                // from it; one it still shows but that is gone fails this compare), or from the
                // else branch's read. A compare over the whole queue would read every waiter's
                // record inside etcd: 0.2 ms of every hand-off with 15 waiters, measured.
                when.push(Compare::create_revision(head.key.clone(), CompareOp::Equal, head.revision));
                if let Some(lease) = &head.record.lease {
                    when.push(Compare::version(self.keys.lease(lease), CompareOp::Greater, 0));
                }
                let value_op = match &head.record.value {
                    Some(value) => TxnOp::put(value_key.clone(), value.as_str(), None),
                    // Kept: held again, so it loses its retention lease.
                    None if kept_value => keep_value_op(&value_key, 0),
                    None => TxnOp::delete(value_key.clone(), None),
                };
                let then = vec![
                    TxnOp::put(
                        hold_key.clone(),
                        encode(&record),
                        Some(PutOptions::new().with_lease(etcd_lease)),
                    ),
                    TxnOp::delete(head.key.clone(), None),
                    value_op,
                ];
                let backstop = if head.record.ttl_ms.is_some() { etcd_lease } else { 0 };
                (then, backstop, Some(record))
            }
            Next::Nobody | Next::Leave => {
                if matches!(next, Next::Nobody) {
                    when.push(Compare::version(queue.clone(), CompareOp::Equal, 0).with_prefix());
                }
                let (value_op, _) = self.ended_value_op(name, ending.keep_value).await?;
                (vec![TxnOp::delete(hold_key.clone(), None), value_op], 0, None)
            }
        };
        let head =
            GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
        let mut otherwise = vec![TxnOp::get(hold_key, None), TxnOp::get(queue, Some(head))];
        otherwise.extend(lease_key.map(|key| TxnOp::get(key, Some(GetOptions::new().with_keys_only()))));
        Ok((Txn::new().when(when).and_then(then).or_else(otherwise), backstop, record))
    }

    /// The hold a hand-off gives `head`, and the etcd lease its holder key is bound to.
    pub(super) async fn handoff_record(&self, head: &Waiting, kept_value: bool) -> Result<(HoldRecord, i64)> {
        let waiter = &head.record;
        let record = HoldRecord {
            owner: waiter.owner.clone(),
            deadline_ms: waiter.ttl_ms.map(|ttl| wall_now_ms() + ttl),
            lease: waiter.lease.clone(),
            waiter: Some(head.id.clone()),
            token: Some(head.revision),
            kept_value,
            group: None,
        };
        Ok((record, self.handed_lease(head).await?))
    }

    /// The etcd lease what is handed to `head` is bound to: a backstop lease for an expiry, the
    /// request's lease, or else its gateway's session lease (rebound to nothing by that gateway
    /// once it answers, `SETTLE_AFTER` later).
    pub(super) async fn handed_lease(&self, head: &Waiting) -> Result<i64> {
        Ok(match (&head.record.ttl_ms, &head.record.lease) {
            (Some(ttl), _) => self.backstops.lease(&self.client(), Duration::from_millis(*ttl)).await?,
            (None, Some(lease)) => lease_number(lease)?,
            (None, None) => head.session,
        })
    }
}
