//! The journal's writer thread, and the future a request awaits until its change is on disk.
//!
//! The writer takes whatever has accumulated since its last flush, writes it to the log,
//! syncs, and wakes the requests that sync covered: one per thread, which wakes the others of
//! its thread (see `disk_wait.rs`). It also switches to a new log generation when compaction
//! asks, at the exact position compaction named.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use super::disk_wait::Ticket;
use super::log_file::LogFile;
use super::{Journal, Pending};

impl Journal {
    /// Records that everything up to `end` is on disk and wakes whoever waited for that (one
    /// waiter per thread, which wakes the others: see `DiskWaiters`).
    pub(super) fn mark_durable(&self, end: u64) {
        let heads = {
            let mut pending = self.pending();
            pending.durable = end;
            self.durable.store(end, Ordering::Release);
            pending.waiters.heads(end)
        };
        heads.into_iter().for_each(Waker::wake);
    }

    /// The writer thread: takes what has accumulated, writes it, syncs, and says so.
    pub(super) fn run_writer(&self, mut log: LogFile) {
        let mut flushed = 0u64;
        let mut log_bytes = 0u64;
        let mut compaction_requested = false;
        loop {
            let (bytes, rotate, records) = {
                let mut pending = self.pending();
                while pending.bytes.is_empty() && pending.rotate.is_none() && !pending.closed {
                    pending.writer_idle = true;
                    pending = self.wake.wait(pending).unwrap_or_else(PoisonError::into_inner);
                }
                pending.writer_idle = false;
                if pending.closed && pending.bytes.is_empty() {
                    return;
                }
                (
                    std::mem::take(&mut pending.bytes),
                    pending.rotate.take(),
                    std::mem::take(&mut pending.records),
                )
            };
            let syncing = std::time::Instant::now();
            let start = flushed;
            let end = start + bytes.len() as u64;
            let mut rest = &bytes[..];
            let mut written = Ok(());
            if let Some((split, next)) = rotate {
                let (before, after) = rest.split_at((split.saturating_sub(start) as usize).min(rest.len()));
                let reserved = self.reserved.load(Ordering::Acquire);
                written = log
                    .write_synced(before)
                    .and_then(|()| LogFile::create(&self.dir, next, reserved, log.max_ahead))
                    .map(|new_log| {
                        log = new_log;
                        log_bytes = 0;
                        compaction_requested = false;
                        let (current, changed) = &self.generation;
                        *current.lock().unwrap_or_else(PoisonError::into_inner) = next;
                        changed.notify_all();
                    });
                rest = after;
            }
            if let Err(error) = written.and_then(|()| log.write_synced(rest)) {
                match self.fail_and_recover(error, &mut log) {
                    Some(position) => {
                        flushed = position;
                        // A compaction the failure interrupted is asked for again.
                        compaction_requested = false;
                        continue;
                    }
                    None => return,
                }
            }
            crate::metrics::global().journal_synced(syncing.elapsed(), records);
            log_bytes += rest.len() as u64;
            flushed = end;
            self.mark_durable(end);
            if !compaction_requested && log_bytes > self.compact_after {
                compaction_requested = true;
                self.request_compaction();
            }
        }
    }
}

/// Waits until the log is on disk up to a position, and resolves to whether the change there
/// was written (false: a failed write lost it).
///
/// It waits for everything appended when it is first polled (at least up to the position):
/// waiting a little longer is harmless, and it keeps each thread's waiters in the order of their
/// targets, which is what lets the writer wake only the first of them (see `disk_wait.rs`).
pub(super) struct OnDisk<'a> {
    journal: &'a Journal,
    /// The change waited for; `None`: everything appended when first polled.
    position: Option<u64>,
    target: Option<u64>,
    ticket: Option<Ticket>,
}

impl<'a> OnDisk<'a> {
    pub(super) fn new(journal: &'a Journal, position: Option<u64>) -> Self {
        OnDisk { journal, position, target: None, ticket: None }
    }
}

impl Future for OnDisk<'_> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = &mut *self;
        let mut pending = this.journal.pending();
        let target = *this.target.get_or_insert(pending.appended.max(this.position.unwrap_or(0)));
        let durable = pending.durable;
        if durable >= target {
            let written = !Journal::is_lost(&pending, this.position.unwrap_or(target));
            // Woken by the writer or by a waiter of this thread: wake the others it covered.
            if let Some(ticket) = this.ticket.take() {
                wake_covered(pending, ticket);
            }
            return Poll::Ready(written);
        }
        match this.ticket {
            Some(ticket) => pending.waiters.refresh(ticket, cx.waker()),
            None => this.ticket = Some(pending.waiters.register(target, cx.waker())),
        }
        Poll::Pending
    }
}

impl Drop for OnDisk<'_> {
    /// A waiter given up (its request was cancelled) leaves the queue; if it was already taken
    /// to be woken, it passes the wake-up on to the others of its thread.
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else { return };
        let mut pending = self.journal.pending();
        if !pending.waiters.cancel(ticket) {
            wake_covered(pending, ticket);
        }
    }
}

/// Wakes the waiters of the ticket's thread that the disk now covers, once the journal's
/// mutex is released.
fn wake_covered(mut pending: MutexGuard<'_, Pending>, ticket: Ticket) {
    let durable = pending.durable;
    let covered = pending.waiters.covered(ticket, durable);
    drop(pending);
    covered.into_iter().for_each(Waker::wake);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::super::tests::{hold, temp_dir};
    use super::*;

    /// A waker that counts its wake-ups.
    struct Count(AtomicU64);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn one_waiter_per_thread_is_woken_and_a_dropped_one_passes_the_wake_up_on() {
        let dir = temp_dir("wake");
        let (journal, _) = Journal::open(&dir, 1 << 20).unwrap();
        // Stop the writer, so that this test decides when the log counts as on disk.
        journal.close();
        while Arc::strong_count(&journal) > 1 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let counts: Vec<_> = (0..3).map(|_| Arc::new(Count(AtomicU64::new(0)))).collect();
        let wakers: Vec<_> = counts.iter().map(|count| Waker::from(count.clone())).collect();
        let woken = |i: usize| counts[i].0.load(Ordering::SeqCst);
        let mut waits = Vec::new();
        for waker in &wakers {
            journal.append(&hold("a", 1));
            let mut wait = Box::pin(journal.sync());
            assert!(wait.as_mut().poll(&mut Context::from_waker(waker)).is_pending());
            waits.push(wait);
        }
        let two = journal.pending().appended * 2 / 3;
        journal.mark_durable(two);
        assert_eq!((woken(0), woken(1), woken(2)), (1, 0, 0), "only the first of this thread");
        // The first is dropped without running: it wakes the second in its place, not the third.
        drop(waits.remove(0));
        assert_eq!((woken(1), woken(2)), (1, 0));
        assert!(waits[0].as_mut().poll(&mut Context::from_waker(&wakers[1])).is_ready());
        assert!(waits[1].as_mut().poll(&mut Context::from_waker(&wakers[2])).is_pending());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
