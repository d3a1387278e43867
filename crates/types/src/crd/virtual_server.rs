//! `VirtualMCPServer` (short name `vmcp`): a gateway that aggregates the servers of one group.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth_config::ExternalAuthType;
use super::common::{
    ConfigMapKeyRef, LocalRef, SecretKeyRef, conditions_schema, preserve_unknown_object,
};

/// How the gateway authenticates its clients.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum IncomingAuthType {
    /// No client authentication; sessions are bound to "anonymous".
    #[default]
    Anonymous,
    /// OIDC bearer tokens (JWT access tokens validated against the issuer's JWKS).
    Oidc,
}

/// OIDC settings of the gateway as a resource server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcConfig {
    /// Issuer URL; discovery is read from `<issuer>/.well-known/openid-configuration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Expected `aud` of client tokens (defaults to `resourceUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// JWKS URL override (defaults to the one in discovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// The gateway's own OAuth client id at the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Scopes advertised in the protected resource metadata.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Public URL of the gateway's MCP endpoint (the RFC 9728 `resource`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_url: Option<String>,
    /// Accepted JWS algorithms (default: the asymmetric ones; `none` and HMAC are never
    /// accepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, e.g. `30s` (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub leeway: Option<String>,
    /// How often the JWKS is re-fetched even without an unknown `kid`, e.g. `15m` (default
    /// `15m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub jwks_refresh_interval: Option<String>,
}

/// Client authentication of the gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("self.type != 'oidc' || (has(self.oidc) && has(self.oidc.issuer) && self.oidc.issuer != '')")
        .message("incomingAuth.oidc.issuer is required when incomingAuth.type is 'oidc'"),
    validation = Rule::new("self.type != 'oidc' || (has(self.oidc) && ((has(self.oidc.audience) && self.oidc.audience != '') || (has(self.oidc.resourceUrl) && self.oidc.resourceUrl != '')))")
        .message("incomingAuth.oidc.audience or incomingAuth.oidc.resourceUrl (the expected token audience) is required when incomingAuth.type is 'oidc'")
)]
#[serde(rename_all = "camelCase")]
pub struct IncomingAuth {
    /// `anonymous` or `oidc`.
    #[serde(rename = "type")]
    pub auth_type: IncomingAuthType,
    /// OIDC settings (required for `type: oidc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcConfig>,
}

/// Schema of `spec.incomingAuth`: required and *not* nullable, so `incomingAuth: null` is not a
/// way around `required` (the API server drops a null of a non-nullable field before checking).
fn incoming_auth_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<IncomingAuth>()
}

/// Where backend credentials come from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OutgoingAuthSource {
    /// Each `MCPServer`'s `externalAuthConfigRef`.
    #[default]
    Discovered,
    /// The `backends` map of this object.
    Inline,
}

/// The credential for one backend.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.type == 'unauthenticated' || has(self.externalAuthConfigRef)")
    .message("externalAuthConfigRef is required when the backend auth type is not 'unauthenticated' (it names the MCPExternalAuthConfig with the settings)"))]
#[serde(rename_all = "camelCase")]
pub struct BackendAuth {
    /// Kind of credential; for anything but `unauthenticated`, `externalAuthConfigRef` names the
    /// `MCPExternalAuthConfig` with the details.
    #[serde(rename = "type")]
    pub auth_type: ExternalAuthType,
    /// The `MCPExternalAuthConfig` holding the settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth_config_ref: Option<LocalRef>,
}

/// Outgoing (gateway to backend) authentication.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutgoingAuth {
    /// `discovered` (from each MCPServer) or `inline` (from `backends`).
    #[serde(default)]
    pub source: OutgoingAuthSource,
    /// Credential for backends without one of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<BackendAuth>,
    /// Per-backend credentials, keyed by MCPServer name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backends: BTreeMap<String, BackendAuth>,
}

/// How name conflicts between backends are resolved.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ConflictResolution {
    /// Every capability is exposed as `<prefix><name>` (see `prefixFormat`).
    #[default]
    Prefix,
    /// The first backend in `priorityOrder` that has the name wins.
    Priority,
    /// Every conflict must be resolved by an override, or the config is rejected.
    Manual,
}

/// An override of one tool's exposed metadata.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolOverride {
    /// Exposed name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Exposed description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tool annotations (MCP `ToolAnnotations`), merged over the backend's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub annotations: Option<serde_json::Value>,
}

/// Tool selection and overrides for one backend.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadTools {
    /// The MCPServer (backend) name.
    pub workload: String,
    /// Allow-list of original tool names; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<String>,
    /// Overrides keyed by original tool name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, ToolOverride>,
}

/// Capability aggregation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("self.conflictResolution != 'priority' || (has(self.priorityOrder) && size(self.priorityOrder) > 0)")
    .message("aggregation.priorityOrder must list the backends in order when conflictResolution is 'priority'"))]
#[serde(rename_all = "camelCase")]
pub struct Aggregation {
    /// `prefix` (default), `priority` or `manual`.
    #[serde(default)]
    pub conflict_resolution: ConflictResolution,
    /// Prefix format for `prefix` resolution; `{backend}` is replaced (default `{backend}_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_format: Option<String>,
    /// Backend names, highest priority first (for `priority`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub priority_order: Vec<String>,
    /// Per-backend filters and overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<WorkloadTools>,
}

/// Where MCP sessions are stored.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SessionStorageProvider {
    /// In the gateway process (one replica only: sessions die with the pod).
    #[default]
    Memory,
    /// In Redis (sessions survive restarts and are shared by replicas).
    Redis,
}

/// Session storage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.provider != 'redis' || (has(self.address) && self.address != '')")
    .message("sessionStorage.address (host:port of Redis) is required when provider is 'redis'"))]
#[serde(rename_all = "camelCase")]
pub struct SessionStorage {
    /// `memory` (default) or `redis`.
    #[serde(default)]
    pub provider: SessionStorageProvider,
    /// Redis `host:port`, or a `redis://`, `rediss://`, `redis-sentinel://` or
    /// `redis-cluster://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Redis database number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub db: Option<i32>,
    /// Key prefix for session records (default `vmcp:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// Secret key holding the Redis password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_ref: Option<SecretKeyRef>,
    /// Sliding session TTL, e.g. `30m` (default `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub ttl: Option<String>,
}

/// Kubernetes Service type of the gateway.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Cluster-internal (default).
    #[default]
    ClusterIP,
    /// Exposed on every node's port.
    NodePort,
    /// Exposed through a cloud load balancer.
    LoadBalancer,
}

/// A Virtual MCP Server: one gateway endpoint in front of the MCP servers of a group.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "vmcp.dev",
    version = "v1alpha1",
    kind = "VirtualMCPServer",
    // The children are `<name>-vmcp` (Deployment, Service: a DNS-1035 label of at most 63
    // characters) and `<name>-vmcp-config`; the name is also a label value.
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 58")
        .message("metadata.name must be a DNS-1035 label of at most 58 characters (lower-case letters, digits and '-', starting with a letter): the gateway's Service is named '<name>-vmcp'"),
    doc = "A VirtualMCPServer: one MCP gateway endpoint in front of the MCP servers of a group",
    plural = "virtualmcpservers",
    shortname = "vmcp",
    namespaced,
    status = "VirtualMCPServerStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Backends", type_ = "integer", json_path = ".status.backendCount"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!has(self.caBundleRef) || !has(self.caBundleConfigMapRef)")
    .message("set spec.caBundleRef (a Secret key) or spec.caBundleConfigMapRef (a ConfigMap key), not both"))]
#[serde(rename_all = "camelCase")]
pub struct VirtualMCPServerSpec {
    /// The `MCPGroup` whose servers this gateway aggregates.
    pub group_ref: LocalRef,
    /// Client authentication. Required, so that a gateway without client authentication is
    /// always a deliberate choice (`type: anonymous`).
    // Optional in the Rust type only so that objects stored before the field was required
    // still read (as anonymous): serde reads a missing `Option` as `None` (no `default` here,
    // which would make schemars drop the field from `required`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required, schema_with = "incoming_auth_schema")]
    pub incoming_auth: Option<IncomingAuth>,
    /// Backend credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outgoing_auth: Option<OutgoingAuth>,
    /// Capability aggregation and conflict resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<Aggregation>,
    /// Session storage (default memory; use redis for more than one replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_storage: Option<SessionStorage>,
    /// Gateway pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Service type (default ClusterIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,
    /// Compute resources of the gateway container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Browser origins allowed in the `Origin` header besides the gateway's own
    /// (`incomingAuth.oidc.resourceUrl`), e.g. `https://app.example.com`; `*` allows every
    /// origin. Requests with any other `Origin` get 403, loopback ones (a page on any port of
    /// the user's machine) included unless listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Token endpoints that `tokenExchange` backends of this gateway may send users' tokens to
    /// besides the `token_endpoint` the incoming OIDC issuer publishes in its discovery
    /// document, the only one allowed by default (e.g. the issuer's in-cluster address). Set
    /// by the gateway's owner here, never by an `MCPExternalAuthConfig`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_token_urls: Vec<String>,
    /// Timeout of one request to a backend, e.g. `30s` or `2m` (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub backend_timeout: Option<String>,
    /// A key of a Secret (same namespace) holding PEM CA certificates that the gateway trusts,
    /// besides the public web roots, for every outgoing https connection: the OIDC provider,
    /// token endpoints and backends (`MCPServerEntry` URLs) of a private PKI. Mounted into the
    /// gateway pod; a rotated bundle rolls the pods. Set this or `caBundleConfigMapRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<SecretKeyRef>,
    /// The same as `caBundleRef` for a bundle kept in a ConfigMap key (same namespace), where
    /// CA certificates usually live since they are not secret. Mounted into the gateway pod; a
    /// changed bundle rolls the pods. Set this or `caBundleRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_config_map_ref: Option<ConfigMapKeyRef>,
    /// A partial PodTemplateSpec merged over the generated pod template (kept as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub pod_template_spec: Option<serde_json::Value>,
}

/// Lifecycle phase of a `VirtualMCPServer`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VirtualMCPServerPhase {
    /// Reconciling; not ready yet.
    #[default]
    Pending,
    /// Ready with every backend.
    Ready,
    /// Serving, but some backends are unavailable or misconfigured.
    Degraded,
    /// Cannot be served (for example the group is missing).
    Failed,
}

/// One backend as the operator discovered it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredBackend {
    /// MCPServer name.
    pub name: String,
    /// Backend URL the gateway uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `ready`, `pending` or `error`; `remote` for an `MCPServerEntry` (not observed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Outgoing auth type used for this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<String>,
    /// Why the backend is not ready, if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Observed state of a `VirtualMCPServer`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMCPServerStatus {
    /// `Pending`, `Ready`, `Degraded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<VirtualMCPServerPhase>,
    /// In-cluster URL of the gateway's MCP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Number of backends in the rendered config.
    #[serde(default)]
    pub backend_count: i32,
    /// The backends as discovered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discovered_backends: Vec<DiscoveredBackend>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: `Ready`, `GroupRefValidated`, `AuthConfigured`,
    /// `BackendsDiscovered`, `SessionStorageWarning`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_stored_without_incoming_auth_still_read() {
        let spec: VirtualMCPServerSpec =
            serde_json::from_value(serde_json::json!({"groupRef": {"name": "g"}}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.incoming_auth, None);
    }
}
