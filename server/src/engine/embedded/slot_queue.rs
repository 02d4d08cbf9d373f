//! The queue side of the operations on one slot, through the same [`SlotCx`]: queueing a
//! request, handing the lock to the head of the queue (as many waiters at once as fit), and
//! leaving the queue (a wait ran out, a waiter went away, its lease ended).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::debug;

use super::slot::{Answer, Handoff, Waiter};
use super::slot_cx::{HoldEnd, Queueing, SlotCx, MEMORY};
use crate::engine::capacity::{self, WAITER_OVERHEAD};
use crate::engine::watch::EventKind;
use crate::engine::{EngineError, Lifetime, Result};
use crate::metrics::{self, How};

impl SlotCx<'_> {
    /// Queues a request at the tail under `id` (a new one when `None`: the places of one
    /// multi-lock share theirs); returns the id. With `counted`, it counts against the caps (a
    /// multi-lock counts once).
    pub(super) fn enqueue(
        &mut self,
        request: Queueing,
        answer: Answer,
        id: Option<u64>,
        counted: bool,
    ) -> Result<u64> {
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        if let Lifetime::Lease(lease) = &request.lifetime {
            self.shared.leases.note_waiting(lease, self.name, self.now)?;
        }
        let (mut permit, mut memory) = (None, None);
        if counted {
            let value_len = request.value.as_ref().map_or(0, String::len);
            let max = self.shared.max_waiters.load(Ordering::Relaxed);
            permit = Some(self.shared.waiters.take(max, "queued waiters (--max-waiters)")?);
            let bytes = capacity::footprint(WAITER_OVERHEAD, &[request.owner.len(), value_len]);
            memory = Some(self.shared.memory.take_many(bytes, self.max_memory(), MEMORY)?);
        }
        let id = id.unwrap_or_else(|| self.shared.last_waiter.fetch_add(1, Ordering::Relaxed) + 1);
        self.slot.limit = request.claim.limit();
        self.slot.queue().push_back(Waiter {
            id,
            owner: request.owner,
            lifetime: request.lifetime,
            value: request.value,
            claim: request.claim,
            answer,
            _permit: permit,
            _memory: memory,
        });
        Ok(id)
    }

    /// Grants the lock to the waiters at the head of the queue, in arrival order, as long as
    /// each fits beside the holders. A multi-lock at the head stops it: that request is woken
    /// to grant itself, all its locks at once, if the slot is free.
    pub(super) fn promote(&mut self) {
        while let Some(head) = self.slot.head() {
            if head.is_gone() {
                self.slot.next_waiter();
                continue;
            }
            if !self.slot.fits(head.claim) {
                return;
            }
            if let Answer::Many(multi) = &head.answer {
                multi.wake();
                return;
            }
            let waiter = self.slot.next_waiter().expect("the head was just seen");
            let Answer::One(reply) = waiter.answer else { unreachable!("a multi-lock place returned above") };
            let answer = self.grant(waiter.owner, waiter.lifetime, waiter.value, waiter.claim);
            let granted = answer.is_ok();
            let handoff = self.handoff.get_or_insert_with(Arc::default).clone();
            let token = answer.as_ref().ok().map(|grant| grant.token);
            if reply.send(answer.map(|grant| (grant, handoff))).is_ok() {
                if granted {
                    self.changed(EventKind::Handoff);
                    debug!(resource = %self.name, token = ?token, "handed off to the head waiter");
                    metrics::global().granted(How::handoff);
                }
                continue;
            }
            if let Some(index) =
                token.and_then(|token| self.slot.holders.iter().position(|h| h.token == token))
            {
                // The waiter left between the check and the send: take the grant back.
                self.remove_holder(index, true, HoldEnd::Withdrawn);
            }
        }
    }

    /// A queued waiter's time ran out: leave the queue, unless the lock was granted meanwhile.
    pub(super) fn give_up(&mut self, id: u64, reply: &mut oneshot::Receiver<Handoff>) -> Handoff {
        if self.leave_queue(id) {
            return Err(self.slot.locked(self.shared, self.now));
        }
        reply.try_recv().unwrap_or(Err(EngineError::ShuttingDown))
    }

    /// A queued waiter went away: leave the queue, and give back a grant it never saw.
    pub(super) fn cancel(&mut self, id: u64, reply: &mut oneshot::Receiver<Handoff>) {
        if self.leave_queue(id) {
            return;
        }
        if let Ok(Ok((grant, _))) = reply.try_recv() {
            self.withdraw(grant.token);
        }
    }

    /// Answers every waiter queued with `lifetime` with `error` (their lease ended); those
    /// behind them may be granted now.
    pub(super) fn refuse_waiters(&mut self, lifetime: &Lifetime, error: EngineError) {
        let (refused, kept): (Vec<_>, Vec<_>) =
            self.slot.take_waiters().into_iter().partition(|waiter| waiter.lifetime == *lifetime);
        kept.into_iter().for_each(|waiter| self.slot.queue().push_back(waiter));
        let any = !refused.is_empty();
        for waiter in refused {
            waiter.refuse(error.clone());
        }
        if any {
            self.after_end();
        }
    }

    /// Removes the waiter `id` if it is still queued; those behind it may fit now (a shared
    /// request behind a departed exclusive one). Whether it was queued.
    pub(super) fn leave_queue(&mut self, id: u64) -> bool {
        if self.slot.remove_waiter(id).is_none() {
            return false;
        }
        self.after_end();
        true
    }
}
