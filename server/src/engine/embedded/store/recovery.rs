//! Recovery at start-up: the newest snapshot, then every log of its generation or later,
//! replayed into the state the lock table is rebuilt from.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::records::{self, claimed_len, read_record, HeaderError, Read, Record, HEADER_LEN};
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
    fn apply(&mut self, record: Record) {
        match record {
            Record::Hold { ref resource, token, .. } => {
                self.max_token = self.max_token.max(token);
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
pub(super) enum FileKind {
    Snapshot,
    Log,
    Temporary,
}

/// The store's files in `dir`, by kind and generation.
pub(super) fn list_files(dir: &Path) -> Result<Vec<(FileKind, u64, PathBuf)>, StoreError> {
    let entries = fs::read_dir(dir).map_err(StoreError::io(dir, "list the data dir"))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::io(dir, "list the data dir"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let parsed = [
            ("snapshot-", ".db", FileKind::Snapshot),
            ("log-", ".db", FileKind::Log),
            ("snapshot-", ".tmp", FileKind::Temporary),
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
    files.sort_by_key(|(kind, generation, _)| (*generation, *kind == FileKind::Log));
    Ok(files)
}

/// Loads the newest snapshot and replays the logs after it; returns the state and the
/// newest generation seen.
pub(super) fn recover(dir: &Path) -> Result<(Recovered, u64), StoreError> {
    let files = list_files(dir)?;
    let mut recovered = Recovered::default();
    let newest = files.iter().map(|(_, generation, _)| *generation).max().unwrap_or(0);
    let base = files
        .iter()
        .filter(|(kind, _, _)| *kind == FileKind::Snapshot)
        .map(|(_, generation, _)| *generation)
        .max()
        .unwrap_or(0);
    for (kind, generation, path) in &files {
        match kind {
            FileKind::Temporary => {
                // An unfinished snapshot: never renamed into place, so never relied on.
                fs::remove_file(path).map_err(StoreError::io(path, "remove an unfinished snapshot"))?;
            }
            FileKind::Snapshot if *generation == base => replay(path, false, &mut recovered)?,
            FileKind::Log if *generation >= base => replay(path, true, &mut recovered)?,
            _ => {}
        }
    }
    Ok((recovered, newest))
}

/// Applies the records of one file. A log ends at its last record or where only zeros follow
/// (the space it keeps zero-filled ahead); a record cut short at its end is a write the crash
/// interrupted (never acknowledged) and is dropped; any other damage is refused.
fn replay(path: &Path, is_log: bool, recovered: &mut Recovered) -> Result<(), StoreError> {
    let bytes = fs::read(path).map_err(StoreError::io(path, "read"))?;
    if is_log && bytes.len() < HEADER_LEN && records::header().starts_with(&bytes) {
        return Ok(()); // created, then the crash came before its header was complete
    }
    records::check_header(&bytes).map_err(|error| match error {
        HeaderError::BadMagic => StoreError::Damaged { path: path.to_path_buf(), problem: error.to_string() },
        HeaderError::Version(_) => {
            StoreError::Format { path: path.to_path_buf(), problem: error.to_string() }
        }
    })?;
    let mut at = HEADER_LEN;
    loop {
        match read_record(&bytes[at..]) {
            Read::Record(record, len) => {
                recovered.apply(record);
                at += len;
            }
            Read::End => return Ok(()),
            // The zero-filled space a log keeps ahead of its last record.
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

    #[test]
    fn a_torn_tail_is_dropped_and_damage_elsewhere_refused() {
        let dir = temp_dir("torn");
        fs::create_dir_all(&dir).unwrap();
        let mut bytes = records::header();
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
