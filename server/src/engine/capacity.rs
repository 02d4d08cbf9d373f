//! Caps on what clients can make the server hold: locks (slots in the table, held or keeping a
//! value) and queued waiters. Reaching one answers `too_many` at once, instead of the process
//! running out of memory or file descriptors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::EngineError;

/// The caps of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// The most locks (held, or keeping a value for the next holder) at once.
    pub max_locks: usize,
    /// The most requests queued for locks at once (each holds a connection open).
    pub max_waiters: usize,
}

impl Default for Capacity {
    /// No caps.
    fn default() -> Self {
        Capacity { max_locks: usize::MAX, max_waiters: usize::MAX }
    }
}

/// How many of something are in use, against a cap.
#[derive(Debug, Default)]
pub struct Counter {
    used: Arc<AtomicUsize>,
}

/// One unit of a [`Counter`], given back when dropped.
#[derive(Debug)]
pub struct Permit {
    used: Arc<AtomicUsize>,
}

impl Counter {
    /// A unit if fewer than `max` are in use; `too_many` naming `what` otherwise.
    pub fn take(&self, max: usize, what: &str) -> Result<Permit, EngineError> {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| (used < max).then_some(used + 1));
        match taken {
            Ok(_) => Ok(Permit { used: self.used.clone() }),
            Err(_) => Err(EngineError::TooMany(format!(
                "this server already holds {max} {what}, its cap; retry later, or raise the cap"
            ))),
        }
    }

    /// How many are in use.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.used.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_capped_and_given_back() {
        let counter = Counter::default();
        let first = counter.take(2, "waiters").unwrap();
        let _second = counter.take(2, "waiters").unwrap();
        assert!(matches!(counter.take(2, "waiters"), Err(EngineError::TooMany(_))));
        drop(first);
        assert_eq!(counter.used(), 1);
        assert!(counter.take(2, "waiters").is_ok());
    }
}
