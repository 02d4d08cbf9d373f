//! `MultiLock`: a context manager (sync and async) around `lockserver_client::MultiLockGuard`.

use std::future::Future;

use lockserver_client::{Client, Error, LockOptions, MultiLockGuard, Shared};
use pyo3::prelude::*;

use crate::{awaitable, exit, exit_async, wait};

/// Several locks held at once, all or none. `with client.lock_many(["a", "b"]) as locks:`
/// acquires them and releases them together at the end of the block, also on exception;
/// `async with client.lock_many_async(...)` likewise. True while it holds them.
#[pyclass(frozen, module = "lockserver_client._native")]
pub struct MultiLock {
    client: Client,
    resources: Vec<String>,
    options: LockOptions,
    held: Shared<MultiLockGuard>,
}

impl MultiLock {
    pub fn new(client: Client, resources: Vec<String>, options: LockOptions) -> Self {
        MultiLock { client, resources, options, held: Shared::empty(Error::NotHeld) }
    }

    fn acquire(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let held = self.held.clone();
        let builder = self.client.lock_many(&self.resources).options(&self.options);
        async move {
            if held.get().await.is_err() {
                held.put(builder.acquire().await?).await;
            }
            Ok(())
        }
    }

    fn release_call(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let held = self.held.clone();
        async move { held.end(MultiLockGuard::release).await }
    }

    fn peek<R>(&self, look: impl FnOnce(&MultiLockGuard) -> R) -> PyResult<R> {
        self.held.peek(look).ok_or_else(|| crate::errors::to_py(Error::NotHeld))
    }
}

#[pymethods]
impl MultiLock {
    fn __enter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<Self>> {
        wait(py, slf.get().acquire())?;
        Ok(slf)
    }

    /// Releases them all; raises `LockLost` if they were lost meanwhile, unless the block raised.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        exit(py, self.release_call(), exc_type)
    }

    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let acquire = slf.get().acquire();
        awaitable(py, async move {
            acquire.await?;
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
        exit_async(py, self.release_call(), exc_type)
    }

    /// The locks' names, in the order given.
    #[getter]
    fn resources(&self) -> Vec<String> {
        self.resources.clone()
    }

    /// Whether this object holds the locks now.
    #[getter]
    fn held(&self) -> bool {
        self.held.peek(|_| ()).is_some()
    }

    fn __bool__(&self) -> bool {
        self.held()
    }

    /// The fencing tokens, one per lock, in the order given (raises `NotHeld` when not held).
    #[getter]
    fn tokens(&self) -> PyResult<Vec<u64>> {
        self.peek(MultiLockGuard::tokens)
    }

    /// The owner id of the holds.
    #[getter]
    fn owner(&self) -> PyResult<String> {
        self.peek(|guard| guard.owner().to_string())
    }

    /// True once the locks are known lost (their keepalive failed).
    #[getter]
    fn lost(&self) -> bool {
        self.held.peek(MultiLockGuard::is_lost).unwrap_or(false)
    }

    /// Releases the locks together (a no-op when not held); raises `LockLost` if they were lost.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, self.release_call())
    }

    /// `release` as an awaitable.
    fn release_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.release_call())
    }

    fn __repr__(&self) -> String {
        match self.held.peek(MultiLockGuard::tokens) {
            Some(tokens) => format!("<MultiLock {:?} held, tokens {tokens:?}>", self.resources),
            None => format!("<MultiLock {:?} not held>", self.resources),
        }
    }
}
