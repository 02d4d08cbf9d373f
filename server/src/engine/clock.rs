//! The wall clock, for what outlives this process: deadlines written to the durable store or to
//! etcd. Deadlines this process enforces run on the monotonic clock (`tokio::time::Instant`).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch, now.
pub fn wall_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Milliseconds from a fixed point early in the process's life to `at` (monotonic): a compact
/// time for what is kept per lock (when a hold was granted).
pub fn since_start_ms(at: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(|| Instant::now() - Duration::from_secs(1));
    at.saturating_duration_since(start).as_millis() as u64
}
