//! Incoming authentication at the edge: produces the [`Identity`] of a request, or the 401
//! response with the RFC 9728 challenge.

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Identity;
use crate::auth::incoming::{
    IncomingAuthError, OidcValidator, bearer_from_headers, protected_resource_metadata,
    reject_token_in_query,
};

/// How requests are authenticated.
#[derive(Debug)]
pub enum Authenticator {
    /// Everyone is anonymous.
    Anonymous,
    /// OIDC bearer tokens.
    Oidc {
        /// Validates tokens.
        validator: OidcValidator,
        /// The RFC 9728 `resource`.
        resource_url: String,
        /// Where the protected resource metadata is served.
        metadata_url: String,
    },
}

impl Authenticator {
    /// The identity of a request, or the HTTP response refusing it.
    pub async fn authenticate(&self, headers: &HeaderMap, uri: &Uri) -> Result<Identity, Response> {
        match self {
            Self::Anonymous => Ok(Identity::Anonymous),
            Self::Oidc { validator, .. } => {
                let token = reject_token_in_query(uri)
                    .and_then(|()| bearer_from_headers(headers))
                    .and_then(|t| t.ok_or(IncomingAuthError::MissingToken));
                let result = match token {
                    Ok(t) => validator.validate(&t).await,
                    Err(e) => Err(e),
                };
                result.map(Identity::User).map_err(|e| self.refuse(&e))
            }
        }
    }

    fn refuse(&self, e: &IncomingAuthError) -> Response {
        let Self::Oidc { validator, metadata_url, .. } = self else {
            return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
        };
        if e.token_presented() {
            tracing::info!(target: "audit", error = %e, outcome = "unauthenticated", "request refused");
        }
        let mut r = (e.status(), e.to_string()).into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, e.www_authenticate(metadata_url, validator.scopes()));
        r
    }

    /// The 401 response for a request that needs a token and has none.
    pub fn challenge(&self) -> Response {
        match self {
            Self::Oidc { .. } => self.refuse(&IncomingAuthError::MissingToken),
            Self::Anonymous => {
                let mut r = (StatusCode::UNAUTHORIZED, "authentication required").into_response();
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
        }
    }

    /// RFC 9728 metadata, when OIDC is configured.
    pub fn resource_metadata(&self) -> Option<serde_json::Value> {
        match self {
            Self::Anonymous => None,
            Self::Oidc { validator, resource_url, .. } => Some(protected_resource_metadata(
                resource_url,
                validator.issuer(),
                validator.scopes(),
            )),
        }
    }
}
