//! lockserver: a distributed lock service over HTTP.
//!
//! - [`engine`]: what a lock is, the [`engine::LockBackend`] trait and its backends (embedded,
//!   etcd); knows nothing of HTTP.
//! - [`http`]: the routes, request validation and the one error-to-status mapping; knows
//!   nothing of how locks are stored. The wire format is the `lockserver-protocol` crate.
//! - [`config`]: flags, environment and `.env`.
//! - [`error`]: why the server could not start.
//!
//! [`run`] serves until the shutdown future it is given resolves; `main.rs` passes one that
//! resolves on SIGINT or SIGTERM, a test may pass any other.

pub mod config;
pub mod engine;
pub mod error;
pub mod http;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tracing::info;

use config::{Backend, Config, Storage};
use engine::{EmbeddedBackend, EtcdBackend, LockBackend};
use error::StartError;
use http::{HttpSettings, Limits, Secrets};

/// Starts the server described by `config` and serves until `shutdown` resolves; then answers
/// queued waiters, finishes the requests in flight and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + 'static) -> Result<(), StartError> {
    let secrets = match config.secrets()? {
        Some(secrets) => secrets,
        None => {
            let secret = Secrets::random_secret();
            println!("no secret configured; generated one for this run: {secret}");
            Secrets::new([secret.as_str()]).expect("a generated secret is not empty")
        }
    };
    let settings = HttpSettings {
        addr: SocketAddr::new(config.bind, config.port),
        workers: config.workers,
        limits: Limits { max_wait: config.max_wait, max_expire: config.max_expire },
    };
    let started = std::time::Instant::now();
    let backend: Arc<dyn LockBackend> = match (config.backend, config.storage) {
        (Backend::Etcd, _) => Arc::new(EtcdBackend::connect(config.etcd_options()?).await?),
        (Backend::Embedded, Storage::Durable) => Arc::new(EmbeddedBackend::durable(
            &config.data_dir,
            config.value_retention,
            config.compact_after,
        )?),
        (Backend::Embedded, Storage::Memory) => Arc::new(EmbeddedBackend::in_memory(config.value_retention)),
    };
    let server = http::bind(&settings, backend.clone(), secrets.clone())
        .map_err(|source| StartError::Listen { addr: settings.addr, source })?;
    let addr = server.addrs()[0];
    info!(
        %addr,
        backend = ?config.backend,
        storage = ?config.storage,
        data_dir = %config.data_dir.display(),
        recovery = ?started.elapsed(),
        max_wait = ?config.max_wait,
        max_expire = ?config.max_expire,
        value_retention = ?config.value_retention,
        secrets = secrets.len(),
        "lockserver started"
    );
    println!("lockserver listening on http://{addr}");
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        shutdown.await;
        info!("shutting down: answering queued waiters, finishing requests in flight");
        backend.shutdown().await;
        handle.stop(true).await;
    });
    server.run().await.map_err(StartError::Serve)
}
