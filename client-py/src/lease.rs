//! `Lease`: a context manager (sync and async) around `lockserver_client::Lease`.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use lockserver_client::{Client, Error, Shared};
use pyo3::prelude::*;

use crate::{awaitable, errors, exit, exit_async, wait};

/// A lease. `with client.lease(ttl) as lease:` grants it, keeps it alive in the background,
/// and revokes it at the end of the block, releasing every lock acquired under it.
#[pyclass(frozen, module = "lockserver_client._native")]
pub struct Lease {
    client: Client,
    ttl: Duration,
    granted: Shared<lockserver_client::Lease>,
    id: OnceLock<String>,
}

impl Lease {
    pub fn new(client: Client, ttl: Duration) -> Self {
        Lease { client, ttl, granted: Shared::empty(Error::NoSuchLease), id: OnceLock::new() }
    }

    /// The id, once granted.
    pub fn id(&self) -> PyResult<String> {
        self.id.get().cloned().ok_or_else(|| errors::to_py(Error::NoSuchLease))
    }

    fn grant(slf: &Py<Self>) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let slf = Python::attach(|py| slf.clone_ref(py));
        async move {
            let this = slf.get();
            if this.granted.get().await.is_err() {
                let lease = this.client.grant_lease(this.ttl).await?;
                let _ = this.id.set(lease.id().to_string());
                this.granted.put(lease).await;
            }
            Ok(())
        }
    }

    fn revoke_call(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let granted = self.granted.clone();
        async move { granted.end(lockserver_client::Lease::revoke).await }
    }

    fn keepalive_call(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let granted = self.granted.clone();
        async move { granted.get().await?.keepalive().await }
    }
}

#[pymethods]
impl Lease {
    fn __enter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<Self>> {
        wait(py, Lease::grant(&slf))?;
        Ok(slf)
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        exit(py, self.revoke_call(), exc_type)
    }

    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let grant = Lease::grant(&slf);
        awaitable(py, async move {
            grant.await?;
            Ok(slf)
        })
    }

    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        exit_async(py, self.revoke_call(), exc_type)
    }

    /// The lease id (raises `NoSuchLease` before it is granted).
    #[getter(id)]
    fn py_id(&self) -> PyResult<String> {
        self.id()
    }

    /// The time to live in seconds each keepalive restores.
    #[getter]
    fn ttl(&self) -> f64 {
        self.ttl.as_secs_f64()
    }

    /// True once the background keepalive lost the lease.
    #[getter]
    fn lost(&self) -> bool {
        self.granted.peek(lockserver_client::Lease::is_lost).unwrap_or(false)
    }

    /// Keeps the lease alive now (the background task does it on its own).
    fn keepalive(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, self.keepalive_call())
    }

    /// `keepalive` as an awaitable.
    fn keepalive_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.keepalive_call())
    }

    /// Revokes the lease, releasing its locks (a no-op when not granted).
    fn revoke(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, self.revoke_call())
    }

    /// `revoke` as an awaitable.
    fn revoke_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.revoke_call())
    }
}
