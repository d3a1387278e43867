//! `MCPGroup`: a named set of MCP servers that a `VirtualMCPServer` aggregates.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::conditions_schema;

/// A logical group of MCP servers: `MCPServer`s and `MCPServerEntry`s (remote servers) join a
/// group through their `groupRef`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "vmcp.dev",
    version = "v1alpha1",
    kind = "MCPGroup",
    doc = "An MCPGroup: a named set of MCP servers that a VirtualMCPServer aggregates",
    plural = "mcpgroups",
    shortname = "mcpg",
    namespaced,
    status = "MCPGroupStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Servers", type_ = "integer", json_path = ".status.serverCount"),
    printcolumn(name = "Entries", type_ = "integer", json_path = ".status.entryCount"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPGroupSpec {
    /// Human-readable description of the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Lifecycle phase of an `MCPGroup`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MCPGroupPhase {
    /// Not reconciled yet.
    #[default]
    Pending,
    /// Reconciled: the members are listed in the status.
    Ready,
    /// The group cannot be used.
    Failed,
}

/// Observed state of an `MCPGroup`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPGroupStatus {
    /// `Pending`, `Ready` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MCPGroupPhase>,
    /// Names of the `MCPServer`s that reference this group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Number of member `MCPServer`s (the `Servers` column).
    #[serde(default)]
    pub server_count: i32,
    /// Names of the `MCPServerEntry`s (remote servers) that reference this group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<String>,
    /// Number of member `MCPServerEntry`s (the `Entries` column).
    #[serde(default)]
    pub entry_count: i32,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
