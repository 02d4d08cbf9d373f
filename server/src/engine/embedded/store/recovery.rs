//! Recovery at start-up: the newest snapshot, then every log of its generation or later,
//! replayed into the state the lock table is rebuilt from.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::format::{
    read_frame, read_header, split_trailer, torn_at, FileKind, Frame, Header, HeaderError, HEADER_LEN,
    LEGACY_HEADER_LEN,
};
use super::log_file::MIN_AHEAD;
use super::records::{claimed_len, read_record, Read, Record};
use super::StoreError;

/// What recovery found: the state to rebuild the lock table from.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The last record of each resource: `Hold` or `Free`.
    pub slots: HashMap<String, Record>,
    /// Live leases: id to (ttl, deadline), in milliseconds.
    pub leases: HashMap<String, (u64, u64)>,
    /// Every token issued or reserved before is at most this.
    pub max_token: u64,
}

impl Recovered {
    pub(super) fn apply(&mut self, record: Record) {
        match record {
            Record::Hold { ref resource, token, .. } => {
                self.max_token = self.max_token.max(token);
                self.slots.insert(resource.clone(), record);
            }
            Record::Held { ref resource, ref holders, .. } => {
                let highest = holders.iter().map(|holder| holder.token).max().unwrap_or(0);
                self.max_token = self.max_token.max(highest);
                self.slots.insert(resource.clone(), record);
            }
            Record::Free { ref resource, ref value, .. } => {
                if value.is_some() {
                    self.slots.insert(resource.clone(), record);
                } else {
                    self.slots.remove(resource);
                }
            }
            Record::Lease { id, ttl_ms, deadline_ms } => {
                self.leases.insert(id, (ttl_ms, deadline_ms));
            }
            Record::LeaseGone { id } => {
                self.leases.remove(&id);
            }
            Record::Reserve { ceiling } => self.max_token = self.max_token.max(ceiling),
        }
    }
}

/// The kinds of file the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoreFile {
    Snapshot,
    Log,
    /// A snapshot or log being created: never relied on.
    Temporary,
}

/// The store's files in `dir`, by kind and generation.
pub(super) fn list_files(dir: &Path) -> Result<Vec<(StoreFile, u64, PathBuf)>, StoreError> {
    let entries = fs::read_dir(dir).map_err(StoreError::io(dir, "list the data dir"))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::io(dir, "list the data dir"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let parsed = [
            ("snapshot-", ".db", StoreFile::Snapshot),
            ("log-", ".db", StoreFile::Log),
            ("snapshot-", ".tmp", StoreFile::Temporary),
            ("log-", ".tmp", StoreFile::Temporary),
        ]
        .into_iter()
        .find_map(|(prefix, suffix, kind)| {
            let generation = name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()?;
            Some((kind, generation))
        });
        if let Some((kind, generation)) = parsed {
            files.push((kind, generation, entry.path()));
        }
    }
    files.sort_by_key(|(kind, generation, _)| (*generation, *kind == StoreFile::Log));
    Ok(files)
}

/// Loads the newest snapshot and replays the logs after it; returns the state and the
/// newest generation seen. Refuses a dir that a crash cannot explain: a damaged or cut file, a
/// missing snapshot or log, a log shorter than what it held.
pub(super) fn recover(dir: &Path) -> Result<(Recovered, u64), StoreError> {
    recover_files(dir, None)
}

/// What is on disk while the journal runs, after a failed write: as [`recover`], with the log
/// of `generation` read only up to `end` (what it last synced), and unfinished files left to
/// whoever is writing them.
pub(super) fn recover_until(dir: &Path, generation: u64, end: u64) -> Result<Recovered, StoreError> {
    recover_files(dir, Some((generation, end))).map(|(recovered, _)| recovered)
}

fn recover_files(dir: &Path, live: Option<(u64, u64)>) -> Result<(Recovered, u64), StoreError> {
    let files = list_files(dir)?;
    let mut recovered = Recovered::default();
    let newest = files.iter().map(|(_, generation, _)| *generation).max().unwrap_or(0);
    let base = files
        .iter()
        .filter(|(kind, _, _)| *kind == StoreFile::Snapshot)
        .map(|(_, generation, _)| *generation)
        .max()
        .unwrap_or(0);
    let logs: Vec<&(StoreFile, u64, PathBuf)> = files
        .iter()
        .filter(|(kind, generation, _)| *kind == StoreFile::Log && *generation >= base)
        .filter(|(_, generation, _)| live.is_none_or(|(current, _)| *generation <= current))
        .collect();
    // The logs from the snapshot on must all be there: the first is the snapshot's own
    // generation (or 1, from an empty start), and none is missing after it.
    for (expected, (_, generation, path)) in (base.max(1)..).zip(&logs) {
        if *generation != expected {
            let missing = dir.join(format!("log-{expected:020}.db"));
            return Err(StoreError::Damaged {
                path: missing,
                problem: format!(
                    "is missing, yet {} is there (a snapshot or log was deleted)",
                    path.display()
                ),
            });
        }
    }
    for (kind, generation, path) in &files {
        match kind {
            StoreFile::Temporary if live.is_none() => {
                // An unfinished snapshot or log: never renamed into place, so never relied on.
                fs::remove_file(path).map_err(StoreError::io(path, "remove an unfinished file"))?;
            }
            StoreFile::Snapshot if *generation == base => replay_snapshot(path, *generation, &mut recovered)?,
            StoreFile::Log if *generation >= base => match live {
                Some((current, end)) if *generation == current => {
                    replay_log(path, *generation, LogEnd::SyncedTo(end as usize), &mut recovered)?
                }
                Some((current, _)) if *generation > current => {}
                _ => {
                    let end = if *generation == newest { LogEnd::Newest } else { LogEnd::Older };
                    replay_log(path, *generation, end, &mut recovered)?
                }
            },
            _ => {}
        }
    }
    Ok((recovered, newest))
}

/// Reads a whole store file, and its header (checked against its kind and generation).
fn read_file(path: &Path, kind: FileKind, generation: u64) -> Result<(Vec<u8>, Header), StoreError> {
    let bytes = fs::read(path).map_err(StoreError::io(path, "read"))?;
    let damaged = |problem: &str| StoreError::Damaged { path: path.to_path_buf(), problem: problem.into() };
    let header = read_header(&bytes).map_err(|error| match error {
        HeaderError::Version(_) => {
            StoreError::Format { path: path.to_path_buf(), problem: error.to_string() }
        }
        _ => damaged(&error.to_string()),
    })?;
    if let Header::Current(header) = &header {
        if header.kind != kind || header.generation != generation {
            return Err(damaged("its header names another file (a file was renamed or copied)"));
        }
    }
    Ok((bytes, header))
}

/// Applies a snapshot: every record, then a trailer that counts them and checks their bytes.
fn replay_snapshot(path: &Path, generation: u64, recovered: &mut Recovered) -> Result<(), StoreError> {
    let (bytes, header) = read_file(path, FileKind::Snapshot, generation)?;
    let Header::Current(header) = header else { return replay_legacy(path, &bytes, false, recovered) };
    let damaged = |problem: String| StoreError::Damaged { path: path.to_path_buf(), problem };
    let Some((body, count, checksum_matches)) = split_trailer(&bytes[HEADER_LEN..]) else {
        return Err(damaged("has no trailer: it was cut short (or is corrupt at its end)".into()));
    };
    if !checksum_matches {
        return Err(damaged("is corrupt: its records do not match its trailer's checksum".into()));
    }
    let (mut at, mut seen) = (0, 0u64);
    while at < body.len() {
        match read_record(&body[at..]) {
            Read::Record(record, len) => {
                recovered.apply(record);
                at += len;
                seen += 1;
            }
            _ => return Err(damaged(format!("corrupt record at byte {}", HEADER_LEN + at))),
        }
    }
    if seen != count {
        return Err(damaged(format!("holds {seen} records, its trailer says {count}")));
    }
    recovered.max_token = recovered.max_token.max(header.reserved);
    Ok(())
}

/// What is known of where a log ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogEnd {
    /// A log before the newest: it ended cleanly when the next one began.
    Older,
    /// The newest log: its last commit may have been torn by a crash.
    Newest,
    /// The log being written, read back after a failed write: trusted up to what it last synced.
    SyncedTo(usize),
}

/// Applies a log: its frames, up to the zeros that end it. The newest log may end in a frame
/// that a crash tore (dropped: it was never acknowledged); anything else is refused.
fn replay_log(
    path: &Path,
    generation: u64,
    end: LogEnd,
    recovered: &mut Recovered,
) -> Result<(), StoreError> {
    let (bytes, header) = read_file(path, FileKind::Log, generation)?;
    let Header::Current(header) = header else { return replay_legacy(path, &bytes, true, recovered) };
    recovered.max_token = recovered.max_token.max(header.reserved);
    let damaged = |problem: String| StoreError::Damaged { path: path.to_path_buf(), problem };
    let bytes = match end {
        LogEnd::SyncedTo(synced) => &bytes[..synced.min(bytes.len())],
        _ => &bytes[..],
    };
    let mut at = HEADER_LEN;
    loop {
        match read_frame(&bytes[at..]) {
            Frame::Whole(records, len) => {
                records.into_iter().for_each(|record| recovered.apply(record));
                at += len;
            }
            Frame::Bad { .. } if bytes[at..].iter().all(|&byte| byte == 0) => break,
            Frame::Bad { .. } if matches!(end, LogEnd::SyncedTo(_)) => {
                return Err(damaged(format!("corrupt frame at byte {at}, before what was last synced")));
            }
            Frame::Bad { claimed_end } => {
                if claimed_end.is_some_and(|end| at + end > bytes.len()) {
                    return Err(damaged(format!(
                        "the frame at byte {at} runs past the end of the file: it was cut short"
                    )));
                }
                if end == LogEnd::Newest && torn_at(bytes, at, claimed_end) {
                    tracing::warn!(file = %path.display(), offset = at, "dropping a commit cut short by a crash");
                    break;
                }
                return Err(damaged(format!("corrupt frame at byte {at}")));
            }
        }
    }
    // Zeros always follow the last frame, to a multiple of 64 KiB at least: less means the
    // file was shortened.
    let whole_file = !matches!(end, LogEnd::SyncedTo(_));
    if whole_file && at > HEADER_LEN && (bytes.len() as u64) < (at as u64 + 1).next_multiple_of(MIN_AHEAD) {
        return Err(damaged(format!(
            "ends at byte {}, too soon after its last frame: it was cut short",
            bytes.len()
        )));
    }
    Ok(())
}

/// Applies the records of a version 1 file, by the rules it was written under: a log ends at
/// its last record or where only zeros follow; a record cut short at its end is dropped.
fn replay_legacy(
    path: &Path,
    bytes: &[u8],
    is_log: bool,
    recovered: &mut Recovered,
) -> Result<(), StoreError> {
    let mut at = LEGACY_HEADER_LEN;
    loop {
        match read_record(&bytes[at..]) {
            Read::Record(record, len) => {
                recovered.apply(record);
                at += len;
            }
            Read::End => return Ok(()),
            Read::Bad if is_log && bytes[at..].iter().all(|&byte| byte == 0) => return Ok(()),
            Read::Bad => {
                let torn_tail = is_log
                    && !claimed_len(&bytes[at..]).is_some_and(|len| {
                        at + len < bytes.len() && matches!(read_record(&bytes[at + len..]), Read::Record(..))
                    });
                if torn_tail {
                    tracing::warn!(file = %path.display(), offset = at, "dropping a record cut short by a crash");
                    return Ok(());
                }
                return Err(StoreError::Damaged {
                    path: path.to_path_buf(),
                    problem: format!("corrupt record at byte {at}"),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{hold, temp_dir};
    use super::*;

    /// A version 1 header: the magic and the version.
    fn legacy_header() -> Vec<u8> {
        let mut bytes = super::super::format::MAGIC.to_vec();
        bytes.extend_from_slice(&super::super::format::LEGACY_VERSION.to_le_bytes());
        bytes
    }

    #[test]
    fn a_legacy_log_still_reads_by_its_own_rules() {
        let dir = temp_dir("torn");
        fs::create_dir_all(&dir).unwrap();
        let mut bytes = legacy_header();
        hold("a", 1).encode_into(&mut bytes);
        let whole = bytes.len();
        hold("b", 2).encode_into(&mut bytes);
        let path = dir.join("log-00000000000000000001.db");
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let (recovered, _) = recover(&dir).unwrap();
        assert_eq!(recovered.slots.len(), 1, "the cut record is dropped");

        let mut damaged = bytes.clone();
        damaged[whole - 1] ^= 0xff; // inside the first record, with a whole one after it
        fs::write(&path, &damaged).unwrap();
        let error = recover(&dir).unwrap_err().to_string();
        assert!(error.contains("log-00000000000000000001.db") && error.contains("corrupt"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
