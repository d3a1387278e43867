//! MCP client connections from the gateway to its backends.
//!
//! A [`BackendDef`] is one configured backend (shared by all sessions). A [`Connection`] is one
//! MCP session with that backend on behalf of one client session; it carries no identity of its
//! own: every call takes the credential headers derived from the live request (invariant I1).
//! Backend `Mcp-Session-Id`s are exposed as hints so a restored session can reuse them (I7).

mod catalog;
mod error;
mod legacy_sse;
mod streamable;

pub use catalog::Catalog;
pub use error::BackendError;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use vmcp_types::config::{BackendConfig, BackendTransport};

use crate::auth::outgoing::CredentialSource;
use crate::protocol::LATEST_VERSION;

/// Credential headers for one backend call.
pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// A message a backend sent on its own (not the response to a gateway request).
#[derive(Debug)]
pub struct BackendEvent {
    /// The backend.
    pub backend: Arc<str>,
    /// A notification, or a request to the client (sampling, elicitation, roots).
    pub message: Value,
    /// For a request to the client: where its answer goes (the backend is waiting for it).
    pub reply: Option<oneshot::Sender<Value>>,
    /// For a request that came on the response stream of a client's call: that stream, so the
    /// client is asked where it is listening for the call.
    pub call_stream: Option<ProgressSink>,
}

/// What a backend connection knows of the client session it serves: where the backend's own
/// messages go, and which client capabilities to declare to the backend (those the client
/// declared and the gateway relays: sampling, elicitation, roots).
#[derive(Debug, Clone)]
pub struct ClientLink {
    /// Backend messages that are not responses.
    pub events: mpsc::UnboundedSender<BackendEvent>,
    /// The `capabilities` sent in the backend's `initialize`.
    pub capabilities: Value,
    /// Counts the backend GET streams open (`backend_streams_open`).
    pub streams: prometheus_client::metrics::gauge::Gauge,
}

/// How a backend's request to the client gets its answer.
#[derive(Debug)]
pub enum Reply {
    /// Answered by the gateway itself (`ping`).
    Now(Value),
    /// Relayed to the client; the answer (with the backend's id) arrives on this channel.
    Relayed {
        /// The backend's request id (for the error answer if nothing comes back).
        id: Value,
        /// The answer.
        answer: oneshot::Receiver<Value>,
    },
}

impl Reply {
    /// The answer to send back to the backend: the client's, or an error naming why there is
    /// none (the session went away before the client answered).
    pub async fn answer(self) -> Value {
        match self {
            Self::Now(v) => v,
            Self::Relayed { id, answer } => answer.await.unwrap_or_else(|_| {
                crate::jsonrpc::error(
                    Some(&id),
                    &crate::jsonrpc::RpcError::new(
                        crate::jsonrpc::INTERNAL_ERROR,
                        "the client session ended before it answered",
                    ),
                )
            }),
        }
    }
}

/// Where a call's progress notifications go (the client's response stream).
pub type ProgressSink = mpsc::UnboundedSender<Value>;

/// One configured backend.
#[derive(Debug)]
pub struct BackendDef {
    /// Unique name.
    pub name: Arc<str>,
    /// MCP endpoint (Streamable HTTP) or SSE endpoint (legacy).
    pub url: url::Url,
    /// Transport.
    pub transport: BackendTransport,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Credential strategy.
    pub credentials: Arc<dyn CredentialSource>,
    /// The configuration this was built from (to detect changes on reload).
    pub config: BackendConfig,
    /// The capability lists last seen from this backend, shared by sessions.
    pub catalog: Catalog,
}

/// What `initialize` told us about a backend.
#[derive(Debug, Clone, Default)]
pub struct InitInfo {
    /// Negotiated protocol revision.
    pub protocol_version: String,
    /// The backend's `capabilities`.
    pub capabilities: Value,
    /// The backend's `serverInfo`.
    pub server_info: Value,
}

/// One MCP session with one backend.
#[derive(Debug)]
pub enum Connection {
    /// Streamable HTTP.
    Streamable(streamable::StreamableConn),
    /// Legacy HTTP+SSE.
    LegacySse(legacy_sse::SseConn),
}

impl Connection {
    /// Opens a session: reuses `hint` (a stored backend session id) when given, else runs
    /// `initialize`. Server-initiated notifications are sent to `events`.
    pub async fn open(
        def: Arc<BackendDef>,
        http: reqwest::Client,
        headers: &Headers,
        hint: Option<String>,
        link: &ClientLink,
    ) -> Result<(Self, Option<InitInfo>), BackendError> {
        let events = link.events.clone();
        match def.transport {
            BackendTransport::StreamableHttp => {
                let conn = streamable::StreamableConn::new(def, http, events, link.streams.clone());
                if let Some(h) = hint {
                    conn.resume(crate::session::record::BackendHint::parse(&h));
                    return Ok((Self::Streamable(conn), None));
                }
                let c = Self::Streamable(conn);
                let info = c.initialize(headers, &link.capabilities).await?;
                Ok((c, Some(info)))
            }
            BackendTransport::Sse => {
                let conn = legacy_sse::SseConn::connect(def, http, headers, events).await?;
                let c = Self::LegacySse(conn);
                let info = c.initialize(headers, &link.capabilities).await?;
                Ok((c, Some(info)))
            }
        }
    }

    async fn initialize(
        &self,
        headers: &Headers,
        capabilities: &Value,
    ) -> Result<InitInfo, BackendError> {
        let params = json!({
            "protocolVersion": LATEST_VERSION,
            "capabilities": capabilities,
            "clientInfo": { "name": "vmcp-gateway", "version": env!("CARGO_PKG_VERSION") },
        });
        let id = self.next_id();
        let result = self
            .request(id, crate::protocol::Method::Initialize.as_str(), Some(params), headers, None)
            .await?;
        let info = InitInfo {
            protocol_version: result
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or(LATEST_VERSION)
                .to_owned(),
            capabilities: result.get("capabilities").cloned().unwrap_or_else(|| json!({})),
            server_info: result.get("serverInfo").cloned().unwrap_or(Value::Null),
        };
        if let Self::Streamable(s) = self {
            s.set_protocol_version(&info.protocol_version);
        }
        self.notify(crate::protocol::notification::INITIALIZED, None, headers).await?;
        Ok(info)
    }

    /// A fresh request id for this connection.
    pub fn next_id(&self) -> u64 {
        match self {
            Self::Streamable(c) => c.ids.fetch_add(1, Ordering::Relaxed),
            Self::LegacySse(c) => c.ids.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Sends a request with id `id`; returns its `result` (or the backend's error).
    pub async fn request(
        &self,
        id: u64,
        method: &str,
        params: Option<Value>,
        headers: &Headers,
        progress: Option<ProgressSink>,
    ) -> Result<Value, BackendError> {
        match self {
            Self::Streamable(c) => c.request(id, method, params, headers, progress).await,
            Self::LegacySse(c) => c.request(id, method, params, headers, progress).await,
        }
    }

    /// Sends a notification.
    pub async fn notify(
        &self,
        method: &str,
        params: Option<Value>,
        headers: &Headers,
    ) -> Result<(), BackendError> {
        match self {
            Self::Streamable(c) => c.notify(method, params, headers).await,
            Self::LegacySse(c) => c.notify(method, params, headers).await,
        }
    }

    /// Reopens the server-notification stream if it ended, with this request's credentials
    /// (throttled; for calls made while the client holds its GET stream).
    pub fn ensure_stream(&self, headers: &Headers) {
        if let Self::Streamable(c) = self {
            c.ensure_stream(headers);
        }
    }

    /// Opens the server-notification stream now if it is not running (the client opened its
    /// GET stream). Backends offer no stream: nothing happens.
    pub fn start_stream(&self, headers: &Headers) {
        if let Self::Streamable(c) = self {
            c.start_stream(headers);
        }
    }

    /// Closes the server-notification stream: an idle session holds no socket (I8).
    pub fn stop_stream(&self) {
        if let Self::Streamable(c) = self {
            c.stop_stream();
        }
    }

    /// The backend's session id and negotiated protocol version, in the stored hint form
    /// (for restore, I7), if it issued a session id.
    pub fn session_hint(&self) -> Option<String> {
        match self {
            Self::Streamable(c) => c.hint().map(|h| h.encode()),
            Self::LegacySse(_) => None,
        }
    }

    /// Ends the backend session (DELETE for Streamable HTTP; closes the stream for SSE).
    pub async fn close(&self, headers: &Headers) {
        match self {
            Self::Streamable(c) => c.close(headers).await,
            Self::LegacySse(c) => c.close(),
        }
    }

    /// Follows `nextCursor` pages of a list method and returns the items under `key`.
    pub async fn list_all(
        &self,
        method: &str,
        key: &str,
        headers: &Headers,
    ) -> Result<Vec<Value>, BackendError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let params = cursor.as_ref().map(|c| json!({ "cursor": c }));
            let id = self.next_id();
            let page = self.request(id, method, params, headers, None).await?;
            if let Some(Value::Array(a)) = page.get(key) {
                items.extend(a.iter().cloned());
            }
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
                _ => return Ok(items),
            }
        }
        Ok(items)
    }
}

/// Request ids start at 1 on every connection.
fn new_ids() -> AtomicU64 {
    AtomicU64::new(1)
}

/// Applies credential and protocol headers to a backend request.
fn apply_headers(mut rb: reqwest::RequestBuilder, headers: &Headers) -> reqwest::RequestBuilder {
    for (k, v) in headers {
        rb = rb.header(k, v);
    }
    rb
}

/// Handles a JSON-RPC message the backend sent on a stream that is not the awaited response:
/// progress for this call goes to `progress`; a request to the client is answered here
/// (`ping`) or relayed to the client through the session (its [`Reply`] must be awaited and
/// POSTed back); everything else goes to `events`.
fn route_incoming(
    backend: &Arc<str>,
    msg: Value,
    progress: Option<&ProgressSink>,
    events: &mpsc::UnboundedSender<BackendEvent>,
) -> Option<Reply> {
    let method = msg.get("method").and_then(Value::as_str).unwrap_or_default();
    let has_id = msg.get("id").is_some();
    if has_id && !method.is_empty() {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        if method == crate::protocol::Method::Ping.as_str() {
            return Some(Reply::Now(crate::jsonrpc::result(&id, json!({}))));
        }
        let (tx, answer) = oneshot::channel();
        let event = BackendEvent {
            backend: backend.clone(),
            message: msg,
            reply: Some(tx),
            call_stream: progress.cloned(),
        };
        // If the session is gone the sender is dropped and the answer says so.
        let _ = events.send(event);
        return Some(Reply::Relayed { id, answer });
    }
    if method == crate::protocol::notification::PROGRESS
        && let Some(p) = progress
    {
        let _ = p.send(msg);
        return None;
    }
    let _ = events.send(BackendEvent {
        backend: backend.clone(),
        message: msg,
        reply: None,
        call_stream: None,
    });
    None
}
