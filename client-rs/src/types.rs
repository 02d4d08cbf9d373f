//! What the server answers, as Rust values: the protocol's reply bodies with durations as
//! [`Duration`]s.

use std::time::Duration;

use lockserver_protocol::bodies::{
    GrantReply, HolderReply, LeaseReply, LockPageReply, LockReply, Mode, RefreshedReply,
};

use crate::error::{Error, Result};

/// A granted lock.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The lock's name.
    pub resource: String,
    /// The holder.
    pub owner: String,
    /// The fencing token: greater than every token the server issued before.
    pub token: u64,
    /// Time left on the hold when the server answered; `None` without expiry.
    pub expires_in: Option<Duration>,
    /// The value stored with the resource.
    pub value: Option<String>,
}

impl From<GrantReply> for Grant {
    fn from(reply: GrantReply) -> Self {
        Grant {
            resource: reply.resource,
            owner: reply.owner,
            token: reply.token,
            expires_in: reply.expires_in_ms.map(Duration::from_millis),
            value: reply.value,
        }
    }
}

/// The answer to a refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Refreshed {
    /// The hold's fencing token.
    pub token: u64,
    /// Time left on the hold; `None` without expiry.
    pub expires_in: Option<Duration>,
}

impl From<RefreshedReply> for Refreshed {
    fn from(reply: RefreshedReply) -> Self {
        Refreshed { token: reply.token, expires_in: reply.expires_in_ms.map(Duration::from_millis) }
    }
}

/// A held lock, as inspected or listed. `owner`, `token`, `expires_in` and `lease` are those
/// of its first holder (the only one of an exclusive lock); `holders` lists them all.
#[derive(Debug, Clone, PartialEq)]
pub struct LockInfo {
    /// The lock's name.
    pub resource: String,
    /// The (first) holder.
    pub owner: String,
    /// The (first) hold's fencing token.
    pub token: u64,
    /// Time left on the hold; `None` without expiry.
    pub expires_in: Option<Duration>,
    /// The value stored with the resource.
    pub value: Option<String>,
    /// How many requests are queued for it.
    pub waiters: usize,
    /// The lease the (first) hold is bound to.
    pub lease: Option<String>,
    /// `Exclusive`, `Shared` (a read-write lock's readers) or `Permit` (a semaphore).
    pub mode: Mode,
    /// A semaphore's number of permits; `None` for a lock.
    pub limit: Option<u32>,
    /// Every holder, oldest grant first.
    pub holders: Vec<HolderInfo>,
}

/// One holder of a lock or semaphore.
#[derive(Debug, Clone, PartialEq)]
pub struct HolderInfo {
    /// The holder.
    pub owner: String,
    /// Its fencing token.
    pub token: u64,
    /// Time left on its hold; `None` without expiry.
    pub expires_in: Option<Duration>,
    /// How it holds the lock.
    pub mode: Mode,
    /// The lease its hold is bound to.
    pub lease: Option<String>,
}

impl From<HolderReply> for HolderInfo {
    fn from(reply: HolderReply) -> Self {
        HolderInfo {
            owner: reply.owner,
            token: reply.token,
            expires_in: reply.expires_in_ms.map(Duration::from_millis),
            mode: reply.mode,
            lease: reply.lease,
        }
    }
}

impl From<LockReply> for LockInfo {
    fn from(reply: LockReply) -> Self {
        LockInfo {
            resource: reply.resource,
            owner: reply.owner,
            token: reply.token,
            expires_in: reply.expires_in_ms.map(Duration::from_millis),
            value: reply.value,
            waiters: reply.waiters,
            lease: reply.lease,
            mode: reply.mode,
            limit: reply.limit,
            holders: reply.holders.into_iter().map(HolderInfo::from).collect(),
        }
    }
}

/// A page of held locks in name order.
#[derive(Debug, Clone, PartialEq)]
pub struct LockPage {
    /// The locks.
    pub locks: Vec<LockInfo>,
    /// Pass as `after` for the next page; `None` on the last one.
    pub next: Option<String>,
}

impl From<LockPageReply> for LockPage {
    fn from(reply: LockPageReply) -> Self {
        LockPage { locks: reply.locks.into_iter().map(LockInfo::from).collect(), next: reply.next }
    }
}

/// A lease as the server describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseInfo {
    /// The lease id.
    pub id: String,
    /// The time to live each keepalive restores.
    pub ttl: Duration,
    /// The locks held under it.
    pub locks: Vec<String>,
}

impl TryFrom<LeaseReply> for LeaseInfo {
    type Error = Error;

    fn try_from(reply: LeaseReply) -> Result<Self> {
        Ok(LeaseInfo { id: reply.lease, ttl: seconds_from_server(reply.ttl)?, locks: reply.locks })
    }
}

/// Seconds the server answered, as a duration.
pub(crate) fn seconds_from_server(secs: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .map_err(|error| Error::Server { status: 200, message: format!("unreadable answer: {error}") })
}
