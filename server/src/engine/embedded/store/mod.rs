//! The durable store: a write-ahead log of [`Record`]s with group commit, snapshots, and
//! recovery.
//!
//! The in-memory lock table stays the source of truth; every change to it appends the new
//! state of what changed to the [`Journal`], and the request that made the change is answered
//! only once [`Journal::wait_written`] says its bytes are on disk. One writer thread
//! (`writer.rs`) writes and `fdatasync`s whatever has accumulated since its last flush, as one
//! frame, so concurrent changes share one sync (group commit). When a write fails, `failure.rs`
//! takes over: nothing not on disk survives, and the writer retries until the disk takes writes.
//!
//! Files in the data dir, by generation `G` (their layout is `format.rs`):
//! - `snapshot-G.db`: the whole state, at least as new as every log older than `G`, ended by a
//!   trailer. Written to a `.tmp` file, synced, then renamed into place (`compaction.rs`).
//! - `log-G.db`: frames of records appended after generation `G` began (`log_file.rs`).
//! - `LOCK`: held with an exclusive file lock while a server uses the dir.
//!
//! Recovery (`recovery.rs`) loads the newest snapshot and replays every log of its generation
//! or later. A log is zero-filled ahead of its last frame, so zeros end it. A frame torn by a
//! crash at the end of the newest log is dropped: it was never acknowledged. Anything else that
//! does not read stops the server with a message naming the file; `repair.rs` salvages such a
//! dir when the operator asks.

mod compaction;
#[cfg(test)]
mod damage_tests;
mod disk_wait;
mod error;
mod failure;
mod format;
mod log_file;
mod records;
mod recovery;
mod repair;
mod writer;

pub use error::StoreError;
pub use records::{HeldBy, Record};
pub use recovery::Recovered;
pub use repair::{repair, Repaired};

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use crate::engine::Result;
use disk_wait::DiskWaiters;
use log_file::{max_ahead, LogFile};
use writer::OnDisk;

/// Tokens are reserved in blocks this large: the next start issues tokens above the block.
const TOKEN_BLOCK: u64 = 1 << 20;

/// What the journal needs of the state it keeps durable (the lock table).
pub trait DurableState: Send + Sync {
    /// Emits the whole state as records, for a snapshot.
    fn snapshot(&self, emit: &mut dyn FnMut(&Record));
    /// After a failed write: waits until no change is in progress, then replaces the whole
    /// state with `recovered`, what is on disk. Parked requests are answered with `failure`.
    fn reset(&self, recovered: Recovered, failure: &StoreError);
}

/// The write-ahead log of one data dir.
pub struct Journal {
    dir: PathBuf,
    pending: Mutex<Pending>,
    /// Wakes the writer thread.
    wake: Condvar,
    /// Tokens up to this are reserved durably (or will be, before any is answered). Read
    /// without the pending mutex on every grant; raised only under it.
    reserved: AtomicU64,
    /// How far the log is on disk: `Pending::durable`, readable without the mutex.
    durable: AtomicU64,
    /// Set while the store cannot write (see `failure.rs`): changes are refused.
    failed: AtomicBool,
    /// How many writes have failed since the start: work that spans one (a snapshot) is void.
    failures: AtomicU64,
    /// Why, while `failed`; set when even the state on disk cannot be read back, for good.
    failure: Mutex<Option<(StoreError, bool)>>,
    /// The generation the writer appends to, and its waiters (compaction).
    generation: (Mutex<u64>, Condvar),
    compact: Mutex<mpsc::Sender<()>>,
    /// A log is compacted once it has grown by this many bytes.
    compact_after: u64,
    /// The state kept durable, for snapshots and for resets after a failed write.
    state: OnceLock<Weak<dyn DurableState>>,
    /// Held for the life of the journal: the dir's exclusive lock.
    _lock: File,
}

struct Pending {
    /// Appended, not yet handed to the writer.
    bytes: Vec<u8>,
    /// How many records `bytes` holds (for `lockserver_journal_batch_records`).
    records: usize,
    /// Position after the last appended byte.
    appended: u64,
    /// Switch to log generation `.1` at position `.0`.
    rotate: Option<(u64, u64)>,
    /// Set by [`Journal::close`]: the writer flushes what is left and ends.
    closed: bool,
    /// How far the log is on disk, as a position in the stream of appended bytes.
    durable: u64,
    /// Requests waiting for a position to be on disk (each registers the position appended
    /// when it asked, under this mutex). Only those a sync covered are woken.
    waiters: DiskWaiters,
    /// Set while the writer sleeps: only then does an append need to wake it.
    writer_idle: bool,
    /// Set while the state is reset to the disk after a failed write.
    resetting: bool,
    /// Positions appended but lost to a failed write: `(durable, appended]` at each failure,
    /// the most recent last. A request waiting for one of them is told its change failed.
    lost: VecDeque<(u64, u64)>,
}

impl Journal {
    /// Opens (creating if needed) the data dir, takes its lock, recovers its state, and
    /// starts the writer and compaction threads.
    pub fn open(dir: &Path, compact_after: u64) -> Result<(Arc<Journal>, Recovered), StoreError> {
        let lock = lock_dir(dir)?;
        let (recovered, generation) = recovery::recover(dir)?;
        let generation = generation + 1;
        let log = LogFile::create(dir, generation, recovered.max_token, max_ahead(compact_after))?;
        let (compact_tx, compact_rx) = mpsc::channel();
        let journal = Arc::new(Journal {
            dir: dir.to_path_buf(),
            pending: Mutex::new(Pending {
                bytes: Vec::new(),
                records: 0,
                appended: 0,
                rotate: None,
                closed: false,
                durable: 0,
                waiters: DiskWaiters::default(),
                writer_idle: false,
                resetting: false,
                lost: VecDeque::new(),
            }),
            wake: Condvar::new(),
            reserved: AtomicU64::new(recovered.max_token),
            durable: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            failure: Mutex::new(None),
            generation: (Mutex::new(generation), Condvar::new()),
            compact: Mutex::new(compact_tx),
            compact_after,
            state: OnceLock::new(),
            _lock: lock,
        });
        let writer = journal.clone();
        std::thread::Builder::new()
            .name("lockserver-journal".into())
            .spawn(move || writer.run_writer(log))
            .map_err(StoreError::io(dir, "start the journal writer"))?;
        let compactor = Arc::downgrade(&journal);
        std::thread::Builder::new()
            .name("lockserver-compact".into())
            .spawn(move || {
                while compact_rx.recv().is_ok() {
                    let Some(journal) = compactor.upgrade() else { return };
                    if let Err(error) = journal.compact() {
                        tracing::error!(%error, "compaction failed; the log keeps growing until the next try");
                    }
                }
            })
            .map_err(StoreError::io(dir, "start compaction"))?;
        Ok((journal, recovered))
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the state kept durable, and compacts once (a fresh snapshot at start-up).
    pub fn attach(&self, state: Weak<dyn DurableState>) {
        let _ = self.state.set(state);
        self.request_compaction();
    }

    fn state(&self) -> Option<Arc<dyn DurableState>> {
        self.state.get().and_then(Weak::upgrade)
    }

    fn request_compaction(&self) {
        let _ = self.compact.lock().unwrap_or_else(PoisonError::into_inner).send(());
    }

    /// Appends a record; it is on disk once the log is durable up to the position returned
    /// ([`wait_for`](Self::wait_for), [`sync`](Self::sync)). While the store cannot write, the
    /// record is dropped at once and its position counted lost.
    pub fn append(&self, record: &Record) -> u64 {
        self.append_all(std::slice::from_ref(record))
    }

    /// Appends records that must be recovered together or not at all (a multi-lock's holds):
    /// they go into one frame of the log.
    pub fn append_all(&self, records: &[Record]) -> u64 {
        let mut encoded = Vec::with_capacity(64 * records.len());
        for record in records {
            record.encode_into(&mut encoded);
        }
        let mut pending = self.pending();
        if self.failed.load(Ordering::Acquire) {
            return self.lose(&mut pending, encoded.len() as u64);
        }
        pending.appended += encoded.len() as u64;
        pending.bytes.extend_from_slice(&encoded);
        pending.records += records.len();
        let (position, idle) = (pending.appended, pending.writer_idle);
        drop(pending);
        if idle {
            self.wake.notify_one();
        }
        position
    }

    /// Called with every new fencing token before it can be answered: keeps a durable
    /// reservation well ahead of it, so no token is ever issued twice across restarts.
    pub fn note_token(&self, token: u64) {
        if token + TOKEN_BLOCK / 2 <= self.reserved.load(Ordering::Acquire) {
            return; // the common case: well inside the current reservation
        }
        let mut pending = self.pending();
        if token + TOKEN_BLOCK / 2 > self.reserved.load(Ordering::Acquire)
            && !self.failed.load(Ordering::Acquire)
        {
            let ceiling = token + TOKEN_BLOCK;
            let mut encoded = Vec::new();
            Record::Reserve { ceiling }.encode_into(&mut encoded);
            pending.appended += encoded.len() as u64;
            pending.bytes.extend_from_slice(&encoded);
            // Raised after the record is queued, under the mutex: no token above the old
            // ceiling can be journaled before its reservation.
            self.reserved.store(ceiling, Ordering::Release);
        }
    }

    /// How far the log is on disk, as a position of [`append`](Self::append).
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Resolves once everything appended so far is on disk; the storage error if it could not
    /// be written.
    #[cfg(test)]
    pub async fn sync(&self) -> Result<()> {
        match OnDisk::new(self, None).await {
            true => Ok(()),
            false => Err(self.refusal()),
        }
    }

    /// Resolves once the change at `position` is on disk; the storage error if a failed write
    /// lost it.
    pub async fn wait_written(&self, position: u64) -> Result<()> {
        match OnDisk::new(self, Some(position)).await {
            true => Ok(()),
            false => Err(self.refusal()),
        }
    }

    /// Resolves once the log is on disk up to `position`, or a failed write passed it.
    pub async fn wait_for(&self, position: u64) {
        OnDisk::new(self, Some(position)).await;
    }

    /// Blocks this (non-async) thread until the log is on disk up to `position`; false if a
    /// write failed since `failures` were counted (what was read before may be lost).
    fn wait_durable(&self, position: u64, failures: u64) -> bool {
        loop {
            if self.failures.load(Ordering::Acquire) != failures {
                return false;
            }
            let pending = self.pending();
            if pending.durable >= position && !pending.resetting {
                return !Self::is_lost(&pending, position)
                    && self.failures.load(Ordering::Acquire) == failures;
            }
            drop(pending);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Flushes what is appended and stops the writer, releasing the data dir once the last
    /// handle is dropped.
    pub fn close(&self) {
        self.pending().closed = true;
        self.wake.notify_one();
    }
}

/// Creates the data dir if needed and takes its exclusive lock, held while the file is open.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    fs::create_dir_all(dir).map_err(StoreError::io(dir, "create the data dir"))?;
    let lock_path = dir.join("LOCK");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(StoreError::io(&lock_path, "open"))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(StoreError::InUse { path: dir.to_path_buf() }),
        Err(TryLockError::Error(e)) => Err(StoreError::io(&lock_path, "lock")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn hold(resource: &str, token: u64) -> Record {
        Record::Hold {
            resource: resource.into(),
            owner: "o".into(),
            token,
            deadline_ms: None,
            lease: None,
            value: None,
        }
    }

    pub(super) fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lockserver-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn appended_records_survive_a_reopen() {
        let dir = temp_dir("reopen");
        {
            let (journal, recovered) = Journal::open(&dir, 1 << 20).unwrap();
            assert!(recovered.slots.is_empty());
            journal.append(&hold("a", 5));
            journal.note_token(5);
            journal.append(&hold("b", 6));
            journal.append(&Record::Free { resource: "a".into(), value: None, value_deadline_ms: None });
            journal.sync().await.unwrap();
            let second = Journal::open(&dir, 1 << 20).map(|_| ()).unwrap_err();
            assert!(matches!(second, StoreError::InUse { .. }), "{second}");
            journal.close();
        }
        // The threads hold the journal alive only weakly or until their next wake-up: wait for
        // the lock to be free again.
        let (_, recovered) = loop {
            match Journal::open(&dir, 1 << 20) {
                Ok(opened) => break opened,
                Err(StoreError::InUse { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                Err(error) => panic!("{error}"),
            }
        };
        assert_eq!(recovered.slots.keys().collect::<Vec<_>>(), vec!["b"]);
        assert!(recovered.max_token >= 5 + TOKEN_BLOCK, "the reservation is above every token");
        fs::remove_dir_all(&dir).unwrap();
    }
}
