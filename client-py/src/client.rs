//! `LockserverClient`: the reference methods, and the factories of locks and leases.

use std::future::Future;

use lockserver_client::{seconds, Client, Error, LockMode, LockOptions};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::info::lock_dict;
use crate::lease::Lease;
use crate::list::Locks;
use crate::lock::Lock;
use crate::multi::MultiLock;
use crate::watch::Watch;
use crate::{awaitable, errors, wait};

/// A lockserver client. Arguments not given come from `LOCKSERVER_ADDR`,
/// `LOCKSERVER_SECRET`, `LOCKSERVER_OWNER` (or `.env`).
#[pyclass(frozen, module = "lockserver_client._native")]
pub struct LockserverClient {
    client: Client,
}

/// A lease given to `lock(..., lease=...)`: the object or its id.
#[derive(FromPyObject)]
pub enum LeaseArg {
    /// A `Lease` object.
    Lease(Py<Lease>),
    /// A lease id.
    Id(String),
}

impl LeaseArg {
    fn id(&self) -> PyResult<String> {
        match self {
            LeaseArg::Lease(lease) => lease.get().id(),
            LeaseArg::Id(id) => Ok(id.clone()),
        }
    }
}

/// The options of one acquisition from Python's arguments.
fn lock_options(
    expire: Option<f64>,
    wait: Option<f64>,
    value: Option<String>,
    lease: Option<LeaseArg>,
    hold_until_released: bool,
    timeout: Option<f64>,
) -> PyResult<LockOptions> {
    let lease = lease.map(|lease| lease.id()).transpose()?;
    let mut options =
        LockOptions::from_seconds(expire, wait, value, lease, hold_until_released).map_err(errors::to_py)?;
    options.timeout = timeout.map(|secs| seconds("timeout", secs)).transpose().map_err(errors::to_py)?;
    Ok(options)
}

impl LockserverClient {
    /// The reference acquire: resolves true when held, false when a non-blocking try found the
    /// lock held elsewhere.
    fn acquire_call(
        &self,
        resource: String,
        blocking: bool,
        expire: Option<f64>,
    ) -> PyResult<impl Future<Output = Result<bool, Error>> + Send + 'static> {
        let expire = expire.map(|expire| seconds("expire", expire)).transpose().map_err(errors::to_py)?;
        let client = self.client.clone();
        Ok(
            async move { client.try_acquire_as_owner(&resource, LockMode::from_blocking(blocking), expire).await },
        )
    }

    /// The reference release.
    fn release_call(&self, resource: String) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let client = self.client.clone();
        async move { client.release_as_owner(&resource).await }
    }
}

#[pymethods]
impl LockserverClient {
    /// `timeout`: how long a call may take on top of any server-side wait (seconds, default 10).
    /// `default_expire`: the expiry of a lock taken without `expire`, `lease` or
    /// `hold_until_released`, kept alive while held (seconds, default 30; None: such locks are
    /// held until released, even if the process dies).
    /// `ca_file`: a PEM CA to trust for `https://` addresses, besides the system's roots
    /// (default `LOCKSERVER_CA_FILE`); `cert_file` and `key_file`: a client certificate for
    /// mutual TLS (default `LOCKSERVER_CERT_FILE`, `LOCKSERVER_KEY_FILE`).
    /// `watch_locks`: each held lock watches itself, so `lock.lost` turns true within
    /// milliseconds of a takeover (default True; one streaming connection per held lock).
    #[new]
    #[pyo3(signature = (addr=None, owner=None, secret=None, *, timeout=None, default_expire=Some(30.0), ca_file=None, cert_file=None, key_file=None, watch_locks=true))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments
    fn new(
        addr: Option<String>,
        owner: Option<String>,
        secret: Option<String>,
        timeout: Option<f64>,
        default_expire: Option<f64>,
        ca_file: Option<String>,
        cert_file: Option<String>,
        key_file: Option<String>,
        watch_locks: bool,
    ) -> PyResult<Self> {
        let mut builder = Client::builder()
            .options(addr, owner, secret)
            .tls_files(ca_file, cert_file, key_file)
            .watch_guards(watch_locks);
        if let Some(timeout) = timeout {
            builder = builder.timeout(seconds("timeout", timeout).map_err(errors::to_py)?);
        }
        let default_expire = default_expire.map(|secs| seconds("default_expire", secs)).transpose();
        builder = builder.default_expire(default_expire.map_err(errors::to_py)?);
        let client = builder.build().map_err(errors::to_py)?;
        Ok(LockserverClient { client })
    }

    /// This client's owner id.
    #[getter]
    fn owner(&self) -> String {
        self.client.owner().to_string()
    }

    /// The server's base URL.
    #[getter]
    fn addr(&self) -> String {
        self.client.base_url().to_string()
    }

    /// Acquires `resource` as this client's owner, held until `release` (or `expire` seconds).
    /// Blocking waits as long as it takes; non-blocking returns False when it is held.
    #[pyo3(signature = (resource, blocking=true, expire=None))]
    fn acquire(
        &self,
        py: Python<'_>,
        resource: String,
        blocking: bool,
        expire: Option<f64>,
    ) -> PyResult<bool> {
        wait(py, self.acquire_call(resource, blocking, expire)?)
    }

    /// `acquire` as an awaitable.
    #[pyo3(signature = (resource, blocking=true, expire=None))]
    fn acquire_async<'py>(
        &self,
        py: Python<'py>,
        resource: String,
        blocking: bool,
        expire: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.acquire_call(resource, blocking, expire)?)
    }

    /// Releases `resource` held by this client's owner.
    fn release(&self, py: Python<'_>, resource: String) -> PyResult<()> {
        wait(py, self.release_call(resource))
    }

    /// `release` as an awaitable.
    fn release_async<'py>(&self, py: Python<'py>, resource: String) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.release_call(resource))
    }

    /// A lock on `resource`, acquired by `with` (or `async with`) and released at its end.
    /// `wait=None` waits as long as it takes. `expire` (seconds) is kept alive in the
    /// background; without it (and without `lease`) the client's `default_expire` applies (30 s),
    /// unless `hold_until_released=True`: then the lock is held until released, even if this
    /// process dies. `mode="shared"` takes it as one of its shared holders (a read-write lock's
    /// reader; default `"exclusive"`). `timeout` overrides the client's for this lock's calls.
    #[pyo3(signature = (resource, expire=None, wait=None, value=None, lease=None, *, mode=None, hold_until_released=false, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn lock(
        &self,
        resource: String,
        expire: Option<f64>,
        wait: Option<f64>,
        value: Option<String>,
        lease: Option<LeaseArg>,
        mode: Option<&str>,
        hold_until_released: bool,
        timeout: Option<f64>,
    ) -> PyResult<Lock> {
        let options = lock_options(expire, wait, value, lease, hold_until_released, timeout)?;
        let options = options.mode(mode).map_err(errors::to_py)?;
        Ok(Lock::new(self.client.clone(), resource, options))
    }

    /// The same as `lock`, named for `async with`.
    #[pyo3(signature = (resource, expire=None, wait=None, value=None, lease=None, *, mode=None, hold_until_released=false, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn lock_async(
        &self,
        resource: String,
        expire: Option<f64>,
        wait: Option<f64>,
        value: Option<String>,
        lease: Option<LeaseArg>,
        mode: Option<&str>,
        hold_until_released: bool,
        timeout: Option<f64>,
    ) -> PyResult<Lock> {
        self.lock(resource, expire, wait, value, lease, mode, hold_until_released, timeout)
    }

    /// One of `limit` permits of the semaphore `resource` (1 to 10,000), acquired by `with` (or
    /// `async with`) and released at its end: up to `limit` holders at once, each with its own
    /// token and expiry. Every user of the semaphore must give the same `limit` (`LimitMismatch`
    /// otherwise). The other arguments are those of `lock`.
    #[pyo3(signature = (resource, limit, expire=None, wait=None, value=None, lease=None, *, hold_until_released=false, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn semaphore(
        &self,
        resource: String,
        limit: u32,
        expire: Option<f64>,
        wait: Option<f64>,
        value: Option<String>,
        lease: Option<LeaseArg>,
        hold_until_released: bool,
        timeout: Option<f64>,
    ) -> PyResult<Lock> {
        let mut options = lock_options(expire, wait, value, lease, hold_until_released, timeout)?;
        options.limit = Some(limit);
        Ok(Lock::new(self.client.clone(), resource, options))
    }

    /// The same as `semaphore`, named for `async with`.
    #[pyo3(signature = (resource, limit, expire=None, wait=None, value=None, lease=None, *, hold_until_released=false, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn semaphore_async(
        &self,
        resource: String,
        limit: u32,
        expire: Option<f64>,
        wait: Option<f64>,
        value: Option<String>,
        lease: Option<LeaseArg>,
        hold_until_released: bool,
        timeout: Option<f64>,
    ) -> PyResult<Lock> {
        self.semaphore(resource, limit, expire, wait, value, lease, hold_until_released, timeout)
    }

    /// Every lock of `resources` (2 to 64 names) at once, exclusively, or none: acquired by
    /// `with` (or `async with`) and released together at its end. While it waits it holds
    /// none of them; overlapping multi-locks never deadlock. `.tokens` are the fencing tokens,
    /// in the order given.
    #[pyo3(signature = (resources, expire=None, wait=None, lease=None, *, hold_until_released=false, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn lock_many(
        &self,
        resources: Vec<String>,
        expire: Option<f64>,
        wait: Option<f64>,
        lease: Option<LeaseArg>,
        hold_until_released: bool,
        timeout: Option<f64>,
    ) -> PyResult<MultiLock> {
        let options = lock_options(expire, wait, None, lease, hold_until_released, timeout)?;
        Ok(MultiLock::new(self.client.clone(), resources, options))
    }

    /// The same as `lock_many`, named for `async with`.
    #[pyo3(signature = (resources, expire=None, wait=None, lease=None, *, hold_until_released=false, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn lock_many_async(
        &self,
        resources: Vec<String>,
        expire: Option<f64>,
        wait: Option<f64>,
        lease: Option<LeaseArg>,
        hold_until_released: bool,
        timeout: Option<f64>,
    ) -> PyResult<MultiLock> {
        self.lock_many(resources, expire, wait, lease, hold_until_released, timeout)
    }

    /// Tries to acquire `resource` now. Returns a `Lock` that is true when it holds the lock and
    /// false when someone else does; either way it works in a `with` block, which releases it at
    /// the end if held: `with client.try_lock("res") as mine: if mine: ...`.
    #[pyo3(signature = (resource, expire=None, value=None, lease=None, *, hold_until_released=false, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn try_lock(
        &self,
        py: Python<'_>,
        resource: String,
        expire: Option<f64>,
        value: Option<String>,
        lease: Option<LeaseArg>,
        hold_until_released: bool,
        timeout: Option<f64>,
    ) -> PyResult<Lock> {
        let lock =
            self.lock(resource, expire, Some(0.0), value, lease, None, hold_until_released, timeout)?;
        let (try_acquire, lock) = lock.try_acquire();
        wait(py, try_acquire)?;
        Ok(lock)
    }

    /// `try_lock` as an awaitable.
    #[pyo3(signature = (resource, expire=None, value=None, lease=None, *, hold_until_released=false, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn try_lock_async<'py>(
        &self,
        py: Python<'py>,
        resource: String,
        expire: Option<f64>,
        value: Option<String>,
        lease: Option<LeaseArg>,
        hold_until_released: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let lock =
            self.lock(resource, expire, Some(0.0), value, lease, None, hold_until_released, timeout)?;
        let (try_acquire, lock) = lock.try_acquire();
        awaitable(py, async move {
            try_acquire.await?;
            Ok(lock)
        })
    }

    /// A lease with this time to live, granted by `with` (or `async with`) and revoked at its
    /// end; kept alive in the background meanwhile.
    fn lease(&self, ttl: f64) -> PyResult<Lease> {
        let ttl = seconds("ttl", ttl).map_err(errors::to_py)?;
        Ok(Lease::new(self.client.clone(), ttl))
    }

    /// The same as `lease`, named for `async with`.
    fn lease_async(&self, ttl: f64) -> PyResult<Lease> {
        self.lease(ttl)
    }

    /// The held lock on `resource` as a dict, or None when it is free.
    fn inspect<'py>(&self, py: Python<'py>, resource: String) -> PyResult<Option<Bound<'py, PyDict>>> {
        let client = self.client.clone();
        let info = wait(py, async move { client.inspect(&resource).await })?;
        info.map(|info| lock_dict(py, info)).transpose()
    }

    /// Every held lock whose name starts with `prefix`, in name order, as dicts (those of
    /// `inspect`); fetched lazily, `page_size` at a time.
    #[pyo3(signature = (prefix="", page_size=100))]
    fn list(&self, prefix: &str, page_size: usize) -> Locks {
        Locks::new(self.client.clone(), prefix.to_string(), page_size)
    }

    /// Watches `resource`: an iterator (sync or async) of its events, starting with its state.
    fn watch(&self, resource: String) -> Watch {
        Watch::new(self.client.watch(resource))
    }

    /// Watches every lock whose name starts with `prefix`.
    #[pyo3(signature = (prefix=""))]
    fn watch_prefix(&self, prefix: &str) -> Watch {
        Watch::new(self.client.watch_prefix(prefix))
    }
}
