//! Requests waiting for the journal to reach the disk, queued by the thread they wait on.
//!
//! A commit covers many requests at once (group commit). Waking each of them from the writer
//! thread would cost one cross-thread wake-up apiece (a system call, and often an interrupt to
//! an idle CPU), about as much as handling the request itself. So the writer wakes only the
//! first covered waiter of each thread; that one, running on its own thread, wakes the others
//! covered there ([`DiskWaiters::covered`]), which is a local wake-up and nearly free.

use std::collections::VecDeque;
use std::task::Waker;
use std::thread::{self, ThreadId};

/// One waiting task: woken once the log is on disk up to `target`.
struct Waiter {
    target: u64,
    id: u64,
    waker: Waker,
}

/// The waiters of one thread, in order of target (each thread registers its waiters one at a
/// time, and targets only grow).
struct ThreadQueue {
    thread: ThreadId,
    waiting: VecDeque<Waiter>,
}

/// Where a waiter is registered, to find it again.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    thread: ThreadId,
    id: u64,
}

/// The waiters of every thread. Kept under the journal's mutex, with the durable position.
#[derive(Default)]
pub struct DiskWaiters {
    queues: Vec<ThreadQueue>,
    next_id: u64,
}

impl DiskWaiters {
    /// Queues a task of the current thread to be woken once `target` is on disk.
    pub fn register(&mut self, target: u64, waker: &Waker) -> Ticket {
        let thread = thread::current().id();
        let id = self.next_id;
        self.next_id += 1;
        let at = match self.queues.iter().position(|queue| queue.thread == thread) {
            Some(at) => at,
            None => {
                // A thread seen for the first time: forget the idle queues of threads that may
                // be gone, so that the list holds only threads with waiters, plus this one.
                self.queues.retain(|queue| !queue.waiting.is_empty());
                self.queues.push(ThreadQueue { thread, waiting: VecDeque::new() });
                self.queues.len() - 1
            }
        };
        self.queues[at].waiting.push_back(Waiter { target, id, waker: waker.clone() });
        Ticket { thread, id }
    }

    /// Replaces the waker of a waiter still queued (a task polled again before its turn).
    pub fn refresh(&mut self, ticket: Ticket, waker: &Waker) {
        if let Some(waiter) =
            self.queue(ticket.thread).and_then(|queue| queue.iter_mut().find(|w| w.id == ticket.id))
        {
            waiter.waker.clone_from(waker);
        }
    }

    /// Removes a waiter that gives up; false if it was already taken to be woken.
    pub fn cancel(&mut self, ticket: Ticket) -> bool {
        let Some(queue) = self.queue(ticket.thread) else { return false };
        match queue.iter().position(|w| w.id == ticket.id) {
            Some(at) => queue.remove(at).is_some(),
            None => false,
        }
    }

    /// For the writer, once the log is on disk up to `durable`: the first covered waiter of each
    /// thread. Each wakes the rest of its thread's covered waiters when it runs.
    pub fn heads(&mut self, durable: u64) -> Vec<Waker> {
        let mut heads = Vec::new();
        for queue in &mut self.queues {
            if queue.waiting.front().is_some_and(|w| w.target <= durable) {
                heads.extend(queue.waiting.pop_front().map(|w| w.waker));
            }
        }
        heads
    }

    /// The waiters of the ticket's thread that `durable` covers, for the covered waiter that
    /// was woken to wake them.
    pub fn covered(&mut self, ticket: Ticket, durable: u64) -> Vec<Waker> {
        let mut covered = Vec::new();
        if let Some(queue) = self.queue(ticket.thread) {
            while queue.front().is_some_and(|w| w.target <= durable) {
                covered.extend(queue.pop_front().map(|w| w.waker));
            }
        }
        covered
    }

    /// Every waiter (the journal failed: all must see it).
    pub fn take_all(&mut self) -> Vec<Waker> {
        self.queues.drain(..).flat_map(|queue| queue.waiting).map(|w| w.waker).collect()
    }

    fn queue(&mut self, thread: ThreadId) -> Option<&mut VecDeque<Waiter>> {
        self.queues.iter_mut().find(|queue| queue.thread == thread).map(|queue| &mut queue.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_writer_wakes_one_waiter_per_thread_and_it_wakes_the_rest() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut waiters = DiskWaiters::default();
        let first = waiters.register(10, &waker);
        waiters.register(20, &waker);
        waiters.register(30, &waker);
        let other = thread::scope(|s| s.spawn(|| waiters.register(15, &waker)).join().unwrap());

        let heads = waiters.heads(25);
        assert_eq!(heads.len(), 2, "one per thread");
        assert_eq!(waiters.covered(first, 25).len(), 1, "the waiter at 20; 30 is not on disk yet");
        assert!(waiters.covered(other, 25).is_empty());
        assert!(!waiters.cancel(first), "already taken");
        assert_eq!(waiters.take_all().len(), 1, "the waiter at 30");
    }

    #[test]
    fn idle_queues_of_other_threads_are_forgotten() {
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut waiters = DiskWaiters::default();
        for target in 1..=3 {
            thread::scope(|s| s.spawn(|| waiters.register(target, &waker)).join().unwrap());
        }
        assert_eq!(waiters.queues.len(), 3);
        assert_eq!(waiters.heads(2).len(), 2);
        waiters.register(4, &waker);
        assert_eq!(waiters.queues.len(), 2, "the waiting thread's queue and this one");
    }
}
