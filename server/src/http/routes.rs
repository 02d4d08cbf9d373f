//! The route table and the handlers. Each operation is written once and served on both its RPC
//! route (`POST /acquire`) and its resource route (`PUT /locks/{resource}`). Handlers hold no
//! state: they validate, call the backend, and answer the protocol's reply bodies.

use std::time::Duration;

use actix_web::web::{self, Data, Json, Path, Query};
use actix_web::HttpResponse;
use lockserver_protocol::bodies::{
    AcquireBody, GrantReply, HealthReply, KeepaliveReply, LeaseBody, LeaseListQuery, LeaseListReply,
    LeaseReply, ListQuery, LockPageReply, LockReply, RefreshBody, RefreshedReply, ReleaseBody, ReleasedReply,
    RevokedReply,
};
use lockserver_protocol::codes::ErrorCode;
use lockserver_protocol::limits::MAX_BODY_LEN;

use super::body::Body;
use super::error::{ApiError, Result};
use super::{replies, validate, AppState};

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
    async fn acquire(&self, resource: String, body: AcquireBody) -> Result<Json<GrantReply>> {
        let request = validate::acquire(body, resource, &self.limits)?;
        Ok(Json(replies::grant(self.backend.acquire(request).await?)))
    }

    async fn release(&self, resource: String, body: ReleaseBody) -> Result<Json<ReleasedReply>> {
        self.backend.release(validate::release(body, resource)?).await?;
        Ok(Json(ReleasedReply { released: true }))
    }

    async fn refresh(&self, resource: String, body: RefreshBody) -> Result<Json<RefreshedReply>> {
        let request = validate::refresh(body, resource, &self.limits)?;
        Ok(Json(replies::refreshed(self.backend.refresh(request).await?)))
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

/// The Prometheus exposition (OpenMetrics text), with the backend's gauges read now.
async fn metrics(state: Data<AppState>) -> HttpResponse {
    let gauges = state.backend.gauges().await;
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(crate::metrics::global().encode(gauges))
}

async fn acquire(state: Data<AppState>, body: Body<AcquireBody>) -> Result<Json<GrantReply>> {
    let mut body = body.into_inner();
    let resource = body.resource.take().ok_or_else(validate::missing_resource)?;
    state.acquire(resource, body).await
}

async fn put_lock(
    state: Data<AppState>,
    resource: Path<String>,
    body: Body<AcquireBody>,
) -> Result<Json<GrantReply>> {
    state.acquire(resource.into_inner(), body.into_inner()).await
}

async fn release(state: Data<AppState>, body: Body<ReleaseBody>) -> Result<Json<ReleasedReply>> {
    let mut body = body.into_inner();
    let resource = body.resource.take().ok_or_else(validate::missing_resource)?;
    state.release(resource, body).await
}

async fn delete_lock(
    state: Data<AppState>,
    resource: Path<String>,
    query: Query<ReleaseBody>,
) -> Result<Json<ReleasedReply>> {
    state.release(resource.into_inner(), query.into_inner()).await
}

async fn refresh(state: Data<AppState>, body: Body<RefreshBody>) -> Result<Json<RefreshedReply>> {
    let mut body = body.into_inner();
    let resource = body.resource.take().ok_or_else(validate::missing_resource)?;
    state.refresh(resource, body).await
}

async fn patch_lock(
    state: Data<AppState>,
    resource: Path<String>,
    body: Body<RefreshBody>,
) -> Result<Json<RefreshedReply>> {
    state.refresh(resource.into_inner(), body.into_inner()).await
}

async fn inspect(state: Data<AppState>, resource: Path<String>) -> Result<Json<LockReply>> {
    Ok(Json(replies::lock(state.backend.inspect(&resource).await?)))
}

async fn list(state: Data<AppState>, query: Query<ListQuery>) -> Result<Json<LockPageReply>> {
    let request = validate::list(query.into_inner())?;
    Ok(Json(replies::lock_page(state.backend.list(request).await?)))
}

async fn grant_lease(state: Data<AppState>, body: Body<LeaseBody>) -> Result<Json<LeaseReply>> {
    let ttl = validate::lease_ttl(&body, &state.limits)?;
    Ok(Json(replies::lease(state.backend.grant_lease(ttl).await?)))
}

async fn keepalive(state: Data<AppState>, id: Path<String>) -> Result<Json<KeepaliveReply>> {
    let ttl: Duration = state.backend.keepalive(&validate::lease_id(id.into_inner())?).await?;
    Ok(Json(KeepaliveReply { ttl: ttl.as_secs_f64() }))
}

async fn revoke(state: Data<AppState>, id: Path<String>) -> Result<Json<RevokedReply>> {
    state.backend.revoke(&validate::lease_id(id.into_inner())?).await?;
    Ok(Json(RevokedReply { revoked: true }))
}

async fn list_leases(state: Data<AppState>, query: Query<LeaseListQuery>) -> Result<Json<LeaseListReply>> {
    let limit = validate::page_limit(query.limit)?;
    let leases = state.backend.list_leases(limit).await?;
    Ok(Json(LeaseListReply { leases: leases.into_iter().map(replies::lease).collect() }))
}

async fn lease_info(state: Data<AppState>, id: Path<String>) -> Result<Json<LeaseReply>> {
    Ok(Json(replies::lease(state.backend.lease_info(&validate::lease_id(id.into_inner())?).await?)))
}
