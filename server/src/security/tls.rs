//! HTTPS: the rustls server configuration built from PEM files, with a certificate that can be
//! re-read (SIGHUP) while connections stay open, and optional client certificates (mutual TLS).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring::{default_provider, sign::any_supported_type};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS file that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read or holds no usable PEM item.
    #[error("cannot use the TLS {what} {}: {reason}", path.display())]
    File {
        /// What the file is for (`certificate`, `key`, `client CA`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
}

/// Where the server's certificate, key and (for mutual TLS) client CA live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates; when given, clients must present a certificate signed by one.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Reads the files into a server configuration and the resolver that [`TlsFiles::reload`]
    /// later updates.
    pub fn load(&self) -> Result<(ServerConfig, Arc<CertResolver>), TlsError> {
        let resolver = Arc::new(CertResolver { current: RwLock::new(Arc::new(self.certified_key()?)) });
        let provider = Arc::new(default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| self.cert_error(error.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs("client CA", path)? {
                    roots.add(cert).map_err(|error| file_error("client CA", path, error.to_string()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|error| file_error("client CA", path, error.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((config, resolver))
    }

    /// Re-reads the certificate and key into `resolver`: new handshakes use them, open
    /// connections are untouched. On error the old certificate stays.
    pub fn reload(&self, resolver: &CertResolver) -> Result<(), TlsError> {
        let key = self.certified_key()?;
        *resolver.current.write().expect("the certificate lock is never poisoned") = Arc::new(key);
        Ok(())
    }

    fn certified_key(&self) -> Result<CertifiedKey, TlsError> {
        let chain = read_certs("certificate", &self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|error| file_error("key", &self.key, error.to_string()))?;
        let signing =
            any_supported_type(&key).map_err(|error| file_error("key", &self.key, error.to_string()))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|error| {
            file_error("key", &self.key, format!("{error} (it does not belong to {})", self.cert.display()))
        })?;
        Ok(certified)
    }

    fn cert_error(&self, reason: String) -> TlsError {
        file_error("certificate", &self.cert, reason)
    }
}

/// Serves the current certificate to every handshake; swapped whole by [`TlsFiles::reload`].
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("the certificate lock is never poisoned").clone())
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| file_error(what, path, error.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn file_error(what: &'static str, path: &Path, reason: String) -> TlsError {
    TlsError::File { what, path: path.to_path_buf(), reason }
}
