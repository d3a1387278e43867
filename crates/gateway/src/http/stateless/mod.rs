//! `POST /mcp` for MCP 2026-07-28 (stateless), beside the session revisions of
//! [`super::mcp`]: no `initialize`, no `Mcp-Session-Id`; each request carries its protocol
//! version and client capabilities in `params._meta`, mirrored in headers that must match
//! ([`envelope`]). `server/discover` replaces the handshake.
//!
//! A request is served through the backend context the session manager keeps for the live
//! request's identity binding (`session/manager/stateless.rs`): the session machinery
//! (merged view, routing, backend connections, credentials derived from the live identity:
//! I1) answers it under a gateway-issued request id, and the answer goes back under the
//! client's id in the revision's shape. Closing the response (the client disconnects)
//! cancels the request: the work stops and the backend gets `notifications/cancelled`.

pub mod envelope;
mod param_headers;

pub(super) use envelope::applies;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AppState;
use super::error::{EdgeError, json_response};
use crate::auth::Identity;
use crate::jsonrpc::{self, INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, Message, RpcError};
use crate::methods::{self, Caller};
use crate::protocol::{Method, VERSION_HEADER, notification};
use crate::session::Session;

/// Request ids the gateway uses inside a context (unique per replica, so concurrent requests
/// of one identity never collide, whatever ids their clients chose).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn refuse(id: Option<&Value>, error: RpcError) -> EdgeError {
    EdgeError::Rpc { status: envelope::status_for(error.code), id: id.cloned(), error }
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|t| {
            let t = t.trim();
            t.starts_with("text/event-stream") || t.starts_with("*/*")
        })
    })
}

/// Serves one stateless POST (the body already parsed; the caller authenticated).
pub(super) async fn post(
    state: &AppState,
    headers: &HeaderMap,
    identity: Identity,
    body: Value,
) -> Result<Response, EdgeError> {
    let not_single = || {
        refuse(
            None,
            RpcError::new(
                INVALID_REQUEST,
                "the body must be one JSON-RPC request or notification (no batches, no responses)",
            ),
        )
    };
    if !body.is_object() {
        return Err(not_single());
    }
    let reported_id = body.get("id").filter(|i| i.is_string() || i.is_number()).cloned();
    let (id, method, params) = match jsonrpc::classify(body) {
        Ok(Message::Request { id, method, params }) => (id, method, params),
        Ok(Message::Notification { .. }) => return accept_notification(headers),
        Ok(Message::Response { .. }) => return Err(not_single()),
        Err(e) => return Err(refuse(reported_id.as_ref(), e)),
    };
    envelope::check(headers, &method, params.as_ref()).map_err(|e| refuse(Some(&id), e))?;
    if method == envelope::DISCOVER {
        tracing::info!(target: "audit", subject = identity.subject(), method = envelope::DISCOVER, outcome = "ok", "request");
        return Ok(json_response(
            StatusCode::OK,
            &jsonrpc::result(&id, envelope::discover_result()),
        ));
    }
    let Some(known) = Method::parse(&method).filter(|m| envelope::served(*m)) else {
        return Err(refuse(
            Some(&id),
            RpcError::new(
                METHOD_NOT_FOUND,
                format!("method not found: {}", crate::metrics::for_log(&method)),
            ),
        ));
    };
    let mut params = params.unwrap_or_else(|| json!({}));
    envelope::strip_envelope(&mut params);
    let context = state.manager.stateless_context(&identity).await;
    if known == Method::ToolsCall {
        check_param_headers(&context, &params, headers).map_err(|e| refuse(Some(&id), e))?;
    }
    let stream = known.is_forwarded() && accepts_sse(headers);
    let call = spawn_call(state, context, identity, id, known, params, stream);
    Ok(respond(call, stream).await)
}

/// The `Mcp-Param-*` headers of a `tools/call`, against the called tool's schema in the
/// identity's merged view (an unknown tool is left to the call, which names the error).
fn check_param_headers(
    context: &Session,
    params: &Value,
    headers: &HeaderMap,
) -> Result<(), RpcError> {
    let view = context.view();
    let Ok(agg) = view.as_ref() else { return Ok(()) };
    let name = params.get("name").and_then(Value::as_str);
    let Some(tool) = agg.tools.iter().find(|t| t.get("name").and_then(Value::as_str) == name)
    else {
        return Ok(());
    };
    let arguments = params.get("arguments").unwrap_or(&Value::Null);
    param_headers::check(&tool["inputSchema"], arguments, headers)
}

/// A notification: this revision defines none from client to server over HTTP (a client
/// cancels by closing the response); accepted and dropped, as the transport allows.
fn accept_notification(headers: &HeaderMap) -> Result<Response, EdgeError> {
    let requested = headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !envelope::MODERN_VERSIONS.contains(&requested) {
        return Err(refuse(None, envelope::unsupported(requested)));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// One request in flight: its messages (progress, then the response) and the guard that
/// cancels it when dropped before it finished.
struct Call {
    rx: mpsc::Receiver<Value>,
    _guard: CancelOnDrop,
}

fn spawn_call(
    state: &AppState,
    context: Arc<Session>,
    identity: Identity,
    client_id: Value,
    method: Method,
    params: Value,
    progress: bool,
) -> Call {
    let internal = json!(format!("vmcp-sl-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed) + 1));
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Value>(crate::backend::PROGRESS_QUEUE);
    let task = {
        let (manager, context, identity) =
            (state.manager.clone(), context.clone(), identity.clone());
        let (internal, done) = (internal.clone(), done.clone());
        tokio::spawn(async move {
            let caller = Caller { manager: &manager, session: &context, identity: &identity };
            let sink = progress.then(|| tx.clone());
            let mut response =
                methods::handle_request(caller, &internal, method.as_str(), Some(params), sink)
                    .await;
            envelope::finish(&mut response, &client_id, method);
            done.store(true, Ordering::Release);
            // Awaited: the response always gets in, even behind a full progress queue.
            let _ = tx.send(response).await;
        })
    };
    Call {
        rx,
        _guard: CancelOnDrop {
            context,
            identity,
            internal,
            method,
            done,
            task: task.abort_handle(),
        },
    }
}

/// How long a streamable answer waits for its first message before it commits to SSE (then
/// keep-alive comments hold the connection open through proxies).
const SSE_COMMIT_AFTER: Duration = Duration::from_secs(10);

fn is_response(msg: &Value) -> bool {
    msg.get("result").is_some() || msg.get("error").is_some()
}

/// The answer: JSON when the response comes first (with the revision's status for an
/// error, so a refused call gets its 400 or 404 even from a client that accepts SSE); an SSE
/// stream once a progress notification comes first, or the call runs silent for
/// [`SSE_COMMIT_AFTER`]. The handler's future holds the call until then: a client that goes
/// away meanwhile cancels it too.
async fn respond(mut call: Call, stream: bool) -> Response {
    let first = if stream {
        match tokio::time::timeout(SSE_COMMIT_AFTER, call.rx.recv()).await {
            Ok(first) => first,
            Err(_) => return sse(call, None),
        }
    } else {
        call.rx.recv().await
    };
    match first {
        Some(msg) if !is_response(&msg) => sse(call, Some(msg)),
        Some(response) => {
            let status = response
                .pointer("/error/code")
                .and_then(Value::as_i64)
                .map_or(StatusCode::OK, envelope::status_for);
            json_response(status, &response)
        }
        None => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &jsonrpc::error(
                None,
                &RpcError::new(INTERNAL_ERROR, "the request ended without an answer"),
            ),
        ),
    }
}

/// An SSE answer: `first` (if any), this request's further progress notifications, then its
/// response; the stream ends with the response. Dropping it earlier (the client went away)
/// cancels the request.
fn sse(call: Call, first: Option<Value>) -> Response {
    let rest = futures::stream::unfold(Some(call), |state| async move {
        let mut call = state?;
        let msg = call.rx.recv().await?;
        let last = is_response(&msg);
        Some((msg, (!last).then_some(call)))
    });
    let events = futures::stream::iter(first)
        .chain(rest)
        .map(|msg| Ok::<_, Infallible>(Event::default().event("message").data(msg.to_string())));
    let mut r = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    r.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// Cancels a request whose answer nobody will read: the gateway's work stops, and the
/// backend that holds it gets `notifications/cancelled` (sent with the live request's
/// credentials).
struct CancelOnDrop {
    context: Arc<Session>,
    identity: Identity,
    internal: Value,
    method: Method,
    done: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.done.load(Ordering::Acquire) {
            return;
        }
        self.task.abort();
        tracing::info!(target: "audit", subject = self.identity.subject(), session = %self.context.id, method = self.method.as_str(), outcome = "cancelled", "request");
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (context, identity, internal) =
            (self.context.clone(), self.identity.clone(), self.internal.clone());
        rt.spawn(async move {
            let params = json!({
                "requestId": internal,
                "reason": "the client closed the response stream",
            });
            methods::handle_notification(
                &context,
                &identity,
                notification::CANCELLED,
                Some(params),
            )
            .await;
            context.untrack(&internal);
        });
    }
}
