//! The records of the durable store and their byte encoding.
//!
//! Every record is the full state of one thing after a change (a held lock, a free resource
//! with a retained value, a lease, the token reservation), so replaying a log over a snapshot
//! is a sequence of upserts: replaying a record twice changes nothing. On disk each record is
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`; how records are grouped into
//! files (headers, log frames, snapshot trailers) is `format.rs`.

/// The largest payload a valid record can have (a 64 KiB value and its names, with room).
const MAX_PAYLOAD: usize = 1 << 20;

/// The state of one thing after a change. Deadlines are wall-clock milliseconds since the
/// Unix epoch: the monotonic clock does not survive a restart.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// `resource` is held by one exclusive holder of a lock (the record of every lock before
    /// semaphores and read-write locks; still written for such a hold).
    Hold {
        resource: String,
        owner: String,
        token: u64,
        deadline_ms: Option<u64>,
        lease: Option<String>,
        value: Option<String>,
    },
    /// `resource` is held by shared holders or a semaphore's permits (`limit`: `Some`), or by
    /// several holders, oldest grant first.
    Held { resource: String, limit: Option<u32>, holders: Vec<HeldBy>, value: Option<String> },
    /// Nobody holds `resource`; a value left behind is kept until `value_deadline_ms`.
    /// `value: None` means the resource is forgotten.
    Free { resource: String, value: Option<String>, value_deadline_ms: Option<u64> },
    /// A live lease.
    Lease { id: String, ttl_ms: u64, deadline_ms: u64 },
    /// A lease that was revoked or expired.
    LeaseGone { id: String },
    /// No token up to `ceiling` may be issued again: the next start goes above it.
    Reserve { ceiling: u64 },
}

/// One holder in a [`Record::Held`].
#[derive(Debug, Clone, PartialEq)]
pub struct HeldBy {
    pub owner: String,
    pub token: u64,
    pub deadline_ms: Option<u64>,
    pub lease: Option<String>,
    /// 0: exclusive, 1: shared, 2: a permit.
    pub mode: u8,
}

impl Record {
    /// Appends the framed record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 8]);
        match self {
            Record::Hold { resource, owner, token, deadline_ms, lease, value } => {
                out.push(1);
                put_str(out, resource);
                put_str(out, owner);
                out.extend_from_slice(&token.to_le_bytes());
                put_opt_u64(out, *deadline_ms);
                put_opt_str(out, lease.as_deref());
                put_opt_str(out, value.as_deref());
            }
            Record::Held { resource, limit, holders, value } => {
                out.push(6);
                put_str(out, resource);
                put_opt_u64(out, limit.map(u64::from));
                out.extend_from_slice(&(holders.len() as u32).to_le_bytes());
                for holder in holders {
                    put_str(out, &holder.owner);
                    out.extend_from_slice(&holder.token.to_le_bytes());
                    put_opt_u64(out, holder.deadline_ms);
                    put_opt_str(out, holder.lease.as_deref());
                    out.push(holder.mode);
                }
                put_opt_str(out, value.as_deref());
            }
            Record::Free { resource, value, value_deadline_ms } => {
                out.push(2);
                put_str(out, resource);
                put_opt_str(out, value.as_deref());
                put_opt_u64(out, *value_deadline_ms);
            }
            Record::Lease { id, ttl_ms, deadline_ms } => {
                out.push(3);
                put_str(out, id);
                out.extend_from_slice(&ttl_ms.to_le_bytes());
                out.extend_from_slice(&deadline_ms.to_le_bytes());
            }
            Record::LeaseGone { id } => {
                out.push(4);
                put_str(out, id);
            }
            Record::Reserve { ceiling } => {
                out.push(5);
                out.extend_from_slice(&ceiling.to_le_bytes());
            }
        }
        let payload_len = (out.len() - start - 8) as u32;
        let crc = crc32fast::hash(&out[start + 8..]);
        out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// What reading one framed record found.
#[derive(Debug, PartialEq)]
pub enum Read {
    /// A record and the bytes it took.
    Record(Record, usize),
    /// The bytes end inside a record, or its checksum or contents are wrong.
    Bad,
    /// No bytes left.
    End,
}

/// Reads the framed record at the start of `bytes`.
pub fn read_record(bytes: &[u8]) -> Read {
    if bytes.is_empty() {
        return Read::End;
    }
    if bytes.len() < 8 {
        return Read::Bad;
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD || bytes.len() < 8 + len {
        return Read::Bad;
    }
    let payload = &bytes[8..8 + len];
    if crc32fast::hash(payload) != crc {
        return Read::Bad;
    }
    match decode(payload) {
        Some(record) => Read::Record(record, 8 + len),
        None => Read::Bad,
    }
}

/// The framed length the record at the start of `bytes` claims, if its frame is readable.
pub fn claimed_len(bytes: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    (len <= MAX_PAYLOAD).then_some(8 + len)
}

fn decode(payload: &[u8]) -> Option<Record> {
    let mut input = Input { bytes: payload };
    let record = match input.u8()? {
        1 => Record::Hold {
            resource: input.str()?,
            owner: input.str()?,
            token: input.u64()?,
            deadline_ms: input.opt_u64()?,
            lease: input.opt_str()?,
            value: input.opt_str()?,
        },
        2 => Record::Free {
            resource: input.str()?,
            value: input.opt_str()?,
            value_deadline_ms: input.opt_u64()?,
        },
        3 => Record::Lease { id: input.str()?, ttl_ms: input.u64()?, deadline_ms: input.u64()? },
        4 => Record::LeaseGone { id: input.str()? },
        5 => Record::Reserve { ceiling: input.u64()? },
        6 => {
            let resource = input.str()?;
            let limit = match input.opt_u64()? {
                Some(limit) => Some(u32::try_from(limit).ok()?),
                None => None,
            };
            let count = u32::from_le_bytes(input.take(4)?.try_into().ok()?) as usize;
            let mut holders = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                holders.push(HeldBy {
                    owner: input.str()?,
                    token: input.u64()?,
                    deadline_ms: input.opt_u64()?,
                    lease: input.opt_str()?,
                    mode: input.u8().filter(|mode| *mode <= 2)?,
                });
            }
            Record::Held { resource, limit, holders, value: input.opt_str()? }
        }
        _ => return None,
    };
    input.bytes.is_empty().then_some(record)
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => {
            out.push(1);
            put_str(out, text);
        }
        None => out.push(0),
    }
}

fn put_opt_u64(out: &mut Vec<u8>, number: Option<u64>) {
    match number {
        Some(number) => {
            out.push(1);
            out.extend_from_slice(&number.to_le_bytes());
        }
        None => out.push(0),
    }
}

struct Input<'a> {
    bytes: &'a [u8],
}

impl Input<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn str(&mut self) -> Option<String> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    fn opt_str(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.str().map(Some),
            _ => None,
        }
    }

    fn opt_u64(&mut self) -> Option<Option<u64>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.u64().map(Some),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        vec![
            Record::Hold {
                resource: "jobs/é".into(),
                owner: "w".into(),
                token: 7,
                deadline_ms: Some(1_700_000_000_000),
                lease: None,
                value: Some("v".into()),
            },
            Record::Hold {
                resource: "r".into(),
                owner: "o".into(),
                token: u64::MAX,
                deadline_ms: None,
                lease: Some("abc".into()),
                value: None,
            },
            Record::Held {
                resource: "sem".into(),
                limit: Some(3),
                holders: vec![
                    HeldBy { owner: "a".into(), token: 8, deadline_ms: Some(9), lease: None, mode: 2 },
                    HeldBy {
                        owner: "b".into(),
                        token: 9,
                        deadline_ms: None,
                        lease: Some("l".into()),
                        mode: 2,
                    },
                ],
                value: Some("v".into()),
            },
            Record::Held {
                resource: "rw".into(),
                limit: None,
                holders: vec![HeldBy {
                    owner: "r".into(),
                    token: 3,
                    deadline_ms: None,
                    lease: None,
                    mode: 1,
                }],
                value: None,
            },
            Record::Free { resource: "r".into(), value: Some(String::new()), value_deadline_ms: Some(5) },
            Record::Free { resource: "r".into(), value: None, value_deadline_ms: None },
            Record::Lease { id: "abc".into(), ttl_ms: 5000, deadline_ms: 9 },
            Record::LeaseGone { id: "abc".into() },
            Record::Reserve { ceiling: 1 << 40 },
        ]
    }

    #[test]
    fn records_round_trip() {
        let mut bytes = Vec::new();
        for record in samples() {
            record.encode_into(&mut bytes);
        }
        let mut rest = &bytes[..];
        for expected in samples() {
            match read_record(rest) {
                Read::Record(record, len) => {
                    assert_eq!(record, expected);
                    rest = &rest[len..];
                }
                other => panic!("expected {expected:?}, read {other:?}"),
            }
        }
        assert_eq!(read_record(rest), Read::End);
    }

    #[test]
    fn torn_and_corrupt_records_are_bad() {
        let mut bytes = Vec::new();
        samples()[0].encode_into(&mut bytes);
        for cut in 1..bytes.len() {
            assert_eq!(read_record(&bytes[..cut]), Read::Bad, "cut at {cut}");
        }
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert_eq!(read_record(&bytes), Read::Bad);
    }
}
