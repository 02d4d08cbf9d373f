//! `Listing`: the pages behind `LockserverClient.list()` (an async iterator in `index.js`),
//! around `lockserver_client::Listing`.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::errors::promise;
use crate::info::LockInfo;

/// Every held lock under a prefix, a page at a time.
#[napi]
pub struct Listing {
    listing: Arc<tokio::sync::Mutex<lockserver_client::Listing>>,
}

impl Listing {
    pub(crate) fn new(listing: lockserver_client::Listing) -> Self {
        Listing { listing: Arc::new(tokio::sync::Mutex::new(listing)) }
    }
}

#[napi]
impl Listing {
    /// The next page; null once every page was given.
    #[napi(ts_return_type = "Promise<Array<LockInfo> | null>")]
    pub fn next_page<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Option<Vec<LockInfo>>>> {
        let listing = self.listing.clone();
        promise(env, async move { listing.lock().await.next_page().await }, |page| {
            page.map(|locks| locks.into_iter().map(LockInfo::from).collect())
        })
    }
}
