//! The HTTP edge: the axum router (`/mcp`, `/healthz`, `/readyz`, `/metrics`, protected
//! resource metadata) and the mapping of every internal error to an HTTP status, a JSON-RPC
//! error or a `WWW-Authenticate` challenge. Nothing below this module knows about HTTP status
//! codes.

mod client_streams;
pub(crate) mod error;
mod identity;
mod mcp;
mod ops;
mod origin;
pub mod stateless;

pub(crate) use error::EdgeError;
pub use identity::Authenticator;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::session::SessionManager;

/// What request handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Sessions.
    pub manager: Arc<SessionManager>,
    /// Incoming authentication.
    pub auth: Arc<Authenticator>,
    /// Front-end settings.
    pub http: Arc<HttpSettings>,
    /// Background backend probes and readiness.
    pub health: Arc<crate::health::Monitor>,
}

/// Front-end settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Origins allowed besides loopback and the resource URL's origin (`*` allows all).
    pub allowed_origins: Vec<String>,
    /// Allow loopback origins (`http.allowLoopbackOrigins`, resolved against `listen`: L14).
    pub allow_loopback_origins: bool,
    /// The public MCP endpoint URL, if configured.
    pub resource_url: Option<url::Url>,
    /// Body size limit in bytes.
    pub max_body_bytes: usize,
    /// Serve `/metrics` on this router (false when a separate metrics listener serves it:
    /// [`metrics_router`]).
    pub metrics_on_main: bool,
}

/// The router of the separate metrics listener (`telemetry.metricsListen`): `/metrics` only.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(ops::metrics)).with_state(state)
}

/// The router of the gateway.
pub fn router(state: AppState) -> Router {
    let limit = state.http.max_body_bytes;
    let mut r = Router::new();
    if state.http.metrics_on_main {
        r = r.route("/metrics", get(ops::metrics));
    }
    r.route("/mcp", get(mcp::get).post(mcp::post).delete(mcp::delete))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/.well-known/oauth-protected-resource", get(ops::resource_metadata))
        .route("/.well-known/oauth-protected-resource/mcp", get(ops::resource_metadata))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}
