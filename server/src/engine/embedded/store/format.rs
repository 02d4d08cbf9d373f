//! How records are laid out in the store's files, so that recovery can tell what a crash can
//! leave from damage.
//!
//! Every file starts with a [`FileHeader`]: magic bytes, the format version, what the file is,
//! its generation (which must match its name) and the token reservation at its creation,
//! protected by a checksum. Version 1 files (a bare magic and version, written before this
//! format) are still read, by the rules they were written under.
//!
//! - A **log** holds frames, one per commit: `[FRAME_MAGIC][payload length][CRC-32 of payload]
//!   [payload: records][END_MARK]`. Frames are written only inside space already zero-filled and
//!   synced (the log is extended first, in a sync of its own), with at least one zero byte left
//!   after the last frame. So a crash can tear only the last frame, and only by leaving parts of
//!   it as zeros; it can never shorten the file below the zero-filled space. A complete frame
//!   never holds a 512-byte run of zeros (names and values carry no NUL), which is how a torn
//!   frame is told from a damaged one.
//! - A **snapshot** holds records, then a [trailer](encode_trailer): their count and a checksum
//!   over them. A snapshot without its trailer was cut, and is refused.

use super::records::{read_record, Read, Record};

/// The first bytes of every store file.
pub const MAGIC: &[u8; 8] = b"LOCKSRV\0";
/// The format written now.
pub const FORMAT_VERSION: u32 = 2;
/// The format before frames, trailers and generations in headers; still read.
pub const LEGACY_VERSION: u32 = 1;
/// The length of a version 1 header.
pub const LEGACY_HEADER_LEN: usize = MAGIC.len() + 4;
/// The length of a version 2 header.
pub const HEADER_LEN: usize = MAGIC.len() + 4 + 1 + 8 + 8 + 4;
/// The first bytes of a log frame.
const FRAME_MAGIC: u32 = 0x4652_4d31; // "1MRF" little endian: never a plausible record length
/// The last bytes of a log frame.
const END_MARK: u32 = 0xa5a5_a5a5;
/// The first bytes of a snapshot trailer: a record length no record can have.
const TRAILER_MARK: u32 = u32::MAX;
/// The length of a snapshot trailer.
pub const TRAILER_LEN: usize = 4 + 8 + 4;
/// The unit a torn write leaves whole or not at all.
pub const SECTOR: usize = 512;

/// What a store file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A log of frames.
    Log,
    /// A snapshot: records and a trailer.
    Snapshot,
}

/// The header of a version 2 file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// What the file is.
    pub kind: FileKind,
    /// The generation in the file's name.
    pub generation: u64,
    /// The token reservation when the file was created: no token up to it is issued again.
    pub reserved: u64,
}

/// What is wrong with a file header.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum HeaderError {
    /// The file does not start with [`MAGIC`].
    #[error("not a lockserver data file (bad magic bytes)")]
    BadMagic,
    /// The file is in a format version this server does not read.
    #[error("written in data format version {0}; this lockserver reads versions {LEGACY_VERSION} and {FORMAT_VERSION}")]
    Version(u32),
    /// The header's checksum or contents are wrong.
    #[error("corrupt file header (its checksum or contents are wrong)")]
    Damaged,
}

/// A file's header, as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// A version 1 file: records follow at [`LEGACY_HEADER_LEN`].
    Legacy,
    /// A version 2 file: its contents follow at [`HEADER_LEN`].
    Current(FileHeader),
}

impl FileHeader {
    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.push(match self.kind {
            FileKind::Log => 1,
            FileKind::Snapshot => 2,
        });
        bytes.extend_from_slice(&self.generation.to_le_bytes());
        bytes.extend_from_slice(&self.reserved.to_le_bytes());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }
}

/// Reads the header at the start of a file.
pub fn read_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    if bytes.len() < LEGACY_HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    match u32_at(bytes, MAGIC.len()) {
        Some(LEGACY_VERSION) => Ok(Header::Legacy),
        Some(FORMAT_VERSION) => {
            let header = bytes.get(..HEADER_LEN).ok_or(HeaderError::Damaged)?;
            let (body, crc) = header.split_at(HEADER_LEN - 4);
            if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
                return Err(HeaderError::Damaged);
            }
            let kind = match body[12] {
                1 => FileKind::Log,
                2 => FileKind::Snapshot,
                _ => return Err(HeaderError::Damaged),
            };
            let generation = u64_at(body, 13).expect("in the header");
            let reserved = u64_at(body, 21).expect("in the header");
            Ok(Header::Current(FileHeader { kind, generation, reserved }))
        }
        Some(other) => Err(HeaderError::Version(other)),
        None => Err(HeaderError::BadMagic),
    }
}

/// Appends a frame holding `records` (encoded records, back to back) to `out`.
pub fn encode_frame(records: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(records).to_le_bytes());
    out.extend_from_slice(records);
    out.extend_from_slice(&END_MARK.to_le_bytes());
}

/// What is at a position of a log.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A whole frame: its records and its length in bytes.
    Whole(Vec<Record>, usize),
    /// No valid frame. `claimed_end` is where the frame would end, counted from the same
    /// position, when its header is readable.
    Bad {
        /// The end the header claims, if it has a frame's magic.
        claimed_end: Option<usize>,
    },
}

/// Reads the frame at the start of `bytes`.
pub fn read_frame(bytes: &[u8]) -> Frame {
    let claimed_end = match (u32_at(bytes, 0), u32_at(bytes, 4)) {
        (Some(FRAME_MAGIC), Some(len)) => Some(12 + len as usize + 4),
        _ => None,
    };
    let Some(end) = claimed_end.filter(|end| *end <= bytes.len()) else {
        return Frame::Bad { claimed_end };
    };
    let payload = &bytes[12..end - 4];
    if u32_at(bytes, 8) != Some(crc32fast::hash(payload)) || u32_at(bytes, end - 4) != Some(END_MARK) {
        return Frame::Bad { claimed_end };
    }
    match records_in(payload) {
        Some(records) => Frame::Whole(records, end),
        None => Frame::Bad { claimed_end },
    }
}

/// Every record of a frame's payload; `None` if any is malformed.
fn records_in(mut payload: &[u8]) -> Option<Vec<Record>> {
    let mut records = Vec::new();
    loop {
        match read_record(payload) {
            Read::Record(record, len) => {
                records.push(record);
                payload = &payload[len..];
            }
            Read::End => return Some(records),
            Read::Bad => return None,
        }
    }
}

/// The trailer of a snapshot holding `count` records whose bytes have checksum `crc`.
pub fn encode_trailer(count: u64, crc: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(TRAILER_LEN);
    bytes.extend_from_slice(&TRAILER_MARK.to_le_bytes());
    bytes.extend_from_slice(&count.to_le_bytes());
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// The count and checksum of a snapshot's trailer, if `bytes` ends with one.
pub fn read_trailer(bytes: &[u8]) -> Option<(u64, u32)> {
    let trailer = bytes.get(bytes.len().checked_sub(TRAILER_LEN)?..)?;
    (u32_at(trailer, 0)? == TRAILER_MARK)
        .then(|| (u64_at(trailer, 4).expect("16 bytes"), u32_at(trailer, 12).expect("16 bytes")))
}

/// Splits what follows a snapshot's header into its records and its trailer: the records, the
/// count the trailer gives, and whether their checksum matches it. `None` without a trailer.
pub fn split_trailer(after_header: &[u8]) -> Option<(&[u8], u64, bool)> {
    let (count, crc) = read_trailer(after_header)?;
    let records = &after_header[..after_header.len() - TRAILER_LEN];
    Some((records, count, crc32fast::hash(records) == crc))
}

/// Whether a torn write could explain the bad frame at `at` of the newest log: some
/// sector-aligned block it covers reads as zeros from `at` on (a sector that never reached the
/// disk), only zeros follow it, and it is not a whole frame whose length field was damaged.
pub fn torn_at(bytes: &[u8], at: usize, claimed_end: Option<usize>) -> bool {
    let end = (at + claimed_end.unwrap_or(12).max(12)).min(bytes.len());
    if bytes[end..].iter().any(|&byte| byte != 0) || whole_under_another_length(&bytes[at..]) {
        return false;
    }
    let mut block = at / SECTOR * SECTOR;
    while block < end {
        let from = block.max(at);
        let to = (block + SECTOR).min(bytes.len());
        if bytes[from..to].iter().all(|&byte| byte == 0) {
            return true;
        }
        block += SECTOR;
    }
    false
}

/// Whether `bytes` start with a whole frame but for its length field: a damaged complete frame
/// whose claimed length reaches into the zeros after it would otherwise look torn.
fn whole_under_another_length(bytes: &[u8]) -> bool {
    let (Some(FRAME_MAGIC), Some(crc)) = (u32_at(bytes, 0), u32_at(bytes, 8)) else { return false };
    let mut hasher = crc32fast::Hasher::new();
    for end in 12..bytes.len().saturating_sub(3) {
        if hasher.clone().finalize() == crc && u32_at(bytes, end) == Some(END_MARK) {
            return true;
        }
        hasher.update(&bytes[end..end + 1]);
    }
    false
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record::Reserve { ceiling: 7 }
    }

    #[test]
    fn headers_round_trip_and_name_the_problem() {
        let header = FileHeader { kind: FileKind::Log, generation: 3, reserved: 1 << 20 };
        assert_eq!(read_header(&header.encode()), Ok(Header::Current(header)));
        assert_eq!(read_header(b"garbage!garbage"), Err(HeaderError::BadMagic));
        let mut future = header.encode();
        future[8] = 9;
        assert!(read_header(&future).unwrap_err().to_string().contains("version 9"));
        let mut flipped = header.encode();
        flipped[20] ^= 1;
        assert_eq!(read_header(&flipped), Err(HeaderError::Damaged));
        let mut legacy = MAGIC.to_vec();
        legacy.extend_from_slice(&LEGACY_VERSION.to_le_bytes());
        assert_eq!(read_header(&legacy), Ok(Header::Legacy));
    }

    #[test]
    fn frames_round_trip_and_any_flip_is_bad() {
        let mut records = Vec::new();
        record().encode_into(&mut records);
        let mut frame = Vec::new();
        encode_frame(&records, &mut frame);
        assert_eq!(read_frame(&frame), Frame::Whole(vec![record()], frame.len()));
        for byte in 0..frame.len() {
            let mut flipped = frame.clone();
            flipped[byte] ^= 0x10;
            assert!(matches!(read_frame(&flipped), Frame::Bad { .. }), "a flip at {byte} is seen");
        }
    }

    #[test]
    fn a_torn_frame_has_a_zero_sector_and_a_damaged_one_has_none() {
        let mut records = Vec::new();
        for _ in 0..200 {
            record().encode_into(&mut records);
        }
        let mut bytes = vec![1; 100]; // the end of an earlier frame
        encode_frame(&records, &mut bytes);
        bytes.resize(bytes.len() + 2000, 0); // the zero-filled space after it
        let mut torn = bytes.clone();
        torn[SECTOR..2 * SECTOR].fill(0); // a sector that never reached the disk
        assert!(torn_at(&torn, 100, Some(12 + records.len() + 4)));
        let mut damaged = bytes.clone();
        damaged[700] ^= 1;
        assert!(!torn_at(&damaged, 100, Some(12 + records.len() + 4)));
        let mut headless = bytes.clone();
        headless[100..SECTOR].fill(0); // the header's sector never reached the disk
        headless[SECTOR..].fill(0);
        assert!(torn_at(&headless, 100, None));
        let mut trailing = headless.clone();
        trailing[3000] = 1; // something after the torn frame: not a crash's doing
        assert!(!torn_at(&trailing, 100, None));
    }

    #[test]
    fn trailers_end_a_snapshot() {
        let mut bytes = vec![0; 40];
        bytes.extend_from_slice(&encode_trailer(3, 99));
        assert_eq!(read_trailer(&bytes), Some((3, 99)));
        assert_eq!(read_trailer(&bytes[..bytes.len() - 1]), None);
    }
}
