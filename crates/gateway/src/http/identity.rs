//! Incoming authentication at the edge: produces the [`Identity`] of a request, or the refusal
//! with its RFC 6750 / RFC 9728 challenge (`WWW-Authenticate: Bearer resource_metadata=…`).

use axum::http::{HeaderMap, HeaderValue, Uri};

use super::EdgeError;
use crate::auth::Identity;
use crate::auth::incoming::{
    IncomingAuthError, OidcValidator, bearer_from_headers, protected_resource_metadata,
    reject_token_in_query,
};
use crate::session::SessionError;

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
    /// The identity of a request, or the refusal.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Identity, EdgeError> {
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
                result.map(Identity::User).map_err(|e| self.refuse(e))
            }
        }
    }

    fn refuse(&self, error: IncomingAuthError) -> EdgeError {
        let challenge = match self {
            Self::Oidc { validator, metadata_url, .. } => {
                if error.token_presented() {
                    tracing::info!(target: "audit", error = %error, outcome = "unauthenticated", "request refused");
                }
                challenge(&error, metadata_url, validator.scopes())
            }
            Self::Anonymous => HeaderValue::from_static("Bearer"),
        };
        EdgeError::Unauthenticated { error, challenge }
    }

    /// A session failure as the edge answers it: a member that needs the caller's token on
    /// a request without one (I1) gets this gateway's challenge.
    pub fn session_error(&self, e: SessionError) -> EdgeError {
        match e {
            SessionError::AuthRequired => self.refuse(IncomingAuthError::MissingToken),
            other => EdgeError::Session(other),
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

/// The `WWW-Authenticate` value: always `Bearer resource_metadata="<url>"`, then `scope="…"`
/// when scopes are configured, then `error="…", error_description="…"` when a token was
/// presented (RFC 6750 §3, RFC 9728 §5.1).
fn challenge(e: &IncomingAuthError, resource_metadata_url: &str, scopes: &[String]) -> HeaderValue {
    let mut v = format!("Bearer resource_metadata=\"{}\"", quote(resource_metadata_url));
    if !scopes.is_empty() {
        v.push_str(&format!(", scope=\"{}\"", quote(&scopes.join(" "))));
    }
    if let (Some(code), Some(desc)) = (e.error_code(), e.description()) {
        v.push_str(&format!(", error=\"{code}\", error_description=\"{}\"", quote(desc)));
    }
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// Escapes a quoted-string value (RFC 9110 §5.6.4) and drops characters a header cannot hold.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_without_token() {
        let v = challenge(
            &IncomingAuthError::MissingToken,
            "https://gw/.well-known/oauth-protected-resource/mcp",
            &[],
        );
        assert_eq!(
            v,
            r#"Bearer resource_metadata="https://gw/.well-known/oauth-protected-resource/mcp""#
        );
    }

    #[test]
    fn challenge_with_token_and_scopes() {
        let scopes = vec!["openid".to_owned(), "mcp:tools".to_owned()];
        let v = challenge(
            &IncomingAuthError::Expired,
            "https://gw/.well-known/oauth-protected-resource",
            &scopes,
        );
        assert_eq!(
            v,
            r#"Bearer resource_metadata="https://gw/.well-known/oauth-protected-resource", scope="openid mcp:tools", error="invalid_token", error_description="the token expired""#
        );
        let v = challenge(&IncomingAuthError::TokenInQuery, "u", &[]);
        assert!(v.to_str().unwrap_or_default().contains(r#"error="invalid_request""#));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a\"b\\c\n"), "a\\\"b\\\\c");
    }
}
