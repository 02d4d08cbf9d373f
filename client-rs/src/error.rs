//! The one error type of the client, decoded from the server's `{"error": code}` answers.

use std::time::Duration;

use lockserver_protocol::codes::{ErrorBody, ErrorCode};

/// Everything a lockserver call can fail with.
///
/// The variants mirror the server's error codes one to one ([`Error::code`]), so the Python
/// and Node bindings map them to their own exceptions and error codes without guessing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another owner holds the lock and the wait, if any, ran out.
    #[error("the lock is held by `{owner}`")]
    Locked {
        /// The current (first) holder.
        owner: String,
        /// Time left on the first hold to expire; `None` when none expires.
        expires_in: Option<Duration>,
        /// Every current holder (a semaphore's, or a read-write lock's readers), oldest first.
        holders: Vec<String>,
    },
    /// The resource is a semaphore of another limit, or a lock asked as a semaphore (or the
    /// other way round), while it has holders or waiters.
    #[error("limit mismatch: {message}")]
    LimitMismatch {
        /// The resource's limit now; `None` when it is a lock.
        limit: Option<u32>,
        /// The server's message.
        message: String,
    },
    /// Nobody holds the lock: never acquired, released, or expired.
    #[error("the lock is not held: it was never acquired, was released, or expired")]
    NotHeld,
    /// Another owner holds the lock, or the fencing token is not the current one.
    #[error("the lock is held by another owner or under a newer fencing token")]
    NotOwner,
    /// The lease does not exist: never granted, revoked, or expired.
    #[error("no such lease: it was never granted, was revoked, or expired")]
    NoSuchLease,
    /// A guard's lock was lost before it was released: it expired (keepalive failed) or was
    /// taken over. The work done under it may have overlapped with another holder's.
    #[error("the lock was lost before it was released: it expired or was taken over")]
    LockLost,
    /// The secret is missing or wrong: set `LOCKSERVER_SECRET` or pass one to the builder.
    #[error("unauthorized: the server refused the secret; set LOCKSERVER_SECRET or pass one")]
    Unauthorized,
    /// The key's role does not allow the request, or it named another namespace; the text
    /// says which key and what it needs.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The key's request rate is used up; retry after `retry_after`.
    #[error("rate limited: {message}")]
    RateLimited {
        /// When the server will accept a request again (from `Retry-After`).
        retry_after: Option<Duration>,
        /// The server's message.
        message: String,
    },
    /// The key's namespace holds its quota of locks (`max_locks`); release some first.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The server refused the request as malformed; the text says why.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// An argument of the call is out of range (a negative number of seconds, say); found
    /// before anything was sent. Its code is `bad_request`, as the server would answer.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The server could not be reached or is unavailable (shutting down, backend down).
    #[error("lockserver unavailable: {0}")]
    Unavailable(String),
    /// The caller cancelled the call (a Node `AbortSignal`, say) before it was answered.
    #[error("cancelled before the lock was acquired")]
    Cancelled,
    /// Any other answer from the server.
    #[error("lockserver answered {status}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
}

impl Error {
    /// Every code [`Error::code`] can return.
    pub const CODES: [&'static str; 14] = [
        "locked",
        "limit_mismatch",
        "not_held",
        "not_owner",
        "no_such_lease",
        "lock_lost",
        "unauthorized",
        "forbidden",
        "rate_limited",
        "quota_exceeded",
        "bad_request",
        "unavailable",
        "cancelled",
        "server",
    ];

    /// The stable code of this error: the server's code where it has one (`locked`,
    /// `limit_mismatch`, `not_held`, `not_owner`, `no_such_lease`, `unauthorized`, `forbidden`,
    /// `rate_limited`,
    /// `quota_exceeded`, `bad_request`, `unavailable`),
    /// `lock_lost`, `cancelled` or `server` otherwise.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Locked { .. } => "locked",
            Error::LimitMismatch { .. } => "limit_mismatch",
            Error::NotHeld => "not_held",
            Error::NotOwner => "not_owner",
            Error::NoSuchLease => "no_such_lease",
            Error::LockLost => "lock_lost",
            Error::Unauthorized => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::RateLimited { .. } => "rate_limited",
            Error::QuotaExceeded(_) => "quota_exceeded",
            Error::BadRequest(_) | Error::InvalidArgument(_) => "bad_request",
            Error::Unavailable(_) => "unavailable",
            Error::Cancelled => "cancelled",
            Error::Server { .. } => "server",
        }
    }

    /// Decodes a server error answer; `retry_after` is its `Retry-After` header, if any.
    pub(crate) fn from_answer(status: u16, body: &[u8], retry_after: Option<Duration>) -> Error {
        let answer: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let message = if answer.message.is_empty() {
            String::from_utf8_lossy(body).into_owned()
        } else {
            answer.message
        };
        match ErrorCode::parse(&answer.error) {
            Some(ErrorCode::Locked) => Error::Locked {
                owner: answer.owner.unwrap_or_default(),
                expires_in: answer.expires_in_ms.flatten().map(Duration::from_millis),
                holders: answer.holders.unwrap_or_default(),
            },
            Some(ErrorCode::LimitMismatch) => Error::LimitMismatch { limit: answer.limit.flatten(), message },
            Some(ErrorCode::NotHeld) => Error::NotHeld,
            Some(ErrorCode::NotOwner) => Error::NotOwner,
            Some(ErrorCode::NoSuchLease) => Error::NoSuchLease,
            Some(ErrorCode::Unauthorized) => Error::Unauthorized,
            Some(ErrorCode::Forbidden) => Error::Forbidden(message),
            Some(ErrorCode::RateLimited) => Error::RateLimited { retry_after, message },
            Some(ErrorCode::QuotaExceeded) => Error::QuotaExceeded(message),
            Some(ErrorCode::BadRequest | ErrorCode::TooLarge) => Error::BadRequest(message),
            Some(ErrorCode::Unavailable | ErrorCode::TooMany | ErrorCode::RequestTimeout) => {
                Error::Unavailable(message)
            }
            _ => Error::Server { status, message },
        }
    }
}

/// The result type of the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code the server sends decodes into the variant of the same code (or a wider one).
    #[test]
    fn every_server_code_decodes_into_a_client_code() {
        for code in ErrorCode::ALL {
            let body = format!(r#"{{"error":"{}","message":"m"}}"#, code.as_str());
            let error = Error::from_answer(code.status(), body.as_bytes(), None);
            assert!(Error::CODES.contains(&error.code()));
            if Error::CODES.contains(&code.as_str()) {
                assert_eq!(error.code(), code.as_str());
            }
        }
    }
}
