//! Incoming authentication at the edge: produces the [`Identity`] of a request or the 401
//! challenge.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::Identity;

/// How requests are authenticated.
#[derive(Debug)]
pub enum Authenticator {
    /// Everyone is anonymous.
    Anonymous,
}

impl Authenticator {
    /// The identity of a request, or the HTTP response refusing it.
    pub async fn authenticate(
        &self,
        _headers: &HeaderMap,
        _query: Option<&str>,
    ) -> Result<Identity, Response> {
        match self {
            Self::Anonymous => Ok(Identity::Anonymous),
        }
    }

    /// The 401 response for a request that needs a token and has none.
    pub fn challenge(&self) -> Response {
        let mut r = (StatusCode::UNAUTHORIZED, "authentication required").into_response();
        r.headers_mut()
            .insert(axum::http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    }

    /// RFC 9728 metadata, when OIDC is configured.
    pub fn resource_metadata(&self) -> Option<serde_json::Value> {
        None
    }
}
