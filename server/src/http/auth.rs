//! The shared secret: every route but `GET /health` and the status page (`GET /ui`) needs it, in `X-LOCKSERVER-SECRET` or as
//! `Authorization: Bearer <secret>` (what Prometheus' `authorization` setting sends).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web::Data;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use lockserver_protocol::SECRET_HEADER;

use super::error::ApiError;

/// The accepted secrets, kept only as SHA-256 digests and compared in constant time.
///
/// Several secrets are accepted at once so that one can be rotated without downtime.
#[derive(Clone)]
pub struct Secrets {
    digests: Vec<[u8; 32]>,
}

impl Secrets {
    /// Accepts each of `secrets`; `None` when the list holds no non-empty secret.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let digests: Vec<_> =
            secrets.into_iter().map(str::trim).filter(|s| !s.is_empty()).map(digest).collect();
        (!digests.is_empty()).then_some(Secrets { digests })
    }

    /// A fresh random secret (64 hex digits), for a server started without one.
    pub fn random_secret() -> String {
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// How many secrets are accepted.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether no secret is accepted (never true for a constructed value).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `given` is one of the secrets. Every secret is compared, in constant time.
    pub fn accepts(&self, given: &[u8]) -> bool {
        let given = digest_bytes(given);
        self.digests.iter().fold(0u8, |found, secret| found | secret.ct_eq(&given).unwrap_u8()) == 1
    }
}

fn digest(secret: &str) -> [u8; 32] {
    digest_bytes(secret.as_bytes())
}

fn digest_bytes(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Middleware: answers 401 `unauthorized` unless the request carries an accepted secret.
pub async fn require_secret(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !matches!(request.path(), "/health" | "/ui") {
        let headers = request.headers();
        let given = headers.get(SECRET_HEADER).map(|value| value.as_bytes()).or_else(|| {
            let authorization = headers.get(actix_web::http::header::AUTHORIZATION)?.as_bytes();
            authorization.strip_prefix(b"Bearer ")
        });
        let secrets = request.app_data::<Data<Secrets>>().expect("the app is built with its secrets");
        if !given.is_some_and(|given| secrets.accepts(given)) {
            return Err(ApiError::Unauthorized.into());
        }
    }
    next.call(request).await
}
