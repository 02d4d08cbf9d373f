//! When the store cannot write (a full disk, an I/O error): nothing refused leaves a trace, and
//! the store comes back on its own.
//!
//! A failed write marks everything appended but not yet on disk as lost: the requests waiting
//! for it are answered with the storage error, and so is every change made while the store
//! cannot write (refused before it is made, or, for expiry, dropped at once). The state the
//! lock table shows is then reset to what is on disk ([`DurableState::reset`]), so that memory
//! and disk agree again. Every second the writer tries to make the log whole again (zeros over
//! whatever the failed write left); once that succeeds, changes are accepted again, with
//! nothing acknowledged before lost.

use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use super::log_file::LogFile;
use super::{recovery, Journal, Pending, StoreError};
use crate::engine::{EngineError, Result};

/// How often the writer tries again to write after a failure.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How many lost ranges are remembered (each failure adds one, at most one a second; a request
/// waiting for its change is told at once, so only the newest matter).
const LOST_RANGES: usize = 4096;

impl Journal {
    /// Succeeds while the store can write; the storage error otherwise.
    pub fn check_writable(&self) -> Result<()> {
        match self.failed.load(Ordering::Acquire) {
            false => Ok(()),
            true => Err(self.refusal()),
        }
    }

    /// Succeeds unless the store could not even read back what is on disk: then nothing it
    /// shows can be trusted until a restart.
    pub fn check_readable(&self) -> Result<()> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(()); // the common case, without the mutex: unreadable implies failed
        }
        match &*self.failure_state() {
            Some((error, true)) => Err(EngineError::Storage(error.clone())),
            _ => Ok(()),
        }
    }

    /// Why the store cannot write now; `None` while it can.
    pub fn problem(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failure_state().as_ref().map(|(error, _)| format!("the data dir cannot be written: {error}"))
    }

    /// The error a refused or lost change is answered with.
    pub(super) fn refusal(&self) -> EngineError {
        let failure = self.failure_state().as_ref().map(|(error, _)| error.clone());
        // A failure is recorded before anything is refused or lost: the fallback is for form.
        EngineError::Storage(failure.unwrap_or_else(|| {
            StoreError::io(&self.dir, "write the log")(std::io::Error::other("an earlier write failed"))
        }))
    }

    fn failure_state(&self) -> MutexGuard<'_, Option<(StoreError, bool)>> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `len` appended bytes as lost at once (the store cannot write); their position.
    /// While the state is being reset, they are counted lost with the rest once it is done.
    pub(super) fn lose(&self, pending: &mut Pending, len: u64) -> u64 {
        pending.appended += len;
        if !pending.resetting {
            pending.durable = pending.appended;
            self.durable.store(pending.appended, Ordering::Release);
            match pending.lost.back_mut() {
                Some(range) => range.1 = pending.appended,
                None => pending.lost.push_back((pending.appended - len, pending.appended)),
            }
        }
        pending.appended
    }

    /// Whether the change at `position` was lost to a failed write.
    pub(super) fn is_lost(pending: &Pending, position: u64) -> bool {
        pending.lost.iter().any(|(after, upto)| position > *after && position <= *upto)
    }

    /// The writer could not write: refuses changes, answers everyone waiting for the disk,
    /// resets the state to what is on disk, then retries until the log can be written again.
    /// Returns the position the writer goes on from, or `None` if the journal closed first.
    pub(super) fn fail_and_recover(&self, error: StoreError, log: &mut LogFile) -> Option<u64> {
        tracing::error!(%error, "the data dir cannot be written; changes are refused until it can");
        *self.failure_state() = Some((error.clone(), false));
        {
            let mut pending = self.pending();
            self.failed.store(true, Ordering::Release);
            self.failures.fetch_add(1, Ordering::AcqRel);
            pending.resetting = true;
            pending.bytes.clear();
            pending.rotate = None;
        }
        // Nothing not on disk is shown meanwhile: whoever waits for it waits on.
        self.reset_to_disk(log, &error);
        let waiting = {
            let mut pending = self.pending();
            pending.resetting = false;
            let (durable, appended) = (pending.durable, pending.appended);
            pending.lost.push_back((durable, appended));
            if pending.lost.len() > LOST_RANGES {
                pending.lost.pop_front();
            }
            pending.durable = appended;
            self.durable.store(appended, Ordering::Release);
            pending.waiters.take_all()
        };
        waiting.into_iter().for_each(Waker::wake);
        let (current, changed) = &self.generation;
        drop(current.lock().unwrap_or_else(PoisonError::into_inner));
        changed.notify_all();
        loop {
            {
                let pending = self.pending();
                let (pending, _) = self
                    .wake
                    .wait_timeout_while(pending, RETRY_EVERY, |pending| !pending.closed)
                    .unwrap_or_else(PoisonError::into_inner);
                if pending.closed {
                    return None;
                }
            }
            if matches!(&*self.failure_state(), Some((_, true))) {
                continue; // the disk could not be read back: only a restart helps
            }
            match log.reset_to_durable() {
                Ok(()) => break,
                Err(error) => *self.failure_state() = Some((error, false)),
            }
        }
        let mut pending = self.pending();
        self.failed.store(false, Ordering::Release);
        pending.durable = pending.appended;
        self.durable.store(pending.appended, Ordering::Release);
        tracing::info!("the data dir accepts writes again; changes are accepted");
        Some(pending.appended)
    }

    /// Resets the state to what is on disk: the files up to what the log last synced.
    fn reset_to_disk(&self, log: &LogFile, error: &StoreError) {
        match recovery::recover_until(&self.dir, log.generation(), log.end()) {
            Ok(recovered) => {
                self.reserved.store(recovered.max_token, Ordering::Release);
                if let Some(state) = self.state() {
                    state.reset(recovered, error);
                }
            }
            Err(unreadable) => {
                tracing::error!(%unreadable, "the data dir cannot be read back; every request is refused until a restart");
                *self.failure_state() = Some((unreadable, true));
            }
        }
    }
}
