//! HTTPS settings of a client: an extra CA to trust (the system's roots are always trusted)
//! and a client certificate for servers that require one (mutual TLS).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The PEM files a client's HTTPS uses.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsFiles {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) cert_file: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// Adds the CA and the client certificate to an HTTP client being built.
    pub(crate) fn apply(&self, mut http: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        if let Some(path) = &self.ca_file {
            let certificates = reqwest::Certificate::from_pem_bundle(&read(path, "CA file")?)
                .map_err(|error| invalid(path, "CA file", error))?;
            if certificates.is_empty() {
                return Err(invalid(path, "CA file", "no PEM certificate in it"));
            }
            for certificate in certificates {
                http = http.add_root_certificate(certificate);
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert, "client certificate")?;
                pem.push(b'\n');
                pem.extend(read(key, "client key")?);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|error| invalid(cert, "client certificate", error))?;
                http = http.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(Error::InvalidArgument(
                    "a client certificate needs both its certificate and its key file".into(),
                ))
            }
        }
        Ok(http)
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| invalid(path, what, error))
}

fn invalid(path: &Path, what: &str, error: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("cannot use the {what} {}: {error}", path.display()))
}
