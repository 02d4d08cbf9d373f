//! The HTTP API: binding the server, the routes, request validation and the error-to-status
//! mapping. Knows nothing of how locks are stored: it calls the [`LockBackend`].
//!
//! - `routes.rs`: the route table and the handlers, which hold no lock state;
//! - `validate.rs`: the protocol's request bodies checked into engine requests;
//! - `replies.rs`: engine answers as the protocol's reply bodies;
//! - `error.rs`: [`ApiError`] and its one mapping to a status and a JSON body;
//! - `auth.rs`: the secret header, resolved into an API key, and the key's rate;
//! - `caller.rs`: the [`Caller`] handlers take: the key's role and namespace;
//! - `body.rs`: the request body, read in time;
//! - `observe.rs`: each request counted in the metrics, and a debug line per request;
//! - `watch.rs`: `GET /watch`, lock events as Server-Sent Events.
//!
//! The wire format itself (bodies, codes, header, limits) is the `lockserver-protocol` crate.

mod auth;
mod body;
mod caller;
mod error;
mod observe;
mod replies;
mod routes;
mod validate;
mod watch;

pub use caller::Caller;
pub use error::ApiError;
pub use routes::routes;
pub use validate::Limits;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::web::Data;
use actix_web::{App, HttpServer};

use crate::engine::LockBackend;
use crate::security::Keys;
use body::BodyTimeout;

/// What the handlers share: the backend and the request limits. No lock state of its own.
#[derive(Clone)]
pub struct AppState {
    pub(crate) backend: Arc<dyn LockBackend>,
    pub(crate) limits: Limits,
}

/// How the HTTP server is run.
pub struct HttpSettings {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Worker threads.
    pub workers: usize,
    /// The request limits.
    pub limits: Limits,
    /// How long a request's head and body may take to arrive.
    pub request_timeout: Duration,
    /// How many connections each worker holds at most (more wait in the listen backlog).
    pub connections_per_worker: usize,
    /// HTTPS with this configuration; plain HTTP when `None`.
    pub tls: Option<rustls::ServerConfig>,
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
    keys: Arc<Keys>,
) -> io::Result<BoundServer> {
    let state = AppState { backend, limits: settings.limits };
    let keys = Data::from(keys);
    let body_timeout = Data::new(BodyTimeout(settings.request_timeout));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(Data::new(state.clone()))
            .app_data(keys.clone())
            .app_data(body_timeout.clone())
            .configure(routes)
            // The secret is checked before any handler reads the body.
            .wrap(from_fn(auth::authenticate))
            // Outermost: counts and logs every answer, refusals included.
            .wrap(from_fn(observe::observe))
    })
    // A client that closes its connection while queued for a lock leaves the queue: the
    // handler's future is dropped only when half-closed connections are not kept.
    .h1_allow_half_closed(false)
    .disable_signals()
    .shutdown_timeout(5)
    .workers(settings.workers)
    .max_connections(settings.connections_per_worker)
    .client_request_timeout(settings.request_timeout);
    let server = match &settings.tls {
        Some(tls) => server.bind_rustls_0_23(settings.addr, tls.clone())?,
        None => server.bind(settings.addr)?,
    };
    let addrs = server.addrs();
    Ok(BoundServer { server: server.run(), addrs })
}
