//! Outgoing credentials: for one backend and the live request's identity, the headers to send.
//! The client's own token is never one of them.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use vmcp_types::config::{OutgoingAuthConfig, OutgoingAuthType, SecretSource};

use super::Identity;

/// Why a backend credential could not be obtained.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutgoingAuthError {
    /// A secret could not be read.
    #[error("secret {what} is not available: {reason}")]
    Secret {
        /// Which secret (field path, never the value).
        what: String,
        /// Why.
        reason: String,
    },
    /// The backend needs a token-derived credential and the request carries no token (I1).
    #[error(
        "this backend needs the caller's token for token exchange, but the request is anonymous"
    )]
    NoToken,
    /// A backend's `tokenUrl` is neither the issuer's discovered token endpoint nor listed in
    /// `outbound.allowedTokenUrls` (L13): no token was sent.
    #[error(
        "backend '{backend}': tokenExchange.tokenUrl {token_url} is not allowed ({reason}); only \
         the incoming issuer's token endpoint or one listed in outbound.allowedTokenUrls is used"
    )]
    TokenUrlNotAllowed {
        /// The backend.
        backend: String,
        /// Its configured token URL.
        token_url: String,
        /// Why it is not allowed.
        reason: String,
    },
    /// The authorization server refused or failed the exchange.
    #[error("token exchange failed: {error}{}", .description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Exchange {
        /// OAuth error code (`invalid_grant`, …) or a transport error summary.
        error: String,
        /// `error_description`, if any.
        description: Option<String>,
    },
}

/// Reads a secret from its source.
pub fn read_secret(what: &str, s: &SecretSource) -> Result<SecretString, OutgoingAuthError> {
    let err = |reason: String| OutgoingAuthError::Secret { what: what.to_owned(), reason };
    match (&s.env, &s.file) {
        (Some(var), _) => std::env::var(var)
            .map(SecretString::from)
            .map_err(|_| err(format!("environment variable {var} is not set"))),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|v| SecretString::from(v.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| err(format!("cannot read {}: {e}", path.display()))),
        (None, None) => Err(err("no source configured".into())),
    }
}

/// Produces the credential headers of one backend.
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync + std::fmt::Debug {
    /// Headers for a request made on behalf of `identity`.
    async fn headers(
        &self,
        identity: &Identity,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, OutgoingAuthError>;
    /// Does the credential depend on the caller's identity (so that it cannot be obtained
    /// without a live request)?
    fn needs_identity(&self) -> bool {
        false
    }
    /// The strategy name for logs and status.
    fn kind(&self) -> &'static str;
}

/// No credential.
#[derive(Debug)]
pub struct Unauthenticated;

#[async_trait::async_trait]
impl CredentialSource for Unauthenticated {
    async fn headers(
        &self,
        _: &Identity,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, OutgoingAuthError> {
        Ok(Vec::new())
    }
    fn kind(&self) -> &'static str {
        "unauthenticated"
    }
}

/// A static header (`headerInjection`) or `Authorization: Bearer` (`bearerToken`).
#[derive(Debug)]
pub struct StaticHeader {
    name: HeaderName,
    value: HeaderValue,
    kind: &'static str,
}

impl StaticHeader {
    fn new(
        name: HeaderName,
        value: &SecretString,
        what: &str,
        kind: &'static str,
    ) -> Result<Self, OutgoingAuthError> {
        let mut value = HeaderValue::from_str(value.expose_secret()).map_err(|_| {
            OutgoingAuthError::Secret {
                what: what.to_owned(),
                reason: "the value is not a valid HTTP header value".into(),
            }
        })?;
        value.set_sensitive(true);
        Ok(Self { name, value, kind })
    }
}

#[async_trait::async_trait]
impl CredentialSource for StaticHeader {
    async fn headers(
        &self,
        _: &Identity,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, OutgoingAuthError> {
        Ok(vec![(self.name.clone(), self.value.clone())])
    }
    fn kind(&self) -> &'static str {
        self.kind
    }
}

/// Builds the credential source of backend `backend` (field paths in errors use
/// `backends[<name>].auth…`). Token exchange is built by `build_with` callers that have an
/// HTTP client; see [`CredentialFactory`].
pub trait CredentialFactory: Send + Sync {
    /// A token exchange source for this backend.
    fn token_exchange(
        &self,
        backend: &str,
        cfg: &vmcp_types::config::TokenExchangeAuth,
    ) -> Result<Arc<dyn CredentialSource>, OutgoingAuthError>;
}

/// Builds the credential source for one backend's configuration.
pub fn build(
    backend: &str,
    cfg: &OutgoingAuthConfig,
    factory: &dyn CredentialFactory,
) -> Result<Arc<dyn CredentialSource>, OutgoingAuthError> {
    let p = format!("backends[{backend}].auth");
    let missing = |f: &str| OutgoingAuthError::Secret {
        what: format!("{p}.{f}"),
        reason: "not configured".into(),
    };
    Ok(match cfg.auth_type {
        OutgoingAuthType::Unauthenticated => Arc::new(Unauthenticated),
        OutgoingAuthType::HeaderInjection => {
            let h = cfg.header_injection.as_ref().ok_or_else(|| missing("headerInjection"))?;
            let what = format!("{p}.headerInjection.value");
            let name = HeaderName::from_bytes(h.header_name.as_bytes()).map_err(|_| {
                OutgoingAuthError::Secret {
                    what: format!("{p}.headerInjection.headerName"),
                    reason: "not a valid header name".into(),
                }
            })?;
            Arc::new(StaticHeader::new(
                name,
                &read_secret(&what, &h.value)?,
                &what,
                "headerInjection",
            )?)
        }
        OutgoingAuthType::BearerToken => {
            let b = cfg.bearer_token.as_ref().ok_or_else(|| missing("bearerToken"))?;
            let what = format!("{p}.bearerToken.token");
            let token = read_secret(&what, &b.token)?;
            let value = SecretString::from(format!("Bearer {}", token.expose_secret()));
            Arc::new(StaticHeader::new(http::header::AUTHORIZATION, &value, &what, "bearerToken")?)
        }
        OutgoingAuthType::TokenExchange => {
            let t = cfg.token_exchange.as_ref().ok_or_else(|| missing("tokenExchange"))?;
            factory.token_exchange(backend, t)?
        }
    })
}
