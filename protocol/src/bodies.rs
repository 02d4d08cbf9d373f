//! The JSON bodies of every route: what clients send and what the server answers.
//!
//! Requests: optional fields are left out when `None`; unknown fields are ignored. On the
//! resource routes (`PUT/PATCH/DELETE /locks/{resource}`) the path names the resource and
//! `resource` is absent. Replies: every field is always present (`null` when empty).

use serde::{Deserialize, Serialize};

/// `POST /acquire`, `PUT /locks/{resource}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AcquireBody {
    /// The lock's name (absent on the resource route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Who asks; the same owner acquiring again is idempotent.
    pub owner: String,
    /// Seconds until the hold expires unless refreshed; excludes `lease`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire: Option<f64>,
    /// Seconds to queue when the lock is held; absent or 0 answers at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<f64>,
    /// A lease id to bind the hold to; excludes `expire`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// A value to store with the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `shared` takes a read-write lock beside other shared holders; absent or `exclusive`
    /// takes it alone. Excludes `limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Makes the resource a semaphore of this many permits (1 to
    /// [`MAX_SEMAPHORE_LIMIT`](crate::limits::MAX_SEMAPHORE_LIMIT)); every acquire of it must
    /// give the same limit while it has holders or waiters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// A multi-lock: these resources (2 to
    /// [`MAX_MULTI_RESOURCES`](crate::limits::MAX_MULTI_RESOURCES)), all or none, exclusive,
    /// instead of `resource`; answered with [`GrantsReply`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
}

/// How a hold shares its lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Alone: a mutex, or a read-write lock's writer.
    #[default]
    Exclusive,
    /// Beside other shared holders: a read-write lock's reader.
    Shared,
    /// One of a semaphore's permits (in replies only: ask with `limit`).
    Permit,
}

impl Mode {
    /// The mode's string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
            Mode::Permit => "permit",
        }
    }
}

/// `POST /release`, and the query of `DELETE /locks/{resource}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReleaseBody {
    /// The lock's name (absent on the resource route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The holder.
    pub owner: String,
    /// When given, the release applies only to this hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// Keep the stored value for the next holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_value: Option<bool>,
    /// Admin keys only: end the hold whoever holds it (`owner` and `token` are not checked);
    /// the head waiter is granted at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// A multi-lock's resources, released together, instead of `resource` (`token` is then
    /// not given: each resource has its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
}

/// `POST /refresh`, `PATCH /locks/{resource}`: `expire`, `value` or both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RefreshBody {
    /// The lock's name (absent on the resource route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The holder.
    pub owner: String,
    /// The new time to live in seconds, counted from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire: Option<f64>,
    /// When given, the refresh applies only to this hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// Replaces the stored value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The query of `GET /locks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only names starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The page size (default [`DEFAULT_LIST_LIMIT`](crate::limits::DEFAULT_LIST_LIMIT)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Names strictly after this one (the `next` of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// `false` leaves the values out (`null`), for pages of many locks with large values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<bool>,
}

/// `POST /leases`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseBody {
    /// The lease's time to live in seconds.
    pub ttl: f64,
}

/// The answer to an acquire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantReply {
    /// The lock's name.
    pub resource: String,
    /// The holder.
    pub owner: String,
    /// The fencing token of this hold.
    pub token: u64,
    /// Time left on the hold; `null` without an expiry of its own.
    pub expires_in_ms: Option<u64>,
    /// The value stored with the lock.
    pub value: Option<String>,
}

/// The answer to a multi-lock acquire: one grant per resource, in the order asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantsReply {
    /// The grants, each with its own token.
    pub grants: Vec<GrantReply>,
}

/// The answer to a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasedReply {
    /// Always true: a failed release is an error.
    pub released: bool,
}

/// The answer to a refresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshedReply {
    /// The hold's fencing token (a refresh keeps it).
    pub token: u64,
    /// Time left on the hold; `null` without an expiry of its own.
    pub expires_in_ms: Option<u64>,
}

/// A held lock, as inspected or listed. `owner`, `token` and `expires_in_ms` describe its
/// first holder (the only one of an exclusive lock); `holders` lists them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockReply {
    /// The lock's name.
    pub resource: String,
    /// The (first) holder.
    pub owner: String,
    /// The (first) hold's fencing token.
    pub token: u64,
    /// Time left on the hold; `null` without an expiry of its own.
    pub expires_in_ms: Option<u64>,
    /// The value stored with the lock.
    pub value: Option<String>,
    /// How many requests are queued for it.
    pub waiters: usize,
    /// The lease the (first) hold is bound to.
    pub lease: Option<String>,
    /// `exclusive`, `shared` (a read-write lock's readers) or `permit` (a semaphore).
    #[serde(default)]
    pub mode: Mode,
    /// A semaphore's number of permits; `null` for a lock.
    #[serde(default)]
    pub limit: Option<u32>,
    /// Every holder, oldest grant first.
    #[serde(default)]
    pub holders: Vec<HolderReply>,
}

/// One holder of a lock or semaphore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HolderReply {
    /// The holder.
    pub owner: String,
    /// Its fencing token.
    pub token: u64,
    /// Time left on its hold; `null` without an expiry of its own.
    pub expires_in_ms: Option<u64>,
    /// How it holds the lock.
    pub mode: Mode,
    /// The lease its hold is bound to.
    pub lease: Option<String>,
}

/// A page of held locks in name order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockPageReply {
    /// The locks on this page.
    pub locks: Vec<LockReply>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next: Option<String>,
}

/// A lease, as granted or inspected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseReply {
    /// The lease id.
    pub lease: String,
    /// The time to live each keepalive restores, in seconds.
    pub ttl: f64,
    /// Time left before the lease expires unless kept alive.
    pub expires_in_ms: u64,
    /// The locks held under it, in name order.
    pub locks: Vec<String>,
}

/// `GET /leases?limit=N`: `limit` leases alive (default 100, at most 1000), in id order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseListQuery {
    /// How many at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The answer to `GET /leases`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseListReply {
    /// The leases alive, in id order.
    pub leases: Vec<LeaseReply>,
}

/// The answer to a keepalive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeepaliveReply {
    /// The restored time to live, in seconds.
    pub ttl: f64,
}

/// The answer to a revoke.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokedReply {
    /// Always true: a failed revoke is an error.
    pub revoked: bool,
}

/// The answer of `GET /health` (with `error` and `message` when unavailable, status 503).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReply {
    /// `ok` or `unavailable`.
    pub status: String,
    /// `embedded` or `etcd`.
    pub backend: String,
    /// The server's version (its crate version, as `lockserver --version` prints it).
    #[serde(default)]
    pub version: String,
    /// `unavailable` when the backend cannot serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the backend cannot serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /watch?resource=NAME` or `?prefix=P` (a Server-Sent Events stream): one of the two.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchQuery {
    /// Watch this lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Watch every lock whose name starts with this (empty: every lock of the namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// The `data:` of a watch event: a lock as it is after the change (`owner` and `token` are
/// `null` once it is free). The `event:` line says what changed: `acquired`, `released`,
/// `expired`, `refreshed`, `handoff` (granted to the head waiter) or `revoked` (its lease
/// ended); `reset` carries the current state instead (see [`WatchResetBody`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEventBody {
    /// The lock's name.
    pub resource: String,
    /// The holder after the change; `null` when free.
    pub owner: Option<String>,
    /// The hold's fencing token; `null` when free.
    pub token: Option<u64>,
    /// Time left on the hold; `null` when free or without an expiry of its own.
    pub expires_in_ms: Option<u64>,
    /// The value stored with the lock (on the etcd backend: as read a moment after the change).
    pub value: Option<String>,
    /// How many requests are queued for it (on the etcd backend: as read a moment after the
    /// change; `null` if that read failed).
    pub waiters: Option<usize>,
}

/// The `data:` of a `reset` event: what is held now among the watched locks (resume from its
/// `id:`). Sent first when a `Last-Event-ID` is no longer known, and whenever the server had to
/// drop events for this watcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchResetBody {
    /// The watched locks that are held now, in name order (at most 1000).
    pub locks: Vec<LockReply>,
}
