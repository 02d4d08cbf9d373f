//! The error codes of the API: the one table of codes, their strings and their HTTP statuses,
//! and the body every error answer carries (`{"error": code, "message": text}`).

use serde::{Deserialize, Serialize};

/// Every error code the server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Another owner holds the lock and the wait, if any, ran out (409).
    Locked,
    /// Nobody holds the lock (404).
    NotHeld,
    /// Another owner or another fencing token holds the lock (409).
    NotOwner,
    /// The lease does not exist (404).
    NoSuchLease,
    /// The request is malformed (400).
    BadRequest,
    /// The request body is too large (413).
    TooLarge,
    /// The request body did not arrive in time (408; the connection is closed).
    RequestTimeout,
    /// The secret is missing or wrong (401).
    Unauthorized,
    /// No such route (404).
    NotFound,
    /// The route does not take this method (405).
    MethodNotAllowed,
    /// The server cannot serve the request now (503).
    Unavailable,
    /// A configured cap is reached: held locks, queued waiters (503).
    TooMany,
    /// The key's role does not allow this (403).
    Forbidden,
    /// The key's request rate is used up; `Retry-After` says when to try again (429).
    RateLimited,
    /// The key's namespace holds its `max_locks` already (429).
    QuotaExceeded,
    /// The resource is a semaphore of another limit, or a lock asked as a semaphore (or the
    /// other way round), while it has holders or waiters (409).
    LimitMismatch,
}

impl ErrorCode {
    /// Every code, in the order of the table above.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::Locked,
        ErrorCode::NotHeld,
        ErrorCode::NotOwner,
        ErrorCode::NoSuchLease,
        ErrorCode::BadRequest,
        ErrorCode::TooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unavailable,
        ErrorCode::TooMany,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::QuotaExceeded,
        ErrorCode::LimitMismatch,
    ];

    /// The string sent as `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Locked => "locked",
            ErrorCode::NotHeld => "not_held",
            ErrorCode::NotOwner => "not_owner",
            ErrorCode::NoSuchLease => "no_such_lease",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::TooMany => "too_many",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::LimitMismatch => "limit_mismatch",
        }
    }

    /// The HTTP status answered with this code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::Locked | ErrorCode::NotOwner | ErrorCode::LimitMismatch => 409,
            ErrorCode::NotHeld | ErrorCode::NoSuchLease | ErrorCode::NotFound => 404,
            ErrorCode::BadRequest => 400,
            ErrorCode::TooLarge => 413,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::Unauthorized => 401,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unavailable | ErrorCode::TooMany => 503,
            ErrorCode::Forbidden => 403,
            ErrorCode::RateLimited | ErrorCode::QuotaExceeded => 429,
        }
    }

    /// The code of a `"error"` string; `None` for a code this version does not know.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|known| known.as_str() == code)
    }
}

/// The body of every error answer. `owner`, `expires_in_ms` and `holders` come with `locked`
/// only, `limit` with `limit_mismatch` only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The code's string ([`ErrorCode::as_str`]).
    #[serde(default)]
    pub error: String,
    /// What went wrong and what to do, for people.
    #[serde(default)]
    pub message: String,
    /// `locked`: the current holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `locked`: time left on the current hold, in ms (`null` for a hold without expiry);
    /// absent with other codes. Readers see `null` and absent alike, as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<Option<u64>>,
    /// `locked`: every current holder (a semaphore's or shared lock's), oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<Vec<String>>,
    /// `limit_mismatch`: the resource's current limit (`null`: it is a lock, not a semaphore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Option<u32>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_from_its_string() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("nonsense"), None);
    }
}
