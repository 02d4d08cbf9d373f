//! The API suite (`suite/api.rs`) on etcd gateways, sent by a tenant: a `lock` key of a keys
//! file, in a namespace of its own. Every answer must be the same as with the plain secret.

use lockserver_tests::{Backend, EtcdCluster};

fn backend() -> &'static Backend {
    static ETCD: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();
    static KEYED: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();
    KEYED.get_or_init(|| Backend::Keyed(ETCD.get_or_init(|| Backend::Etcd(EtcdCluster::shared()))))
}

#[path = "suite/api.rs"]
mod suite;
