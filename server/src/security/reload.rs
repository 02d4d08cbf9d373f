//! SIGHUP: the keys file and the TLS certificate and key are read again. Connections and locks
//! stay; what cannot be read leaves the old keys or certificate in use and is logged.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{info, warn};

use super::keys::{KeyRing, Keys, KeysError};
use super::tls::{CertResolver, TlsFiles};

/// Where the keys come from: the plain secrets and the keys file.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    /// The `--secret`s: admin keys in the default namespace.
    pub secrets: Vec<String>,
    /// `--keys-file`.
    pub keys_file: Option<PathBuf>,
}

impl KeySources {
    /// Reads every source into one ring.
    pub fn read(&self) -> Result<KeyRing, KeysError> {
        let mut ring = KeyRing::default();
        ring.add_secrets(self.secrets.iter().map(String::as_str));
        if let Some(path) = &self.keys_file {
            ring.add_file(path)?;
        }
        Ok(ring)
    }
}

/// What SIGHUP reloads.
pub struct Reloader {
    /// The keys in use.
    pub keys: Arc<Keys>,
    /// Where they come from.
    pub sources: KeySources,
    /// The TLS files and the resolver serving them, when the server speaks HTTPS.
    pub tls: Option<(TlsFiles, Arc<CertResolver>)>,
}

impl Reloader {
    /// Reads everything again; logs what changed and what could not be read.
    pub fn reload(&self) {
        match self.sources.read() {
            Ok(ring) => {
                let count = ring.len();
                self.keys.replace(ring);
                info!(keys = count, "reloaded the keys");
            }
            Err(error) => warn!(%error, "kept the old keys"),
        }
        if let Some((files, resolver)) = &self.tls {
            match files.reload(resolver) {
                Ok(()) => info!(cert = %files.cert.display(), "reloaded the TLS certificate"),
                Err(error) => warn!(%error, "kept the old TLS certificate"),
            }
        }
    }
}
