//! Compaction: rotate to a new log generation, write a snapshot of the whole state for it,
//! then delete the files it makes redundant. Runs on its own thread; requests go on meanwhile,
//! since the snapshot source reads one shard of the lock table at a time.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use super::format::{encode_trailer, FileHeader, FileKind};
use super::log_file::sync_dir;
use super::records::Record;
use super::recovery::{list_files, StoreFile};
use super::{Journal, StoreError};

impl Journal {
    /// Rotates to a new log generation, writes a snapshot for it, and deletes what it makes
    /// redundant.
    pub(super) fn compact(&self) -> Result<(), StoreError> {
        let Some(state) = self.state() else { return Ok(()) };
        let failures = self.failures.load(Ordering::Acquire);
        if self.failed.load(Ordering::Acquire) {
            return Ok(()); // compacted once the store can write again
        }
        let (current, changed) = &self.generation;
        let next = *current.lock().unwrap_or_else(PoisonError::into_inner) + 1;
        {
            let mut pending = self.pending();
            pending.rotate = Some((pending.appended, next));
        }
        self.wake.notify_one();
        {
            let mut generation = current.lock().unwrap_or_else(PoisonError::into_inner);
            while *generation < next && !self.failed.load(Ordering::Acquire) {
                generation = changed.wait(generation).unwrap_or_else(PoisonError::into_inner);
            }
        }
        if *generation_now(current) < next {
            return Ok(()); // a write failed before the switch: the store says so itself
        }
        // Everything appended before the switch is in memory now, so the snapshot holds it.
        let temporary = self.dir.join(format!("snapshot-{next:020}.tmp"));
        let reserved = || self.reserved.load(Ordering::Acquire);
        write_snapshot(&temporary, next, reserved(), &mut |write| state.snapshot(write), &reserved)?;
        // The snapshot may hold changes still on their way to the log: it takes their place
        // only once they are durable, so that it never holds a change that was refused.
        let appended = self.pending().appended;
        if !self.wait_durable(appended, failures) {
            let _ = fs::remove_file(&temporary);
            return Ok(()); // a write failed meanwhile: the snapshot may hold a lost change
        }
        let snapshot = self.dir.join(format!("snapshot-{next:020}.db"));
        fs::rename(&temporary, &snapshot)
            .map_err(StoreError::io(&snapshot, "rename the snapshot into place"))?;
        sync_dir(&self.dir)?;
        for (kind, generation, path) in list_files(&self.dir)? {
            if generation < next && (kind == StoreFile::Log || kind == StoreFile::Snapshot) {
                fs::remove_file(&path).map_err(StoreError::io(&path, "remove"))?;
            }
        }
        sync_dir(&self.dir)
    }
}

/// Emits records to the writer it is given: what a snapshot holds.
pub(super) type Fill<'a> = dyn FnMut(&mut dyn FnMut(&Record)) + 'a;

/// Writes a snapshot of `generation` to `temporary` and syncs it: the records `fill` emits,
/// then the token reservation (read once they are all written, so that it covers every token
/// they hold), then the trailer.
pub(super) fn write_snapshot(
    temporary: &Path,
    generation: u64,
    reserved_now: u64,
    fill: &mut Fill<'_>,
    reserved_after: &dyn Fn() -> u64,
) -> Result<(), StoreError> {
    let file = File::create(temporary).map_err(StoreError::io(temporary, "create"))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let header = FileHeader { kind: FileKind::Snapshot, generation, reserved: reserved_now };
    let mut failed = out.write_all(&header.encode()).err();
    let mut buffer = Vec::with_capacity(4096);
    let (mut count, mut crc) = (0u64, crc32fast::Hasher::new());
    let mut write = |record: &Record| {
        buffer.clear();
        record.encode_into(&mut buffer);
        count += 1;
        crc.update(&buffer);
        if failed.is_none() {
            failed = out.write_all(&buffer).err();
        }
    };
    fill(&mut write);
    write(&Record::Reserve { ceiling: reserved_after() });
    let trailer = encode_trailer(count, crc.finalize());
    if let Some(error) = failed.or_else(|| out.write_all(&trailer).err()) {
        let _ = fs::remove_file(temporary);
        return Err(StoreError::io(temporary, "write the snapshot")(error));
    }
    let file =
        out.into_inner().map_err(|e| StoreError::io(temporary, "write the snapshot")(e.into_error()))?;
    file.sync_all().map_err(StoreError::io(temporary, "sync the snapshot"))
}

/// The generation the writer appends to now.
fn generation_now(current: &std::sync::Mutex<u64>) -> std::sync::MutexGuard<'_, u64> {
    current.lock().unwrap_or_else(PoisonError::into_inner)
}
