//! `Lock`: a context manager (sync and async) around `lockserver_client::LockGuard`.

use std::future::Future;

use lockserver_client::{Client, Error, LockBuilder, LockGuard, LockOptions, Shared};
use pyo3::prelude::*;

use crate::{awaitable, exit, exit_async, wait};

/// A lock on one resource. `with client.lock("res") as lock:` acquires it and releases it at
/// the end of the block, also on exception; `async with client.lock_async(...)` likewise.
/// True while it holds the lock.
#[pyclass(frozen, module = "lockserver_client._native")]
pub struct Lock {
    client: Client,
    resource: String,
    options: LockOptions,
    held: Shared<LockGuard>,
    /// Made by `try_lock`: the attempt was made, so `with` does not acquire again.
    tried: bool,
}

impl Lock {
    pub fn new(client: Client, resource: String, options: LockOptions) -> Self {
        Lock { client, resource, options, held: Shared::empty(Error::NotHeld), tried: false }
    }

    fn builder(&self) -> LockBuilder {
        self.client.lock(self.resource.clone()).options(&self.options)
    }

    /// Acquires unless already held, or already tried by `try_lock`.
    fn acquire(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let (held, builder, tried) = (self.held.clone(), self.builder(), self.tried);
        async move {
            if !tried && held.get().await.is_err() {
                held.put(builder.acquire().await?).await;
            }
            Ok(())
        }
    }

    /// Tries to acquire now; the future says whether it did.
    pub fn try_acquire(mut self) -> (impl Future<Output = Result<bool, Error>> + Send + 'static, Self) {
        self.tried = true;
        let (held, builder) = (self.held.clone(), self.builder());
        let attempt = async move {
            match builder.try_acquire().await? {
                Some(guard) => {
                    held.put(guard).await;
                    Ok(true)
                }
                None => Ok(false),
            }
        };
        (attempt, self)
    }

    fn release_call(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let held = self.held.clone();
        async move { held.end(LockGuard::release).await }
    }

    fn set_value_call(&self, value: String) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let held = self.held.clone();
        async move { held.get().await?.set_value(value).await }
    }

    fn refresh_call(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let held = self.held.clone();
        async move { held.get().await?.refresh().await }
    }

    fn peek<R>(&self, look: impl FnOnce(&LockGuard) -> R) -> PyResult<R> {
        self.held.peek(look).ok_or_else(|| crate::errors::to_py(Error::NotHeld))
    }
}

#[pymethods]
impl Lock {
    fn __enter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<Self>> {
        wait(py, slf.get().acquire())?;
        Ok(slf)
    }

    /// Releases; raises `LockLost` if the lock was lost meanwhile, unless the block raised.
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

    /// The lock's name.
    #[getter]
    fn resource(&self) -> String {
        self.resource.clone()
    }

    /// Whether this object holds the lock now.
    #[getter]
    fn held(&self) -> bool {
        self.held.peek(|_| ()).is_some()
    }

    /// True while this object holds the lock (after `try_lock`: whether it got it).
    fn __bool__(&self) -> bool {
        self.held()
    }

    /// The fencing token of the hold (raises `NotHeld` when not held).
    #[getter]
    fn token(&self) -> PyResult<u64> {
        self.peek(LockGuard::token)
    }

    /// The owner id of the hold.
    #[getter]
    fn owner(&self) -> PyResult<String> {
        self.peek(|guard| guard.owner().to_string())
    }

    /// The value stored with the lock.
    #[getter]
    fn value(&self) -> PyResult<Option<String>> {
        self.peek(LockGuard::value)
    }

    /// True once the lock is known lost (keepalive failed, or its watch saw it taken or ended).
    #[getter]
    fn lost(&self) -> bool {
        self.held.peek(LockGuard::is_lost).unwrap_or(false)
    }

    /// Replaces the value stored with the lock.
    fn set_value(&self, py: Python<'_>, value: String) -> PyResult<()> {
        wait(py, self.set_value_call(value))
    }

    /// `set_value` as an awaitable.
    fn set_value_async<'py>(&self, py: Python<'py>, value: String) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.set_value_call(value))
    }

    /// Refreshes the hold now (the background keepalive does it on its own).
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, self.refresh_call())
    }

    /// `refresh` as an awaitable.
    fn refresh_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.refresh_call())
    }

    /// Releases the lock (a no-op when not held); raises `LockLost` if it was lost.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, self.release_call())
    }

    /// `release` as an awaitable.
    fn release_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.release_call())
    }

    fn __repr__(&self) -> String {
        match self.held.peek(|guard| guard.token()) {
            Some(token) => format!("<Lock {:?} held, token {token}>", self.resource),
            None => format!("<Lock {:?} not held>", self.resource),
        }
    }
}
