//! Incoming (client to gateway) and outgoing (gateway to backend) authentication settings.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a secret value comes from. Exactly one of `env` and `file` is set; a secret is never
/// written into the configuration itself.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSource {
    /// Name of an environment variable holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file holding the value (trailing newlines are trimmed), e.g. a mounted Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// How clients authenticate.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum IncomingAuthType {
    /// No authentication; every session is bound to "anonymous".
    #[default]
    Anonymous,
    /// OIDC bearer tokens.
    Oidc,
}

/// Client authentication.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IncomingAuthConfig {
    /// `anonymous` (default) or `oidc`.
    #[serde(rename = "type", default)]
    pub auth_type: IncomingAuthType,
    /// OIDC settings (required for `oidc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcConfig>,
}

/// The gateway as an OAuth resource server of an OpenID provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcConfig {
    /// Issuer URL; must equal the tokens' `iss`. Discovery is read from
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Expected `aud` of access tokens (default: `resourceUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// JWKS URL (default: `jwks_uri` from discovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// The gateway's OAuth client id (informational; used by introspection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Scopes listed in the protected resource metadata (`scopes_supported`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Accepted JWS algorithms (default `RS256`, `RS384`, `RS512`, `PS256`, `PS384`, `PS512`,
    /// `ES256`, `ES384`, `EdDSA`). `none` and HMAC algorithms are never accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf` (default `30s`).
    #[serde(default = "default_leeway", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub leeway: Duration,
    /// How often the JWKS is re-fetched even without an unknown `kid` (default `15m`).
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub jwks_refresh_interval: Duration,
    /// RFC 7662 introspection for opaque (non-JWT) tokens; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection: Option<IntrospectionConfig>,
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(15 * 60)
}

/// RFC 7662 token introspection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// Introspection endpoint URL.
    pub url: String,
    /// Client id used to authenticate to the endpoint.
    pub client_id: String,
    /// Client secret (from an env var or a file).
    pub client_secret: SecretSource,
}

/// Kind of outgoing credential.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OutgoingAuthType {
    /// No credential.
    #[default]
    Unauthenticated,
    /// A static header.
    HeaderInjection,
    /// A static bearer token.
    BearerToken,
    /// RFC 8693 token exchange of the live request's token.
    TokenExchange,
}

/// The credential the gateway sends to one backend. Exactly the sub-object of `type` is set.
/// The client's own token is never forwarded.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutgoingAuthConfig {
    /// `unauthenticated` (default), `headerInjection`, `bearerToken` or `tokenExchange`.
    #[serde(rename = "type", default)]
    pub auth_type: OutgoingAuthType,
    /// Settings for `headerInjection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_injection: Option<HeaderInjectionAuth>,
    /// Settings for `bearerToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<BearerTokenAuth>,
    /// Settings for `tokenExchange`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_exchange: Option<TokenExchangeAuth>,
}

/// A static header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderInjectionAuth {
    /// Header name, e.g. `X-API-Key`.
    pub header_name: String,
    /// Header value (from an env var or a file).
    pub value: SecretSource,
}

/// A static bearer token, sent as `Authorization: Bearer <token>`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BearerTokenAuth {
    /// The token (from an env var or a file).
    pub token: SecretSource,
    /// The token file may appear after start-up (a Secret key the kubelet mounts later, like
    /// the operator's bridge tokens): while it is missing, this backend is left out (a warning
    /// names it and the file) and joins once the file exists. Without it (default `false`), a
    /// missing file stops the gateway at start-up. Needs `token.file`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_file: bool,
}

/// How the gateway authenticates to the token endpoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with the client id and secret (default).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// Default RFC 8693 subject token type.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// RFC 8693 token exchange.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenExchangeAuth {
    /// Token endpoint URL of the authorization server: the incoming issuer's discovered
    /// `token_endpoint`, or one listed in `outbound.allowedTokenUrls` (L13).
    pub token_url: String,
    /// The gateway's client id at the authorization server.
    pub client_id: String,
    /// The gateway's client secret (from an env var or a file).
    pub client_secret: SecretSource,
    /// `client_secret_basic` (default) or `client_secret_post`.
    #[serde(default)]
    pub client_auth_method: ClientAuthMethod,
    /// `audience` parameter: the backend's identifier at the authorization server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `resource` parameter (RFC 8707): the backend's URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Requested scopes (`scope` parameter, space-joined).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// `subject_token_type` (default `urn:ietf:params:oauth:token-type:access_token`).
    #[serde(default = "default_subject_token_type")]
    pub subject_token_type: String,
    /// `requested_token_type` (omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_token_type: Option<String>,
    /// Send the exchanged token in this header (raw value) instead of
    /// `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_token_header_name: Option<String>,
}

fn default_subject_token_type() -> String {
    ACCESS_TOKEN_TYPE.to_owned()
}
