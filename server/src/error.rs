//! The one error type of the server crate.
//!
//! The engine returns these; the HTTP layer turns each into a status and a
//! `{"error": code, "message": text}` body in one place (`http::error`). The code strings are
//! the protocol: the clients decode them back into their own error types.

use std::time::Duration;

/// Everything that can go wrong in a lock server request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another owner holds the lock and the wait, if any, ran out.
    #[error("the lock is held by `{owner}`; retry later or pass `wait` to queue for it")]
    Locked {
        /// The current holder.
        owner: String,
        /// How long until the current hold expires; `None` for a lock without expiry.
        expires_in: Option<Duration>,
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
    /// The request is malformed; the text says which field and why.
    #[error("{0}")]
    BadRequest(String),
    /// The request body is larger than the server accepts.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// The largest body accepted, in bytes.
        limit: usize,
    },
    /// The `X-LOCKSERVER-SECRET` header is missing or wrong.
    #[error("missing or wrong X-LOCKSERVER-SECRET header")]
    Unauthorized,
    /// No route matches the path.
    #[error("no such route; see the README for the API")]
    NotFound,
    /// The route exists but not for this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The server cannot serve the request now (shutting down, backend unreachable).
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
    /// The stable machine-readable code sent as `"error"` in every error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Locked { .. } => "locked",
            Error::NotHeld => "not_held",
            Error::NotOwner => "not_owner",
            Error::NoSuchLease => "no_such_lease",
            Error::BadRequest(_) => "bad_request",
            Error::TooLarge { .. } => "too_large",
            Error::Unauthorized => "unauthorized",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::Unavailable(_) => "unavailable",
        }
    }

    /// Shorthand for a [`Error::BadRequest`].
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest(message.into())
    }
}

/// The result type of the server crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
