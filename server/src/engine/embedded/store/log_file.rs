//! The log file being appended to, zero-filled ahead of its end.
//!
//! The file is zero-filled ahead of its end, a stretch at a time, so a commit overwrites blocks
//! the file already has: its `fdatasync` then writes the data and flushes, with no file size or
//! block allocation to write as well (measured on a virtual disk: 0.6x the CPU and 0.65x the
//! wall time of an appending commit). Recovery reads the zeros as the end of the log.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::records;
use super::StoreError;

/// The least a log is zero-filled ahead of its end, and the unit it is zero-filled in.
const MIN_AHEAD: u64 = 64 << 10;

/// The most a log is zero-filled ahead of its end: a quarter of the compaction threshold (a log
/// is rotated at about that size), between 64 KiB and 4 MiB.
pub(super) fn max_ahead(compact_after: u64) -> u64 {
    (compact_after / 4).clamp(MIN_AHEAD, 4 << 20).next_multiple_of(MIN_AHEAD)
}

/// A log file being appended to.
pub(super) struct LogFile {
    file: File,
    path: PathBuf,
    /// Where the next record goes.
    end: u64,
    /// The file is zero-filled up to here.
    zeroed: u64,
    /// The most an extension zero-fills ahead of the end.
    pub(super) max_ahead: u64,
}

impl LogFile {
    /// Creates the log of `generation`, with its header on disk.
    pub(super) fn create(dir: &Path, generation: u64, max_ahead: u64) -> Result<LogFile, StoreError> {
        let path = dir.join(format!("log-{generation:020}.db"));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(StoreError::io(&path, "create"))?;
        let header = records::header();
        file.write_all_at(&header, 0)
            .and_then(|()| file.sync_all())
            .map_err(StoreError::io(&path, "write the log header"))?;
        sync_dir(dir)?;
        let end = header.len() as u64;
        Ok(LogFile { file, path, end, zeroed: end, max_ahead })
    }

    /// Writes `bytes` after the last record and waits until they are on disk.
    pub(super) fn write_synced(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let end = self.end + bytes.len() as u64;
        self.file.write_all_at(bytes, self.end).map_err(StoreError::io(&self.path, "write the log"))?;
        if end > self.zeroed {
            // Zero ahead in the same sync, so only this commit pays for the new blocks. It zeroes
            // as much as the log already holds (within bounds): a log that stays small, as on a
            // server just started, writes little; a busy one extends rarely.
            let zeroed = (end + end.clamp(MIN_AHEAD, self.max_ahead)).next_multiple_of(MIN_AHEAD);
            let zeros = vec![0; (zeroed - end) as usize];
            self.file.write_all_at(&zeros, end).map_err(StoreError::io(&self.path, "zero-fill the log"))?;
            self.zeroed = zeroed;
        }
        self.file.sync_data().map_err(StoreError::io(&self.path, "sync the log"))?;
        self.end = end;
        Ok(())
    }
}

/// Syncs a directory, so that files created or renamed in it stay after a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io(dir, "sync the directory"))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::records::HEADER_LEN;
    use super::super::recovery::recover;
    use super::super::tests::{hold, temp_dir};
    use super::*;

    #[test]
    fn a_log_is_zero_filled_ahead_and_the_zeros_end_it() {
        let dir = temp_dir("zeros");
        fs::create_dir_all(&dir).unwrap();
        let mut log = LogFile::create(&dir, 1, 64 << 10).unwrap();
        let mut bytes = Vec::new();
        hold("a", 1).encode_into(&mut bytes);
        log.write_synced(&bytes).unwrap();
        let path = dir.join("log-00000000000000000001.db");
        let on_disk = fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), 128 << 10, "zero-filled at least 64 KiB ahead, to a multiple of 64 KiB");
        assert!(on_disk[HEADER_LEN + bytes.len()..].iter().all(|&byte| byte == 0));
        let (recovered, _) = recover(&dir).unwrap();
        assert_eq!(recovered.slots.keys().collect::<Vec<_>>(), vec!["a"]);

        // A second record cut short by a crash, in the zero-filled space: dropped.
        let mut second = Vec::new();
        hold("b", 2).encode_into(&mut second);
        let mut torn = on_disk.clone();
        let at = HEADER_LEN + bytes.len();
        torn[at..at + second.len() / 2].copy_from_slice(&second[..second.len() / 2]);
        fs::write(&path, &torn).unwrap();
        let (recovered, _) = recover(&dir).unwrap();
        assert_eq!(recovered.slots.len(), 1, "the cut record is dropped");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_log_is_zero_filled_ahead_by_as_much_as_it_holds() {
        let dir = temp_dir("ahead");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log-00000000000000000001.db");
        let mut log = LogFile::create(&dir, 1, 4 << 20).unwrap();
        log.write_synced(&[1; 100]).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 128 << 10, "a small log: 64 KiB ahead, rounded up");
        log.write_synced(&[1; 200 << 10]).unwrap();
        let len = fs::metadata(&path).unwrap().len();
        assert!(len >= 2 * log.end && len < 2 * log.end + (64 << 10), "as much again as it holds: {len}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
