//! lockserver: a distributed lock service over HTTP.
//!
//! - [`engine`]: what a lock is, the [`engine::LockBackend`] trait and the in-memory backend;
//!   knows nothing of HTTP.
//! - [`http`]: the routes, request validation and the one error-to-status mapping; knows
//!   nothing of how locks are stored.
//! - [`config`]: flags, environment and `.env`.

pub mod config;
pub mod engine;
pub mod error;
pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::info;

use config::{Backend, Config, Storage};
use engine::{EmbeddedBackend, EtcdBackend, LockBackend};
use http::wire::Limits;
use http::{HttpSettings, Secrets};

/// Starts the server described by `config` and serves until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), String> {
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
        (Backend::Embedded, Storage::Durable) => Arc::new(
            EmbeddedBackend::durable(&config.data_dir, config.value_retention, config.compact_after)
                .map_err(|error| format!("cannot use the data dir: {error}"))?,
        ),
        (Backend::Embedded, Storage::Memory) => Arc::new(EmbeddedBackend::in_memory(config.value_retention)),
    };
    let server = http::bind(&settings, backend.clone(), secrets.clone())
        .map_err(|error| format!("cannot listen on {}: {error}", settings.addr))?;
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
        shutdown_signal().await;
        info!("shutting down: answering queued waiters, finishing requests in flight");
        backend.shutdown().await;
        handle.stop(true).await;
    });
    server.run().await.map_err(|error| format!("server error: {error}"))
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
