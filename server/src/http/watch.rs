//! `GET /watch?resource=NAME` or `?prefix=P`: the caller's namespace's lock events as
//! Server-Sent Events. Each event has an `id:` that only grows, an `event:` saying what changed
//! and a `data:` line with the lock after the change. A client that reconnects with
//! `Last-Event-ID` gets what it missed, or, when that is no longer known, a `reset` event with
//! what is held now; so does a watcher the server had to drop events for. A comment line every
//! [`KEEPALIVE`] keeps idle connections open. A new watch (without `Last-Event-ID`) starts with
//! a `reset` too: who holds what now, and an id to resume from.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::{Bytes, Data, Query};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::stream::{self, Stream};
use lockserver_protocol::bodies::{WatchEventBody, WatchQuery, WatchResetBody};
use lockserver_protocol::events::WatchEventKind;
use lockserver_protocol::millis;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::caller::Caller;
use super::error::{ApiError, Result};
use super::{replies, validate, AppState};
use crate::engine::watch::{EventKind, LockEvent, Scope, Signal, Start, Watcher};
use crate::engine::{ListRequest, LockBackend};
use crate::security::{Namespace, Role};

/// How often an idle stream gets a comment line.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// After each write, a watcher waits this long per watcher sharing its channel before the next
/// (events meanwhile go out together): a lock with many watchers costs about the same writes a
/// second however many there are, and the requests that change it are not starved by the
/// fan-out. One watcher alone never waits.
const PACE_PER_WATCHER: Duration = Duration::from_micros(50);
/// The longest such wait: within it, a guard still hears of its loss in time.
const MAX_PACE: Duration = Duration::from_millis(50);
/// Events gathered into one write, at most (about).
const BATCH_BYTES: usize = 64 * 1024;
/// The most locks a `reset` lists.
const RESET_LOCKS: usize = 1000;

/// Which locks a watcher follows, by stored name.
enum Filter {
    Resource(String),
    Prefix(String),
}

/// `GET /watch`.
pub async fn watch(
    state: Data<AppState>,
    caller: Caller,
    query: Query<WatchQuery>,
    request: HttpRequest,
) -> Result<HttpResponse> {
    caller.require(Role::Read)?;
    let filter = match query.into_inner() {
        WatchQuery { resource: Some(resource), prefix: None } => {
            Filter::Resource(caller.qualify_owned(validate::inspected(resource)?))
        }
        WatchQuery { resource: None, prefix } => {
            let prefix = validate::prefix(prefix.unwrap_or_default())?;
            Filter::Prefix(caller.qualify_owned(prefix))
        }
        _ => return Err(ApiError::bad_request("give one of `resource` and `prefix`")),
    };
    let after = request
        .headers()
        .get("Last-Event-ID")
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok());
    state.backend.events_caught_up().await;
    let hub = state.backend.events().clone();
    let scope = match &filter {
        Filter::Resource(name) => Scope::Resource(name.as_str().into()),
        Filter::Prefix(_) => Scope::Prefix,
    };
    let (start, watcher) = hub.subscribe(after, scope);
    let start = match (after, start) {
        (None, _) => Start::Reset,
        // Older than this server's history: the backend may still know (etcd, by revision).
        (Some(after), Start::Reset) => match state.backend.events_after(after).await {
            Some(events) => Start::Replay(events.into_iter().map(Arc::new).collect()),
            None => Start::Reset,
        },
        (_, start) => start,
    };
    let stream = EventStream {
        backend: state.backend.clone(),
        namespace: caller.namespace().clone(),
        filter,
        // Never below what the client already saw: its resume point must not go back.
        last_id: hub.last_id().max(after.unwrap_or(0)),
        sent_through: 0,
        resume_at: None,
        ended: false,
        watcher,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream.into_stream(start)))
}

/// One watcher's stream.
struct EventStream {
    backend: Arc<dyn LockBackend>,
    namespace: Namespace,
    filter: Filter,
    /// The id at subscription, for the first block.
    last_id: u64,
    /// The newest event sent: an event the live channel brings again after a replay is skipped.
    sent_through: u64,
    /// Not before this is the next block sent (see [`PACE_PER_WATCHER`]).
    resume_at: Option<tokio::time::Instant>,
    /// The hub ended this watch (shutdown): the stream ends once what was gathered is sent.
    ended: bool,
    watcher: Watcher,
}

impl EventStream {
    fn into_stream(self, start: Start) -> impl Stream<Item = std::result::Result<Bytes, ApiError>> {
        let opening = match start {
            Start::Replay(events) => Opening::Replay(events),
            Start::Reset => Opening::Reset,
        };
        stream::unfold((self, Some(opening)), |(mut this, opening)| async move {
            let block = match opening {
                Some(Opening::Replay(events)) => {
                    let mut block = format!("id: {}\n\n", this.last_id).into_bytes();
                    for event in &events {
                        if this.follows(event) {
                            block.extend_from_slice(event_block(&this.namespace, event));
                        }
                        this.sent_through = this.sent_through.max(event.id);
                    }
                    block
                }
                Some(Opening::Reset) => this.reset_block(this.last_id).await.into_bytes(),
                None => this.next_block().await?,
            };
            Some((Ok(Bytes::from(block)), (this, None)))
        })
    }

    /// Waits for what to send next: the events this watcher follows that have arrived (several
    /// at once under load: one write for all), a reset, or a keepalive comment. `None` once the
    /// hub is gone.
    async fn next_block(&mut self) -> Option<Vec<u8>> {
        if self.ended {
            return None;
        }
        if let Some(resume_at) = self.resume_at.take() {
            tokio::time::sleep_until(resume_at).await;
        }
        let block = self.gather().await?;
        let pace = PACE_PER_WATCHER * self.watcher.audience() as u32;
        if pace > PACE_PER_WATCHER {
            self.resume_at = Some(tokio::time::Instant::now() + pace.min(MAX_PACE));
        }
        Some(block)
    }

    /// What has arrived for this watcher: see [`EventStream::next_block`].
    async fn gather(&mut self) -> Option<Vec<u8>> {
        let mut block = Vec::new();
        loop {
            let received = if block.is_empty() {
                match tokio::time::timeout(KEEPALIVE, self.watcher.receiver.recv()).await {
                    Err(_) => return Some(b": keepalive\n\n".to_vec()),
                    Ok(received) => received,
                }
            } else {
                match self.watcher.receiver.try_recv() {
                    Ok(signal) => Ok(signal),
                    Err(TryRecvError::Lagged(skipped)) => Err(RecvError::Lagged(skipped)),
                    Err(TryRecvError::Closed) => Err(RecvError::Closed),
                    Err(TryRecvError::Empty) => return Some(block),
                }
            };
            match received {
                Ok(Signal::Event(event)) if self.follows(&event) && event.id > self.sent_through => {
                    block.extend_from_slice(event_block(&self.namespace, &event));
                    if block.len() >= BATCH_BYTES {
                        return Some(block);
                    }
                }
                Ok(Signal::Event(_)) => {}
                Ok(Signal::Reset) | Err(RecvError::Lagged(_)) => {
                    // What was gathered is superseded by the state.
                    let id = self.backend.events().last_id();
                    return Some(self.reset_block(id).await.into_bytes());
                }
                Ok(Signal::End) | Err(RecvError::Closed) => {
                    self.ended = true;
                    return (!block.is_empty()).then_some(block);
                }
            }
        }
    }

    fn follows(&self, event: &LockEvent) -> bool {
        match &self.filter {
            Filter::Resource(name) => *event.resource == **name,
            Filter::Prefix(prefix) => {
                event.resource.starts_with(prefix.as_str())
                    && self.namespace.unqualify(&event.resource).is_some()
            }
        }
    }

    /// A `reset` block: what is held now among the watched locks, as of event `id`.
    async fn reset_block(&self, id: u64) -> String {
        let locks = match &self.filter {
            Filter::Resource(name) => self.backend.inspect(name).await.ok().into_iter().collect(),
            Filter::Prefix(prefix) => {
                let (prefix, after) = match self.namespace.unqualify(prefix) {
                    Some(plain) => self.namespace.list_range(&plain, None),
                    None => (prefix.clone(), None),
                };
                let request =
                    ListRequest { prefix, after, limit: RESET_LOCKS, values: true, max_bytes: usize::MAX };
                self.backend.list(request).await.map(|page| page.locks).unwrap_or_default()
            }
        };
        let locks = locks.into_iter().map(|lock| replies::lock(lock, &self.namespace)).collect();
        let data = serde_json::to_string(&WatchResetBody { locks }).expect("a reset serialises");
        format!("id: {id}\nevent: {}\ndata: {data}\n\n", WatchEventKind::Reset.as_str())
    }
}

/// An event's block, rendered once for every watcher that follows it (they all see the name
/// without its own namespace's prefix).
fn event_block<'e>(namespace: &Namespace, event: &'e LockEvent) -> &'e [u8] {
    event.rendered.get_or_init(|| {
        let hold = event.hold.as_ref();
        let body = WatchEventBody {
            resource: namespace.show(&event.resource),
            owner: hold.map(|hold| hold.owner.clone()),
            token: hold.map(|hold| hold.token),
            expires_in_ms: hold.and_then(|hold| hold.expires_in).map(millis),
            value: event.value.as_deref().map(str::to_string),
            waiters: event.waiters,
        };
        let data = serde_json::to_string(&body).expect("a watch event serialises");
        let name = wire_kind(event.kind).as_str();
        format!("id: {}\nevent: {name}\ndata: {data}\n\n", event.id).into_bytes().into()
    })
}

/// The protocol's name of an engine event.
fn wire_kind(kind: EventKind) -> WatchEventKind {
    match kind {
        EventKind::Acquired => WatchEventKind::Acquired,
        EventKind::Released => WatchEventKind::Released,
        EventKind::Expired => WatchEventKind::Expired,
        EventKind::Refreshed => WatchEventKind::Refreshed,
        EventKind::Handoff => WatchEventKind::Handoff,
        EventKind::Revoked => WatchEventKind::Revoked,
    }
}

/// What a stream sends first.
enum Opening {
    Replay(Vec<Arc<LockEvent>>),
    Reset,
}
