//! Recovery against damage: a data dir written by the real journal (a snapshot and logs), then
//! cut, flipped or stripped of a file. Recovery either finds every acknowledged record and a
//! token reservation above every token, or refuses to start; never a silent loss, never a
//! token issued twice.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;

use super::recovery::recover;
use super::tests::{hold, temp_dir};
use super::{DurableState, Journal, Record, StoreError};

/// Holds acknowledged before and after the compaction.
const BEFORE: u64 = 30;
const AFTER: u64 = 30;

/// A pristine data dir, built once: its files' names and bytes, and the acknowledged holds.
struct Pristine {
    files: Vec<(String, Vec<u8>)>,
    acked: Vec<(String, u64)>,
}

fn pristine() -> &'static Pristine {
    static PRISTINE: OnceLock<Pristine> = OnceLock::new();
    PRISTINE.get_or_init(|| {
        let dir = temp_dir("pristine");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let acked = runtime.block_on(write_through_the_journal(&dir));
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter(|entry| entry.file_name() != "LOCK")
            .map(|entry| (entry.file_name().into_string().unwrap(), fs::read(entry.path()).unwrap()))
            .collect();
        files.sort();
        fs::remove_dir_all(&dir).unwrap();
        Pristine { files, acked }
    })
}

/// Acknowledges holds through the journal, with a compaction between two batches of them, so
/// that the dir holds a snapshot and a log with frames in it.
async fn write_through_the_journal(dir: &Path) -> Vec<(String, u64)> {
    let (journal, _) = Journal::open(dir, 1 << 30).unwrap();
    let mut acked = Vec::new();
    fn acknowledge(journal: &Journal, i: u64, acked: &mut Vec<(String, u64)>) {
        let (name, token) = (format!("lock-{i}"), i + 1);
        journal.note_token(token);
        journal.append(&hold(&name, token));
        acked.push((name, token));
    }
    for i in 0..BEFORE {
        acknowledge(&journal, i, &mut acked);
        if i % 3 == 0 {
            journal.sync().await.unwrap();
        }
    }
    journal.sync().await.unwrap();
    let state: Arc<dyn DurableState> =
        Arc::new(Fixed(acked.iter().map(|(name, token)| hold(name, *token)).collect()));
    journal.attach(Arc::downgrade(&state));
    while !compacted(dir) {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    for i in BEFORE..BEFORE + AFTER {
        acknowledge(&journal, i, &mut acked);
        journal.sync().await.unwrap();
    }
    journal.close();
    while Arc::strong_count(&journal) > 1 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    acked
}

/// A state that never changes, for snapshots.
struct Fixed(Vec<Record>);

impl DurableState for Fixed {
    fn snapshot(&self, emit: &mut dyn FnMut(&Record)) {
        self.0.iter().for_each(emit);
    }

    fn reset(&self, _: super::Recovered, _: &StoreError) {}
}

/// Whether the compaction is done: its snapshot is in place and the first log gone.
fn compacted(dir: &Path) -> bool {
    let names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.iter().any(|n| n.starts_with("snapshot-") && n.ends_with(".db"))
        && !names.iter().any(|n| n == "log-00000000000000000001.db")
}

/// A copy of the pristine dir with `damage` done to the file named `file`.
fn damaged_copy(name: &str, file: usize, damage: impl FnOnce(&mut Vec<u8>) -> bool) -> PathBuf {
    let dir = temp_dir(name);
    fs::create_dir_all(&dir).unwrap();
    let mut damage = Some(damage);
    for (index, (file_name, bytes)) in pristine().files.iter().enumerate() {
        let mut bytes = bytes.clone();
        let damage = if index == file % pristine().files.len() { damage.take() } else { None };
        if damage.is_some_and(|damage| !damage(&mut bytes)) {
            continue; // the damage is deleting the file
        }
        fs::write(dir.join(file_name), bytes).unwrap();
    }
    dir
}

/// Recovery found every acknowledged hold with its token and reserved above every token, or
/// refused to start.
fn check(dir: &Path) -> Result<(), String> {
    let outcome = recover(dir);
    fs::remove_dir_all(dir).unwrap();
    let Ok((recovered, _)) = outcome else { return Ok(()) };
    for (name, token) in &pristine().acked {
        match recovered.slots.get(name) {
            Some(Record::Hold { token: found, .. }) if found == token => {}
            other => return Err(format!("{name} (token {token}) was lost silently: recovered {other:?}")),
        }
    }
    let highest = pristine().acked.iter().map(|(_, token)| *token).max().unwrap();
    if recovered.max_token < highest {
        return Err(format!("reserved up to {} only, below token {highest}", recovered.max_token));
    }
    Ok(())
}

#[test]
fn the_pristine_dir_recovers_whole() {
    assert!(
        pristine().files.iter().any(|(name, _)| name.starts_with("snapshot-")),
        "{:?}",
        pristine().files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let dir = damaged_copy("whole", 0, |_| true);
    let (recovered, _) = recover(&dir).unwrap();
    assert_eq!(recovered.slots.len() as u64, BEFORE + AFTER);
    check(&dir).unwrap();
}

/// The named cases of the issue: a length flipped mid-log, a log cut short, a snapshot deleted,
/// a snapshot cut at a record boundary. Each is refused, naming the file.
#[test]
fn named_damage_is_refused() {
    let (log, snapshot) = {
        let files = &pristine().files;
        (
            files.iter().position(|(n, _)| n.starts_with("log-")).unwrap(),
            files.iter().position(|(n, _)| n.starts_with("snapshot-")).unwrap(),
        )
    };
    let refused = |dir: PathBuf| -> StoreError {
        let error = recover(&dir).expect_err("refused");
        fs::remove_dir_all(&dir).unwrap();
        error
    };
    // The length field of the second frame of the log (after the 33-byte header and a frame).
    let error = refused(damaged_copy("length", log, |bytes| {
        let second =
            super::format::HEADER_LEN + 16 + u32::from_le_bytes(bytes[37..41].try_into().unwrap()) as usize;
        bytes[second + 5] ^= 0x01;
        true
    }));
    assert!(error.to_string().contains("log-") && error.to_string().contains("corrupt"), "{error}");
    let error = refused(damaged_copy("cut-log", log, |bytes| {
        bytes.truncate(200);
        true
    }));
    assert!(error.to_string().contains("cut short"), "{error}");
    let error = refused(damaged_copy("no-snapshot", snapshot, |_| false));
    assert!(error.to_string().contains("missing"), "{error}");
    let error = refused(damaged_copy("cut-snapshot", snapshot, |bytes| {
        bytes.truncate(bytes.len() - 16 - 17); // the trailer and the reservation record
        true
    }));
    assert!(error.to_string().contains("snapshot-"), "{error}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A random cut of any file: recovered whole, or refused.
    #[test]
    fn a_cut_file_is_recovered_whole_or_refused(file in 0usize..8, at in 0.0f64..1.0) {
        let dir = damaged_copy("cut", file, |bytes| {
            bytes.truncate((bytes.len() as f64 * at) as usize);
            true
        });
        prop_assert_eq!(check(&dir), Ok(()));
    }

    /// A random bit flipped in any file: recovered whole, or refused.
    #[test]
    fn a_flipped_bit_is_recovered_whole_or_refused(file in 0usize..8, at in 0.0f64..1.0, bit in 0u8..8) {
        let dir = damaged_copy("flip", file, |bytes| {
            let at = ((bytes.len() as f64 * at) as usize).min(bytes.len() - 1);
            bytes[at] ^= 1 << bit;
            true
        });
        prop_assert_eq!(check(&dir), Ok(()));
    }

    /// A bit flipped within the written part of a log (not its zeros), where damage matters most.
    #[test]
    fn a_flip_among_the_frames_is_recovered_whole_or_refused(at in 0usize..4000, bit in 0u8..8) {
        let log = pristine().files.iter().position(|(n, _)| n.starts_with("log-")).unwrap();
        let dir = damaged_copy("frames", log, |bytes| {
            bytes[at % 4000] ^= 1 << bit;
            true
        });
        prop_assert_eq!(check(&dir), Ok(()));
    }
}

/// What a crash leaves: a commit being written when the power went, one of its sectors never
/// on disk. It was never acknowledged: it is dropped, everything before it kept.
#[test]
fn a_commit_torn_by_a_crash_is_dropped_and_the_rest_kept() {
    let log = pristine().files.iter().position(|(n, _)| n.starts_with("log-")).unwrap();
    let dir = damaged_copy("torn", log, |bytes| {
        let mut at = super::format::HEADER_LEN;
        while let super::format::Frame::Whole(_, len) = super::format::read_frame(&bytes[at..]) {
            at += len;
        }
        let mut records = Vec::new();
        for i in 0..40 {
            hold(&format!("unacknowledged-{i}"), 1000 + i).encode_into(&mut records);
        }
        let mut frame = Vec::new();
        super::format::encode_frame(&records, &mut frame);
        bytes[at..at + frame.len()].copy_from_slice(&frame);
        let sector = (at / 512 + 2) * 512; // a whole sector inside the frame never reached the disk
        bytes[sector..sector + 512].fill(0);
        true
    });
    let (recovered, _) = recover(&dir).unwrap();
    assert!(!recovered.slots.keys().any(|name| name.starts_with("unacknowledged")));
    check(&dir).unwrap();
}

/// `--repair` on a dir recovery refuses: what still reads is kept, the rest reported, and the
/// result recovers with a reservation far above every token.
#[test]
fn repair_keeps_what_reads_and_recovery_then_accepts_it() {
    let log = pristine().files.iter().position(|(n, _)| n.starts_with("log-")).unwrap();
    let dir = damaged_copy("repair", log, |bytes| {
        bytes[super::format::HEADER_LEN + 20] ^= 0x01; // inside the log's first frame
        true
    });
    assert!(recover(&dir).is_err());
    let repaired = super::repair(&dir).unwrap();
    assert_eq!(repaired.kept as u64, BEFORE + AFTER - 1, "one frame, one hold, is lost");
    assert_eq!(repaired.dropped.len(), 1, "{:?}", repaired.dropped);
    assert!(repaired.moved_to.join("log-00000000000000000002.db").exists());
    let (recovered, _) = recover(&dir).unwrap();
    assert_eq!(recovered.slots.len() as u64, BEFORE + AFTER - 1);
    assert!(recovered.max_token > BEFORE + AFTER + (1 << 31));
    fs::remove_dir_all(&dir).unwrap();
}
