//! What the server answers, as Rust values.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

fn millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
}

fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(deserializer)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

/// A granted lock.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Grant {
    /// The lock's name.
    pub resource: String,
    /// The holder.
    pub owner: String,
    /// The fencing token: greater than every token the server issued before.
    pub token: u64,
    /// Time left on the hold when the server answered; `None` without expiry.
    #[serde(rename = "expires_in_ms", deserialize_with = "millis")]
    pub expires_in: Option<Duration>,
    /// The value stored with the resource.
    pub value: Option<String>,
}

/// The answer to a refresh.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Refreshed {
    /// The hold's fencing token.
    pub token: u64,
    /// Time left on the hold; `None` without expiry.
    #[serde(rename = "expires_in_ms", deserialize_with = "millis")]
    pub expires_in: Option<Duration>,
}

/// A held lock, as inspected or listed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LockInfo {
    /// The lock's name.
    pub resource: String,
    /// The holder.
    pub owner: String,
    /// The hold's fencing token.
    pub token: u64,
    /// Time left on the hold; `None` without expiry.
    #[serde(rename = "expires_in_ms", deserialize_with = "millis")]
    pub expires_in: Option<Duration>,
    /// The value stored with the resource.
    pub value: Option<String>,
    /// How many requests are queued for it.
    pub waiters: usize,
    /// The lease the hold is bound to.
    pub lease: Option<String>,
}

/// A page of held locks in name order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LockPage {
    /// The locks.
    pub locks: Vec<LockInfo>,
    /// Pass as `after` for the next page; `None` on the last one.
    pub next: Option<String>,
}

/// A lease as the server describes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LeaseInfo {
    /// The lease id.
    #[serde(rename = "lease")]
    pub id: String,
    /// The time to live each keepalive restores.
    #[serde(deserialize_with = "seconds")]
    pub ttl: Duration,
    /// The locks held under it.
    pub locks: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct Keepalive {
    #[serde(deserialize_with = "seconds")]
    pub(crate) ttl: Duration,
}
