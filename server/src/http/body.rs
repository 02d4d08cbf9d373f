//! The request body must arrive in time: a client that declares a body and stalls gets 408 and
//! its connection closed, instead of holding it forever. The body is read here, within
//! `--request-timeout` and the size limit, before any handler sees it.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web::{Bytes, Data};
use lockserver_protocol::limits::MAX_BODY_LEN;

use super::error::ApiError;

/// How long a request's body may take to arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// Middleware: reads the whole body within the timeout and the size limit, then hands it on.
pub async fn read_in_time(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let timeout = request.app_data::<Data<BodyTimeout>>().map_or(Duration::from_secs(10), |t| t.0);
    let body = match tokio::time::timeout(timeout, request.extract::<Bytes>()).await {
        Err(_elapsed) => return Err(ApiError::RequestTimeout { after: timeout }.into()),
        Ok(Err(error)) if error.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::TooLarge { limit: MAX_BODY_LEN }.into())
        }
        Ok(Err(error)) => return Err(ApiError::bad_request(format!("invalid request body: {error}")).into()),
        Ok(Ok(body)) => body,
    };
    request.set_payload(body.into());
    next.call(request).await
}
