//! The protocol calls: one function per route, over one pooled HTTP client, with retries.
//! Crate-private: [`Client`](crate::Client), guards and leases call it; users go through them.

use std::time::Duration;

use lockserver_protocol::bodies::{
    AcquireBody, GrantReply, GrantsReply, HealthReply, KeepaliveReply, LeaseBody, LeaseReply, ListQuery,
    LockPageReply, LockReply, Mode, RefreshBody, RefreshedReply, ReleaseBody, ReleasedReply, RevokedReply,
};
use lockserver_protocol::SECRET_HEADER;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::types::{Grant, LeaseInfo, LockInfo, LockPage, Refreshed};

/// How to reach the server: shared (behind an `Arc`) by a client and everything it made.
pub(crate) struct Transport {
    pub(crate) http: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    pub(crate) base: String,
    pub(crate) secret: Option<String>,
    /// Extra attempts after a transport error.
    pub(crate) retries: u32,
    /// How long a call may take on top of any server-side wait it asks for.
    pub(crate) timeout: Duration,
    /// Whether lock guards watch their lock for a takeover.
    pub(crate) watch_guards: bool,
}

/// The parameters of one `POST /acquire`.
#[derive(Debug, Clone, Default)]
pub(crate) struct AcquireRequest {
    pub(crate) resource: String,
    pub(crate) owner: String,
    /// How long the hold lasts unless refreshed; `None` for no expiry.
    pub(crate) expire: Option<Duration>,
    /// How long to queue server-side when the lock is held.
    pub(crate) wait: Duration,
    /// A lease to bind the hold to.
    pub(crate) lease: Option<String>,
    pub(crate) value: Option<String>,
    /// Overrides the client's timeout for this acquisition's calls.
    pub(crate) timeout: Option<Duration>,
    /// `Shared` for a read-write lock's reader; `None` is exclusive.
    pub(crate) mode: Option<Mode>,
    /// A semaphore's number of permits.
    pub(crate) limit: Option<u32>,
    /// A multi-lock's resources (then `resource` is not sent).
    pub(crate) resources: Vec<String>,
}

/// How a call may be retried after a transport error.
#[derive(Clone, Copy, PartialEq)]
enum Retry {
    /// Only when the connection could not be made (the request never left).
    ConnectOnly,
    /// Always: repeating the call does no harm.
    Idempotent,
}

/// One protocol call.
struct Call<'a> {
    method: Method,
    path: &'a str,
    body: Option<serde_json::Value>,
    /// Server-side waiting the call asks for, added to the timeout.
    wait: Duration,
    /// The timeout of this call, when not the client's.
    timeout: Option<Duration>,
    retry: Retry,
}

impl<'a> Call<'a> {
    /// A call that may be repeated after a transport error and asks for no server-side wait.
    fn idempotent(method: Method, path: &'a str, body: Option<impl Serialize>) -> Self {
        let body = body.map(|body| serde_json::to_value(body).expect("protocol bodies serialise"));
        Call { method, path, body, wait: Duration::ZERO, timeout: None, retry: Retry::Idempotent }
    }
}

impl Transport {
    /// `POST /acquire`. Idempotent for a given owner, so it is retried after transport errors.
    pub(crate) async fn acquire(&self, request: &AcquireRequest) -> Result<Grant> {
        let call = self.acquire_call(request);
        self.call::<GrantReply>(call).await.map(Grant::from)
    }

    /// `POST /acquire` of a multi-lock (`resources`): one grant per resource, in order.
    pub(crate) async fn acquire_many(&self, request: &AcquireRequest) -> Result<Vec<Grant>> {
        let call = self.acquire_call(request);
        let reply = self.call::<GrantsReply>(call).await?;
        Ok(reply.grants.into_iter().map(Grant::from).collect())
    }

    fn acquire_call<'a>(&self, request: &AcquireRequest) -> Call<'a> {
        let multi = !request.resources.is_empty();
        let body = AcquireBody {
            resource: (!multi).then(|| request.resource.clone()),
            owner: request.owner.clone(),
            expire: request.expire.map(|expire| expire.as_secs_f64()),
            wait: (!request.wait.is_zero()).then_some(request.wait.as_secs_f64()),
            lease: request.lease.clone(),
            value: request.value.clone(),
            mode: request.mode,
            limit: request.limit,
            resources: multi.then(|| request.resources.clone()),
        };
        let mut call = Call::idempotent(Method::POST, "/acquire", Some(body));
        call.wait = request.wait;
        call.timeout = request.timeout;
        call
    }

    /// `POST /release` of a multi-lock's resources together. A retry that finds them already
    /// gone counts as released.
    pub(crate) async fn release_many(&self, resources: &[String], owner: &str) -> Result<()> {
        let body = ReleaseBody {
            resource: None,
            owner: owner.to_string(),
            token: None,
            keep_value: None,
            force: None,
            resources: Some(resources.to_vec()),
        };
        let call = Call::idempotent(Method::POST, "/release", Some(body));
        match self.call_counting_retries::<ReleasedReply>(call).await {
            (Ok(_), _) | (Err(Error::NotHeld), true) => Ok(()),
            (Err(error), _) => Err(error),
        }
    }

    /// `POST /release`. A retry that finds the lock already gone counts as released.
    pub(crate) async fn release(
        &self,
        resource: &str,
        owner: &str,
        token: Option<u64>,
        keep_value: bool,
    ) -> Result<()> {
        let body = ReleaseBody {
            resource: Some(resource.to_string()),
            owner: owner.to_string(),
            token,
            keep_value: keep_value.then_some(true),
            force: None,
            resources: None,
        };
        let call = Call::idempotent(Method::POST, "/release", Some(body));
        match self.call_counting_retries::<ReleasedReply>(call).await {
            (Ok(_), _) | (Err(Error::NotHeld), true) => Ok(()),
            (Err(error), _) => Err(error),
        }
    }

    /// `POST /refresh`: extends the hold by `expire` and/or replaces its value.
    pub(crate) async fn refresh(
        &self,
        resource: &str,
        owner: &str,
        token: Option<u64>,
        expire: Option<Duration>,
        value: Option<&str>,
    ) -> Result<Refreshed> {
        let body = RefreshBody {
            resource: Some(resource.to_string()),
            owner: owner.to_string(),
            expire: expire.map(|expire| expire.as_secs_f64()),
            token,
            value: value.map(str::to_string),
        };
        let call = Call::idempotent(Method::POST, "/refresh", Some(body));
        self.call::<RefreshedReply>(call).await.map(Refreshed::from)
    }

    /// `GET /locks/{resource}`; `None` when it is free.
    pub(crate) async fn inspect(&self, resource: &str) -> Result<Option<LockInfo>> {
        let path = format!("/locks/{}", encode(resource));
        match self.call::<LockReply>(Call::idempotent(Method::GET, &path, None::<()>)).await {
            Ok(info) => Ok(Some(info.into())),
            Err(Error::NotHeld) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `GET /locks?prefix=..&after=..&limit=..`.
    pub(crate) async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<LockPage> {
        let query = ListQuery {
            prefix: Some(prefix.to_string()),
            limit: Some(limit),
            after: after.map(str::to_string),
            values: None,
        };
        let path = format!("/locks?{}", query_string(&query));
        self.call::<LockPageReply>(Call::idempotent(Method::GET, &path, None::<()>)).await.map(LockPage::from)
    }

    /// `POST /leases`. Not idempotent: retried only when the request never left.
    pub(crate) async fn grant_lease(&self, ttl: Duration) -> Result<LeaseInfo> {
        let mut call = Call::idempotent(Method::POST, "/leases", Some(LeaseBody { ttl: ttl.as_secs_f64() }));
        call.retry = Retry::ConnectOnly;
        self.call::<LeaseReply>(call).await.and_then(LeaseInfo::try_from)
    }

    /// `POST /leases/{id}/keepalive`; returns the restored time to live.
    pub(crate) async fn keepalive(&self, lease: &str) -> Result<Duration> {
        let path = format!("/leases/{}/keepalive", encode(lease));
        let answer: KeepaliveReply = self.call(Call::idempotent(Method::POST, &path, None::<()>)).await?;
        crate::types::seconds_from_server(answer.ttl)
    }

    /// `DELETE /leases/{id}`: revokes the lease and releases its locks. A retry that finds the
    /// lease already gone counts as revoked.
    pub(crate) async fn revoke(&self, lease: &str) -> Result<()> {
        let path = format!("/leases/{}", encode(lease));
        let call = Call::idempotent(Method::DELETE, &path, None::<()>);
        match self.call_counting_retries::<RevokedReply>(call).await {
            (Ok(_), _) | (Err(Error::NoSuchLease), true) => Ok(()),
            (Err(error), _) => Err(error),
        }
    }

    /// `GET /health`: the server's status (503 answers `unavailable` with the reason).
    pub(crate) async fn health(&self) -> Result<HealthReply> {
        self.call::<HealthReply>(Call::idempotent(Method::GET, "/health", None::<()>)).await
    }

    /// `GET /leases/{id}`.
    pub(crate) async fn lease_info(&self, lease: &str) -> Result<LeaseInfo> {
        let path = format!("/leases/{}", encode(lease));
        self.call::<LeaseReply>(Call::idempotent(Method::GET, &path, None::<()>))
            .await
            .and_then(LeaseInfo::try_from)
    }

    async fn call<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T> {
        self.call_counting_retries(call).await.0
    }

    /// Sends the call, retrying transport errors with backoff as its [`Retry`] allows;
    /// also says whether any retry happened.
    async fn call_counting_retries<T: DeserializeOwned>(&self, call: Call<'_>) -> (Result<T>, bool) {
        let mut attempt = 0;
        loop {
            match self.send(&call).await {
                Ok(answer) => return (answer, attempt > 0),
                Err(failure) => {
                    let may_retry = call.retry == Retry::Idempotent || failure.is_connect();
                    if attempt >= self.retries || !may_retry {
                        return (Err(Error::Unavailable(describe(&failure))), attempt > 0);
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
                }
            }
        }
    }

    /// A request to `path` carrying the secret (no timeout: the caller sets one, if any).
    pub(crate) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{}", self.base, path));
        match &self.secret {
            Some(secret) => request.header(SECRET_HEADER, secret),
            None => request,
        }
    }

    /// One attempt: the transport error, or the server's answer decoded.
    async fn send<T: DeserializeOwned>(&self, call: &Call<'_>) -> Result<Result<T>, reqwest::Error> {
        let mut request = self
            .request(call.method.clone(), call.path)
            .timeout(call.timeout.unwrap_or(self.timeout) + call.wait);
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await?;
        if (200..300).contains(&status) {
            Ok(serde_json::from_slice(&bytes)
                .map_err(|error| Error::Server { status, message: format!("unreadable answer: {error}") }))
        } else {
            Ok(Err(Error::from_answer(status, &bytes, retry_after)))
        }
    }
}

/// A transport error with its causes (a refused certificate says why, not only "error sending
/// request").
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Percent-encodes one path or query component.
pub(crate) fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A listing query as `prefix=..&limit=..&after=..`, in that order.
fn query_string(query: &ListQuery) -> String {
    let mut parts = Vec::new();
    if let Some(prefix) = &query.prefix {
        parts.push(format!("prefix={}", encode(prefix)));
    }
    if let Some(limit) = query.limit {
        parts.push(format!("limit={limit}"));
    }
    if let Some(after) = &query.after {
        parts.push(format!("after={}", encode(after)));
    }
    parts.join("&")
}
