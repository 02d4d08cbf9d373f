//! Watching locks: `GET /watch` (Server-Sent Events) as a [`Watch`], which reconnects on its own
//! with the last id it saw, so no event is missed while the server still knows it (otherwise the
//! next event is a [`WatchEventKind::Reset`] with the current state).

use std::sync::Arc;
use std::time::Duration;

use lockserver_protocol::bodies::{LockReply, WatchEventBody, WatchResetBody};
pub use lockserver_protocol::events::WatchEventKind;

use crate::error::{Error, Result};
use crate::types::LockInfo;
use crate::wire::{describe, encode, Transport};

/// The server sends a comment at least this often; a stream silent for longer is reconnected.
const SILENCE: Duration = Duration::from_secs(40);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One event of a watch.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// Grows with every event of the server (on etcd: made of the revision).
    pub id: u64,
    /// What changed.
    pub kind: WatchEventKind,
    /// The lock that changed (`None` for a reset).
    pub resource: Option<String>,
    /// The holder after the change; `None` when free.
    pub owner: Option<String>,
    /// The hold's fencing token after the change; `None` when free.
    pub token: Option<u64>,
    /// Time left on the hold after the change.
    pub expires_in: Option<Duration>,
    /// The value after the change (on the etcd backend: as read a moment after it).
    pub value: Option<String>,
    /// Requests queued after the change (on the etcd backend: as read a moment after it).
    pub waiters: Option<usize>,
    /// A reset's watched locks that are held now (empty for other events).
    pub locks: Vec<LockInfo>,
}

/// What a watch follows.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Resource(String),
    Prefix(String),
}

/// A stream of lock events; see [`Client::watch`](crate::Client::watch). Reconnects by itself;
/// dropping it ends the watch.
pub struct Watch {
    transport: Arc<Transport>,
    path: String,
    last_id: Option<u64>,
    response: Option<reqwest::Response>,
    buffer: Vec<u8>,
    failures: u32,
}

impl Watch {
    pub(crate) fn new(transport: Arc<Transport>, target: &Target) -> Watch {
        let path = match target {
            Target::Resource(name) => format!("/watch?resource={}", encode(name)),
            Target::Prefix(prefix) => format!("/watch?prefix={}", encode(prefix)),
        };
        Watch { transport, path, last_id: None, response: None, buffer: Vec::new(), failures: 0 }
    }

    /// The next event. Transport trouble is retried with a growing pause; each failed attempt
    /// after the first few is returned as an error (the watch goes on: call `next` again).
    /// Refusals (`unauthorized`, `forbidden`, `bad_request`) are returned as they are.
    pub async fn next(&mut self) -> Result<WatchEvent> {
        loop {
            if let Some(event) = self.take_event()? {
                return Ok(event);
            }
            if self.response.is_none() {
                match self.connect().await {
                    Ok(response) => {
                        self.response = Some(response);
                        self.failures = 0;
                    }
                    Err(error @ (Error::Unauthorized | Error::Forbidden(_) | Error::BadRequest(_))) => {
                        return Err(error)
                    }
                    Err(error) => {
                        self.failures += 1;
                        let pause = Duration::from_millis(50 << self.failures.min(7)).min(MAX_BACKOFF);
                        tokio::time::sleep(pause).await;
                        if self.failures > 3 {
                            return Err(error);
                        }
                        continue;
                    }
                }
            }
            let response = self.response.as_mut().expect("connected above");
            match tokio::time::timeout(SILENCE, response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.extend_from_slice(&bytes),
                // Ended, broken or silent: reconnect from the last id.
                _ => {
                    self.response = None;
                    self.buffer.clear();
                }
            }
        }
    }

    /// The id of the last event (or state) received: where a reconnect resumes.
    pub fn last_id(&self) -> Option<u64> {
        self.last_id
    }

    /// As a [`futures_core::Stream`] of events (each `next` as one item).
    pub fn into_stream(self) -> impl futures_core::Stream<Item = Result<WatchEvent>> {
        futures_util::stream::unfold(self, |mut watch| async move {
            let item = watch.next().await;
            Some((item, watch))
        })
    }

    async fn connect(&self) -> Result<reqwest::Response> {
        let mut request = self.transport.request(reqwest::Method::GET, &self.path);
        if let Some(id) = self.last_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.map_err(|error| Error::Unavailable(describe(&error)))?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(response);
        }
        let bytes = response.bytes().await.unwrap_or_default();
        Err(Error::from_answer(status, &bytes, None))
    }

    /// The next complete event in the buffer, if any; id-only blocks and comments are taken
    /// in passing.
    fn take_event(&mut self) -> Result<Option<WatchEvent>> {
        while let Some(end) = find_block_end(&self.buffer) {
            let block: Vec<u8> = self.buffer.drain(..end.0 + end.1).collect();
            let text = String::from_utf8_lossy(&block[..end.0]);
            let (mut id, mut name, mut data) = (None, None, String::new());
            for line in text.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = value.trim().parse::<u64>().ok();
                } else if let Some(value) = line.strip_prefix("event:") {
                    name = Some(value.trim().to_string());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if id.is_some() {
                self.last_id = id;
            }
            let Some(kind) = name.as_deref().and_then(WatchEventKind::parse) else { continue };
            let unreadable = |error: serde_json::Error| Error::Server {
                status: 200,
                message: format!("unreadable watch event: {error}"),
            };
            let event = if kind == WatchEventKind::Reset {
                let body: WatchResetBody = serde_json::from_str(&data).map_err(unreadable)?;
                WatchEvent {
                    id: id.unwrap_or_default(),
                    kind,
                    resource: None,
                    owner: None,
                    token: None,
                    expires_in: None,
                    value: None,
                    waiters: None,
                    locks: body.locks.into_iter().map(|lock: LockReply| lock.into()).collect(),
                }
            } else {
                let body: WatchEventBody = serde_json::from_str(&data).map_err(unreadable)?;
                WatchEvent {
                    id: id.unwrap_or_default(),
                    kind,
                    resource: Some(body.resource),
                    owner: body.owner,
                    token: body.token,
                    expires_in: body.expires_in_ms.map(Duration::from_millis),
                    value: body.value,
                    waiters: body.waiters,
                    locks: Vec::new(),
                }
            };
            return Ok(Some(event));
        }
        Ok(None)
    }
}

/// Where the first block of `buffer` ends: its length and the blank line's.
fn find_block_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2));
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|at| (at, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::find_block_end;

    #[test]
    fn blocks_end_at_a_blank_line() {
        assert_eq!(find_block_end(b"id: 1\n\nid: 2"), Some((5, 2)));
        assert_eq!(find_block_end(b"id: 1\r\n\r\n"), Some((5, 4)));
        assert_eq!(find_block_end(b"id: 1\n"), None);
    }
}
