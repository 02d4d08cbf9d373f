//! The wall clock, for what outlives this process: deadlines written to the durable store or to
//! etcd. Deadlines this process enforces run on the monotonic clock (`tokio::time::Instant`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn wall_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
