//! Request bodies: [`Body<T>`] reads a handler's JSON body once, within `--request-timeout` and
//! the size limit, and parses it. A client that declares a body and stalls gets 408 and its
//! connection closed, instead of holding it forever; a body too large gets 413; bad JSON 400.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data};
use actix_web::{FromRequest, HttpRequest};
use lockserver_protocol::limits::MAX_BODY_LEN;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// How long a request's body may take to arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// A JSON request body of type `T`, read in time.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T> Body<T> {
    /// The parsed body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Body<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let timeout = request.app_data::<Data<BodyTimeout>>().map_or(Duration::from_secs(10), |t| t.0);
        let declared = request
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok()?.parse::<usize>().ok());
        let read = Bytes::from_request(request, payload);
        Box::pin(async move {
            if declared.is_some_and(|length| length > MAX_BODY_LEN) {
                return Err(ApiError::TooLarge { limit: MAX_BODY_LEN });
            }
            let bytes = in_time(read, timeout).await?.map_err(|error| {
                if error.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge { limit: MAX_BODY_LEN }
                } else {
                    ApiError::bad_request(format!("invalid request body: {error}"))
                }
            })?;
            serde_json::from_slice(&bytes)
                .map(Body)
                .map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
        })
    }
}

/// Awaits `read` within `timeout`. Most bodies arrive with their head, but the connection's
/// dispatcher feeds them in only after it first polls the handler (in the same task). So: poll,
/// wake ourselves, poll again; only a body still missing then is given a timer (a timer for
/// every request cost about 2% of throughput).
async fn in_time<F: Future>(read: F, timeout: Duration) -> Result<F::Output, ApiError> {
    let mut read = std::pin::pin!(read);
    let mut first = true;
    let arrived = std::future::poll_fn(|cx| match read.as_mut().poll(cx) {
        Poll::Ready(body) => Poll::Ready(Some(body)),
        Poll::Pending if first => {
            first = false;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    match arrived {
        Some(body) => Ok(body),
        None => {
            tokio::time::timeout(timeout, read).await.map_err(|_| ApiError::RequestTimeout { after: timeout })
        }
    }
}
