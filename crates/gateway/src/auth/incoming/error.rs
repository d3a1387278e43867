//! Why a request was not authenticated, in the terms RFC 6750 §3 uses (error code and a fixed
//! description); `http::identity` turns it into the status and `WWW-Authenticate` challenge.
//!
//! Descriptions are fixed strings: no token text, claim values or secrets ever reach a response
//! or a log line through this type.

/// Why the bearer token of a request was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncomingAuthError {
    /// No `Authorization` header.
    #[error("no bearer token")]
    MissingToken,
    /// An `Authorization` header with another scheme (`Basic`, …).
    #[error("the Authorization scheme is not Bearer")]
    UnsupportedScheme,
    /// An `Authorization: Bearer` header that is not well formed (RFC 6750 §2.1).
    #[error("malformed Authorization header: {0}")]
    MalformedHeader(&'static str),
    /// `access_token` in the query string (refused: tokens are accepted in the header only).
    #[error("access tokens are not accepted in the query string")]
    TokenInQuery,
    /// The token is not a well-formed JWT (and no introspection is configured), or it lacks a
    /// required claim.
    #[error("invalid token: {0}")]
    Malformed(&'static str),
    /// The header `alg` is not on the allow list (`none` and HMAC never are).
    #[error("token signing algorithm {0} is not accepted")]
    AlgorithmNotAllowed(String),
    /// No key of the JWKS matches the token's `kid`/`alg` (after a rate-limited re-fetch).
    #[error("token signing key is unknown")]
    UnknownKey,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    InvalidSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not the configured issuer")]
    WrongIssuer,
    /// `aud` does not contain this gateway's audience.
    #[error("token audience does not include this resource")]
    WrongAudience,
    /// Introspection says the token is not active.
    #[error("token is not active")]
    Inactive,
    /// Discovery, JWKS or introspection could not be fetched (the message names URLs and
    /// statuses only).
    #[error("the identity provider is unavailable: {0}")]
    ProviderUnavailable(String),
    /// The OIDC configuration cannot be used (bad algorithm list, unreadable secret, …).
    #[error("invalid OIDC configuration: {0}")]
    Config(String),
}

impl IncomingAuthError {
    /// Was a token presented (so that the challenge carries `error=`)?
    pub fn token_presented(&self) -> bool {
        !matches!(
            self,
            Self::MissingToken
                | Self::UnsupportedScheme
                | Self::ProviderUnavailable(_)
                | Self::Config(_)
        )
    }

    /// The RFC 6750 error code: `invalid_request` for a malformed request, `invalid_token` for a
    /// rejected token, none when no token was presented or the server is at fault.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            Self::MalformedHeader(_) | Self::TokenInQuery => Some("invalid_request"),
            Self::MissingToken
            | Self::UnsupportedScheme
            | Self::ProviderUnavailable(_)
            | Self::Config(_) => None,
            _ => Some("invalid_token"),
        }
    }

    /// A fixed, client-safe `error_description`.
    pub fn description(&self) -> Option<&'static str> {
        Some(match self {
            Self::MissingToken
            | Self::UnsupportedScheme
            | Self::ProviderUnavailable(_)
            | Self::Config(_) => {
                return None;
            }
            Self::MalformedHeader(d) => d,
            Self::TokenInQuery => "access tokens are accepted in the Authorization header only",
            Self::Malformed(d) => d,
            Self::AlgorithmNotAllowed(_) => "the token signing algorithm is not accepted",
            Self::UnknownKey => "the token signing key is unknown",
            Self::InvalidSignature => "the token signature is invalid",
            Self::Expired => "the token expired",
            Self::NotYetValid => "the token is not yet valid",
            Self::WrongIssuer => "the token issuer is not accepted",
            Self::WrongAudience => "the token audience does not include this resource",
            Self::Inactive => "the token is not active",
        })
    }
}
