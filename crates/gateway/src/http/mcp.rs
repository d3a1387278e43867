//! `/mcp`: Streamable HTTP (MCP 2025-03-26, 2025-06-18, 2025-11-25) on the client side.

// At the HTTP edge an early `Err(Response)` is the natural shape; boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};

use super::AppState;
use crate::auth::Identity;
use crate::jsonrpc::{self, INVALID_REQUEST, METHOD_NOT_FOUND, Message, PARSE_ERROR, RpcError};
use crate::methods;
use crate::protocol;
use crate::session::{Session, SessionError};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

fn status_text(status: StatusCode, text: &str) -> Response {
    (status, text.to_owned()).into_response()
}

fn rpc_error_response(status: StatusCode, id: Option<&Value>, err: RpcError) -> Response {
    json_response(status, &jsonrpc::error(id, &err))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn accepts(headers: &HeaderMap, kind: &str) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|t| {
            let t = t.trim();
            t.starts_with(kind) || t.starts_with("*/*")
        })
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Common front checks: Origin, identity.
async fn front(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<Identity, Response> {
    if !super::origin::allowed(header_str(headers, "origin"), &state.http) {
        return Err(status_text(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    state.auth.authenticate(headers, uri).await
}

/// `MCP-Protocol-Version` of a request after initialize: 400 when unsupported.
fn request_version(headers: &HeaderMap) -> Result<&str, Response> {
    match header_str(headers, VERSION_HEADER) {
        None => Ok(protocol::DEFAULT_VERSION),
        Some(v) if protocol::is_supported(v) => Ok(v),
        Some(v) => Err(rpc_error_response(
            StatusCode::BAD_REQUEST,
            None,
            RpcError::new(
                INVALID_REQUEST,
                format!(
                    "unsupported MCP-Protocol-Version '{v}'; supported: {}",
                    protocol::SUPPORTED_VERSIONS.join(", ")
                ),
            ),
        )),
    }
}

fn session_error(state: &AppState, e: SessionError) -> Response {
    match e {
        SessionError::NotFound => status_text(StatusCode::NOT_FOUND, "session not found"),
        SessionError::AuthRequired => state.auth.challenge(),
        SessionError::Store(e) => {
            tracing::error!(error = %e, "session store unavailable");
            let mut r = status_text(
                StatusCode::SERVICE_UNAVAILABLE,
                "session store unavailable; retry shortly",
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            r
        }
    }
}

async fn resolve(
    state: &AppState,
    headers: &HeaderMap,
    identity: &Identity,
) -> Result<Arc<Session>, Response> {
    let Some(id) = header_str(headers, SESSION_HEADER) else {
        return Err(rpc_error_response(
            StatusCode::BAD_REQUEST,
            None,
            RpcError::new(INVALID_REQUEST, "missing Mcp-Session-Id header"),
        ));
    };
    state.manager.get(id, identity).await.map_err(|e| session_error(state, e))
}

/// POST /mcp: one JSON-RPC message (or a batch on 2025-03-26).
pub async fn post(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let identity = match front(&state, &headers, &uri).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return rpc_error_response(
                StatusCode::BAD_REQUEST,
                None,
                RpcError::new(PARSE_ERROR, format!("parse error: {e}")),
            );
        }
    };
    if let Value::Array(items) = value {
        return post_batch(&state, &headers, &identity, items).await;
    }
    let msg = match jsonrpc::classify(value.clone()) {
        Ok(m) => m,
        Err(e) => {
            let id = value.get("id").filter(|i| i.is_string() || i.is_number());
            return rpc_error_response(StatusCode::BAD_REQUEST, id, e);
        }
    };
    if let Message::Request { id, method, params } = &msg
        && method == "initialize"
    {
        return initialize(&state, &identity, id, params.clone().unwrap_or(Value::Null)).await;
    }
    if header_str(&headers, SESSION_HEADER).is_none()
        && let Message::Request { id, method, .. } = &msg
        && !is_known_method(method)
    {
        // A probe such as `server/discover` before any session: method not found, so clients
        // that try newer revisions first fall back to `initialize`.
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            Some(id),
            RpcError::new(METHOD_NOT_FOUND, format!("method not found: {method}")),
        );
    }
    if let Err(r) = request_version(&headers) {
        return r;
    }
    let session = match resolve(&state, &headers, &identity).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match msg {
        Message::Notification { method, params } => {
            methods::handle_notification(&session, &identity, &method, params).await;
            StatusCode::ACCEPTED.into_response()
        }
        Message::Response { .. } => StatusCode::ACCEPTED.into_response(),
        Message::Request { id, method, params } => {
            let stream = methods::is_forwarded(&method) && accepts(&headers, "text/event-stream");
            if stream {
                sse_call(state, session, identity, id, method, params)
            } else {
                let resp = methods::handle_request(
                    &state.manager,
                    &session,
                    &identity,
                    &id,
                    &method,
                    params,
                    None,
                )
                .await;
                json_response(StatusCode::OK, &resp)
            }
        }
    }
}

fn is_known_method(m: &str) -> bool {
    matches!(
        m,
        "ping"
            | "tools/list"
            | "tools/call"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe"
            | "prompts/list"
            | "prompts/get"
            | "completion/complete"
            | "logging/setLevel"
    )
}

async fn initialize(state: &AppState, identity: &Identity, id: &Value, params: Value) -> Response {
    if !params.is_object() {
        return rpc_error_response(
            StatusCode::OK,
            Some(id),
            RpcError::new(jsonrpc::INVALID_PARAMS, "initialize needs params"),
        );
    }
    match state.manager.create(identity, &params).await {
        Ok((session, result)) => {
            tracing::info!(target: "audit", subject = identity.subject(), session = %session.id, method = "initialize", outcome = "ok", "request");
            let mut r = json_response(StatusCode::OK, &jsonrpc::result(id, result));
            if let Ok(v) = HeaderValue::from_str(&session.id) {
                r.headers_mut().insert(SESSION_HEADER, v);
            }
            r
        }
        Err(e) => session_error(state, e),
    }
}

/// A forwarded request answered as an SSE stream: the backend's progress notifications for
/// this request, then the response. A client disconnect does not cancel the call.
fn sse_call(
    state: AppState,
    session: Arc<Session>,
    identity: Identity,
    id: Value,
    method: String,
    params: Option<Value>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let progress = tx.clone();
    tokio::spawn(async move {
        let resp = methods::handle_request(
            &state.manager,
            &session,
            &identity,
            &id,
            &method,
            params,
            Some(progress),
        )
        .await;
        let _ = tx.send(resp);
    });
    let stream = UnboundedReceiverStream::new(rx)
        .map(|v| Ok::<_, Infallible>(Event::default().event("message").data(v.to_string())));
    Sse::new(stream).into_response()
}

async fn post_batch(
    state: &AppState,
    headers: &HeaderMap,
    identity: &Identity,
    items: Vec<Value>,
) -> Response {
    let version = match request_version(headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !protocol::allows_batches(version) || header_str(headers, SESSION_HEADER).is_none() {
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            None,
            RpcError::new(
                INVALID_REQUEST,
                format!("JSON-RPC batches are not supported in protocol version {version}"),
            ),
        );
    }
    if items.is_empty() {
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            None,
            RpcError::new(INVALID_REQUEST, "empty batch"),
        );
    }
    let session = match resolve(state, headers, identity).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut out = Vec::new();
    for item in items {
        match jsonrpc::classify(item) {
            Ok(Message::Request { id, method, params }) => {
                out.push(
                    methods::handle_request(
                        &state.manager,
                        &session,
                        identity,
                        &id,
                        &method,
                        params,
                        None,
                    )
                    .await,
                );
            }
            Ok(Message::Notification { method, params }) => {
                methods::handle_notification(&session, identity, &method, params).await
            }
            Ok(Message::Response { .. }) => {}
            Err(e) => out.push(jsonrpc::error(None, &e)),
        }
    }
    if out.is_empty() {
        StatusCode::ACCEPTED.into_response()
    } else {
        json_response(StatusCode::OK, &Value::Array(out))
    }
}

/// GET /mcp: the stream of server-initiated messages of a session.
pub async fn get(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let identity = match front(&state, &headers, &uri).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    if !accepts(&headers, "text/event-stream") {
        return status_text(StatusCode::NOT_ACCEPTABLE, "GET /mcp needs Accept: text/event-stream");
    }
    if let Err(r) = request_version(&headers) {
        return r;
    }
    let session = match resolve(&state, &headers, &identity).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rx = session.outbox.attach();
    // I8: member backends stream to this replica only while the client holds this stream.
    let opener = session.clone();
    tokio::spawn(async move { opener.open_backend_streams(&identity).await });
    let stream = ClientStream { rx: ReceiverStream::new(rx), _detach: DetachGuard(session) }
        .map(|v| Ok::<_, Infallible>(Event::default().event("message").data(v.to_string())));
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// The client's GET stream; when it ends, the backend streams opened for it are closed.
struct ClientStream {
    rx: ReceiverStream<Value>,
    // Dropped after `rx`, so the outbox already sees the stream detached.
    _detach: DetachGuard,
}

impl futures::Stream for ClientStream {
    type Item = Value;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Value>> {
        std::pin::Pin::new(&mut self.rx).poll_next(cx)
    }
}

struct DetachGuard(Arc<Session>);

impl Drop for DetachGuard {
    fn drop(&mut self) {
        self.0.close_backend_streams_if_detached();
    }
}

/// DELETE /mcp: ends the session everywhere.
pub async fn delete(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let identity = match front(&state, &headers, &uri).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let session = match resolve(&state, &headers, &identity).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match state.manager.terminate(&session, &identity).await {
        Ok(()) => {
            tracing::info!(target: "audit", subject = identity.subject(), session = %session.id, method = "DELETE", outcome = "ok", "request");
            StatusCode::OK.into_response()
        }
        Err(e) => session_error(&state, e),
    }
}
