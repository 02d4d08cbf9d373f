//! `LockInfo`: a held lock as JavaScript sees it, made from the Rust client's (for `inspect`
//! and `list`).

use napi_derive::napi;

/// A held lock as the server describes it.
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
    /// The lease the hold is bound to.
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
        }
    }
}
