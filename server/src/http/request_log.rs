//! One debug line per request: method, route (the pattern, not the name it carries), status and
//! latency. Never headers, so never the secret. Costs one level check when debug is off.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing::{debug, enabled, Level};

/// Middleware: logs the request once it is answered.
pub async fn log_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !enabled!(Level::DEBUG) {
        return next.call(request).await;
    }
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request.match_pattern().unwrap_or_else(|| "unmatched".to_string());
    let answered = next.call(request).await;
    let status = match &answered {
        Ok(response) => response.status().as_u16(),
        Err(error) => error.as_response_error().status_code().as_u16(),
    };
    debug!(method, route, status, latency_ms = started.elapsed().as_secs_f64() * 1000.0, "request");
    answered
}
