//! What each request did: counted in the metrics (`lockserver_http_requests_total`, its latency
//! histogram) by route pattern and status, and one debug line (method, route, status, latency)
//! when debug is on. The route is the pattern, never the name it carries; headers are never
//! logged, so neither is the secret.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing::{debug, enabled, Level};

use crate::metrics;

/// Middleware: counts and logs the request once it is answered.
pub async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let route = request.match_pattern();
    let method = enabled!(Level::DEBUG).then(|| request.method().to_string());
    let answered = next.call(request).await;
    let status = match &answered {
        Ok(response) => response.status().as_u16(),
        Err(error) => error.as_response_error().status_code().as_u16(),
    };
    let took = started.elapsed();
    let route = route.as_deref().unwrap_or("unmatched");
    metrics::global().http(route, status, took);
    if let Some(method) = method {
        debug!(method, route, status, latency_ms = took.as_secs_f64() * 1000.0, "request");
    }
    answered
}
