//! Operational endpoints.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use super::AppState;

/// Liveness: the process serves HTTP.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness with detail: configured backends and whether each answered its last background
/// probe. Not ready (503) while the session store is unreachable; unavailable backends are
/// reported but do not make the gateway unready (sessions work without them).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let set = state.manager.backends();
    let probes = state.health.backends();
    let backends: Vec<_> = set
        .order
        .iter()
        .map(|n| {
            let p = probes.iter().find(|(name, _)| name == n).map(|(_, r)| r.clone());
            match p {
                Some(Ok(())) => json!({ "name": n.as_ref(), "status": "ready" }),
                // M7: /readyz is unauthenticated: the kind of failure only, details in the log.
                Some(Err(e)) => {
                    json!({ "name": n.as_ref(), "status": "unavailable", "error": e.kind() })
                }
                None => json!({ "name": n.as_ref(), "status": "unknown" }),
            }
        })
        .collect();
    let store_ready = state.health.ready();
    let awaited = state.health.awaited(&set);
    let ready = store_ready && awaited.is_empty();
    let status = if !store_ready {
        "session store unavailable".to_owned()
    } else if !awaited.is_empty() {
        let names: Vec<&str> = awaited.iter().map(|n| n.as_ref()).collect();
        format!("waiting for the secret files of: {}", names.join(", "))
    } else {
        "ready".to_owned()
    };
    let body = json!({
        "status": status,
        "sessions": state.manager.local_count(),
        "backends": backends,
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.manager.metrics().encode(),
    )
        .into_response()
}

/// RFC 9728 protected resource metadata (404 when the gateway is anonymous).
pub async fn resource_metadata(State(state): State<AppState>) -> Response {
    match state.auth.resource_metadata() {
        Some(m) => Json(m).into_response(),
        None => (StatusCode::NOT_FOUND, "no authorization configured").into_response(),
    }
}
