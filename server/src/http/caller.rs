//! The caller of a request: the API key its secret belongs to (found by `auth.rs`) and the
//! namespace the request acts in. Handlers take a [`Caller`], check its role, and pass every
//! name through its namespace on the way in and out.

use std::fmt;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::web::Query;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use serde::Deserialize;
use tracing::info;

use super::error::ApiError;
use crate::security::{ApiKey, Namespace, Role};

/// Who sent a request, and in which namespace it acts.
#[derive(Clone, Debug)]
pub struct Caller {
    key: Arc<ApiKey>,
    namespace: Namespace,
    /// The peer's address, for the audit log.
    peer: Peer,
}

/// A peer's address as the audit log shows it (empty when unknown); formatted only when logged.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub Option<SocketAddr>);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => Ok(()),
        }
    }
}

/// `?namespace=NAME`: an admin key acting in another namespace than its own.
#[derive(Deserialize)]
struct NamespaceQuery {
    namespace: Option<String>,
}

impl Caller {
    /// A caller acting in its own namespace.
    pub(super) fn new(key: Arc<ApiKey>, peer: Peer) -> Self {
        Caller { namespace: key.namespace.clone(), key, peer }
    }

    /// The peer's address, for the audit log.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// Refuses with 403 `forbidden` unless the key's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.key.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                key: self.key.name.clone(),
                has: self.key.role.as_str(),
                needs: role.as_str(),
            })
        }
    }

    /// The key.
    pub fn key(&self) -> &ApiKey {
        &self.key
    }

    /// The namespace the request acts in.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The stored form of a name the client sent.
    pub fn qualify(&self, name: &str) -> String {
        self.namespace.qualify(name)
    }

    /// [`Caller::qualify`], reusing the name's allocation in the default namespace.
    pub fn qualify_owned(&self, name: String) -> String {
        self.namespace.qualify_owned(name)
    }

    fn acting_in(mut self, request: &HttpRequest) -> Result<Self, ApiError> {
        if !request.query_string().contains("namespace") {
            return Ok(self); // the common case, without parsing the query
        }
        let Ok(query) = Query::<NamespaceQuery>::from_query(request.query_string()) else { return Ok(self) };
        let Some(name) = query.into_inner().namespace else { return Ok(self) };
        let namespace = Namespace::new(&name).map_err(|error| ApiError::bad_request(error.to_string()))?;
        if namespace == self.namespace {
            return Ok(self);
        }
        if self.key.role != Role::Admin {
            return Err(ApiError::OtherNamespace {
                key: self.key.name.clone(),
                namespace: self.key.namespace.name().to_string(),
            });
        }
        info!(
            target: "audit",
            key = %self.key.name,
            peer = %self.peer,
            namespace = %namespace.name(),
            method = %request.method(),
            path = %request.path(),
            "admin acts in another namespace"
        );
        self.namespace = namespace;
        Ok(self)
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        // `auth.rs` puts the caller on every request that needs a secret before any handler runs.
        let caller = request.extensions().get::<Caller>().cloned().ok_or(ApiError::Unauthorized);
        ready(caller.and_then(|caller| caller.acting_in(request)))
    }
}
