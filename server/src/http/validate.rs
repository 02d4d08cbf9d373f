//! Request validation: the protocol's bodies checked and turned into engine requests.
//!
//! Anything malformed or out of range is a `bad_request` naming the field. The fixed bounds
//! come from the protocol ([`lockserver_protocol::limits`]); the configured ones (longest wait,
//! longest expiry) from [`Limits`].

use std::time::Duration;

use lockserver_protocol::bodies::{AcquireBody, LeaseBody, ListQuery, Mode, RefreshBody, ReleaseBody};
use lockserver_protocol::limits::{
    DEFAULT_LIST_LIMIT, MAX_LEASE_ID_LEN, MAX_LIST_BYTES, MAX_LIST_LIMIT, MAX_MULTI_RESOURCES, MAX_OWNER_LEN,
    MAX_RESOURCE_LEN, MAX_SEMAPHORE_LIMIT, MAX_VALUE_LEN, MIN_DURATION_MS, MIN_MULTI_RESOURCES,
};

use super::error::{ApiError, Result};
use crate::engine::{
    AcquireManyRequest, AcquireRequest, Claim, FencingToken, LeaseId, Lifetime, ListRequest, RefreshRequest,
    ReleaseManyRequest, ReleaseRequest,
};

/// The configured bounds that requests are checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest `wait` accepted.
    pub max_wait: Duration,
    /// The longest `expire` (and lease `ttl`) accepted.
    pub max_expire: Duration,
}

/// An acquire of `resource`.
pub fn acquire(body: AcquireBody, resource: String, limits: &Limits) -> Result<AcquireRequest> {
    if body.resources.is_some() {
        return Err(ApiError::bad_request(
            "`resource` and `resources` exclude each other: `resources` alone asks for a multi-lock",
        ));
    }
    let claim = match (body.mode, body.limit) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "`mode` and `limit` exclude each other: a semaphore's permits have no mode",
            ))
        }
        (None | Some(Mode::Exclusive), None) => Claim::Exclusive,
        (Some(Mode::Shared), None) => Claim::Shared,
        (Some(Mode::Permit), None) => {
            return Err(ApiError::bad_request(
                "`mode` is `exclusive` or `shared`; ask a semaphore with `limit`",
            ))
        }
        (None, Some(limit)) if (1..=MAX_SEMAPHORE_LIMIT).contains(&limit) => Claim::Permit { limit },
        (None, Some(_)) => {
            return Err(ApiError::bad_request(format!("`limit` must be from 1 to {MAX_SEMAPHORE_LIMIT}")))
        }
    };
    Ok(AcquireRequest {
        resource: resource_name(resource)?,
        owner: owner_name(body.owner)?,
        lifetime: lifetime(body.expire, body.lease, limits)?,
        wait: wait(body.wait, limits)?,
        value: body.value.map(value).transpose()?,
        claim,
    })
}

/// A multi-lock acquire (`resources`, no `resource`).
pub fn acquire_many(body: AcquireBody, limits: &Limits) -> Result<AcquireManyRequest> {
    if body.mode.is_some_and(|mode| mode != Mode::Exclusive) || body.limit.is_some() || body.value.is_some() {
        return Err(ApiError::bad_request(
            "a multi-lock (`resources`) is exclusive and stores no value: no `mode`, `limit` or `value`",
        ));
    }
    Ok(AcquireManyRequest {
        resources: resource_names(body.resources.unwrap_or_default())?,
        owner: owner_name(body.owner)?,
        lifetime: lifetime(body.expire, body.lease, limits)?,
        wait: wait(body.wait, limits)?,
    })
}

/// A multi-lock release (`resources`, no `resource`).
pub fn release_many(body: ReleaseBody) -> Result<ReleaseManyRequest> {
    if body.token.is_some() || body.force.is_some() {
        return Err(ApiError::bad_request(
            "a multi-lock release takes no `token` or `force`: release the resources one by one for those",
        ));
    }
    Ok(ReleaseManyRequest {
        resources: resource_names(body.resources.unwrap_or_default())?,
        owner: owner_name(body.owner)?,
        keep_value: body.keep_value.unwrap_or(false),
    })
}

/// A multi-lock's names: 2 to [`MAX_MULTI_RESOURCES`], each valid, none twice.
fn resource_names(names: Vec<String>) -> Result<Vec<String>> {
    if !(MIN_MULTI_RESOURCES..=MAX_MULTI_RESOURCES).contains(&names.len()) {
        return Err(ApiError::bad_request(format!(
            "`resources` must name {MIN_MULTI_RESOURCES} to {MAX_MULTI_RESOURCES} locks"
        )));
    }
    let names = names.into_iter().map(resource_name).collect::<Result<Vec<_>>>()?;
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(ApiError::bad_request("`resources` names a lock twice"));
    }
    Ok(names)
}

/// What ends a hold: `expire`, `lease`, or neither.
fn lifetime(expire: Option<f64>, lease: Option<String>, limits: &Limits) -> Result<Lifetime> {
    Ok(match (expire, lease) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "`lease` and `expire` exclude each other: a lock under a lease lives as long as the lease",
            ))
        }
        (Some(expire), None) => Lifetime::Expire(positive_seconds("expire", expire, limits.max_expire)?),
        (None, Some(lease)) => Lifetime::Lease(lease_id(lease)?),
        (None, None) => Lifetime::Unbounded,
    })
}

/// How long to queue: absent is zero.
fn wait(wait: Option<f64>, limits: &Limits) -> Result<Duration> {
    match wait {
        Some(wait) => seconds("wait", wait, limits.max_wait),
        None => Ok(Duration::ZERO),
    }
}

/// A release of `resource`.
pub fn release(body: ReleaseBody, resource: String) -> Result<ReleaseRequest> {
    Ok(ReleaseRequest {
        resource: resource_name(resource)?,
        owner: owner_name(body.owner)?,
        token: body.token.map(FencingToken),
        keep_value: body.keep_value.unwrap_or(false),
        force: body.force.unwrap_or(false),
    })
}

/// A refresh of `resource`: `expire`, `value` or both.
pub fn refresh(body: RefreshBody, resource: String, limits: &Limits) -> Result<RefreshRequest> {
    if body.expire.is_none() && body.value.is_none() {
        return Err(ApiError::bad_request("a refresh needs `expire`, `value` or both"));
    }
    Ok(RefreshRequest {
        resource: resource_name(resource)?,
        owner: owner_name(body.owner)?,
        expire: body
            .expire
            .map(|expire| positive_seconds("expire", expire, limits.max_expire))
            .transpose()?,
        token: body.token.map(FencingToken),
        value: body.value.map(value).transpose()?,
    })
}

/// A listing: prefix, cursor, page size, and whether values come with it.
/// A listing's page size (`GET /locks`, `GET /leases`): 1 to the maximum, the default when absent.
pub fn page_limit(limit: Option<usize>) -> Result<usize> {
    let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!("`limit` must be from 1 to {MAX_LIST_LIMIT}")));
    }
    Ok(limit)
}

pub fn list(query: ListQuery) -> Result<ListRequest> {
    let limit = page_limit(query.limit)?;
    let prefix = prefix(query.prefix.unwrap_or_default())?;
    Ok(ListRequest {
        prefix,
        after: query.after.map(resource_name).transpose()?,
        limit,
        values: query.values.unwrap_or(true),
        max_bytes: MAX_LIST_BYTES,
    })
}

/// A lease's time to live.
pub fn lease_ttl(body: &LeaseBody, limits: &Limits) -> Result<Duration> {
    positive_seconds("ttl", body.ttl, limits.max_expire)
}

/// A lease id, from a path or a body.
pub fn lease_id(id: String) -> Result<LeaseId> {
    if id.is_empty() || id.len() > MAX_LEASE_ID_LEN || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "`lease` must be 1 to {MAX_LEASE_ID_LEN} bytes without control characters"
        )));
    }
    Ok(LeaseId(id))
}

/// A name prefix (of a listing or a watch).
pub fn prefix(prefix: String) -> Result<String> {
    if prefix.chars().any(char::is_control) {
        return Err(ApiError::bad_request("`prefix` must be UTF-8 without control characters"));
    }
    Ok(prefix)
}

/// The name of an inspected lock (from the path).
pub fn inspected(resource: String) -> Result<String> {
    resource_name(resource)
}

/// The field that names the resource on the RPC routes, when absent.
pub fn missing_resource() -> ApiError {
    ApiError::bad_request("missing field `resource`")
}

fn resource_name(name: String) -> Result<String> {
    text("resource", name, MAX_RESOURCE_LEN)
}

fn owner_name(name: String) -> Result<String> {
    text("owner", name, MAX_OWNER_LEN)
}

fn text(field: &str, text: String, max: usize) -> Result<String> {
    if text.is_empty() || text.len() > max || text.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be 1 to {max} bytes of UTF-8 without control characters"
        )));
    }
    Ok(text)
}

fn value(value: String) -> Result<String> {
    if value.len() > MAX_VALUE_LEN {
        return Err(ApiError::bad_request(format!("`value` must be at most {MAX_VALUE_LEN} bytes")));
    }
    Ok(value)
}

/// A duration of at least [`MIN_DURATION_MS`], and at most `max`.
fn positive_seconds(field: &str, secs: f64, max: Duration) -> Result<Duration> {
    let min = Duration::from_millis(MIN_DURATION_MS);
    match Duration::try_from_secs_f64(secs) {
        Ok(duration) if duration <= max && duration >= min => Ok(duration),
        _ => Err(ApiError::bad_request(format!(
            "`{field}` must be a positive number of seconds from {} to {}",
            min.as_secs_f64(),
            max.as_secs_f64()
        ))),
    }
}

/// Zero, or a duration of at least [`MIN_DURATION_MS`], and at most `max`.
fn seconds(field: &str, secs: f64, max: Duration) -> Result<Duration> {
    let min = Duration::from_millis(MIN_DURATION_MS);
    match Duration::try_from_secs_f64(secs) {
        Ok(duration) if duration <= max && (duration.is_zero() || duration >= min) => Ok(duration),
        _ => Err(ApiError::bad_request(format!(
            "`{field}` must be 0 or a number of seconds from {} to {}",
            min.as_secs_f64(),
            max.as_secs_f64()
        ))),
    }
}
