//! The lockserver wire protocol, written once and shared by the server's `http/` layer and the
//! Rust client (and through it, the Python and Node bindings).
//!
//! - [`bodies`]: the JSON request and reply bodies of every route.
//! - [`codes`]: the error codes, each with its string and HTTP status, and the error body.
//! - [`events`]: the names of watch events.
//! - [`limits`]: the fixed bounds every request is checked against.
//! - [`durations`]: durations as flags take them (`500ms`, `30s`, `1d`), for the server and
//!   `lockctl`.
//! - [`SECRET_HEADER`]: the header that carries the secret.
//!
//! Durations travel as seconds (fractions allowed) in requests and as whole milliseconds
//! (`*_ms`) in replies; [`millis`] is the one conversion.
//!
//! ```
//! use lockserver_protocol::{bodies::AcquireBody, codes::ErrorCode};
//!
//! let body: AcquireBody = serde_json::from_str(r#"{"resource":"r","owner":"w","expire":1.5}"#).unwrap();
//! assert_eq!(body.expire, Some(1.5));
//! assert_eq!(ErrorCode::Locked.as_str(), "locked");
//! assert_eq!(ErrorCode::Locked.status(), 409);
//! ```

pub mod bodies;
pub mod codes;
pub mod durations;
pub mod events;
pub mod limits;

use std::time::Duration;

/// The header that carries the secret on every route but `GET /health`.
pub const SECRET_HEADER: &str = "X-LOCKSERVER-SECRET";

/// A duration as whole milliseconds, rounded up so that a live hold never reads 0.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}
