//! Who may talk to the server and how: HTTPS ([`tls`]), API keys with roles, rates and quotas
//! ([`keys`]), and the namespaces that keep tenants' lock spaces apart ([`namespace`]). Knows
//! nothing of HTTP requests; `http/caller.rs` applies it to them. [`reload`] re-reads keys and
//! certificates on SIGHUP.

pub mod keys;
pub mod namespace;
pub mod reload;
pub mod tls;

pub use keys::{random_secret, ApiKey, KeyRing, Keys, KeysError, Role};
pub use namespace::{Namespace, NamespaceError, DEFAULT_NAMESPACE};
pub use reload::{KeySources, Reloader};
pub use tls::{CertResolver, TlsError, TlsFiles};
