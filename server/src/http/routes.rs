//! The route table and the handlers. Each operation is written once and served on both its RPC
//! route (`POST /acquire`) and its resource route (`PUT /locks/{resource}`). Handlers hold no
//! state: they validate, call the backend, and answer the protocol's reply bodies.

use std::time::Duration;

use actix_web::web::{self, Data, Json, Path, Query};
use actix_web::HttpResponse;
use lockserver_protocol::bodies::{
    AcquireBody, GrantReply, GrantsReply, HealthReply, KeepaliveReply, LeaseBody, LeaseListQuery,
    LeaseListReply, LeaseReply, ListQuery, LockPageReply, LockReply, RefreshBody, RefreshedReply,
    ReleaseBody, ReleasedReply, RevokedReply,
};
use lockserver_protocol::codes::ErrorCode;
use lockserver_protocol::limits::MAX_BODY_LEN;

use tracing::info;

use super::body::Body;
use super::caller::Caller;
use super::error::{ApiError, Result};
use super::{replies, validate, AppState};
use crate::engine::{AcquireRequest, LeaseId, Lifetime};
use crate::security::Role;

/// Every route of the API.
pub fn routes(config: &mut web::ServiceConfig) {
    // What `Body` reads at most (beyond, 413 `too_large`).
    let payload = web::PayloadConfig::new(MAX_BODY_LEN);
    let path =
        web::PathConfig::default().error_handler(|error, _| ApiError::bad_request(error.to_string()).into());
    let query =
        web::QueryConfig::default().error_handler(|error, _| ApiError::bad_request(error.to_string()).into());
    config
        .app_data(payload)
        .app_data(path)
        .app_data(query)
        .service(resource("/health").route(web::get().to(health)))
        .service(resource("/metrics").route(web::get().to(metrics)))
        .service(resource("/ui").route(web::get().to(status_page)))
        .service(resource("/acquire").route(web::post().to(acquire)))
        .service(resource("/release").route(web::post().to(release)))
        .service(resource("/refresh").route(web::post().to(refresh)))
        .service(resource("/locks").route(web::get().to(list)))
        .service(resource("/watch").route(web::get().to(super::watch::watch)))
        .service(
            resource("/locks/{resource:.+}")
                .route(web::get().to(inspect))
                .route(web::put().to(put_lock))
                .route(web::delete().to(delete_lock))
                .route(web::patch().to(patch_lock)),
        )
        .service(resource("/leases").route(web::post().to(grant_lease)).route(web::get().to(list_leases)))
        .service(resource("/leases/{id}").route(web::get().to(lease_info)).route(web::delete().to(revoke)))
        .service(resource("/leases/{id}/keepalive").route(web::post().to(keepalive)))
        .default_service(web::to(|| async { Err::<HttpResponse, _>(ApiError::NotFound) }));
}

/// A route whose other methods answer 405 in the API's error format.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path)
        .default_service(web::to(|| async { Err::<HttpResponse, _>(ApiError::MethodNotAllowed) }))
}

impl AppState {
    /// A multi-lock: `resources` instead of `resource`.
    async fn acquire_many(&self, caller: &Caller, body: AcquireBody) -> Result<Json<GrantsReply>> {
        caller.require(Role::Lock)?;
        let mut request = validate::acquire_many(body, &self.limits)?;
        for resource in request.resources.iter_mut() {
            *resource = caller.qualify_owned(std::mem::take(resource));
        }
        if let Lifetime::Lease(lease) = &mut request.lifetime {
            lease.0 = caller.qualify_owned(std::mem::take(&mut lease.0));
        }
        if let Some(max) = caller.key().max_locks {
            let (prefix, after) = caller.namespace().list_range("", None);
            if self.backend.count_held(&prefix, after.as_deref(), max).await? + request.resources.len() > max
            {
                return Err(self.quota_exceeded(caller, max));
            }
        }
        let grants = self.backend.acquire_many(request).await?;
        let grants = grants.into_iter().map(|grant| replies::grant(grant, caller.namespace())).collect();
        Ok(Json(GrantsReply { grants }))
    }

    async fn acquire(
        &self,
        caller: &Caller,
        resource: String,
        body: AcquireBody,
    ) -> Result<Json<GrantReply>> {
        caller.require(Role::Lock)?;
        let mut request = validate::acquire(body, resource, &self.limits)?;
        request.resource = caller.qualify_owned(std::mem::take(&mut request.resource));
        if let Lifetime::Lease(lease) = &mut request.lifetime {
            lease.0 = caller.qualify_owned(std::mem::take(&mut lease.0));
        }
        if let Some(max) = caller.key().max_locks {
            self.check_quota(caller, max, &request).await?;
        }
        Ok(Json(replies::grant(self.backend.acquire(request).await?, caller.namespace())))
    }

    /// Refuses with 429 `quota_exceeded` when the caller's namespace holds `max` locks already,
    /// unless this is the holder acquiring again. Counted before the acquire, so concurrent
    /// acquires may overshoot by as many as are in flight.
    async fn check_quota(&self, caller: &Caller, max: usize, request: &AcquireRequest) -> Result<()> {
        let (prefix, after) = caller.namespace().list_range("", None);
        if self.backend.count_held(&prefix, after.as_deref(), max).await? < max {
            return Ok(());
        }
        match self.backend.inspect(&request.resource).await {
            Ok(held) if held.holders.iter().any(|holder| holder.owner == request.owner) => Ok(()),
            _ => Err(self.quota_exceeded(caller, max)),
        }
    }

    fn quota_exceeded(&self, caller: &Caller, max: usize) -> ApiError {
        ApiError::QuotaExceeded {
            key: caller.key().name.clone(),
            namespace: caller.namespace().name().to_string(),
            max,
        }
    }

    /// A multi-lock release: `resources` instead of `resource`.
    async fn release_many(&self, caller: &Caller, body: ReleaseBody) -> Result<Json<ReleasedReply>> {
        caller.require(Role::Lock)?;
        let mut request = validate::release_many(body)?;
        for resource in request.resources.iter_mut() {
            *resource = caller.qualify_owned(std::mem::take(resource));
        }
        self.backend.release_many(request).await?;
        Ok(Json(ReleasedReply { released: true }))
    }

    async fn release(
        &self,
        caller: &Caller,
        resource: String,
        body: ReleaseBody,
    ) -> Result<Json<ReleasedReply>> {
        caller.require(Role::Lock)?;
        let mut request = validate::release(body, resource)?;
        if request.force {
            caller.require(Role::Admin)?;
            info!(
                target: "audit",
                key = %caller.key().name,
                peer = %caller.peer(),
                namespace = %caller.namespace().name(),
                resource = %request.resource,
                "forced release"
            );
        }
        request.resource = caller.qualify_owned(std::mem::take(&mut request.resource));
        self.backend.release(request).await?;
        Ok(Json(ReleasedReply { released: true }))
    }

    async fn refresh(
        &self,
        caller: &Caller,
        resource: String,
        body: RefreshBody,
    ) -> Result<Json<RefreshedReply>> {
        caller.require(Role::Lock)?;
        let mut request = validate::refresh(body, resource, &self.limits)?;
        request.resource = caller.qualify_owned(std::mem::take(&mut request.resource));
        Ok(Json(replies::refreshed(self.backend.refresh(request).await?)))
    }

    fn lease_id(caller: &Caller, id: String) -> Result<LeaseId> {
        Ok(LeaseId(caller.qualify_owned(validate::lease_id(id)?.0)))
    }
}

/// `200 {"status": "ok", "backend": ..., "version": ...}`, or 503 with the backend's problem.
async fn health(state: Data<AppState>) -> HttpResponse {
    let health = state.backend.health().await;
    let reply = HealthReply {
        status: "ok".into(),
        backend: health.backend.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        error: None,
        message: None,
    };
    match health.problem {
        None => HttpResponse::Ok().json(reply),
        Some(problem) => HttpResponse::ServiceUnavailable().json(HealthReply {
            status: "unavailable".into(),
            error: Some(ErrorCode::Unavailable.as_str().into()),
            message: Some(problem),
            ..reply
        }),
    }
}

/// The status page: one self-contained HTML file, compiled into the binary. It needs no secret
/// itself; it asks for one and sends it on the API calls it makes.
async fn status_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
        ))
        .body(include_str!("ui/index.html"))
}

/// The Prometheus exposition (OpenMetrics text), with the backend's gauges read now. Any key may
/// read it; its figures are the whole server's.
async fn metrics(state: Data<AppState>, caller: Caller) -> Result<HttpResponse> {
    caller.require(Role::Read)?;
    let gauges = state.backend.gauges().await;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(crate::metrics::global().encode(gauges)))
}

async fn acquire(state: Data<AppState>, caller: Caller, body: Body<AcquireBody>) -> Result<HttpResponse> {
    let mut body = body.into_inner();
    if body.resource.is_none() && body.resources.is_some() {
        return Ok(HttpResponse::Ok().json(state.acquire_many(&caller, body).await?.into_inner()));
    }
    let resource = body.resource.take().ok_or_else(validate::missing_resource)?;
    Ok(HttpResponse::Ok().json(state.acquire(&caller, resource, body).await?.into_inner()))
}

async fn put_lock(
    state: Data<AppState>,
    caller: Caller,
    resource: Path<String>,
    body: Body<AcquireBody>,
) -> Result<Json<GrantReply>> {
    state.acquire(&caller, resource.into_inner(), body.into_inner()).await
}

async fn release(
    state: Data<AppState>,
    caller: Caller,
    body: Body<ReleaseBody>,
) -> Result<Json<ReleasedReply>> {
    let mut body = body.into_inner();
    if body.resource.is_none() && body.resources.is_some() {
        return state.release_many(&caller, body).await;
    }
    let resource = body.resource.take().ok_or_else(validate::missing_resource)?;
    state.release(&caller, resource, body).await
}

async fn delete_lock(
    state: Data<AppState>,
    caller: Caller,
    resource: Path<String>,
    query: Query<ReleaseBody>,
) -> Result<Json<ReleasedReply>> {
    state.release(&caller, resource.into_inner(), query.into_inner()).await
}

async fn refresh(
    state: Data<AppState>,
    caller: Caller,
    body: Body<RefreshBody>,
) -> Result<Json<RefreshedReply>> {
    let mut body = body.into_inner();
    let resource = body.resource.take().ok_or_else(validate::missing_resource)?;
    state.refresh(&caller, resource, body).await
}

async fn patch_lock(
    state: Data<AppState>,
    caller: Caller,
    resource: Path<String>,
    body: Body<RefreshBody>,
) -> Result<Json<RefreshedReply>> {
    state.refresh(&caller, resource.into_inner(), body.into_inner()).await
}

async fn inspect(state: Data<AppState>, caller: Caller, resource: Path<String>) -> Result<Json<LockReply>> {
    caller.require(Role::Read)?;
    let resource = caller.qualify_owned(validate::inspected(resource.into_inner())?);
    Ok(Json(replies::lock(state.backend.inspect(&resource).await?, caller.namespace())))
}

async fn list(state: Data<AppState>, caller: Caller, query: Query<ListQuery>) -> Result<Json<LockPageReply>> {
    caller.require(Role::Read)?;
    let mut request = validate::list(query.into_inner())?;
    (request.prefix, request.after) =
        caller.namespace().list_range(&request.prefix, request.after.as_deref());
    Ok(Json(replies::lock_page(state.backend.list(request).await?, caller.namespace())))
}

async fn grant_lease(
    state: Data<AppState>,
    caller: Caller,
    body: Body<LeaseBody>,
) -> Result<Json<LeaseReply>> {
    caller.require(Role::Lock)?;
    let ttl = validate::lease_ttl(&body, &state.limits)?;
    let lease = state.backend.grant_lease(ttl, &caller.qualify("")).await?;
    Ok(Json(replies::lease(lease, caller.namespace())))
}

async fn keepalive(state: Data<AppState>, caller: Caller, id: Path<String>) -> Result<Json<KeepaliveReply>> {
    caller.require(Role::Lock)?;
    let ttl: Duration = state.backend.keepalive(&AppState::lease_id(&caller, id.into_inner())?).await?;
    Ok(Json(KeepaliveReply { ttl: ttl.as_secs_f64() }))
}

async fn revoke(state: Data<AppState>, caller: Caller, id: Path<String>) -> Result<Json<RevokedReply>> {
    caller.require(Role::Lock)?;
    state.backend.revoke(&AppState::lease_id(&caller, id.into_inner())?).await?;
    Ok(Json(RevokedReply { revoked: true }))
}

async fn list_leases(
    state: Data<AppState>,
    caller: Caller,
    query: Query<LeaseListQuery>,
) -> Result<Json<LeaseListReply>> {
    caller.require(Role::Read)?;
    let limit = validate::page_limit(query.limit)?;
    let (prefix, after) = caller.namespace().list_range("", None);
    let leases = state.backend.list_leases(&prefix, after.as_deref(), limit).await?;
    let namespace = caller.namespace();
    Ok(Json(LeaseListReply {
        leases: leases.into_iter().map(|lease| replies::lease(lease, namespace)).collect(),
    }))
}

async fn lease_info(state: Data<AppState>, caller: Caller, id: Path<String>) -> Result<Json<LeaseReply>> {
    caller.require(Role::Read)?;
    let lease = state.backend.lease_info(&AppState::lease_id(&caller, id.into_inner())?).await?;
    Ok(Json(replies::lease(lease, caller.namespace())))
}
