//! The API suite (`suite/api.rs`) on the embedded store, each server with its own data dir.

use lockserver_tests::Backend;

fn backend() -> &'static Backend {
    &Backend::Embedded
}

#[path = "suite/api.rs"]
mod suite;

#[path = "suite/keys.rs"]
mod keys;

#[path = "suite/watch.rs"]
mod watch;

#[path = "suite/sharing.rs"]
mod sharing;
