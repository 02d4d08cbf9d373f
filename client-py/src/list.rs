//! `Locks`: the iterator `LockserverClient.list` returns, over `lockserver_client::Listing`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use lockserver_client::{Client, Listing, LockInfo};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::info::lock_dict;
use crate::wait;

/// Every held lock under a prefix, as dicts, fetched a page at a time as iteration goes.
#[pyclass(frozen, module = "lockserver_client._native")]
pub struct Locks {
    listing: Arc<tokio::sync::Mutex<Listing>>,
    /// The rest of the last page fetched.
    buffer: Mutex<VecDeque<LockInfo>>,
}

impl Locks {
    pub fn new(client: Client, prefix: String, page_size: usize) -> Self {
        let listing = client.list_all(&prefix, page_size);
        Locks { listing: Arc::new(tokio::sync::Mutex::new(listing)), buffer: Mutex::default() }
    }
}

#[pymethods]
impl Locks {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        loop {
            if let Some(info) = self.buffer.lock().unwrap_or_else(PoisonError::into_inner).pop_front() {
                return lock_dict(py, info).map(Some);
            }
            let listing = self.listing.clone();
            match wait(py, async move { listing.lock().await.next_page().await })? {
                Some(page) => self.buffer.lock().unwrap_or_else(PoisonError::into_inner).extend(page),
                None => return Ok(None),
            }
        }
    }
}
