//! The API suite (`suite/api.rs`) on the embedded store, sent by a tenant: a `lock` key of a
//! keys file, in a namespace of its own. Every answer must be the same as with the plain secret.

use lockserver_tests::Backend;

fn backend() -> &'static Backend {
    &Backend::Keyed(&Backend::Embedded)
}

#[path = "suite/api.rs"]
mod suite;
