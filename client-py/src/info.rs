//! A held lock as the dict `inspect` and `list` give.

use lockserver_client::LockInfo;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// `info` as a dict: resource, owner, token, expires_in (seconds or None), value, waiters,
/// lease, mode (`exclusive`, `shared` or `permit`), limit (a semaphore's, or None) and holders
/// (dicts of owner, token, expires_in, mode, lease; oldest first).
pub(crate) fn lock_dict(py: Python<'_>, info: LockInfo) -> PyResult<Bound<'_, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("resource", info.resource)?;
    dict.set_item("owner", info.owner)?;
    dict.set_item("token", info.token)?;
    dict.set_item("expires_in", info.expires_in.map(|left| left.as_secs_f64()))?;
    dict.set_item("value", info.value)?;
    dict.set_item("waiters", info.waiters)?;
    dict.set_item("lease", info.lease)?;
    dict.set_item("mode", info.mode.as_str())?;
    dict.set_item("limit", info.limit)?;
    let holders = info
        .holders
        .into_iter()
        .map(|holder| {
            let entry = PyDict::new(py);
            entry.set_item("owner", holder.owner)?;
            entry.set_item("token", holder.token)?;
            entry.set_item("expires_in", holder.expires_in.map(|left| left.as_secs_f64()))?;
            entry.set_item("mode", holder.mode.as_str())?;
            entry.set_item("lease", holder.lease)?;
            Ok(entry)
        })
        .collect::<PyResult<Vec<_>>>()?;
    dict.set_item("holders", holders)?;
    Ok(dict)
}
