//! The one error type of the client, decoded from the server's `{"error": code}` answers.

use std::time::Duration;

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
        /// The current holder.
        owner: String,
        /// Time left on its hold; `None` when it has no expiry.
        expires_in: Option<Duration>,
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
    /// The server refused the request as malformed; the text says why.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The server could not be reached or is unavailable (shutting down, backend down).
    #[error("lockserver unavailable: {0}")]
    Unavailable(String),
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
    /// The stable code of this error: the server's code where it has one (`locked`,
    /// `not_held`, `not_owner`, `no_such_lease`, `unauthorized`, `bad_request`, `unavailable`),
    /// `lock_lost` or `server` otherwise.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Locked { .. } => "locked",
            Error::NotHeld => "not_held",
            Error::NotOwner => "not_owner",
            Error::NoSuchLease => "no_such_lease",
            Error::LockLost => "lock_lost",
            Error::Unauthorized => "unauthorized",
            Error::BadRequest(_) => "bad_request",
            Error::Unavailable(_) => "unavailable",
            Error::Server { .. } => "server",
        }
    }

    /// Decodes a server error answer.
    pub(crate) fn from_answer(status: u16, body: &[u8]) -> Error {
        #[derive(serde::Deserialize, Default)]
        struct Answer {
            #[serde(default)]
            error: String,
            #[serde(default)]
            message: String,
            owner: Option<String>,
            expires_in_ms: Option<u64>,
        }
        let answer: Answer = serde_json::from_slice(body).unwrap_or_default();
        let message = if answer.message.is_empty() {
            String::from_utf8_lossy(body).into_owned()
        } else {
            answer.message
        };
        match answer.error.as_str() {
            "locked" => Error::Locked {
                owner: answer.owner.unwrap_or_default(),
                expires_in: answer.expires_in_ms.map(Duration::from_millis),
            },
            "not_held" => Error::NotHeld,
            "not_owner" => Error::NotOwner,
            "no_such_lease" => Error::NoSuchLease,
            "unauthorized" => Error::Unauthorized,
            "bad_request" | "too_large" => Error::BadRequest(message),
            "unavailable" => Error::Unavailable(message),
            _ => Error::Server { status, message },
        }
    }
}

/// The result type of the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;
