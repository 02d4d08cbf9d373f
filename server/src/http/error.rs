//! The HTTP layer's error: an engine error, or a problem of the request itself. The one place
//! where an error becomes an HTTP status and a `{"error": code, "message": text}` body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use lockserver_protocol::codes::{ErrorBody, ErrorCode};
use lockserver_protocol::millis;

use crate::engine::EngineError;

/// Everything a request can be answered with instead of success.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The engine refused the request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The request is malformed; the text says which field and why.
    #[error("{0}")]
    BadRequest(String),
    /// The request body is larger than the server accepts.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// The largest body accepted, in bytes.
        limit: usize,
    },
    /// The request body did not arrive in time; the connection is closed.
    #[error("the request body did not arrive within {}s; send it whole, or check the network", after.as_secs_f64())]
    RequestTimeout {
        /// How long it was waited for.
        after: std::time::Duration,
    },
    /// The secret header is missing or wrong.
    #[error("missing or wrong X-LOCKSERVER-SECRET header")]
    Unauthorized,
    /// The key's role does not allow the request.
    #[error("key `{key}` has role `{has}`; this needs `{needs}`")]
    Forbidden {
        /// The key's name.
        key: String,
        /// Its role.
        has: &'static str,
        /// The role the request needs (or what it asked for that no role of its kind may).
        needs: &'static str,
    },
    /// The key asked for another namespace than its own.
    #[error("key `{key}` may use namespace `{namespace}` only")]
    OtherNamespace {
        /// The key's name.
        key: String,
        /// Its namespace.
        namespace: String,
    },
    /// The key's request rate is used up.
    #[error("key `{key}` is limited to {rate} requests per second; retry in {}ms", retry_after.as_millis())]
    RateLimited {
        /// The key's name.
        key: String,
        /// Its rate.
        rate: u32,
        /// When a request will be accepted again.
        retry_after: std::time::Duration,
    },
    /// The key's namespace holds its quota of locks.
    #[error("key `{key}` may hold at most {max} locks in namespace `{namespace}`; release some first")]
    QuotaExceeded {
        /// The key's name.
        key: String,
        /// The namespace.
        namespace: String,
        /// The quota.
        max: usize,
    },
    /// No route matches the path.
    #[error("no such route; see the README for the API")]
    NotFound,
    /// The route exists but not for this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
}

impl ApiError {
    /// Shorthand for an [`ApiError::BadRequest`].
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest(message.into())
    }

    /// The protocol's code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Engine(error) => match error {
                EngineError::Locked { .. } => ErrorCode::Locked,
                EngineError::NotHeld => ErrorCode::NotHeld,
                EngineError::NotOwner => ErrorCode::NotOwner,
                EngineError::NoSuchLease => ErrorCode::NoSuchLease,
                // Kept as the API has always answered it: the request asked for what this lock
                // cannot have.
                EngineError::LeaseBound => ErrorCode::BadRequest,
                EngineError::ShuttingDown | EngineError::Unavailable(_) | EngineError::Storage(_) => {
                    ErrorCode::Unavailable
                }
                EngineError::TooMany(_) => ErrorCode::TooMany,
                EngineError::LimitMismatch { .. } => ErrorCode::LimitMismatch,
            },
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::TooLarge { .. } => ErrorCode::TooLarge,
            ApiError::RequestTimeout { .. } => ErrorCode::RequestTimeout,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::Forbidden { .. } | ApiError::OtherNamespace { .. } => ErrorCode::Forbidden,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            ApiError::NotFound => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = ErrorBody {
            error: self.code().as_str().into(),
            message: self.to_string(),
            ..ErrorBody::default()
        };
        match self {
            ApiError::Engine(EngineError::Locked { owner, expires_in, holders }) => {
                body.owner = Some(owner.clone());
                body.expires_in_ms = Some(expires_in.map(millis));
                body.holders = Some(holders.clone());
            }
            ApiError::Engine(EngineError::LimitMismatch { current }) => body.limit = Some(*current),
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::RequestTimeout { .. } => {
                response.force_close();
            }
            ApiError::RateLimited { retry_after, .. } => {
                // Whole seconds, rounded up, as the header allows; the message has the ms.
                let seconds = retry_after.as_millis().div_ceil(1000).max(1);
                response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
            }
            _ => {}
        }
        response.json(body)
    }
}

/// The result type of the HTTP layer.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;
