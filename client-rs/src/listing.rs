//! [`Listing`]: every held lock under a prefix, fetched a page at a time, so that callers (and
//! the bindings' iterators) never handle the `after` cursor themselves.

use std::sync::Arc;

use lockserver_protocol::limits::MAX_LIST_LIMIT;

use crate::error::Result;
use crate::types::LockInfo;
use crate::wire::Transport;

/// A walk over the held locks whose names start with a prefix, in name order; see
/// [`Client::list_all`](crate::Client::list_all).
pub struct Listing {
    transport: Arc<Transport>,
    prefix: String,
    page_size: usize,
    /// Where the next page starts; `None` before the first.
    after: Option<String>,
    done: bool,
}

impl Listing {
    pub(crate) fn new(transport: Arc<Transport>, prefix: String, page_size: usize) -> Self {
        let page_size = page_size.clamp(1, MAX_LIST_LIMIT);
        Listing { transport, prefix, page_size, after: None, done: false }
    }

    /// The next page of locks; `None` once every page was given.
    pub async fn next_page(&mut self) -> Result<Option<Vec<LockInfo>>> {
        if self.done {
            return Ok(None);
        }
        let page = self.transport.list(&self.prefix, self.after.as_deref(), self.page_size).await?;
        self.done = page.next.is_none();
        self.after = page.next;
        Ok(Some(page.locks).filter(|locks| !locks.is_empty() || !self.done))
    }
}
