//! `MCPServer`: one MCP server workload that the operator runs and a group can aggregate.

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{LocalRef, conditions_schema, preserve_unknown_object};

/// How the MCP server speaks MCP.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum McpTransport {
    /// Streamable HTTP (MCP 2025-03-26 and later), served at `/mcp`.
    #[default]
    StreamableHttp,
    /// The legacy HTTP+SSE transport, served at `/sse`.
    Sse,
    /// A stdio server; the operator wraps it in the `vmcp-gateway bridge` to serve HTTP.
    Stdio,
}

/// A Secret key exposed to the MCP server container as an environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretEnv {
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
    /// Environment variable name in the container (defaults to the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_env_name: Option<String>,
}

/// An MCP server run by the operator (Deployment + Service).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "vmcp.dev",
    version = "v1alpha1",
    kind = "MCPServer",
    // The Deployment and Service are named like the server (a Service name is a DNS-1035
    // label); the name is also the gateway's backend name and a label value.
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63")
        .message("metadata.name must be a DNS-1035 label of at most 63 characters (lower-case letters, digits and '-', starting with a letter): the server's Service has this name"),
    doc = "An MCPServer: an MCP server workload (Deployment + Service) run by the operator",
    plural = "mcpservers",
    shortname = "mcps",
    namespaced,
    status = "MCPServerStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Transport", type_ = "string", json_path = ".spec.transport"),
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.groupRef.name"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.transport != 'stdio' || (has(self.command) && size(self.command) > 0)")
    .message("spec.command is required when spec.transport is 'stdio' (the bridge runs it)"))]
#[serde(rename_all = "camelCase")]
pub struct MCPServerSpec {
    /// Container image of the MCP server.
    pub image: String,
    /// Transport the server speaks (`streamable-http`, `sse` or `stdio`).
    #[serde(default)]
    pub transport: McpTransport,
    /// Port the Service exposes (default 8080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Port the container listens on (defaults to `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<i32>,
    /// Container entrypoint override (for `stdio`: the server command the bridge runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments to the command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables of the server container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Compute resources of the server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Secret keys exposed to the server as environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretEnv>,
    /// The `MCPGroup` this server belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_ref: Option<LocalRef>,
    /// The `MCPExternalAuthConfig` that says how a gateway authenticates to this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth_config_ref: Option<LocalRef>,
    /// Number of server pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// A partial PodTemplateSpec merged over the generated pod template (kept as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub pod_template_spec: Option<serde_json::Value>,
}

/// Lifecycle phase of an `MCPServer`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MCPServerPhase {
    /// No pod is ready yet, and nothing says why not.
    Pending,
    /// At least one pod is ready.
    Running,
    /// The spec is invalid, an apply was rejected, or the pods cannot start (the `Ready`
    /// condition names the reason).
    Failed,
}

/// Observed state of an `MCPServer`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerStatus {
    /// `Pending`, `Running` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MCPServerPhase>,
    /// In-cluster URL of the server's MCP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Ready pods of the server Deployment.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Ready`, `GroupRefValidated`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
