//! Caps on what clients can make the server hold: locks (slots in the table, held or keeping a
//! value), queued waiters, and the memory both take (names, owners and values included, so that
//! large values cannot exhaust memory under the count caps). Reaching one answers `too_many` at
//! once, instead of the process running out of memory or file descriptors.

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
    /// The most bytes that locks and queued waiters may take, as [`footprint`] counts them.
    pub max_memory: usize,
}

/// What the table spends on one lock beyond its name, owner and value: its slot, the tree's
/// entry, the name's shared header and the allocator's rounding (measured: 231 B of RSS per lock
/// with 21 bytes of strings, in the bench's `caps` scenario).
pub const LOCK_OVERHEAD: usize = 224;

/// What one queued request costs beyond its owner and value: its place in the queue, its reply
/// channel, and the connection it keeps open with that connection's buffers (measured: 20.4 KB
/// of RSS per parked waiter, in the bench's `caps` scenario).
pub const WAITER_OVERHEAD: usize = 24 * 1024;

/// The bytes a lock or waiter counts against `max_memory`: `overhead` plus its strings.
pub fn footprint(overhead: usize, strings: &[usize]) -> usize {
    strings.iter().fold(overhead, |sum, len| sum.saturating_add(*len))
}

impl Default for Capacity {
    /// No caps.
    fn default() -> Self {
        Capacity { max_locks: usize::MAX, max_waiters: usize::MAX, max_memory: usize::MAX }
    }
}

/// How many of something are in use, against a cap.
#[derive(Debug, Default)]
pub struct Counter {
    used: Arc<AtomicUsize>,
}

/// Units of a [`Counter`], given back when dropped.
#[derive(Debug)]
pub struct Permit {
    used: Arc<AtomicUsize>,
    amount: usize,
}

impl Counter {
    /// A unit if fewer than `max` are in use; `too_many` naming `what` otherwise.
    pub fn take(&self, max: usize, what: &str) -> Result<Permit, EngineError> {
        self.take_many(1, max, what)
    }

    /// `amount` units if that leaves no more than `max` in use; `too_many` naming `what`
    /// otherwise.
    pub fn take_many(&self, amount: usize, max: usize, what: &str) -> Result<Permit, EngineError> {
        let taken = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(amount).filter(|total| *total <= max)
        });
        match taken {
            Ok(_) => Ok(Permit { used: self.used.clone(), amount }),
            Err(_) => Err(too_many(max, what)),
        }
    }

    /// Fails, as [`Self::take_many`] would, unless `amount` more fit under `max`; takes nothing.
    pub fn check(&self, amount: usize, max: usize, what: &str) -> Result<(), EngineError> {
        match self.used().checked_add(amount) {
            Some(total) if total <= max => Ok(()),
            _ => Err(too_many(max, what)),
        }
    }

    /// Counts a change in what is in use that is not held by a [`Permit`]: `after` units where
    /// there were `before`.
    pub fn adjust(&self, before: usize, after: usize) {
        if after > before {
            self.used.fetch_add(after - before, Ordering::AcqRel);
        } else if before > after {
            self.used.fetch_sub(before - after, Ordering::AcqRel);
        }
    }

    /// How many are in use.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// The refusal when `max` of `what` are in use.
fn too_many(max: usize, what: &str) -> EngineError {
    EngineError::TooMany(format!(
        "this server already holds {max} {what}, its cap; retry later, or raise the cap"
    ))
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.used.fetch_sub(self.amount, Ordering::AcqRel);
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

    #[test]
    fn amounts_are_capped_checked_and_adjusted() {
        let bytes = Counter::default();
        let charge = bytes.take_many(600, 1000, "bytes").unwrap();
        assert!(bytes.check(400, 1000, "bytes").is_ok());
        assert!(matches!(bytes.take_many(401, 1000, "bytes"), Err(EngineError::TooMany(_))));
        bytes.adjust(0, 300);
        assert!(matches!(bytes.check(101, 1000, "bytes"), Err(EngineError::TooMany(_))));
        bytes.adjust(300, 100);
        drop(charge);
        assert_eq!(bytes.used(), 100);
    }
}
