//! [`EdgeError`]: every way a request is refused at the HTTP edge, and the one place where a
//! refusal becomes an HTTP status, a `WWW-Authenticate` challenge or a JSON-RPC error body.
//! Handlers return `Result<Response, EdgeError>` and use `?`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::auth::incoming::IncomingAuthError;
use crate::jsonrpc::{self, RpcError};
use crate::session::SessionError;

/// A request refused at the edge.
#[derive(Debug)]
pub enum EdgeError {
    /// A transport-level refusal answered with a short text (bad origin, wrong `Accept`,
    /// unknown bridge session, too many sessions, …).
    Refused(StatusCode, &'static str),
    /// A JSON-RPC level refusal: the body is a JSON-RPC error for request `id`.
    Rpc {
        /// HTTP status of the answer (400 before a session exists, 200 inside one).
        status: StatusCode,
        /// The request id, when it could be read.
        id: Option<Value>,
        /// The error.
        error: RpcError,
    },
    /// Authentication failed or is missing: the RFC 6750 / RFC 9728 challenge.
    Unauthenticated {
        /// Why.
        error: IncomingAuthError,
        /// The `WWW-Authenticate` value.
        challenge: HeaderValue,
    },
    /// The session cannot serve the request.
    Session(SessionError),
    /// A backend (the bridge's stdio server) failed outside JSON-RPC.
    BadGateway(String),
    /// A capacity limit was reached: 503 with `Retry-After`.
    Overloaded(&'static str),
}

impl EdgeError {
    /// A JSON-RPC error answered with HTTP 400 (no usable request or session).
    pub fn bad_request(id: Option<&Value>, error: RpcError) -> Self {
        Self::Rpc { status: StatusCode::BAD_REQUEST, id: id.cloned(), error }
    }
}

impl From<SessionError> for EdgeError {
    fn from(e: SessionError) -> Self {
        Self::Session(e)
    }
}

/// The HTTP status for an authentication failure: 400 for a malformed request, 503 while the
/// provider is unreachable and no key is known yet, 500 for a configuration error, else 401.
pub fn auth_status(e: &IncomingAuthError) -> StatusCode {
    match e {
        IncomingAuthError::MalformedHeader(_) | IncomingAuthError::TokenInQuery => {
            StatusCode::BAD_REQUEST
        }
        IncomingAuthError::ProviderUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        IncomingAuthError::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNAUTHORIZED,
    }
}

/// A JSON body with its status.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        match self {
            Self::Refused(status, text) => (status, text).into_response(),
            Self::Rpc { status, id, error } => {
                json_response(status, &jsonrpc::error(id.as_ref(), &error))
            }
            Self::Unauthenticated { error, challenge } => {
                let mut r = (auth_status(&error), error.to_string()).into_response();
                r.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
                r
            }
            Self::Session(SessionError::NotFound) => {
                (StatusCode::NOT_FOUND, "session not found").into_response()
            }
            // Normally turned into `Unauthenticated` with the configured challenge first
            // (`Authenticator::session_error`); a bare challenge if not.
            Self::Session(SessionError::AuthRequired) => {
                let mut r = (StatusCode::UNAUTHORIZED, "authentication required").into_response();
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            Self::Session(SessionError::Store(e)) => {
                tracing::error!(error = %e, "session store unavailable");
                let mut r =
                    (StatusCode::SERVICE_UNAVAILABLE, "session store unavailable; retry shortly")
                        .into_response();
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
                r
            }
            Self::BadGateway(text) => (StatusCode::BAD_GATEWAY, text).into_response(),
            Self::Overloaded(text) => {
                let mut r = (StatusCode::SERVICE_UNAVAILABLE, text).into_response();
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::INVALID_REQUEST;

    #[test]
    fn statuses() {
        assert_eq!(auth_status(&IncomingAuthError::MissingToken), StatusCode::UNAUTHORIZED);
        assert_eq!(auth_status(&IncomingAuthError::TokenInQuery), StatusCode::BAD_REQUEST);
        let r = EdgeError::Session(SessionError::NotFound).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = EdgeError::bad_request(None, RpcError::new(INVALID_REQUEST, "x")).into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let r = EdgeError::Session(SessionError::AuthRequired).into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
