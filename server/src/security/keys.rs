//! API keys: who a request's secret belongs to, which namespace it sees, what its role lets it
//! do, and how fast and how much it may lock. Loaded from `--keys-file` (TOML) and/or the plain
//! `--secret`s, which are admin keys in the default namespace.
//!
//! ```toml
//! [[key]]
//! name = "billing-workers"
//! secret_sha256 = "<64 hex digits>"   # or: secret = "..." (for tests)
//! namespace = "billing"
//! role = "lock"                       # "read" | "lock" | "admin"
//! rate = 200                          # requests per second, burst = rate (optional)
//! max_locks = 10000                   # held at once in the namespace (optional)
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::namespace::{Namespace, NamespaceError};
use crate::metrics::KeyCounters;

/// What a key may do; each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Inspect, list, read leases and metrics, in its namespace.
    Read,
    /// Also acquire, release, refresh and use leases, in its namespace.
    Lock,
    /// Everything, in every namespace, and force a release.
    Admin,
}

impl Role {
    /// The role's name in the keys file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Lock => "lock",
            Role::Admin => "admin",
        }
    }
}

/// One API key, without its secret.
#[derive(Debug)]
pub struct ApiKey {
    /// Shown in logs and metrics.
    pub name: String,
    /// The lock space it sees.
    pub namespace: Namespace,
    /// What it may do.
    pub role: Role,
    /// Requests per second (burst = rate); `None` is unlimited.
    pub rate: Option<u32>,
    /// Locks held at once in its namespace; `None` is unlimited.
    pub max_locks: Option<usize>,
    /// Its series of `lockserver_key_requests`.
    pub counters: KeyCounters,
    bucket: Mutex<Bucket>,
}

/// A token bucket: `rate` tokens a second, at most `rate` saved.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    filled_at: Instant,
}

impl ApiKey {
    fn new(
        name: String,
        namespace: Namespace,
        role: Role,
        rate: Option<u32>,
        max_locks: Option<usize>,
    ) -> Self {
        let tokens = rate.map_or(0.0, f64::from);
        ApiKey {
            counters: crate::metrics::global().key_counters(&name),
            name,
            namespace,
            role,
            rate,
            max_locks,
            bucket: Mutex::new(Bucket { tokens, filled_at: Instant::now() }),
        }
    }

    /// Takes one request from the key's rate; when there is none left, how long until there is.
    /// Counted in the key's metrics either way.
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        let taken = self.take_from_bucket(now);
        match taken {
            Ok(()) => self.counters.accepted.inc(),
            Err(_) => self.counters.rate_limited.inc(),
        };
        taken
    }

    fn take_from_bucket(&self, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.rate.map(f64::from) else { return Ok(()) };
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(bucket.filled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.filled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

/// A keys file that cannot be used; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The file cannot be read.
    #[error("cannot read the keys file {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid keys file.
    #[error("the keys file {} is invalid: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        reason: String,
    },
}

/// One `[[key]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    secret: Option<String>,
    secret_sha256: Option<String>,
    namespace: String,
    role: Role,
    rate: Option<u32>,
    max_locks: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFileText {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

/// Every accepted key, by the SHA-256 of its secret (a lookup costs one hash and one probe,
/// however many keys there are).
#[derive(Debug, Default)]
pub struct KeyRing {
    by_digest: HashMap<[u8; 32], Arc<ApiKey>, BuildDigestHasher>,
}

impl KeyRing {
    /// The plain `--secret`s: admin keys in the default namespace, named `secret`.
    pub fn add_secrets<'a>(&mut self, secrets: impl IntoIterator<Item = &'a str>) {
        let mut key = None;
        for secret in secrets.into_iter().map(str::trim).filter(|s| !s.is_empty()) {
            let key = key.get_or_insert_with(|| {
                Arc::new(ApiKey::new("secret".into(), Namespace::default(), Role::Admin, None, None))
            });
            self.by_digest.insert(digest(secret.as_bytes()), key.clone());
        }
    }

    /// Reads `--keys-file` and adds its keys.
    pub fn add_file(&mut self, path: &Path) -> Result<(), KeysError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeysError::Unreadable { path: path.to_path_buf(), source })?;
        let invalid = |reason: String| KeysError::Invalid { path: path.to_path_buf(), reason };
        let file: KeysFileText = toml::from_str(&text).map_err(|error| invalid(error.to_string()))?;
        let mut names = std::collections::HashSet::new();
        for entry in file.key {
            let name = entry.name.trim().to_string();
            if name.is_empty() || !names.insert(name.clone()) {
                return Err(invalid(format!("key name `{name}` is empty or given twice")));
            }
            let digest = match (&entry.secret, &entry.secret_sha256) {
                (Some(secret), None) if !secret.is_empty() => digest(secret.as_bytes()),
                (None, Some(hex)) => parse_digest(hex)
                    .ok_or_else(|| invalid(format!("key `{name}`: secret_sha256 must be 64 hex digits")))?,
                _ => return Err(invalid(format!("key `{name}`: give exactly one of secret, secret_sha256"))),
            };
            let namespace = Namespace::new(&entry.namespace)
                .map_err(|error: NamespaceError| invalid(format!("key `{name}`: {error}")))?;
            if entry.rate == Some(0) || entry.max_locks == Some(0) {
                return Err(invalid(format!("key `{name}`: rate and max_locks must be at least 1")));
            }
            let key = ApiKey::new(name.clone(), namespace, entry.role, entry.rate, entry.max_locks);
            if self.by_digest.insert(digest, Arc::new(key)).is_some() {
                return Err(invalid(format!("key `{name}`: its secret is already another key's")));
            }
        }
        Ok(())
    }

    /// The key whose secret is `given`.
    pub fn find(&self, given: &[u8]) -> Option<&Arc<ApiKey>> {
        self.by_digest.get(&digest(given))
    }

    /// How many secrets are accepted.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no secret is accepted.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// The key ring in use, replaced whole when the keys file is re-read (SIGHUP).
///
/// Every request looks its key up here, so each thread keeps the ring it last used and only
/// takes the lock when the ring's stamp has changed: the lookup then writes no memory another
/// core reads.
#[derive(Debug)]
pub struct Keys {
    /// The stamp of `current`: unique among every ring any `Keys` ever served.
    stamp: AtomicU64,
    current: RwLock<Arc<KeyRing>>,
}

/// Where stamps come from.
static STAMPS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The ring this thread used last, with its stamp.
    static CACHED: RefCell<Option<(u64, Arc<KeyRing>)>> = const { RefCell::new(None) };
}

impl Keys {
    /// Serves `ring`.
    pub fn new(ring: KeyRing) -> Self {
        let stamp = AtomicU64::new(STAMPS.fetch_add(1, Ordering::Relaxed));
        Keys { stamp, current: RwLock::new(Arc::new(ring)) }
    }

    /// The key whose secret is `given`, in the ring now.
    pub fn find(&self, given: &[u8]) -> Option<Arc<ApiKey>> {
        let stamp = self.stamp.load(Ordering::Acquire);
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            let ring = match &*cached {
                Some((cached_stamp, ring)) if *cached_stamp == stamp => ring,
                _ => &cached.insert(self.stamped()).1,
            };
            ring.find(given).cloned()
        })
    }

    /// The ring now.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.stamped().1
    }

    /// The ring now and its stamp, read together.
    fn stamped(&self) -> (u64, Arc<KeyRing>) {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        (self.stamp.load(Ordering::Acquire), current.clone())
    }

    /// Serves `ring` from now on.
    pub fn replace(&self, ring: KeyRing) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(ring);
        self.stamp.store(STAMPS.fetch_add(1, Ordering::Relaxed), Ordering::Release);
    }
}

/// Hashes a SHA-256 digest by its first 8 bytes: they are uniformly random already.
#[derive(Debug, Default, Clone)]
struct BuildDigestHasher;

impl BuildHasher for BuildDigestHasher {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

#[derive(Debug)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut first = [0u8; 8];
        let take = bytes.len().min(8);
        first[..take].copy_from_slice(&bytes[..take]);
        self.0 ^= u64::from_le_bytes(first);
    }

    /// The length prefix of the array: the same for every digest.
    fn write_usize(&mut self, _: usize) {}
}

/// A fresh random secret (64 hex digits), for a server started without one.
pub fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(text: &str) -> Result<KeyRing, KeysError> {
        let path =
            std::env::temp_dir().join(format!("keys-{}-{}.toml", std::process::id(), rand::random::<u64>()));
        std::fs::write(&path, text).unwrap();
        let mut ring = KeyRing::default();
        let result = ring.add_file(&path).map(|()| ring);
        let _ = std::fs::remove_file(path);
        result
    }

    #[test]
    fn keys_are_found_by_secret_or_digest() {
        let hex: String = digest(b"two").iter().map(|b| format!("{b:02x}")).collect();
        let text = format!(
            "[[key]]\nname='a'\nsecret='one'\nnamespace='billing'\nrole='lock'\nrate=5\n\
             [[key]]\nname='b'\nsecret_sha256='{hex}'\nnamespace='default'\nrole='read'\n"
        );
        let ring = ring(&text).unwrap();
        assert_eq!(ring.find(b"one").unwrap().name, "a");
        assert_eq!(ring.find(b"two").unwrap().role, Role::Read);
        assert!(ring.find(b"three").is_none());
    }

    #[test]
    fn bad_files_name_the_problem() {
        let twice = "[[key]]\nname='a'\nsecret='x'\nnamespace='n'\nrole='lock'\n[[key]]\nname='a'\nsecret='y'\nnamespace='n'\nrole='lock'\n";
        assert!(ring(twice).unwrap_err().to_string().contains("`a`"));
        let both = "[[key]]\nname='a'\nsecret='x'\nsecret_sha256='00'\nnamespace='n'\nrole='lock'\n";
        assert!(ring(both).unwrap_err().to_string().contains("exactly one"));
        let role = "[[key]]\nname='a'\nsecret='x'\nnamespace='n'\nrole='root'\n";
        assert!(ring(role).is_err());
        let space = "[[key]]\nname='a'\nsecret='x'\nnamespace='a b'\nrole='lock'\n";
        assert!(ring(space).unwrap_err().to_string().contains("namespace"));
    }

    #[test]
    fn a_replaced_ring_is_seen_by_the_next_lookup() {
        let mut first = KeyRing::default();
        first.add_secrets(["one"]);
        let keys = Keys::new(first);
        assert!(keys.find(b"one").is_some());
        let mut second = KeyRing::default();
        second.add_secrets(["two"]);
        keys.replace(second);
        assert!(keys.find(b"one").is_none());
        assert!(keys.find(b"two").is_some());
        let other = Keys::new(KeyRing::default());
        assert!(other.find(b"two").is_none(), "each Keys has its own cached ring");
    }

    #[test]
    fn the_rate_refills_and_says_when() {
        let key = ApiKey::new("k".into(), Namespace::default(), Role::Lock, Some(2), None);
        let start = Instant::now();
        assert!(key.take(start).is_ok());
        assert!(key.take(start).is_ok());
        let wait = key.take(start).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert!(key.take(start + Duration::from_millis(500)).is_ok());
    }
}
