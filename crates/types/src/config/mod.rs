//! `GatewayConfig`: the gateway's configuration file (YAML or JSON), rendered by the operator
//! and read by the gateway.
//!
//! Secrets are never inline: they are referenced by environment variable or file path
//! ([`SecretSource`]). Loading validates the whole document and returns every problem at once,
//! each with its field path and what to do ([`ConfigError`]). Every field is documented in
//! `docs/config.md`; a test keeps the two in step.

mod aggregation;
mod auth;
mod backend;
mod error;
mod load;
mod session;
mod validate;

pub use aggregation::*;
pub use auth::*;
pub use backend::*;
pub use error::{ConfigError, FieldError};
pub use load::{from_yaml_str, load_file};
pub use session::*;

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default listen address of the gateway.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:4483";

/// The whole gateway configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    /// Socket address the gateway listens on (default `0.0.0.0:4483`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Public URL of the gateway's MCP endpoint, e.g. `https://mcp.example.com/mcp`. It is the
    /// RFC 9728 `resource` and the default expected token audience. Required for `oidc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_url: Option<String>,
    /// HTTP front-end settings.
    #[serde(default)]
    pub http: HttpConfig,
    /// How clients authenticate to the gateway.
    #[serde(default)]
    pub incoming_auth: IncomingAuthConfig,
    /// The backend MCP servers.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// How backends' capabilities are merged.
    #[serde(default)]
    pub aggregation: AggregationConfig,
    /// Where MCP sessions are kept.
    #[serde(default)]
    pub session_storage: SessionStorageConfig,
    /// Logs, metrics and traces.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Outgoing connections (OIDC provider, token endpoint, backends).
    #[serde(default, skip_serializing_if = "OutboundConfig::is_default")]
    pub outbound: OutboundConfig,
}

/// Outgoing connections.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundConfig {
    /// PEM files of extra CA certificates (each may hold several) trusted for every outgoing
    /// https connection (OIDC discovery and JWKS, introspection, token exchange, backends),
    /// besides the built-in web roots: for a private PKI. Read at start; a change needs a
    /// restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_files: Vec<std::path::PathBuf>,
    /// Token endpoints a `tokenExchange` backend may send users' tokens to besides the one the
    /// incoming OIDC issuer publishes in its discovery document (`token_endpoint`), which is
    /// the only one allowed by default. Read at start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_token_urls: Vec<String>,
}

impl GatewayConfig {
    /// Are loopback origins allowed: `http.allowLoopbackOrigins`, by default only when
    /// `listen` is a loopback address (`127.0.0.0/8`, `::1`)?
    pub fn allows_loopback_origins(&self) -> bool {
        self.http.allow_loopback_origins.unwrap_or_else(|| {
            self.listen.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
        })
    }
}

impl OutboundConfig {
    /// Nothing set (left out when a configuration is written).
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            resource_url: None,
            http: HttpConfig::default(),
            incoming_auth: IncomingAuthConfig::default(),
            backends: Vec::new(),
            aggregation: AggregationConfig::default(),
            session_storage: SessionStorageConfig::default(),
            telemetry: TelemetryConfig::default(),
            outbound: OutboundConfig::default(),
        }
    }
}

/// HTTP front-end settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body in bytes (default 4194304, 4 MiB); larger bodies get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Origins allowed in the `Origin` header besides the gateway's own (`resourceUrl`) and
    /// loopback origins (see `allowLoopbackOrigins`); a request with any other `Origin` gets
    /// 403. Requests without `Origin` (non-browser clients) are allowed. `*` allows every
    /// origin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Allow any `http://localhost:*`, `127.0.0.1` or `[::1]` origin (a page on any local
    /// port). Default: allowed when `listen` is a loopback address (a gateway on a developer's
    /// machine, used from local tools such as the MCP Inspector), refused otherwise (L14: a
    /// deployed gateway does not trust whatever runs on its users' machines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_loopback_origins: Option<bool>,
    /// Deadline for initializing backends when a client session starts (default `5s`). Backends
    /// not ready by then are left out of the session and retried in the background.
    #[serde(default = "default_init_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub init_timeout: Duration,
    /// How long graceful shutdown waits for in-flight requests (default `20s`).
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub shutdown_grace: Duration,
}

fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_init_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(20)
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body_bytes(),
            allowed_origins: Vec::new(),
            allow_loopback_origins: None,
            init_timeout: default_init_timeout(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

/// Log output format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs, metrics and traces.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` (default) or `json`; the `--log-format` flag overrides it.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` env-filter syntax (default `info`); `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Serve Prometheus metrics at `/metrics` (default true).
    #[serde(default = "default_true")]
    pub metrics: bool,
    /// Socket address of a separate listener for `/metrics` (e.g. `0.0.0.0:9090`). When set,
    /// `/metrics` is served there only and no longer on `listen`, so a NetworkPolicy can admit
    /// scrapers to this port without exposing the MCP port, and the MCP port does not expose
    /// metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
}

fn default_log_level() -> String {
    "info".to_owned()
}
fn default_true() -> bool {
    true
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: default_log_level(),
            metrics: true,
            metrics_listen: None,
        }
    }
}
