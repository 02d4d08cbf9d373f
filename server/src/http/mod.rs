//! The HTTP API: routes, request validation and the error-to-status mapping.
//!
//! Handlers hold no lock state: they validate the request (`wire`), call the [`LockBackend`],
//! and turn the answer into JSON. Each operation is written once and served on both its RPC
//! route (`POST /acquire`) and its resource route (`PUT /locks/{resource}`).

mod auth;
mod error;
pub mod wire;

pub use auth::{Secrets, SECRET_HEADER};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::error::JsonPayloadError;
use actix_web::middleware::from_fn;
use actix_web::web::{self, Data, Json, Path, Query};
use actix_web::{App, HttpResponse, HttpServer};
use serde_json::json;

use crate::engine::LockBackend;
use crate::error::{Error, Result};
use wire::{
    AcquireBody, GrantReply, KeepaliveReply, LeaseBody, LeaseReply, Limits, ListQuery, LockPageReply,
    LockReply, RefreshBody, RefreshedReply, ReleaseBody, ReleasedReply, RevokedReply, MAX_BODY_LEN,
};

/// What the handlers share: the backend and the request limits. No lock state of its own.
#[derive(Clone)]
pub struct AppState {
    backend: Arc<dyn LockBackend>,
    limits: Limits,
}

/// How the HTTP server is run.
pub struct HttpSettings {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Worker threads; `None` for one per core.
    pub workers: Option<usize>,
    /// The request limits.
    pub limits: Limits,
}

/// A bound, not yet running server.
pub struct BoundServer {
    server: Server,
    addrs: Vec<SocketAddr>,
}

impl BoundServer {
    /// The addresses it listens on (the real port when bound to port 0).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// A handle to stop it.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped.
    pub async fn run(self) -> io::Result<()> {
        self.server.await
    }
}

/// Binds the API on `settings.addr`; signals are left to the caller (see [`ServerHandle`]).
pub fn bind(
    settings: &HttpSettings,
    backend: Arc<dyn LockBackend>,
    secrets: Secrets,
) -> io::Result<BoundServer> {
    let state = AppState { backend, limits: settings.limits };
    let secrets = Data::new(secrets);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(Data::new(state.clone()))
            .app_data(secrets.clone())
            .configure(routes)
            .wrap(from_fn(auth::require_secret))
    })
    // A client that closes its connection while queued for a lock leaves the queue: the
    // handler's future is dropped only when half-closed connections are not kept.
    .h1_allow_half_closed(false)
    .disable_signals()
    .shutdown_timeout(5);
    if let Some(workers) = settings.workers {
        server = server.workers(workers);
    }
    let server = server.bind(settings.addr)?;
    let addrs = server.addrs();
    Ok(BoundServer { server: server.run(), addrs })
}

/// Every route of the API.
pub fn routes(config: &mut web::ServiceConfig) {
    let json = web::JsonConfig::default()
        .limit(MAX_BODY_LEN)
        .content_type_required(false)
        .error_handler(|error, _| json_error(error).into());
    let path =
        web::PathConfig::default().error_handler(|error, _| Error::bad_request(error.to_string()).into());
    let query =
        web::QueryConfig::default().error_handler(|error, _| Error::bad_request(error.to_string()).into());
    config
        .app_data(json)
        .app_data(path)
        .app_data(query)
        .service(resource("/health").route(web::get().to(health)))
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
        .service(resource("/leases").route(web::post().to(grant_lease)))
        .service(resource("/leases/{id}").route(web::get().to(lease_info)).route(web::delete().to(revoke)))
        .service(resource("/leases/{id}/keepalive").route(web::post().to(keepalive)))
        .default_service(web::to(|| async { Err::<HttpResponse, _>(Error::NotFound) }));
}

/// A route whose other methods answer 405 in the API's error format.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async { Err::<HttpResponse, _>(Error::MethodNotAllowed) }))
}

fn json_error(error: JsonPayloadError) -> Error {
    match error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            Error::TooLarge { limit: MAX_BODY_LEN }
        }
        JsonPayloadError::Deserialize(error) => Error::bad_request(format!("invalid JSON body: {error}")),
        other => Error::bad_request(format!("invalid request body: {other}")),
    }
}

fn missing_resource() -> Error {
    Error::bad_request("missing field `resource`")
}

impl AppState {
    async fn acquire(&self, resource: String, body: AcquireBody) -> Result<Json<GrantReply>> {
        let request = body.into_request(resource, &self.limits)?;
        Ok(Json(self.backend.acquire(request).await?.into()))
    }

    async fn release(&self, resource: String, body: ReleaseBody) -> Result<Json<ReleasedReply>> {
        self.backend.release(body.into_request(resource)?).await?;
        Ok(Json(ReleasedReply { released: true }))
    }

    async fn refresh(&self, resource: String, body: RefreshBody) -> Result<Json<RefreshedReply>> {
        let request = body.into_request(resource, &self.limits)?;
        Ok(Json(self.backend.refresh(request).await?.into()))
    }
}

/// `200 {"status": "ok", "backend": ...}`, or 503 with the backend's problem.
async fn health(state: Data<AppState>) -> HttpResponse {
    let health = state.backend.health().await;
    match health.problem {
        None => HttpResponse::Ok().json(json!({ "status": "ok", "backend": health.backend })),
        Some(problem) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "unavailable",
            "backend": health.backend,
            "error": "unavailable",
            "message": problem,
        })),
    }
}

async fn acquire(state: Data<AppState>, body: Json<AcquireBody>) -> Result<Json<GrantReply>> {
    let mut body = body.into_inner();
    let resource = body.resource.take().ok_or_else(missing_resource)?;
    state.acquire(resource, body).await
}

async fn put_lock(
    state: Data<AppState>,
    resource: Path<String>,
    body: Json<AcquireBody>,
) -> Result<Json<GrantReply>> {
    state.acquire(resource.into_inner(), body.into_inner()).await
}

async fn release(state: Data<AppState>, body: Json<ReleaseBody>) -> Result<Json<ReleasedReply>> {
    let mut body = body.into_inner();
    let resource = body.resource.take().ok_or_else(missing_resource)?;
    state.release(resource, body).await
}

async fn delete_lock(
    state: Data<AppState>,
    resource: Path<String>,
    query: Query<ReleaseBody>,
) -> Result<Json<ReleasedReply>> {
    state.release(resource.into_inner(), query.into_inner()).await
}

async fn refresh(state: Data<AppState>, body: Json<RefreshBody>) -> Result<Json<RefreshedReply>> {
    let mut body = body.into_inner();
    let resource = body.resource.take().ok_or_else(missing_resource)?;
    state.refresh(resource, body).await
}

async fn patch_lock(
    state: Data<AppState>,
    resource: Path<String>,
    body: Json<RefreshBody>,
) -> Result<Json<RefreshedReply>> {
    state.refresh(resource.into_inner(), body.into_inner()).await
}

async fn inspect(state: Data<AppState>, resource: Path<String>) -> Result<Json<LockReply>> {
    Ok(Json(state.backend.inspect(&resource).await?.into()))
}

async fn list(state: Data<AppState>, query: Query<ListQuery>) -> Result<Json<LockPageReply>> {
    let (prefix, after, limit) = query.into_inner().validate()?;
    Ok(Json(state.backend.list(&prefix, after.as_deref(), limit).await?.into()))
}

async fn grant_lease(state: Data<AppState>, body: Json<LeaseBody>) -> Result<Json<LeaseReply>> {
    let ttl = body.ttl(&state.limits)?;
    Ok(Json(state.backend.grant_lease(ttl).await?.into()))
}

async fn keepalive(state: Data<AppState>, id: Path<String>) -> Result<Json<KeepaliveReply>> {
    let ttl: Duration = state.backend.keepalive(&wire::lease_id(id.into_inner())?).await?;
    Ok(Json(KeepaliveReply { ttl: ttl.as_secs_f64() }))
}

async fn revoke(state: Data<AppState>, id: Path<String>) -> Result<Json<RevokedReply>> {
    state.backend.revoke(&wire::lease_id(id.into_inner())?).await?;
    Ok(Json(RevokedReply { revoked: true }))
}

async fn lease_info(state: Data<AppState>, id: Path<String>) -> Result<Json<LeaseReply>> {
    Ok(Json(state.backend.lease_info(&wire::lease_id(id.into_inner())?).await?.into()))
}
