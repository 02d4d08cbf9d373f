//! Python bindings of the lockserver Rust client (`lockserver_client._native`).
//!
//! They convert types, errors and async, nothing more: every call goes to
//! `lockserver_client::Client`. Blocking calls release the GIL and run on one shared Tokio
//! runtime; `*_async` calls and `async with` return asyncio awaitables on the same runtime
//! (`asyncio.rs`, which keeps Python off Tokio's threads).

mod asyncio;
mod client;
mod errors;
mod info;
mod lease;
mod list;
mod lock;
mod multi;
mod watch;

use asyncio::awaitable;
use lockserver_client::Error;
use pyo3::prelude::*;
use std::future::Future;

/// Runs a client call to completion with the GIL released.
fn wait<F, T>(py: Python<'_>, call: F) -> PyResult<T>
where
    F: Future<Output = Result<T, Error>> + Send,
    T: Send,
{
    py.detach(|| asyncio::runtime().block_on(call)).map_err(errors::to_py)
}

/// `__exit__`: ends the lock or lease, raising what went wrong only when the block itself
/// did not raise (never hiding the block's own exception); never swallows it (`False`).
fn exit<F>(py: Python<'_>, end: F, exc_type: Option<&Bound<'_, PyAny>>) -> PyResult<bool>
where
    F: Future<Output = Result<(), Error>> + Send,
{
    let ended = wait(py, end);
    if exc_type.is_none() {
        ended?;
    }
    Ok(false)
}

/// `__aexit__`: [`exit`] as an awaitable.
fn exit_async<'py, F>(
    py: Python<'py>,
    end: F,
    exc_type: Option<&Bound<'_, PyAny>>,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<(), Error>> + Send + 'static,
{
    let raise = exc_type.is_none();
    awaitable(py, async move {
        let ended = end.await;
        if raise {
            ended?;
        }
        Ok(false)
    })
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<client::LockserverClient>()?;
    module.add_class::<lock::Lock>()?;
    module.add_class::<multi::MultiLock>()?;
    module.add_class::<lease::Lease>()?;
    module.add_class::<list::Locks>()?;
    module.add_class::<watch::Watch>()?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(module)?;
    Ok(())
}
