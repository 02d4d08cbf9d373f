//! A held lock as the dict `inspect` and `list` give.

use lockserver_client::LockInfo;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// `info` as a dict: resource, owner, token, expires_in (seconds or None), value, waiters, lease.
pub(crate) fn lock_dict(py: Python<'_>, info: LockInfo) -> PyResult<Bound<'_, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("resource", info.resource)?;
    dict.set_item("owner", info.owner)?;
    dict.set_item("token", info.token)?;
    dict.set_item("expires_in", info.expires_in.map(|left| left.as_secs_f64()))?;
    dict.set_item("value", info.value)?;
    dict.set_item("waiters", info.waiters)?;
    dict.set_item("lease", info.lease)?;
    Ok(dict)
}
