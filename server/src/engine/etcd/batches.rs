//! Batching of lock transactions: while [`FLYING`] transactions are in flight, the ones issued
//! meanwhile wait, and go to etcd together as one transaction (each a nested transaction of it,
//! with its own compares and branches) when one in flight comes back. Under load a raft proposal
//! then carries many acquires and releases, and every member applies them in one entry; a lone
//! request is sent at once, as before.
//!
//! Why it is safe: etcd evaluates every nested transaction's compares against the state before
//! the batch and applies the chosen branches in one revision, so each acts exactly as it would
//! alone at that revision. Two transactions of the same lock never share a batch (the second is
//! sent alone), so no key is written twice. A batch etcd refuses as a whole (a lease gone, too
//! large) did nothing: its transactions are sent again one by one, each getting its own answer.
//! A queued transaction whose caller has gone is never sent.
//!
//! Each batch counts as `lockserver_etcd_requests_total{op="batch"}`.

use std::sync::{Arc, Mutex};

use etcd_client::{Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio::sync::oneshot;
use tonic::Code;

use super::Inner;
use crate::metrics;

/// How many transactions may be in flight before the next ones wait for a batch. Measured
/// against 1 and 4 (3-member etcd, one gateway, clients each on a lock of their own): 1 costs
/// a fifth of the throughput of 2 clients (the second always waits), 4 batches too little at
/// 16 clients (15% fewer cycles than 2); 2 leaves 1, 2 and 8 clients as fast as unbatched.
const FLYING: usize = 2;
/// The most transactions in one batch: etcd's `--max-txn-ops` is 128 by default, and the
/// watch's event ids have room for 256 events per revision (`events.rs`), of which a lock
/// transaction makes at most 2 (a hand-off writes the holder key and deletes a waiter key).
const BATCH: usize = 64;

type Answer = Result<TxnResponse, etcd_client::Error>;

/// The lock transactions in flight and the ones waiting for a batch.
#[derive(Default)]
pub(super) struct Batches {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    flying: usize,
    waiting: Vec<Waiting>,
}

struct Waiting {
    name: String,
    txn: Txn,
    answer: oneshot::Sender<Answer>,
}

/// How a transaction goes.
enum Boarding {
    Alone(Txn, Option<Flight>),
    Waiting(oneshot::Receiver<Answer>),
}

/// One of the [`FLYING`] places; giving it back sends the waiting transactions (`land`).
struct Flight(Arc<Inner>);

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.land();
    }
}

impl Inner {
    /// Runs `txn`, which writes keys of the lock `name` only, alone or in a batch.
    pub(super) async fn lock_txn(&self, name: &str, txn: Txn) -> Answer {
        match self.board(name, txn) {
            Boarding::Alone(txn, flight) => {
                let answer = self.client().txn(txn).await;
                drop(flight);
                answer
            }
            Boarding::Waiting(answer) => answer
                .await
                .unwrap_or_else(|_| Err(etcd_client::Error::Internal("the gateway is stopping".into()))),
        }
    }

    /// Whether `txn` goes at once (taking a place in flight, unless it goes beside the batch
    /// because its lock is already waiting or the batch is full) or waits for a batch.
    fn board(&self, name: &str, txn: Txn) -> Boarding {
        let mut state = self.batches.state.lock().expect("batches lock");
        let beside = state.waiting.len() >= BATCH || state.waiting.iter().any(|waiting| waiting.name == name);
        if beside {
            return Boarding::Alone(txn, None);
        }
        if state.flying < FLYING {
            let flight = self.me.upgrade().map(|me| {
                state.flying += 1;
                Flight(me)
            });
            return Boarding::Alone(txn, flight);
        }
        let (answer, receiver) = oneshot::channel();
        state.waiting.push(Waiting { name: name.to_string(), txn, answer });
        Boarding::Waiting(receiver)
    }

    /// A place in flight came back: sends the waiting transactions, or frees the place.
    fn land(&self) {
        let mut state = self.batches.state.lock().expect("batches lock");
        state.waiting.retain(|waiting| !waiting.answer.is_closed());
        let me = self.me.upgrade();
        let runtime = tokio::runtime::Handle::try_current();
        match (me, runtime) {
            (Some(me), Ok(runtime)) if !state.waiting.is_empty() => {
                let take = state.waiting.len().min(BATCH);
                let batch: Vec<Waiting> = state.waiting.drain(..take).collect();
                drop(state);
                runtime.spawn(fly(Flight(me), batch));
            }
            _ => state.flying -= 1,
        }
    }
}

/// Sends `batch` as one transaction and answers each of its waiters.
async fn fly(flight: Flight, batch: Vec<Waiting>) {
    let inner = flight.0.clone();
    if batch.len() == 1 {
        let Waiting { txn, answer, .. } = batch.into_iter().next().expect("one");
        let _ = answer.send(inner.client().txn(txn).await);
        return;
    }
    let mut answers = Vec::with_capacity(batch.len());
    let mut txns = Vec::with_capacity(batch.len());
    for waiting in batch {
        answers.push(waiting.answer);
        txns.push(waiting.txn);
    }
    let outer = Txn::new().and_then(txns.iter().cloned().map(TxnOp::txn).collect::<Vec<_>>());
    let sent = inner.client().txn(outer).await;
    metrics::global().etcd("batch", sent.is_ok());
    match sent {
        Ok(response) => {
            for (answer, op) in answers.into_iter().zip(response.op_responses()) {
                if let TxnOpResponse::Txn(mut nested) = op {
                    // Nested answers carry no header: the batch's revision is theirs.
                    nested.0.header = response.0.header;
                    let _ = answer.send(Ok(nested));
                }
            }
        }
        // Refused as a whole: nothing was applied; each goes again alone.
        Err(etcd_client::Error::GRpcStatus(status))
            if matches!(status.code(), Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition) =>
        {
            let sends = answers.into_iter().zip(txns).map(|(answer, txn)| {
                let inner = inner.clone();
                async move {
                    let _ = answer.send(inner.client().txn(txn).await);
                }
            });
            futures_util::future::join_all(sends).await;
        }
        Err(error) => {
            for answer in answers {
                let copy = match &error {
                    etcd_client::Error::GRpcStatus(status) => etcd_client::Error::GRpcStatus(status.clone()),
                    other => etcd_client::Error::Internal(other.to_string()),
                };
                let _ = answer.send(Err(copy));
            }
        }
    }
}
