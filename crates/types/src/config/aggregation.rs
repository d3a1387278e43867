//! Capability aggregation settings.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How name conflicts between backends are resolved.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ConflictResolution {
    /// Every tool and prompt is exposed as `<prefixFormat with {backend}><name>`.
    #[default]
    Prefix,
    /// The first backend of `priorityOrder` that has the name wins; the others are hidden.
    Priority,
    /// Every conflict must be resolved by an override (rename); otherwise the config is rejected
    /// when the backends' tools are known.
    Manual,
}

/// Default prefix format.
pub const DEFAULT_PREFIX_FORMAT: &str = "{backend}_";

/// How backends' capabilities are merged into one name space.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AggregationConfig {
    /// `prefix` (default), `priority` or `manual`.
    #[serde(default)]
    pub conflict_resolution: ConflictResolution,
    /// Prefix format for `prefix`; must contain `{backend}` (default `{backend}_`).
    #[serde(default = "default_prefix_format")]
    pub prefix_format: String,
    /// Backend names, highest priority first (required for `priority`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub priority_order: Vec<String>,
    /// Per-backend tool filters and overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<BackendToolsConfig>,
}

fn default_prefix_format() -> String {
    DEFAULT_PREFIX_FORMAT.to_owned()
}

impl Default for AggregationConfig {
    fn default() -> Self {
        Self {
            conflict_resolution: ConflictResolution::Prefix,
            prefix_format: default_prefix_format(),
            priority_order: Vec::new(),
            tools: Vec::new(),
        }
    }
}

/// Tool filter and overrides for one backend.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendToolsConfig {
    /// Name of the backend (from `backends[].name`).
    pub backend: String,
    /// Allow-list of the backend's original tool names; empty exposes all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<String>,
    /// Overrides keyed by the backend's original tool name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, ToolOverrideConfig>,
}

/// An override of one tool's exposed metadata.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolOverrideConfig {
    /// Exposed name (used as is: no prefix is added to an overridden name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Exposed description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tool annotations (MCP `ToolAnnotations` fields), merged over the backend's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}
