//! `LockInfo`: a held lock as JavaScript sees it, made from the Rust client's (for `inspect`
//! and `list`).

use napi_derive::napi;

/// A held lock as the server describes it; `owner`, `token`, `expiresIn` and `lease` are
/// those of its first holder.
#[napi(object)]
pub struct LockInfo {
    /// The lock's name.
    pub resource: String,
    /// The holder.
    pub owner: String,
    /// The fencing token of the hold.
    pub token: i64,
    /// Seconds left, or null without expiry.
    pub expires_in: Option<f64>,
    /// The value stored with the lock.
    pub value: Option<String>,
    /// How many requests are queued for it.
    pub waiters: u32,
    /// The lease the (first) hold is bound to.
    pub lease: Option<String>,
    /// `'exclusive'`, `'shared'` (a read-write lock's readers) or `'permit'` (a semaphore).
    #[napi(ts_type = "'exclusive' | 'shared' | 'permit'")]
    pub mode: String,
    /// A semaphore's number of permits; null for a lock.
    pub limit: Option<u32>,
    /// Every holder, oldest first (`owner`, `token` and `expiresIn` above are the first's).
    pub holders: Vec<HolderInfo>,
}

/// One holder of a lock or semaphore.
#[napi(object)]
pub struct HolderInfo {
    /// The holder.
    pub owner: String,
    /// Its fencing token.
    pub token: i64,
    /// Seconds left, or null without expiry.
    pub expires_in: Option<f64>,
    /// How it holds the lock.
    #[napi(ts_type = "'exclusive' | 'shared' | 'permit'")]
    pub mode: String,
    /// The lease its hold is bound to.
    pub lease: Option<String>,
}

impl From<lockserver_client::LockInfo> for LockInfo {
    fn from(info: lockserver_client::LockInfo) -> Self {
        LockInfo {
            resource: info.resource,
            owner: info.owner,
            token: info.token as i64,
            expires_in: info.expires_in.map(|left| left.as_secs_f64()),
            value: info.value,
            waiters: info.waiters as u32,
            lease: info.lease,
            mode: info.mode.as_str().to_string(),
            limit: info.limit,
            holders: info
                .holders
                .into_iter()
                .map(|holder| HolderInfo {
                    owner: holder.owner,
                    token: holder.token as i64,
                    expires_in: holder.expires_in.map(|left| left.as_secs_f64()),
                    mode: holder.mode.as_str().to_string(),
                    lease: holder.lease,
                })
                .collect(),
        }
    }
}
