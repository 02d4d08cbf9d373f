//! lockserver: a distributed lock service over HTTP.
//!
//! - [`engine`]: what a lock is, the [`engine::LockBackend`] trait and its backends (embedded,
//!   etcd); knows nothing of HTTP.
//! - [`http`]: the routes, request validation and the one error-to-status mapping; knows
//!   nothing of how locks are stored. The wire format is the `lockserver-protocol` crate.
//! - [`security`]: TLS, API keys, roles, rates, quotas and namespaces; knows nothing of HTTP.
//! - [`config`]: flags, environment and `.env`.
//! - [`error`]: why the server could not start.
//! - [`resources`]: the file-descriptor limit and the caps derived from it and from memory.
//!
//! [`run`] serves until the shutdown future it is given resolves, and re-reads the keys file and
//! TLS certificate each time its `reloads` channel yields; `main.rs` owns the signals (SIGINT
//! and SIGTERM shut down, SIGHUP reloads).

pub mod config;
pub mod engine;
pub mod error;
pub mod http;
pub mod metrics;
pub mod resources;
pub mod security;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{info, warn};

use config::{Backend, Config, Storage};
#[cfg(feature = "etcd")]
use engine::EtcdBackend;
use engine::{Capacity, EmbeddedBackend, LockBackend};
use error::StartError;
use http::{HttpSettings, Limits};
use resources::Resources;
use security::{KeySources, Keys, Reloader};

/// `--repair`: salvages the data dir (see [`engine::repair`]) instead of serving.
pub fn repair(config: &Config) -> Result<engine::Repaired, StartError> {
    Ok(engine::repair(&config.data_dir)?)
}

/// Starts the server described by `config` and serves until `shutdown` resolves; then answers
/// queued waiters, finishes the requests in flight and returns.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + 'static,
    mut reloads: tokio::sync::mpsc::UnboundedReceiver<()>,
) -> Result<(), StartError> {
    let mut sources = KeySources { secrets: config.secrets()?, keys_file: config.keys_file.clone() };
    if sources.secrets.is_empty() && sources.keys_file.is_none() {
        let secret = security::random_secret();
        println!("no secret configured; generated one for this run: {secret}");
        sources.secrets.push(secret);
    }
    let keys = Arc::new(Keys::new(sources.read()?));
    let tls = match config.tls_files() {
        Some(files) => {
            let (server_config, resolver) = files.load()?;
            Some((files, resolver, server_config))
        }
        None => None,
    };
    let resources = Resources::raise();
    let workers =
        config.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let capacity = Capacity {
        max_locks: config.max_locks.unwrap_or_else(|| resources.default_max_locks()),
        max_waiters: config.max_waiters.unwrap_or_else(|| resources.default_max_waiters()),
        max_memory: config.max_memory.unwrap_or_else(|| resources.default_max_memory()),
    };
    let settings = HttpSettings {
        addr: SocketAddr::new(config.bind, config.port),
        workers,
        limits: Limits { max_wait: config.max_wait, max_expire: config.max_expire },
        request_timeout: config.request_timeout,
        connections_per_worker: resources.connections_per_worker(workers),
        tls: tls.as_ref().map(|(_, _, server_config)| server_config.clone()),
    };
    let reloader =
        Reloader { keys: keys.clone(), sources, tls: tls.map(|(files, resolver, _)| (files, resolver)) };
    let started = std::time::Instant::now();
    let backend: Arc<dyn LockBackend> = match (config.backend, config.storage) {
        #[cfg(not(feature = "etcd"))]
        (Backend::Etcd, _) => return Err(StartError::EtcdNotBuilt),
        #[cfg(feature = "etcd")]
        (Backend::Etcd, _) => {
            let backend = EtcdBackend::connect(config.etcd_options()?).await?;
            backend.limit(capacity);
            Arc::new(backend)
        }
        (Backend::Embedded, storage) => {
            let backend = match storage {
                Storage::Durable => {
                    EmbeddedBackend::durable(&config.data_dir, config.value_retention, config.compact_after)?
                }
                Storage::Memory => EmbeddedBackend::in_memory(config.value_retention),
            };
            backend.limit(capacity);
            Arc::new(backend)
        }
    };
    metrics::global().set_backend(match config.backend {
        Backend::Embedded => "embedded",
        Backend::Etcd => "etcd",
    });
    let server = http::bind(&settings, backend.clone(), keys.clone())
        .map_err(|source| StartError::Listen { addr: settings.addr, source })?;
    let addr = server.addrs()[0];
    match (config.backend, config.storage) {
        (Backend::Etcd, _) => info!(
            endpoints = ?config.etcd_endpoints,
            prefix = %config.etcd_prefix,
            "etcd backend: this server is a gateway"
        ),
        (Backend::Embedded, Storage::Durable) => info!(
            data_dir = %config.data_dir.display(),
            compact_after = config.compact_after,
            recovery = ?started.elapsed(),
            "embedded backend, durable storage"
        ),
        (Backend::Embedded, Storage::Memory) => {
            info!("embedded backend, memory storage: nothing survives a restart")
        }
    }
    info!(
        %addr,
        backend = ?config.backend,
        max_wait = ?config.max_wait,
        max_expire = ?config.max_expire,
        value_retention = ?config.value_retention,
        max_locks = capacity.max_locks,
        max_waiters = capacity.max_waiters,
        max_memory = capacity.max_memory,
        open_files = resources.files,
        keys = keys.ring().len(),
        tls = reloader.tls.is_some(),
        "lockserver started"
    );
    if reloader.tls.is_none() && !addr.ip().is_loopback() {
        warn!(
            %addr,
            "serving plain HTTP on a non-loopback address: secrets cross the network in clear text; \
             use --tls-cert and --tls-key"
        );
    }
    let scheme = if reloader.tls.is_some() { "https" } else { "http" };
    println!("lockserver listening on {scheme}://{addr}");
    actix_web::rt::spawn(async move {
        while reloads.recv().await.is_some() {
            reloader.reload();
        }
    });
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        shutdown.await;
        info!("shutting down: answering queued waiters, finishing requests in flight");
        backend.shutdown().await;
        backend.events().end_all();
        handle.stop(true).await;
    });
    server.run().await.map_err(StartError::Serve)
}
