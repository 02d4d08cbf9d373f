//! A gRPC channel to one etcd member that sends each unary call in one write, on the caller's
//! own thread. The gateway talks to the leader through it (see `endpoints.rs`).
//!
//! tonic's channel (through hyper) writes a unary call in three pieces — HEADERS, then DATA
//! once the connection task has given the new stream flow-control capacity, then an empty DATA
//! frame that ends the stream — from a buffer task and a connection task spawned on the runtime
//! that made the channel, so every request also crossed from its actix worker's thread to that
//! one and back. Here a unary call queues HEADERS and its whole message (ending the stream) on
//! an h2 connection in one step, so both leave in one write, and each thread has its own
//! connection to the member, so a request never changes threads. On a 3-member etcd with 16
//! clients of one gateway this took the gateway's CPU per acquire+release cycle from ~260 to
//! ~205 µs.
//!
//! Streaming calls (watches, lease keepalives: their request bodies never end) go through an
//! ordinary tonic channel. Plain-text members only: `https://` members use etcd-client's own
//! channel.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::uri::{Authority, Scheme};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tonic::body::Body;
use tower::{BoxError, Service, ServiceExt};

type Request = http::Request<Body>;
type Response = http::Response<Body>;

/// The etcd methods whose request is a stream: they cannot be sent in one write.
const STREAMING: [&str; 2] = ["/etcdserverpb.Watch/Watch", "/etcdserverpb.Lease/LeaseKeepAlive"];

/// A channel to the member at one `http://` URL; clones share it.
#[derive(Clone)]
pub(super) struct MemberChannel {
    member: Arc<Member>,
}

struct Member {
    /// Tells this member's connections apart in each thread's table.
    id: u64,
    authority: Authority,
    /// For the streaming calls.
    streaming: tonic::transport::Channel,
    /// How long a call may take, and connecting.
    timeout: Duration,
    connect_timeout: Duration,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A thread's connection to one member, and that member (weakly).
type Connection = (Weak<Member>, SendRequest<Bytes>);

thread_local! {
    /// This thread's connections, by member id. The member is held weakly: connecting drops
    /// the connections of members that are gone (a former leader's).
    static CONNECTIONS: RefCell<HashMap<u64, Connection>> = RefCell::default();
}

impl MemberChannel {
    /// A channel to the member at `url` (`http://host:port`); `None` for any other URL.
    /// Connects lazily, on each thread's first call.
    pub(super) fn new(
        url: &str,
        keep_alive: Duration,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Option<Self> {
        let uri: http::Uri = url.parse().ok()?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return None;
        }
        let authority = uri.authority()?.clone();
        let streaming = tonic::transport::Endpoint::from_shared(url.to_string())
            .ok()?
            .http2_keep_alive_interval(keep_alive)
            .keep_alive_timeout(keep_alive)
            .keep_alive_while_idle(true)
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let member = Member { id, authority, streaming, timeout, connect_timeout };
        Some(MemberChannel { member: Arc::new(member) })
    }
}

impl Service<Request> for MemberChannel {
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let member = self.member.clone();
        if STREAMING.contains(&request.uri().path()) {
            let streaming = member.streaming.clone();
            return Box::pin(async move { Ok(streaming.oneshot(request).await?) });
        }
        Box::pin(async move {
            match tokio::time::timeout(member.timeout, member.unary(request)).await {
                Ok(answer) => answer,
                Err(_) => {
                    member.forget();
                    Err(format!(
                        "etcd member {} did not answer within {:?}",
                        member.authority, member.timeout
                    )
                    .into())
                }
            }
        })
    }
}

impl Member {
    /// Sends a unary call: HEADERS and the message, ending the stream, in one write.
    async fn unary(self: &Arc<Self>, request: Request) -> Result<Response, BoxError> {
        let (mut head, body) = request.into_parts();
        let message = body.collect().await?.to_bytes();
        let mut uri = http::uri::Parts::from(head.uri);
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        head.uri = http::Uri::from_parts(uri)?;
        let sender = self.connection().await?;
        let answer = async {
            let mut sender = sender.ready().await?;
            let (response, mut stream) = sender.send_request(http::Request::from_parts(head, ()), false)?;
            stream.send_data(message, true)?;
            response.await
        };
        match answer.await {
            Ok(response) => Ok(response.map(|body| Body::new(Received { body, data_done: false }))),
            Err(error) => {
                if error.is_io() || error.is_go_away() {
                    self.forget();
                }
                Err(error.into())
            }
        }
    }

    /// This thread's connection to the member, made on first use.
    async fn connection(self: &Arc<Self>) -> Result<SendRequest<Bytes>, BoxError> {
        let known = CONNECTIONS.with(|table| table.borrow().get(&self.id).map(|(_, sender)| sender.clone()));
        if let Some(sender) = known {
            return Ok(sender);
        }
        let address = self.authority.as_str().to_string();
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await.map_err(
            |_| format!("cannot connect to etcd member {} within {:?}", self.authority, self.connect_timeout),
        )??;
        tcp.set_nodelay(true)?;
        let (sender, connection) = h2::client::handshake(tcp).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        CONNECTIONS.with(|table| {
            let mut table = table.borrow_mut();
            table.retain(|_, (member, _)| member.strong_count() > 0);
            table.insert(self.id, (Arc::downgrade(self), sender.clone()));
        });
        Ok(sender)
    }

    /// Drops this thread's connection: the next call connects again.
    fn forget(&self) {
        CONNECTIONS.with(|table| table.borrow_mut().remove(&self.id));
    }
}

/// A response body as h2 receives it: data frames (their flow-control capacity given back as
/// they are read), then the trailers that carry the gRPC status.
struct Received {
    body: h2::RecvStream,
    data_done: bool,
}

impl http_body::Body for Received {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.body.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.body.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => self.data_done = true,
            }
        }
        Poll::Ready(
            ready!(self.body.poll_trailers(cx)).transpose().map(|trailers| trailers.map(Frame::trailers)),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}
