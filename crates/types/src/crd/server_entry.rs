//! `MCPServerEntry`: an MCP server the operator does not run (hosted elsewhere, or run by
//! another team or chart), listed by URL as a member of a group.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::LocalRef;

/// How a remote MCP server speaks MCP (a gateway cannot bridge stdio at a distance).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RemoteTransport {
    /// Streamable HTTP (MCP 2025-03-26 and later).
    #[default]
    StreamableHttp,
    /// The legacy HTTP+SSE transport (`url` is the SSE endpoint).
    Sse,
}

/// A remote MCP server as a group member: the gateway connects to `url` directly, with the
/// credential `externalAuthConfigRef` describes (or none). The operator creates nothing for it;
/// the gateways of its group report it in `status.discoveredBackends`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "vmcp.dev",
    version = "v1alpha1",
    kind = "MCPServerEntry",
    // The name is the gateway's backend name (letters, digits, '-'; at most 63).
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63")
        .message("metadata.name must be at most 63 lower-case letters, digits and '-' (it is the gateway's backend name)"),
    doc = "An MCPServerEntry: a remote MCP server (not run by the operator) in a group",
    plural = "mcpserverentries",
    shortname = "mcpe",
    namespaced,
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(name = "Transport", type_ = "string", json_path = ".spec.transport"),
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.groupRef.name"),
    printcolumn(name = "Auth", type_ = "string", json_path = ".spec.externalAuthConfigRef.name"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerEntrySpec {
    /// The server's MCP endpoint: an absolute `https://` (or `http://`) URL with its path, e.g.
    /// `https://mcp.example.com/mcp`; no user info or fragment.
    #[x_kube(validation = Rule::new("isURL(self) && (self.startsWith('https://') || self.startsWith('http://')) && url(self).getHostname() != '' && !self.matches('^https?://[^/]*@') && !self.contains('#')")
        .message("spec.url must be an absolute http(s) URL with a host, no user info and no fragment, e.g. https://mcp.example.com/mcp"))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Transport the server speaks (`streamable-http` or `sse`).
    #[serde(default)]
    pub transport: RemoteTransport,
    /// The `MCPGroup` this server belongs to.
    pub group_ref: LocalRef,
    /// The `MCPExternalAuthConfig` that says how a gateway authenticates to this server (token
    /// exchange, header injection, bearer token). Without it the gateway's `outgoingAuth`
    /// decides (by default: no credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth_config_ref: Option<LocalRef>,
}
