//! `/mcp`: Streamable HTTP (MCP 2025-03-26, 2025-06-18, 2025-11-25) on the client side;
//! requests of the stateless revision (2026-07-28) are handed to [`super::stateless`].
//! Handlers return `Result<Response, EdgeError>`; refusals are mapped in [`super::error`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::AppState;
use super::error::{EdgeError, json_response};
use crate::auth::Identity;
use crate::jsonrpc::{self, INVALID_REQUEST, METHOD_NOT_FOUND, Message, PARSE_ERROR, RpcError};
use crate::methods::{self, Caller};
use crate::protocol::{self, Method, SESSION_HEADER, VERSION_HEADER};
use crate::session::Session;
use crate::session::streams::{StreamKind, parse_event_id};

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
async fn front(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<Identity, EdgeError> {
    if !super::origin::allowed(header_str(headers, "origin"), &state.http) {
        return Err(EdgeError::Refused(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    state.auth.authenticate(headers, uri).await
}

/// `MCP-Protocol-Version` of a request after initialize: 400 when unsupported.
fn request_version(headers: &HeaderMap) -> Result<&str, EdgeError> {
    match header_str(headers, VERSION_HEADER) {
        None => Ok(protocol::DEFAULT_VERSION),
        Some(v) if protocol::is_supported(v) => Ok(v),
        Some(v) => Err(EdgeError::bad_request(
            None,
            RpcError::new(
                INVALID_REQUEST,
                format!(
                    "unsupported MCP-Protocol-Version '{}'; supported: {}",
                    crate::metrics::for_log(v),
                    protocol::SUPPORTED_VERSIONS.join(", ")
                ),
            ),
        )),
    }
}

async fn resolve(
    state: &AppState,
    headers: &HeaderMap,
    identity: &Identity,
) -> Result<Arc<Session>, EdgeError> {
    let Some(id) = header_str(headers, SESSION_HEADER) else {
        return Err(EdgeError::bad_request(
            None,
            RpcError::new(INVALID_REQUEST, "missing Mcp-Session-Id header"),
        ));
    };
    state.manager.get(id, identity).await.map_err(|e| state.auth.session_error(e))
}

/// POST /mcp: one JSON-RPC message (or a batch on 2025-03-26).
/// The big futures of the rarer branches (a batch, `initialize`, the stateless revision, a
/// JSON-only client) are boxed, so the future of a common call stays small: axum moves it
/// as it starts it.
pub async fn post(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, EdgeError> {
    let identity = front(&state, &headers, &uri).await?;
    // Read only after the caller is authenticated (L15): an anonymous peer cannot make the
    // gateway buffer bodies up to the limit.
    let body = axum::body::to_bytes(body, state.http.max_body_bytes).await.map_err(|_| {
        EdgeError::Refused(StatusCode::PAYLOAD_TOO_LARGE, "request body over the size limit")
    })?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        EdgeError::bad_request(None, RpcError::new(PARSE_ERROR, format!("parse error: {e}")))
    })?;
    if super::stateless::applies(&headers, &value) {
        // MCP 2026-07-28: no session; the request carries its own envelope.
        return Box::pin(super::stateless::post(&state, &headers, identity, value)).await;
    }
    if let Value::Array(items) = value {
        return Box::pin(post_batch(&state, &headers, &identity, items)).await;
    }
    // Only the id is kept for an error reply: the message itself is not copied.
    let reply_id = value.get("id").filter(|i| i.is_string() || i.is_number()).cloned();
    let msg = jsonrpc::classify(value).map_err(|e| EdgeError::bad_request(reply_id.as_ref(), e))?;
    if let Message::Request { id, method, params } = &msg {
        let known = Method::parse(method);
        if known == Some(Method::Initialize) {
            return Box::pin(initialize(
                &state,
                &identity,
                id,
                params.clone().unwrap_or(Value::Null),
            ))
            .await;
        }
        if known.is_none() && header_str(&headers, SESSION_HEADER).is_none() {
            // A probe such as `server/discover` before any session: method not found, so
            // clients that try newer revisions first fall back to `initialize`.
            return Err(EdgeError::bad_request(
                Some(id),
                RpcError::new(
                    METHOD_NOT_FOUND,
                    format!("method not found: {}", crate::metrics::for_log(method)),
                ),
            ));
        }
    }
    request_version(&headers)?;
    let session = resolve(&state, &headers, &identity).await?;
    Ok(match msg {
        Message::Notification { method, params } => {
            methods::handle_notification(&session, &identity, &method, params).await;
            StatusCode::ACCEPTED.into_response()
        }
        Message::Response { body, .. } => {
            // The client's answer to a backend's request (sampling, elicitation, roots).
            if !state.manager.deliver_answer(&session, body).await {
                tracing::debug!(session = %session.id, "a response that no backend request waits for (answered late)");
            }
            StatusCode::ACCEPTED.into_response()
        }
        Message::Request { id, method, params } => {
            let forwarded = Method::parse(&method).is_some_and(Method::is_forwarded);
            if forwarded && accepts(&headers, "text/event-stream") {
                super::client_streams::call_stream(state, session, identity, id, method, params)
                    .await
            } else {
                let caller =
                    Caller { manager: &state.manager, session: &session, identity: &identity };
                let resp =
                    Box::pin(methods::handle_request(caller, &id, &method, params, None)).await;
                json_response(StatusCode::OK, &resp)
            }
        }
    })
}

async fn initialize(
    state: &AppState,
    identity: &Identity,
    id: &Value,
    params: Value,
) -> Result<Response, EdgeError> {
    if !params.is_object() {
        return Err(EdgeError::Rpc {
            status: StatusCode::OK,
            id: Some(id.clone()),
            error: RpcError::new(jsonrpc::INVALID_PARAMS, "initialize needs params"),
        });
    }
    let (session, result) =
        state.manager.create(identity, &params).await.map_err(|e| state.auth.session_error(e))?;
    tracing::info!(target: "audit", subject = identity.subject(), session = %session.id, method = Method::Initialize.as_str(), outcome = "ok", "request");
    let mut r = json_response(StatusCode::OK, &jsonrpc::result(id, result));
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
    Ok(r)
}

async fn post_batch(
    state: &AppState,
    headers: &HeaderMap,
    identity: &Identity,
    items: Vec<Value>,
) -> Result<Response, EdgeError> {
    let version = request_version(headers)?;
    if !protocol::allows_batches(version) || header_str(headers, SESSION_HEADER).is_none() {
        return Err(EdgeError::bad_request(
            None,
            RpcError::new(
                INVALID_REQUEST,
                format!("JSON-RPC batches are not supported in protocol version {version}"),
            ),
        ));
    }
    if items.is_empty() {
        return Err(EdgeError::bad_request(None, RpcError::new(INVALID_REQUEST, "empty batch")));
    }
    let session = resolve(state, headers, identity).await?;
    let caller = Caller { manager: &state.manager, session: &session, identity };
    let mut out = Vec::new();
    for item in items {
        match jsonrpc::classify(item) {
            Ok(Message::Request { id, method, params }) => {
                out.push(methods::handle_request(caller, &id, &method, params, None).await);
            }
            Ok(Message::Notification { method, params }) => {
                methods::handle_notification(&session, identity, &method, params).await
            }
            Ok(Message::Response { body, .. }) => {
                session.asks.answer(body);
            }
            Err(e) => out.push(jsonrpc::error(None, &e)),
        }
    }
    Ok(if out.is_empty() {
        StatusCode::ACCEPTED.into_response()
    } else {
        json_response(StatusCode::OK, &Value::Array(out))
    })
}

/// GET /mcp: the stream of server-initiated messages of a session.
pub async fn get(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, EdgeError> {
    let identity = front(&state, &headers, &uri).await?;
    if !accepts(&headers, "text/event-stream") {
        return Err(EdgeError::Refused(
            StatusCode::NOT_ACCEPTABLE,
            "GET /mcp needs Accept: text/event-stream",
        ));
    }
    request_version(&headers)?;
    let session = resolve(&state, &headers, &identity).await?;
    let last = match header_str(&headers, "last-event-id") {
        None => None,
        Some(v) => Some(parse_event_id(v).ok_or_else(|| {
            EdgeError::bad_request(
                None,
                RpcError::new(INVALID_REQUEST, "Last-Event-ID is not an event id of this gateway"),
            )
        })?),
    };
    match &last {
        Some(at) if at.kind == StreamKind::Post => {
            super::client_streams::resume_call(&state, session, at).await
        }
        _ => super::client_streams::session_stream(&state, session, identity, last.as_ref()).await,
    }
}

/// DELETE /mcp: ends the session everywhere.
pub async fn delete(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, EdgeError> {
    let identity = front(&state, &headers, &uri).await?;
    let Some(id) = header_str(&headers, SESSION_HEADER) else {
        return Err(EdgeError::bad_request(
            None,
            RpcError::new(INVALID_REQUEST, "missing Mcp-Session-Id header"),
        ));
    };
    state.manager.terminate_id(id, &identity).await.map_err(|e| state.auth.session_error(e))?;
    tracing::info!(target: "audit", subject = identity.subject(), session = %id, method = "DELETE", outcome = "ok", "request");
    Ok(StatusCode::OK.into_response())
}
