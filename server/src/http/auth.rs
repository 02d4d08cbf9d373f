//! Authentication: every route but `GET /health` and the status page (`GET /ui`) needs a secret,
//! in `X-LOCKSERVER-SECRET` or as `Authorization: Bearer <secret>` (what Prometheus'
//! `authorization` setting sends). The secret names an API key ([`crate::security::Keys`]); its
//! rate is taken here, and the [`Caller`] it makes is left on the request for the handlers.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::HttpMessage;
use tracing::warn;

use lockserver_protocol::SECRET_HEADER;

use super::caller::{Caller, Peer};
use super::error::ApiError;
use crate::security::Keys;

/// Middleware: answers 401 `unauthorized` unless the request carries a known key's secret,
/// 429 `rate_limited` when that key's rate is used up.
pub async fn authenticate(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !matches!(request.path(), "/health" | "/ui") {
        let headers = request.headers();
        let given = headers.get(SECRET_HEADER).map(|value| value.as_bytes()).or_else(|| {
            let authorization = headers.get(actix_web::http::header::AUTHORIZATION)?.as_bytes();
            authorization.strip_prefix(b"Bearer ")
        });
        let keys = request.app_data::<Data<Keys>>().expect("the app is built with its keys");
        let Some(key) = given.and_then(|given| keys.find(given)) else {
            warn!(
                target: "audit",
                peer = %Peer(request.peer_addr()),
                method = %request.method(),
                path = %request.path(),
                secret_sent = given.is_some(),
                "authentication failed"
            );
            return Err(ApiError::Unauthorized.into());
        };
        if let Err(retry_after) = key.take(Instant::now()) {
            let rate = key.rate.unwrap_or_default();
            return Err(ApiError::RateLimited { key: key.name.clone(), rate, retry_after }.into());
        }
        let caller = Caller::new(key, Peer(request.peer_addr()));
        request.extensions_mut().insert(caller);
    }
    next.call(request).await
}
