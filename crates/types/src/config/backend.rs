//! Backend MCP servers.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::OutgoingAuthConfig;

/// How the gateway talks to a backend.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTransport {
    /// Streamable HTTP (`url` is the MCP endpoint, e.g. `http://host:8080/mcp`).
    #[default]
    StreamableHttp,
    /// Legacy HTTP+SSE (`url` is the SSE endpoint, e.g. `http://host:8080/sse`).
    Sse,
}

/// One backend MCP server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique name: used in prefixes, routing, logs, metrics and errors. Letters, digits, `-`
    /// and `_`.
    pub name: String,
    /// The backend's MCP endpoint URL (`http` or `https`).
    pub url: String,
    /// `streamable-http` (default) or `sse`.
    #[serde(default)]
    pub transport: BackendTransport,
    /// Timeout of one request to this backend (default `30s`).
    #[serde(default = "default_backend_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// The credential the gateway sends to this backend (default `unauthenticated`).
    #[serde(default)]
    pub auth: OutgoingAuthConfig,
}

fn default_backend_timeout() -> Duration {
    Duration::from_secs(30)
}
