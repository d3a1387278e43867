//! `MCPExternalAuthConfig`: how a gateway obtains the credential for a backend.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{SecretKeyRef, conditions_schema};

/// The kind of outgoing credential.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExternalAuthType {
    /// No credential is sent.
    #[default]
    Unauthenticated,
    /// OAuth 2.0 Token Exchange (RFC 8693) of the user's token for a backend token.
    TokenExchange,
    /// A static header whose value comes from a Secret.
    HeaderInjection,
    /// A static bearer token from a Secret.
    BearerToken,
}

/// How the gateway authenticates to the token endpoint (OAuth client authentication method).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenClientAuthMethod {
    /// HTTP Basic with the client id and secret (default).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// RFC 8693 token exchange settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.clientSecretRef)")
    .message("spec.tokenExchange.clientSecretRef is required (the gateway authenticates to the token endpoint with it)"))]
#[serde(rename_all = "camelCase")]
pub struct TokenExchangeConfig {
    /// Token endpoint of the authorization server.
    pub token_url: String,
    /// OAuth client id of the gateway at the authorization server.
    pub client_id: String,
    /// Secret key holding the client secret (required; optional in the type only so that an
    /// object stored before the rule existed is reported in status, not rejected on read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// Requested audience (usually the backend's client id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Requested scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Subject token type (default `urn:ietf:params:oauth:token-type:access_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_token_type: Option<String>,
    /// `client_secret_basic` (default) or `client_secret_post`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth_method: Option<TokenClientAuthMethod>,
    /// `resource` parameter (RFC 8707): the backend's URI at the authorization server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// `requested_token_type` (omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_token_type: Option<String>,
    /// When set, the exchanged token goes into this header instead of `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_token_header_name: Option<String>,
}

/// A static header injected into every backend request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderInjectionConfig {
    /// Header name, for example `X-API-Key`.
    pub header_name: String,
    /// Secret key holding the header value.
    pub value_secret_ref: SecretKeyRef,
}

/// A static bearer token.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BearerTokenConfig {
    /// Secret key holding the token.
    pub token_secret_ref: SecretKeyRef,
}

/// Outgoing authentication for the backends that reference this object.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "vmcp.dev",
    version = "v1alpha1",
    kind = "MCPExternalAuthConfig",
    doc = "An MCPExternalAuthConfig: how a gateway obtains the credential for the backends that reference it",
    plural = "mcpexternalauthconfigs",
    shortname = "extauth",
    namespaced,
    status = "MCPExternalAuthConfigStatus",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("(self.type == 'tokenExchange') == has(self.tokenExchange)")
        .message("spec.tokenExchange must be set when (and only when) spec.type is 'tokenExchange'"),
    validation = Rule::new("(self.type == 'headerInjection') == has(self.headerInjection)")
        .message("spec.headerInjection must be set when (and only when) spec.type is 'headerInjection'"),
    validation = Rule::new("(self.type == 'bearerToken') == has(self.bearerToken)")
        .message("spec.bearerToken must be set when (and only when) spec.type is 'bearerToken'")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPExternalAuthConfigSpec {
    /// Which credential the gateway sends; exactly the matching sub-object must be set.
    #[serde(rename = "type")]
    pub auth_type: ExternalAuthType,
    /// Settings for `type: tokenExchange`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_exchange: Option<TokenExchangeConfig>,
    /// Settings for `type: headerInjection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_injection: Option<HeaderInjectionConfig>,
    /// Settings for `type: bearerToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<BearerTokenConfig>,
}

/// Observed state of an `MCPExternalAuthConfig`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPExternalAuthConfigStatus {
    /// Hash of the spec; gateways that use this config re-render when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Valid`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
