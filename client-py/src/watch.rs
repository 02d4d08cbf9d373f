//! `Watch`: what `LockserverClient.watch` and `watch_prefix` return, around
//! `lockserver_client::Watch`: a sync iterator (`for event in watch`) and an async one
//! (`async for event in watch`) of event dicts.

use std::sync::Arc;
use std::time::Duration;

use lockserver_client::{WatchEvent, WatchEventKind};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::info::lock_dict;
use crate::{awaitable, wait};

/// How long a blocking `next` waits before it lets Python handle signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Lock events, as dicts: `id`, `event` (`reset`, `acquired`, `released`, `expired`,
/// `refreshed`, `handoff`, `revoked`), `resource`, `owner`, `token`, `expires_in` (seconds),
/// `value`, `waiters`, and for `reset` `locks` (what is held now, as `inspect` gives them). The
/// first event is a `reset`. Reconnects by itself; never ends on its own.
#[pyclass(frozen, module = "lockserver_client._native")]
pub struct Watch {
    watch: Arc<tokio::sync::Mutex<lockserver_client::Watch>>,
}

impl Watch {
    pub fn new(watch: lockserver_client::Watch) -> Self {
        Watch { watch: Arc::new(tokio::sync::Mutex::new(watch)) }
    }
}

#[pymethods]
impl Watch {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        loop {
            let watch = self.watch.clone();
            let next = wait(py, async move {
                let mut watch = watch.lock().await;
                Ok(tokio::time::timeout(SIGNAL_CHECK, watch.next()).await.ok())
            })?;
            match next {
                Some(event) => return event_dict(py, event.map_err(crate::errors::to_py)?),
                None => py.check_signals()?,
            }
        }
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let watch = self.watch.clone();
        awaitable(py, async move { watch.lock().await.next().await.map(EventDict) })
    }
}

/// An event on its way to Python, as a dict.
struct EventDict(WatchEvent);

impl<'py> IntoPyObject<'py> for EventDict {
    type Target = PyDict;
    type Output = Bound<'py, PyDict>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        event_dict(py, self.0)
    }
}

fn event_dict(py: Python<'_>, event: WatchEvent) -> PyResult<Bound<'_, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("id", event.id)?;
    dict.set_item("event", event.kind.as_str())?;
    dict.set_item("resource", event.resource)?;
    dict.set_item("owner", event.owner)?;
    dict.set_item("token", event.token)?;
    dict.set_item("expires_in", event.expires_in.map(|left| left.as_secs_f64()))?;
    dict.set_item("value", event.value)?;
    dict.set_item("waiters", event.waiters)?;
    if event.kind == WatchEventKind::Reset {
        let locks = event.locks.into_iter().map(|lock| lock_dict(py, lock)).collect::<PyResult<Vec<_>>>()?;
        dict.set_item("locks", locks)?;
    }
    Ok(dict)
}
