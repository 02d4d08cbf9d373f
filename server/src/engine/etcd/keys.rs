//! Where the etcd backend keeps things, and what it writes there.
//!
//! Under the configured prefix `P`, for a resource `name` (names never hold control
//! characters, so the NUL that ends each one cannot appear inside a name, and no resource's keys
//! are a prefix of another's, unlike etcd's own lock service, where `a` waits on `a/1`):
//!
//! | key                      | value            | etcd lease                                      |
//! |--------------------------|------------------|-------------------------------------------------|
//! | `P h/{name}\0`           | [`HoldRecord`]   | the user's lease, a backstop lease, or none      |
//! | `P q/{name}\0{waiter}`   | [`WaiterRecord`] | the queueing gateway's session lease             |
//! | `P v/{name}\0`           | the lock's value | none while held; a retention lease once free     |
//! | `P l/{lease id}`         | [`LeaseRecord`]  | the lease itself                                 |
//! | `P i/progress`           | empty            | none (written so that a gateway's watch reports) |
//! | `P k/{name}\0{owner}`    | [`TicketRecord`] | the user's lease, a backstop lease, or none      |
//!
//! A shared lock or a semaphore ("a group hold", `groups.rs`) keeps a holder key too, whose
//! record has a `group` and no owner: to plain locks it is a hold like any other. Each of its
//! holders has a ticket; every ticket added rewrites the holder key, so two additions never
//! both pass the compare on its mod revision.
//!
//! The holder key's create revision is the fencing token: it is written when the lock is
//! granted and kept by refreshes, so tokens grow with etcd's revision across every gateway.
//! Waiters queue in create-revision order, as in etcd's concurrency recipe.

use serde::{Deserialize, Serialize};

use crate::engine::{EngineError, Result};

/// The key layout under one prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: Vec<u8>,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.as_bytes().to_vec() }
    }

    fn key(&self, space: &str, name: &str, end: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + space.len() + name.len() + 1 + end.len());
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(space.as_bytes());
        key.extend_from_slice(name.as_bytes());
        key.extend_from_slice(end);
        key
    }

    /// The holder key of `name`.
    pub(super) fn hold(&self, name: &str) -> Vec<u8> {
        self.key("h/", name, b"\0")
    }

    /// The value key of `name`.
    pub(super) fn value(&self, name: &str) -> Vec<u8> {
        self.key("v/", name, b"\0")
    }

    /// The ticket of `owner` in the group holding `name`.
    pub(super) fn ticket(&self, name: &str, owner: &str) -> Vec<u8> {
        let mut key = self.tickets(name);
        key.extend_from_slice(owner.as_bytes());
        key
    }

    /// The prefix of every ticket of `name`.
    pub(super) fn tickets(&self, name: &str) -> Vec<u8> {
        self.key("k/", name, b"\0")
    }

    /// The prefix of every waiter key of `name`.
    pub(super) fn queue(&self, name: &str) -> Vec<u8> {
        self.key("q/", name, b"\0")
    }

    /// One waiter's key in the queue of `name`.
    pub(super) fn waiter(&self, name: &str, waiter: &str) -> Vec<u8> {
        let mut key = self.queue(name);
        key.extend_from_slice(waiter.as_bytes());
        key
    }

    /// The record of the lease with this API id (any prefix, then the etcd lease id in hex:
    /// the record's key is the whole id, so an id with another prefix finds no record).
    pub(super) fn lease(&self, name: &str) -> Vec<u8> {
        self.key("l/", name, b"")
    }

    /// The first holder key a listing of names starting with `prefix` may return, strictly
    /// after `after`'s key when given.
    pub(super) fn holds_from(&self, prefix: &str, after: Option<&str>) -> Vec<u8> {
        match after {
            // The smallest key above `after`'s own.
            Some(after) if after >= prefix => self.key("h/", after, b"\0\0"),
            _ => self.key("h/", prefix, b""),
        }
    }

    /// The end (exclusive) of the holder keys of names starting with `prefix`.
    pub(super) fn holds_end(&self, prefix: &str) -> Vec<u8> {
        prefix_end(self.key("h/", prefix, b""))
    }

    /// The key a gateway writes to learn when its watch has caught up (inside the watched
    /// range, outside every resource's keys).
    pub(super) fn progress(&self) -> Vec<u8> {
        self.key("i/", "progress", b"")
    }

    /// The prefix of every waiter key.
    pub(super) fn waiters_prefix(&self) -> Vec<u8> {
        self.key("q/", "", b"")
    }

    /// The prefix of every holder key.
    pub(super) fn holds_prefix(&self) -> Vec<u8> {
        self.key("h/", "", b"")
    }

    /// The range (start, exclusive end) of the lease records whose ids start with `prefix`,
    /// strictly after `after`'s when given.
    pub(super) fn leases_range(&self, prefix: &str, after: Option<&str>) -> (Vec<u8>, Vec<u8>) {
        let start = match after {
            Some(after) if after >= prefix => self.key("l/", after, b"\0"),
            _ => self.key("l/", prefix, b""),
        };
        (start, prefix_end(self.key("l/", prefix, b"")))
    }

    /// The prefix of every lease record.
    pub(super) fn leases_prefix(&self) -> Vec<u8> {
        self.key("l/", "", b"")
    }

    /// The resource whose holder key this is.
    pub(super) fn name_of_hold(&self, key: &[u8]) -> Option<String> {
        let rest = key.strip_prefix(self.prefix.as_slice())?.strip_prefix(b"h/")?;
        let name = rest.strip_suffix(b"\0")?;
        String::from_utf8(name.to_vec()).ok()
    }

    /// The resource whose group hold this ticket key belongs to.
    pub(super) fn name_of_ticket(&self, key: &[u8]) -> Option<String> {
        let rest = key.strip_prefix(self.prefix.as_slice())?.strip_prefix(b"k/")?;
        let end = rest.iter().position(|byte| *byte == 0)?;
        String::from_utf8(rest[..end].to_vec()).ok()
    }

    /// The resource and waiter id of a waiter key.
    pub(super) fn name_of_waiter(&self, key: &[u8]) -> Option<(String, String)> {
        let rest = key.strip_prefix(self.prefix.as_slice())?.strip_prefix(b"q/")?;
        let end = rest.iter().position(|byte| *byte == 0)?;
        let name = String::from_utf8(rest[..end].to_vec()).ok()?;
        let waiter = String::from_utf8(rest[end + 1..].to_vec()).ok()?;
        Some((name, waiter))
    }

    /// The API lease id of a lease record's key.
    pub(super) fn name_of_lease(&self, key: &[u8]) -> Option<String> {
        let rest = key.strip_prefix(self.prefix.as_slice())?.strip_prefix(b"l/")?;
        String::from_utf8(rest.to_vec()).ok()
    }

    /// The range (start, exclusive end) the gateway's one watch covers: the holder keys, the
    /// progress key, the tickets, the lease records and the waiter keys (`h/`, `i/`, `k/`, `l/`,
    /// `q/`), not the values.
    pub(super) fn watched_range(&self) -> (Vec<u8>, Vec<u8>) {
        (self.key("h/", "", b""), prefix_end(self.key("q/", "", b"")))
    }
}

/// The end of the range of keys starting with `key`.
pub(super) fn prefix_end(mut key: Vec<u8>) -> Vec<u8> {
    while let Some(last) = key.pop() {
        if last < 0xff {
            key.push(last + 1);
            return key;
        }
    }
    vec![0]
}

/// How lease ids travel in the API: 16 hex digits.
pub(super) fn lease_name(id: i64) -> String {
    format!("{:016x}", id as u64)
}

/// The etcd lease id of an API lease id (its last 16 characters, after any prefix);
/// `NoSuchLease` when it cannot be one.
pub(super) fn lease_number(name: &str) -> Result<i64> {
    let digits = name.len().checked_sub(16).and_then(|start| name.get(start..));
    match digits.map(|digits| (digits, u64::from_str_radix(digits, 16))) {
        Some((digits, Ok(id))) if id != 0 && !digits.starts_with('+') => Ok(id as i64),
        _ => Err(EngineError::NoSuchLease),
    }
}

/// Who holds a lock, and until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct HoldRecord {
    pub(super) owner: String,
    /// Wall-clock deadline in ms since the epoch, for a hold with an expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) deadline_ms: Option<u64>,
    /// The API lease id the hold is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) lease: Option<String>,
    /// The waiter key this hold was granted to, so that a waiter that went away while being
    /// granted can give the lock back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) waiter: Option<String>,
    /// The fencing token, for a hold granted to a waiter: its waiter key's create revision (a
    /// hand-off rewrites the holder key, which keeps its create revision). Absent: the holder
    /// key's create revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) token: Option<i64>,
    /// Set by a hand-off that kept the previous holder's value: the new holder's gateway reads
    /// it. Unset: the value is the waiter's own, or there is none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) kept_value: bool,
    /// Set on the holder key of a group hold (shared holders, or a semaphore's permits): then
    /// `owner` is empty and the holders are the lock's tickets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) group: Option<GroupRecord>,
}

/// What the holders of a group hold share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct GroupRecord {
    /// A semaphore's number of permits; `None` for a read-write lock's shared holders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) limit: Option<u32>,
}

/// One holder of a group hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct TicketRecord {
    /// Wall-clock deadline in ms since the epoch, for a hold with an expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) deadline_ms: Option<u64>,
    /// The API lease id the hold is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) lease: Option<String>,
    /// The fencing token, for a ticket taken from the queue: its waiter key's create revision.
    /// Absent: the ticket key's create revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) token: Option<i64>,
}

/// A queued request: everything a releasing gateway needs to hand the lock to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct WaiterRecord {
    pub(super) owner: String,
    /// Set by gateways that take hand-offs; a waiter without it takes the lock itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) handoff: bool,
    /// The hold's time to live, for a request with an expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) ttl_ms: Option<u64>,
    /// The API lease id, for a lease-bound request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) lease: Option<String>,
    /// The value the request sets on its grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) value: Option<String>,
    /// A request for a shared hold (it joins a group hold itself; never handed off).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) shared: bool,
    /// A request for a semaphore's permit, with the semaphore's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) limit: Option<u32>,
}

/// A lease's time to live (etcd keeps only whole seconds) and wall-clock deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LeaseRecord {
    pub(super) ttl_ms: u64,
    pub(super) deadline_ms: u64,
}

/// Encodes a record as the JSON stored in etcd.
pub(super) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("records serialise")
}

/// Decodes a record; a key holding something else is reported, not trusted.
pub(super) fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|error| {
        EngineError::Unavailable(format!(
            "etcd key {:?} does not hold a lockserver record ({error}); is another program using the key prefix?",
            String::from_utf8_lossy(key)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_resource_key_is_a_prefix_of_another() {
        let keys = Keys::new("p/");
        let (a, a1) = (keys.queue("a"), keys.waiter("a/1", "w"));
        assert!(!a1.starts_with(&a), "`a`'s queue does not contain `a/1`'s waiters");
        assert!(!keys.hold("ab").starts_with(&keys.hold("a")));
        assert_eq!(keys.name_of_hold(&keys.hold("jobs/x ü")), Some("jobs/x ü".to_string()));
    }

    #[test]
    fn holder_keys_sort_in_name_order() {
        let keys = Keys::new("p/");
        let mut names = ["a", "a/", "a&", "ab", "b", "a b"];
        let mut by_key = names.map(|name| keys.hold(name));
        names.sort();
        by_key.sort();
        assert_eq!(by_key.to_vec(), names.map(|name| keys.hold(name)).to_vec());
        assert!(keys.holds_from("a", Some("a")) > keys.hold("a"));
        assert!(keys.holds_from("a", Some("a")) < keys.hold("a&"));
        assert!(keys.holds_end("a") > keys.hold("az"));
        assert!(keys.holds_end("a") < keys.hold("b"));
    }

    #[test]
    fn lease_ids_round_trip() {
        assert_eq!(lease_number(&lease_name(0x7abc)).ok(), Some(0x7abc));
        assert_eq!(lease_number(&lease_name(-5)).ok(), Some(-5));
        assert!(matches!(lease_number("xyz"), Err(EngineError::NoSuchLease)));
        let namespaced = format!("\u{1}billing\u{1}{}", lease_name(0x7b));
        assert_eq!(lease_number(&namespaced).ok(), Some(0x7b), "an id with a namespace prefix");
        assert!(matches!(lease_number("\u{1}é\u{1}00000000000007b"), Err(EngineError::NoSuchLease)));
        assert!(matches!(lease_number("0000000000000000"), Err(EngineError::NoSuchLease)));
    }
}
