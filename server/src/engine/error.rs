//! The engine's one error type: what can go wrong with a lock or lease request, in the
//! engine's own terms. The HTTP layer wraps it (`http::error::ApiError`) and maps each case to
//! a status and an error code there, in one place.

use std::time::Duration;

use super::StoreError;

/// Why a lock or lease request was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Another owner holds the lock and the wait, if any, ran out.
    #[error("the lock is held by `{owner}`; retry later or pass `wait` to queue for it")]
    Locked {
        /// The current (first) holder.
        owner: String,
        /// How long until the first of the current holds expires; `None` when none expires.
        expires_in: Option<Duration>,
        /// Every current holder, oldest first.
        holders: Vec<String>,
    },
    /// The resource is a semaphore of another limit, or a lock asked as a semaphore (or the
    /// other way round), while it has holders or waiters.
    #[error("{}", match current {
        Some(limit) => format!("this resource is a semaphore of {limit} permits now; acquire it with `limit`: {limit}"),
        None => "this resource is a lock now, not a semaphore; acquire it without `limit`".to_string(),
    })]
    LimitMismatch {
        /// The resource's limit now; `None` when it is a lock.
        current: Option<u32>,
    },
    /// Nobody holds the lock: never acquired, released, or expired.
    #[error("the lock is not held: it was never acquired, was released, or expired")]
    NotHeld,
    /// Another owner holds the lock, or the fencing token given is not the current one.
    #[error("the lock is held by another owner or under another fencing token")]
    NotOwner,
    /// The lease does not exist: never granted, revoked, or expired.
    #[error("no such lease: it was never granted, was revoked, or expired")]
    NoSuchLease,
    /// A refresh asked for an expiry on a lock that lives as long as its lease.
    #[error("this lock lives as long as its lease: keep the lease alive instead of refreshing its expiry")]
    LeaseBound,
    /// The server is shutting down: nothing new is queued, queued waiters are answered.
    #[error("the server is shutting down; retry on another server or later")]
    ShuttingDown,
    /// A cap is reached (held locks, queued waiters); the text says which.
    #[error("{0}")]
    TooMany(String),
    /// The backend cannot be reached or refused the request (etcd down, no leader, ...).
    #[error("{0}")]
    Unavailable(String),
    /// The durable store cannot write: the change was not made durable.
    #[error("the data dir cannot be written: {0}")]
    Storage(#[from] StoreError),
}

/// The result type of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
