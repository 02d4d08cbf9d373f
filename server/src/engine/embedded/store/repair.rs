//! `lockserver --repair`: salvages a damaged data dir on an operator's explicit request, never
//! on its own. Every record that still reads is kept (the files in generation order, each
//! record the newest state of its lock); what does not read is skipped and reported. The old
//! files are moved aside, never deleted, and a fresh snapshot is written. The token reservation
//! is raised well above every token seen, because a lost reservation record must never let a
//! token be issued twice.

use std::fs;
use std::path::{Path, PathBuf};

use super::compaction::write_snapshot;
use super::format::{read_frame, read_header, split_trailer, Frame, Header, HEADER_LEN, LEGACY_HEADER_LEN};
use super::log_file::{sync_dir, LogFile};
use super::records::{read_record, Read, Record};
use super::recovery::{list_files, StoreFile};
use super::{lock_dir, Recovered, StoreError};

/// How far above every token seen the reservation is raised.
const TOKEN_MARGIN: u64 = 1 << 32;

/// What a repair kept and dropped.
#[derive(Debug)]
pub struct Repaired {
    /// Locks (held, or keeping a value) and leases kept.
    pub kept: usize,
    /// What was skipped, one line each (file, byte range, why).
    pub dropped: Vec<String>,
    /// Where the old files were moved.
    pub moved_to: PathBuf,
    /// No token up to this is issued again.
    pub reserved: u64,
}

/// Salvages `dir`; see the module doc.
pub fn repair(dir: &Path) -> Result<Repaired, StoreError> {
    let _lock = lock_dir(dir)?;
    let files = list_files(dir)?;
    // The newest snapshot that is whole holds everything before it (and older files may hold
    // holds released since): start there. Without one, everything is replayed.
    let base = files
        .iter()
        .filter(|(kind, _, path)| *kind == StoreFile::Snapshot && whole_snapshot(path))
        .map(|(_, generation, _)| *generation)
        .max()
        .unwrap_or(0);
    let mut recovered = Recovered::default();
    let mut dropped = Vec::new();
    // Logs follow from the snapshot's generation on (or from 1).
    let mut expected = Some(base.max(1));
    for (kind, generation, path) in &files {
        if *generation < base || (*kind == StoreFile::Snapshot && *generation != base && base > 0) {
            continue;
        }
        match kind {
            StoreFile::Temporary => continue,
            StoreFile::Snapshot => {}
            StoreFile::Log => {
                if let Some(next) = expected.filter(|next| *next < *generation) {
                    dropped.push(format!("log-{next:020}.db up to log-{:020}.db: missing", generation - 1));
                }
                expected = Some(generation + 1);
            }
        }
        let bytes = fs::read(path).map_err(StoreError::io(path, "read"))?;
        salvage(path, &bytes, *kind == StoreFile::Log, &mut recovered, &mut dropped);
    }
    let newest = files.iter().map(|(_, generation, _)| *generation).max().unwrap_or(0);
    let reserved = recovered.max_token.saturating_add(TOKEN_MARGIN);
    let moved_to = dir.join(format!("damaged-{}", crate::engine::clock::wall_now_ms()));
    fs::create_dir_all(&moved_to).map_err(StoreError::io(&moved_to, "create"))?;
    for (_, _, path) in &files {
        let name = path.file_name().expect("a file name");
        fs::rename(path, moved_to.join(name)).map_err(StoreError::io(path, "move aside"))?;
    }
    sync_dir(dir)?;
    // A snapshot and the (empty) log of a new generation, as a compaction leaves them.
    let generation = newest + 1;
    let temporary = dir.join(format!("snapshot-{generation:020}.tmp"));
    let kept = recovered.slots.len() + recovered.leases.len();
    let mut fill = |write: &mut dyn FnMut(&Record)| {
        recovered.slots.values().for_each(&mut *write);
        for (id, (ttl_ms, deadline_ms)) in &recovered.leases {
            write(&Record::Lease { id: id.clone(), ttl_ms: *ttl_ms, deadline_ms: *deadline_ms });
        }
    };
    write_snapshot(&temporary, generation, reserved, &mut fill, &|| reserved)?;
    let snapshot = dir.join(format!("snapshot-{generation:020}.db"));
    fs::rename(&temporary, &snapshot).map_err(StoreError::io(&snapshot, "rename into place"))?;
    LogFile::create(dir, generation, reserved, 64 << 10)?;
    sync_dir(dir)?;
    Ok(Repaired { kept, dropped, moved_to, reserved })
}

/// Whether a snapshot's header and trailer both check out.
fn whole_snapshot(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else { return false };
    let Ok(Header::Current(_)) = read_header(&bytes) else { return false };
    matches!(split_trailer(&bytes[HEADER_LEN..]), Some((_, _, true)))
}

/// Applies every record of one file that still reads, skipping over what does not.
fn salvage(path: &Path, bytes: &[u8], is_log: bool, recovered: &mut Recovered, dropped: &mut Vec<String>) {
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let (start, framed) = match read_header(bytes) {
        Ok(Header::Current(header)) => {
            recovered.max_token = recovered.max_token.max(header.reserved);
            (HEADER_LEN, is_log)
        }
        Ok(Header::Legacy) => (LEGACY_HEADER_LEN, false),
        Err(error) => {
            dropped.push(format!("{name}: the whole file ({error})"));
            return;
        }
    };
    // A snapshot's trailer is not a record.
    let bytes = match split_trailer(&bytes[start..]) {
        Some((records, ..)) if !is_log && start == HEADER_LEN => &bytes[..start + records.len()],
        _ => bytes,
    };
    let mut at = start;
    let mut bad_from: Option<usize> = None;
    while at < bytes.len() {
        let found = if framed {
            match read_frame(&bytes[at..]) {
                Frame::Whole(records, len) => Some((records, len)),
                Frame::Bad { .. } => None,
            }
        } else {
            match read_record(&bytes[at..]) {
                Read::Record(record, len) => Some((vec![record], len)),
                _ => None,
            }
        };
        match found {
            Some((records, len)) => {
                if let Some(from) = bad_from.take() {
                    dropped.push(format!("{name}: bytes {from} to {at}, unreadable"));
                }
                records.into_iter().for_each(|record| recovered.apply(record));
                at += len;
            }
            None if bad_from.is_none() && bytes[at..].iter().all(|&byte| byte == 0) => break,
            None => {
                bad_from.get_or_insert(at);
                at += 1;
            }
        }
    }
    if let Some(from) = bad_from {
        let end = bytes.iter().rposition(|&byte| byte != 0).map_or(from, |last| last + 1);
        if end > from {
            dropped.push(format!("{name}: bytes {from} to {end}, unreadable"));
        }
    }
}
