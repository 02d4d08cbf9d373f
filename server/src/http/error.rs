//! The one place where a server [`Error`] becomes an HTTP status and a JSON body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use super::wire::millis;
use crate::error::Error;

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::Locked { .. } | Error::NotOwner => StatusCode::CONFLICT,
            Error::NotHeld | Error::NoSuchLease | Error::NotFound => StatusCode::NOT_FOUND,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        if let Error::Locked { owner, expires_in } = self {
            body["owner"] = json!(owner);
            body["expires_in_ms"] = json!(expires_in.map(millis));
        }
        HttpResponse::build(self.status_code()).json(body)
    }
}
