//! The fixed bounds of the protocol. The server refuses what exceeds them with `bad_request`
//! (or `too_large` for a body); clients may check them before sending.

/// The longest resource name, in bytes.
pub const MAX_RESOURCE_LEN: usize = 512;
/// The longest owner name, in bytes.
pub const MAX_OWNER_LEN: usize = 256;
/// The largest value stored with a lock, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// The largest request body, in bytes.
pub const MAX_BODY_LEN: usize = 128 * 1024;
/// The longest lease id accepted, in bytes.
pub const MAX_LEASE_ID_LEN: usize = 64;
/// The default page size of a listing.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// The largest page size of a listing.
pub const MAX_LIST_LIMIT: usize = 1000;
/// The shortest `expire`, `ttl` or non-zero `wait`, in milliseconds: anything shorter would be
/// over before it was answered.
pub const MIN_DURATION_MS: u64 = 1;
/// The most bytes of values one page of a listing carries; a page ends early (with `next`) once
/// it holds this much, and always holds at least one lock.
pub const MAX_LIST_BYTES: usize = 1 << 20;
/// The largest `limit` of a semaphore (permits held at once).
pub const MAX_SEMAPHORE_LIMIT: u32 = 10_000;
/// The fewest resources of a multi-lock (`resources`).
pub const MIN_MULTI_RESOURCES: usize = 2;
/// The most resources of a multi-lock (`resources`).
pub const MAX_MULTI_RESOURCES: usize = 64;
