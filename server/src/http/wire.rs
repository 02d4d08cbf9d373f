//! The JSON bodies of the API, and their validation into engine requests.
//!
//! Durations travel as seconds (fractions allowed) in requests and as whole milliseconds
//! (`*_ms`) in answers. Unknown fields are ignored; anything malformed or out of range is a
//! `bad_request` naming the field.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{
    AcquireRequest, FencingToken, Grant, LeaseId, LeaseInfo, Lifetime, LockInfo, LockPage, RefreshRequest,
    Refreshed, ReleaseRequest,
};
use crate::error::{Error, Result};

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

/// The configured bounds that requests are checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest `wait` accepted.
    pub max_wait: Duration,
    /// The longest `expire` (and lease `ttl`) accepted.
    pub max_expire: Duration,
}

/// `POST /acquire` (and `PUT /locks/{resource}`, whose path names the resource).
#[derive(Debug, Deserialize)]
pub struct AcquireBody {
    /// The lock's name; taken from the path on the resource route.
    pub resource: Option<String>,
    owner: String,
    expire: Option<f64>,
    wait: Option<f64>,
    lease: Option<String>,
    value: Option<String>,
}

impl AcquireBody {
    /// Validates the body into an engine request for `resource`.
    pub fn into_request(self, resource: String, limits: &Limits) -> Result<AcquireRequest> {
        let lifetime = match (self.expire, self.lease) {
            (Some(_), Some(_)) => return Err(Error::bad_request(
                "`lease` and `expire` exclude each other: a lock under a lease lives as long as the lease",
            )),
            (Some(expire), None) => Lifetime::Expire(positive_seconds("expire", expire, limits.max_expire)?),
            (None, Some(lease)) => Lifetime::Lease(lease_id(lease)?),
            (None, None) => Lifetime::Unbounded,
        };
        Ok(AcquireRequest {
            resource: resource_name(resource)?,
            owner: owner_name(self.owner)?,
            lifetime,
            wait: match self.wait {
                Some(wait) => seconds("wait", wait, Duration::ZERO, limits.max_wait)?,
                None => Duration::ZERO,
            },
            value: self.value.map(value).transpose()?,
        })
    }
}

/// `POST /release`, and the query of `DELETE /locks/{resource}`.
#[derive(Debug, Deserialize)]
pub struct ReleaseBody {
    /// The lock's name; taken from the path on the resource route.
    pub resource: Option<String>,
    owner: String,
    token: Option<u64>,
    keep_value: Option<bool>,
}

impl ReleaseBody {
    /// Validates the body into an engine request for `resource`.
    pub fn into_request(self, resource: String) -> Result<ReleaseRequest> {
        Ok(ReleaseRequest {
            resource: resource_name(resource)?,
            owner: owner_name(self.owner)?,
            token: self.token.map(FencingToken),
            keep_value: self.keep_value.unwrap_or(false),
        })
    }
}

/// `POST /refresh` (and `PATCH /locks/{resource}`).
#[derive(Debug, Deserialize)]
pub struct RefreshBody {
    /// The lock's name; taken from the path on the resource route.
    pub resource: Option<String>,
    owner: String,
    expire: Option<f64>,
    token: Option<u64>,
    value: Option<String>,
}

impl RefreshBody {
    /// Validates the body into an engine request for `resource`.
    pub fn into_request(self, resource: String, limits: &Limits) -> Result<RefreshRequest> {
        if self.expire.is_none() && self.value.is_none() {
            return Err(Error::bad_request("a refresh needs `expire`, `value` or both"));
        }
        Ok(RefreshRequest {
            resource: resource_name(resource)?,
            owner: owner_name(self.owner)?,
            expire: self
                .expire
                .map(|expire| positive_seconds("expire", expire, limits.max_expire))
                .transpose()?,
            token: self.token.map(FencingToken),
            value: self.value.map(value).transpose()?,
        })
    }
}

/// The query of `GET /locks`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    prefix: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

impl ListQuery {
    /// The prefix, the cursor and the page size, validated.
    pub fn validate(self) -> Result<(String, Option<String>, usize)> {
        let limit = self.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(Error::bad_request(format!("`limit` must be from 1 to {MAX_LIST_LIMIT}")));
        }
        Ok((self.prefix.unwrap_or_default(), self.after, limit))
    }
}

/// `POST /leases`.
#[derive(Debug, Deserialize)]
pub struct LeaseBody {
    ttl: f64,
}

impl LeaseBody {
    /// The lease's time to live, validated.
    pub fn ttl(&self, limits: &Limits) -> Result<Duration> {
        positive_seconds("ttl", self.ttl, limits.max_expire)
    }
}

/// Checks a lease id taken from a path.
pub fn lease_id(id: String) -> Result<LeaseId> {
    if id.is_empty() || id.len() > MAX_LEASE_ID_LEN || id.chars().any(char::is_control) {
        return Err(Error::bad_request(format!(
            "`lease` must be 1 to {MAX_LEASE_ID_LEN} bytes without control characters"
        )));
    }
    Ok(LeaseId(id))
}

fn resource_name(name: String) -> Result<String> {
    text("resource", name, MAX_RESOURCE_LEN)
}

fn owner_name(name: String) -> Result<String> {
    text("owner", name, MAX_OWNER_LEN)
}

fn text(field: &str, text: String, max: usize) -> Result<String> {
    if text.is_empty() || text.len() > max || text.chars().any(char::is_control) {
        return Err(Error::bad_request(format!(
            "`{field}` must be 1 to {max} bytes of UTF-8 without control characters"
        )));
    }
    Ok(text)
}

fn value(value: String) -> Result<String> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::bad_request(format!("`value` must be at most {MAX_VALUE_LEN} bytes")));
    }
    Ok(value)
}

fn positive_seconds(field: &str, secs: f64, max: Duration) -> Result<Duration> {
    if secs <= 0.0 {
        return Err(Error::bad_request(format!("`{field}` must be a positive number of seconds")));
    }
    seconds(field, secs, Duration::ZERO, max)
}

fn seconds(field: &str, secs: f64, min: Duration, max: Duration) -> Result<Duration> {
    match Duration::try_from_secs_f64(secs) {
        Ok(duration) if duration >= min && duration <= max => Ok(duration),
        _ => Err(Error::bad_request(format!(
            "`{field}` must be a number of seconds from {} to {}",
            min.as_secs_f64(),
            max.as_secs_f64()
        ))),
    }
}

/// A duration as whole milliseconds, rounded up so that a live hold never reads 0.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// The answer to an acquire.
#[derive(Debug, Serialize)]
pub struct GrantReply {
    resource: String,
    owner: String,
    token: u64,
    expires_in_ms: Option<u64>,
    value: Option<String>,
}

impl From<Grant> for GrantReply {
    fn from(grant: Grant) -> Self {
        GrantReply {
            resource: grant.resource,
            owner: grant.owner,
            token: grant.token.0,
            expires_in_ms: grant.expires_in.map(millis),
            value: grant.value,
        }
    }
}

/// The answer to a release.
#[derive(Debug, Serialize)]
pub struct ReleasedReply {
    /// Always true: a failed release is an error.
    pub released: bool,
}

/// The answer to a refresh.
#[derive(Debug, Serialize)]
pub struct RefreshedReply {
    token: u64,
    expires_in_ms: Option<u64>,
}

impl From<Refreshed> for RefreshedReply {
    fn from(refreshed: Refreshed) -> Self {
        RefreshedReply { token: refreshed.token.0, expires_in_ms: refreshed.expires_in.map(millis) }
    }
}

/// A held lock, as inspected or listed.
#[derive(Debug, Serialize)]
pub struct LockReply {
    resource: String,
    owner: String,
    token: u64,
    expires_in_ms: Option<u64>,
    value: Option<String>,
    waiters: usize,
    lease: Option<String>,
}

impl From<LockInfo> for LockReply {
    fn from(lock: LockInfo) -> Self {
        LockReply {
            resource: lock.resource,
            owner: lock.owner,
            token: lock.token.0,
            expires_in_ms: lock.expires_in.map(millis),
            value: lock.value,
            waiters: lock.waiters,
            lease: lock.lease.map(|lease| lease.0),
        }
    }
}

/// A page of held locks.
#[derive(Debug, Serialize)]
pub struct LockPageReply {
    locks: Vec<LockReply>,
    next: Option<String>,
}

impl From<LockPage> for LockPageReply {
    fn from(page: LockPage) -> Self {
        LockPageReply { locks: page.locks.into_iter().map(LockReply::from).collect(), next: page.next }
    }
}

/// A lease, as granted or inspected.
#[derive(Debug, Serialize)]
pub struct LeaseReply {
    lease: String,
    ttl: f64,
    expires_in_ms: u64,
    locks: Vec<String>,
}

impl From<LeaseInfo> for LeaseReply {
    fn from(lease: LeaseInfo) -> Self {
        LeaseReply {
            lease: lease.id.0,
            ttl: lease.ttl.as_secs_f64(),
            expires_in_ms: millis(lease.expires_in),
            locks: lease.locks,
        }
    }
}

/// The answer to a keepalive.
#[derive(Debug, Serialize)]
pub struct KeepaliveReply {
    /// The restored time to live, in seconds.
    pub ttl: f64,
}

/// The answer to a revoke.
#[derive(Debug, Serialize)]
pub struct RevokedReply {
    /// Always true: a failed revoke is an error.
    pub revoked: bool,
}
