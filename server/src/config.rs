//! Configuration: command-line flags, falling back to the environment and a `.env` file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use lockserver_protocol::durations::parse_duration;

#[cfg(feature = "etcd")]
use etcd_client::{Certificate, Identity, TlsOptions};

#[cfg(feature = "etcd")]
use crate::engine::EtcdOptions;
use crate::security::TlsFiles;

/// lockserver: a distributed lock service with fencing tokens, FIFO waiting, leases and
/// lock values. Every flag can also be set by the environment variable shown, or in `.env`.
#[derive(Parser)]
#[command(name = "lockserver", version, about, long_about = None)]
pub struct Config {
    /// IP address to listen on.
    #[arg(short = 'b', long = "bind", env = "LOCKSERVER_BIND_IP", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// TCP port to listen on (0 picks a free one).
    #[arg(short, long, env = "LOCKSERVER_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Shared secret(s) clients send in X-LOCKSERVER-SECRET; comma-separated secrets are all
    /// accepted, so one can be rotated without downtime. Without any, a random one is generated
    /// and printed once.
    #[arg(long, env = "LOCKSERVER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// A file holding the secret(s), comma- or newline-separated; added to --secret.
    #[arg(long, env = "LOCKSERVER_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,

    /// API keys (TOML, one `[[key]]` table each: name, secret or secret_sha256, namespace,
    /// role, rate, max_locks; see the README). Re-read on SIGHUP. The plain secrets stay admin
    /// keys of the default namespace.
    #[arg(long, env = "LOCKSERVER_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,

    /// Serve HTTPS only, with this PEM certificate chain (with --tls-key); re-read on SIGHUP.
    #[arg(long, env = "LOCKSERVER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "LOCKSERVER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by a CA in this PEM file (mutual TLS).
    #[arg(long, env = "LOCKSERVER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// The longest `wait` a request may ask for (seconds, or with a unit: 500ms, 90s, 10m, 24h, 1d).
    #[arg(long, env = "LOCKSERVER_MAX_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub max_wait: Duration,

    /// The longest `expire` (and lease `ttl`) a request may ask for.
    #[arg(long, env = "LOCKSERVER_MAX_EXPIRE", default_value = "1d", value_parser = parse_duration)]
    pub max_expire: Duration,

    /// How long the value of an expired lock is kept for its next holder.
    #[arg(long, env = "LOCKSERVER_VALUE_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub value_retention: Duration,

    /// Where locks live: `durable` (journaled to --data-dir, answered only once on disk) or
    /// `memory` (lost on restart).
    #[arg(long, env = "LOCKSERVER_STORAGE", value_enum, default_value_t = Storage::Durable)]
    pub storage: Storage,

    /// The directory of the durable store (locked while a server uses it).
    #[arg(long, env = "LOCKSERVER_DATA_DIR", default_value = "./lockserver-data")]
    pub data_dir: PathBuf,

    /// Compact the durable store's log into a snapshot each time it grows by this many bytes.
    #[arg(long, env = "LOCKSERVER_COMPACT_AFTER", default_value_t = 64 << 20)]
    pub compact_after: u64,

    /// Which backend keeps the locks: `embedded` (this process, see --storage) or `etcd`
    /// (an etcd cluster shared by every lockserver on the same endpoints and prefix).
    #[arg(long, env = "LOCKSERVER_BACKEND", value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,

    /// The etcd members' URLs, comma-separated (`http://h1:2379,http://h2:2379`).
    #[arg(long, env = "LOCKSERVER_ETCD_ENDPOINTS", value_delimiter = ',', required_if_eq("backend", "etcd"))]
    pub etcd_endpoints: Vec<String>,

    /// The prefix of every etcd key this lock space uses.
    #[arg(long, env = "LOCKSERVER_ETCD_PREFIX", default_value = "lockserver/")]
    pub etcd_prefix: String,

    /// The etcd user, when etcd's authentication is on (with --etcd-password).
    #[arg(long, env = "LOCKSERVER_ETCD_USER", requires = "etcd_password")]
    pub etcd_user: Option<String>,

    /// The etcd user's password.
    #[arg(long, env = "LOCKSERVER_ETCD_PASSWORD", hide_env_values = true, requires = "etcd_user")]
    pub etcd_password: Option<String>,

    /// A PEM file of the CA that signed etcd's certificates (for https:// endpoints).
    #[arg(long, env = "LOCKSERVER_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,

    /// A PEM client certificate for etcd (with --etcd-key-file).
    #[arg(long, env = "LOCKSERVER_ETCD_CERT_FILE", requires = "etcd_key_file")]
    pub etcd_cert_file: Option<PathBuf>,

    /// The PEM private key of --etcd-cert-file.
    #[arg(long, env = "LOCKSERVER_ETCD_KEY_FILE", requires = "etcd_cert_file")]
    pub etcd_key_file: Option<PathBuf>,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "LOCKSERVER_WORKERS")]
    pub workers: Option<usize>,

    /// The log's format on stderr: `text` (colours only on a terminal) or `json` (one object a
    /// line). What is logged is set by RUST_LOG (default `info`: start-up, shutdown, store and
    /// etcd trouble; `debug` adds a line per request, grant, hand-off and expiry; for example
    /// `RUST_LOG=lockserver=debug`).
    #[arg(long, env = "LOCKSERVER_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Salvage a damaged --data-dir, then exit without serving: keep every record that still
    /// reads, move the old files into `damaged-<time>/` (never deleted), report what was dropped.
    /// Only on this explicit request: the server never does it by itself.
    #[arg(long)]
    pub repair: bool,

    /// How long a request's head and body may take to arrive (then 408, connection closed).
    #[arg(long, env = "LOCKSERVER_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// The most locks held (or keeping a value) at once; beyond, acquires answer 503
    /// `too_many` (default: one per 4 KiB of the machine's memory).
    #[arg(long, env = "LOCKSERVER_MAX_LOCKS")]
    pub max_locks: Option<usize>,

    /// The most requests queued for locks at once; beyond, they answer 503 `too_many`
    /// (default: half the file descriptors, whose limit the server raises to the maximum).
    #[arg(long, env = "LOCKSERVER_MAX_WAITERS")]
    pub max_waiters: Option<usize>,

    /// The most memory locks and queued waiters may take, counting their names, owners, values
    /// and connections (`512MiB`, `4GiB`, or bytes); beyond, changes that would take more answer
    /// 503 `too_many` (default: half the memory the process may use: its cgroup's limit, or the
    /// machine's memory).
    #[arg(long, env = "LOCKSERVER_MAX_MEMORY", value_parser = parse_size)]
    pub max_memory: Option<usize>,
}

/// How the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which backend keeps the locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// In this process: durable or in memory, as --storage says.
    Embedded,
    /// In an etcd cluster; this server is a stateless gateway.
    Etcd,
}

/// Where locks live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    /// Journaled to the data dir: nothing answered is lost by a crash or restart.
    Durable,
    /// In memory only: a restart forgets every lock.
    Memory,
}

/// A configuration that cannot be used: a file it names cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file named by a flag cannot be read.
    #[error("cannot read the {what} {}: {source}", path.display())]
    Unreadable {
        /// What the file is for (`secret file`, `etcd CA file`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// Reads a file named by a flag.
fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Unreadable { what, path: path.to_path_buf(), source })
}

impl Config {
    /// The configured secrets, from --secret and --secret-file (possibly none).
    pub fn secrets(&self) -> Result<Vec<String>, ConfigError> {
        let mut text = self.secret.clone().unwrap_or_default();
        if let Some(path) = &self.secret_file {
            let file = String::from_utf8_lossy(&read_file("secret file", path)?).into_owned();
            text.push(',');
            text.push_str(&file);
        }
        Ok(text.split([',', '\n']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
    }

    /// The TLS files, when the server is to speak HTTPS.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }
}

#[cfg(feature = "etcd")]
impl Config {
    /// The etcd client settings from the flags, reading the TLS files.
    pub fn etcd_options(&self) -> Result<EtcdOptions, ConfigError> {
        let user = self.etcd_user.clone().zip(self.etcd_password.clone());
        let tls = if self.etcd_ca_file.is_some() || self.etcd_cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.etcd_ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read_file("etcd CA file", ca)?));
            }
            if let (Some(cert), Some(key)) = (&self.etcd_cert_file, &self.etcd_key_file) {
                tls = tls.identity(Identity::from_pem(
                    read_file("etcd certificate file", cert)?,
                    read_file("etcd key file", key)?,
                ));
            }
            Some(tls)
        } else {
            None
        };
        Ok(EtcdOptions {
            endpoints: self
                .etcd_endpoints
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect(),
            prefix: self.etcd_prefix.clone(),
            user,
            tls,
            value_retention: self.value_retention,
        })
    }
}

/// A size flag that cannot be read.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("`{0}` is not a size: use bytes, or a number with KiB, MiB or GiB")]
pub struct SizeError(String);

/// Parses `1048576`, `512KiB`, `64MiB` or `4GiB` into bytes.
pub fn parse_size(text: &str) -> Result<usize, SizeError> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "K" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        _ => return Err(SizeError(text.to_string())),
    };
    let number: usize = number.parse().map_err(|_| SizeError(text.to_string()))?;
    number.checked_mul(1 << shift).ok_or_else(|| SizeError(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
