//! Why the server could not start or stopped serving. Request errors live with their layer:
//! [`crate::engine::EngineError`] and [`crate::http::ApiError`].

use std::net::SocketAddr;

use crate::config::ConfigError;
#[cfg(feature = "etcd")]
use crate::engine::EtcdSetupError;
use crate::engine::StoreError;

/// Why `lockserver::run` returned an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A TLS file cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::security::TlsError),
    /// The keys file cannot be used.
    #[error(transparent)]
    Keys(#[from] crate::security::KeysError),
    /// The data dir cannot be used.
    #[error("cannot use the data dir: {0}")]
    Store(#[from] StoreError),
    /// The etcd backend cannot be set up.
    #[cfg(feature = "etcd")]
    #[error(transparent)]
    Etcd(#[from] EtcdSetupError),
    /// `--backend etcd` on a build without the etcd backend.
    #[error(
        "this lockserver was built without the etcd backend; build it with \
         `cargo build --release --features etcd` (which needs protoc: apt-get install protobuf-compiler)"
    )]
    EtcdNotBuilt,
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}; is another server on that port?")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed while serving.
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
}
