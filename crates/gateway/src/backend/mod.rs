//! MCP client connections from the gateway to its backends.
//!
//! A [`BackendDef`] is one configured backend (shared by all sessions). A [`Connection`] is one
//! MCP session with that backend on behalf of one client session; it carries no identity of its
//! own: every call takes the credential headers derived from the live request (invariant I1).
//! Backend `Mcp-Session-Id`s are exposed as hints so a restored session can reuse them (I7).

mod catalog;
mod error;
pub(crate) mod http1_pool;
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
    pub events: EventSink,
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

/// Where a call's progress notifications go (the client's response stream). Bounded (L10): a
/// backend cannot queue more than [`PROGRESS_QUEUE`] of them for a client that reads slowly;
/// beyond that progress notifications are dropped (the response itself always arrives).
pub type ProgressSink = mpsc::Sender<Value>;

/// Capacity of a call's [`ProgressSink`].
pub const PROGRESS_QUEUE: usize = 64;

/// Where a session's backend messages that are not responses go ([`ClientLink::events`]).
/// Bounded (L10): beyond [`EVENT_QUEUE`] waiting messages, notifications are dropped and
/// requests to the client are answered with an error at once.
pub type EventSink = mpsc::Sender<BackendEvent>;

/// Capacity of a session's [`EventSink`].
pub const EVENT_QUEUE: usize = 256;

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
    /// The content of the secret files `credentials` was built from (to detect a rotated
    /// secret on reload).
    pub credential_fingerprint: crate::credential_files::Fingerprint,
    /// The configuration this was built from (to detect changes on reload).
    pub config: BackendConfig,
    /// The capability lists last seen from this backend, shared by sessions.
    pub catalog: Catalog,
    /// Keep-alive connections for the POSTs of Streamable HTTP sessions to a plain `http://`
    /// URL (`None`: reqwest). Built with [`http1_pool::Pool::for_url`] from `url`.
    pub(crate) http1: Option<http1_pool::Pool>,
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

    /// Follows `nextCursor` pages of a list method and returns the items under `key`. At most
    /// [`MAX_LIST_PAGES`] pages (L10: this runs under the member's connect lock): a backend
    /// whose cursor never ends, or repeats, fails the list instead of holding the lock.
    pub async fn list_all(
        &self,
        method: &str,
        key: &str,
        headers: &Headers,
    ) -> Result<Vec<Value>, BackendError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let params = cursor.as_ref().map(|c| json!({ "cursor": c }));
            let id = self.next_id();
            let page = self.request(id, method, params, headers, None).await?;
            if let Some(Value::Array(a)) = page.get(key) {
                items.extend(a.iter().cloned());
            }
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(c) if cursor.as_deref() == Some(c) => {
                    return Err(BackendError::Protocol(format!(
                        "{method}: the backend repeated its nextCursor"
                    )));
                }
                Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
                _ => return Ok(items),
            }
        }
        Err(BackendError::Protocol(format!("{method}: more than {MAX_LIST_PAGES} pages")))
    }
}

/// Most pages [`Connection::list_all`] follows.
pub const MAX_LIST_PAGES: usize = 100;

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
    events: &EventSink,
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
        if let Err(mpsc::error::TrySendError::Full(_)) = events.try_send(event) {
            tracing::warn!(backend = %backend, "session event queue full; the backend's request to the client is refused");
            let error = crate::jsonrpc::RpcError::new(
                crate::jsonrpc::INTERNAL_ERROR,
                "the gateway has too many messages of this session waiting; retry later",
            );
            return Some(Reply::Now(crate::jsonrpc::error(Some(&id), &error)));
        }
        return Some(Reply::Relayed { id, answer });
    }
    if method == crate::protocol::notification::PROGRESS
        && let Some(p) = progress
    {
        if let Err(mpsc::error::TrySendError::Full(_)) = p.try_send(msg) {
            tracing::debug!(backend = %backend, "progress queue of a call full; notification dropped");
        }
        return None;
    }
    let event =
        BackendEvent { backend: backend.clone(), message: msg, reply: None, call_stream: None };
    if let Err(mpsc::error::TrySendError::Full(_)) = events.try_send(event) {
        tracing::warn!(backend = %backend, "session event queue full; notification dropped");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A Streamable HTTP backend whose `tools/list` never stops paging (a new cursor each
    /// time, or the same one with `repeat`); counts the pages served.
    async fn endless_pages(repeat: bool) -> (url::Url, Arc<AtomicUsize>) {
        let served = Arc::new(AtomicUsize::new(0));
        let n = served.clone();
        let app = axum::Router::new().route(
            "/mcp",
            axum::routing::post(move |axum::Json(req): axum::Json<Value>| {
                let page = n.fetch_add(1, Ordering::SeqCst);
                let cursor = if repeat { "same".to_owned() } else { format!("c{page}") };
                async move {
                    axum::Json(json!({"jsonrpc": "2.0", "id": req["id"], "result": {
                        "tools": [{"name": format!("t{page}"), "inputSchema": {}}],
                        "nextCursor": cursor}}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}/mcp", listener.local_addr().unwrap()));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url.unwrap(), served)
    }

    async fn resumed(url: url::Url) -> Connection {
        resumed_with(url, Duration::from_secs(5)).await
    }

    async fn resumed_with(url: url::Url, timeout: Duration) -> Connection {
        let config = BackendConfig {
            name: "pager".into(),
            url: url.to_string(),
            transport: BackendTransport::StreamableHttp,
            timeout,
            auth: Default::default(),
        };
        let def = Arc::new(BackendDef {
            name: Arc::from("pager"),
            http1: http1_pool::Pool::for_url(&url),
            url,
            transport: BackendTransport::StreamableHttp,
            timeout,
            credentials: Arc::new(crate::auth::outgoing::Unauthenticated),
            credential_fingerprint: Default::default(),
            config,
            catalog: Default::default(),
        });
        let (events, _rx) = mpsc::channel(8);
        let link = ClientLink { events, capabilities: json!({}), streams: Default::default() };
        let (conn, _) =
            Connection::open(def, reqwest::Client::new(), &Vec::new(), Some("s-1".into()), &link)
                .await
                .unwrap();
        conn
    }

    /// L10: a backend that pages forever used to be asked for 1 000 pages under the member's
    /// connect lock, and its list was then used as if complete.
    #[tokio::test]
    async fn endless_or_repeated_cursors_fail_the_list_within_the_page_cap() {
        let (url, served) = endless_pages(false).await;
        let e = resumed(url).await.list_all("tools/list", "tools", &Vec::new()).await.unwrap_err();
        assert!(e.to_string().contains("more than 100 pages"), "{e}");
        assert_eq!(served.load(Ordering::SeqCst), MAX_LIST_PAGES);
        let (url, served) = endless_pages(true).await;
        let e = resumed(url).await.list_all("tools/list", "tools", &Vec::new()).await.unwrap_err();
        assert!(e.to_string().contains("repeated"), "{e}");
        assert_eq!(served.load(Ordering::SeqCst), 2);
    }

    /// A backend that accepts the connection but never answers: the call fails with the
    /// backend's timeout (on the lean HTTP/1.1 client, which has no timeout of its own).
    #[tokio::test]
    async fn a_silent_backend_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}/mcp", listener.local_addr().unwrap()));
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let t = Duration::from_millis(300);
        let conn = resumed_with(url.unwrap(), t).await;
        let Connection::Streamable(c) = &conn else { unreachable!() };
        assert!(c.uses_lean_client());
        let e = conn.request(1, "tools/list", None, &Vec::new(), None).await.unwrap_err();
        assert!(matches!(e, BackendError::Timeout(d) if d == t), "{e:?}");
        let e = conn.notify("notifications/initialized", None, &Vec::new()).await.unwrap_err();
        assert!(matches!(e, BackendError::Timeout(d) if d == t), "{e:?}");
    }

    /// L10: the queues a backend fills are bounded; when full, progress and notifications are
    /// dropped (never blocking the backend's stream) and a request to the client is answered
    /// with an error at once instead of waiting forever.
    #[tokio::test]
    async fn full_queues_drop_notifications_and_refuse_requests() {
        let backend: Arc<str> = Arc::from("a");
        let (events, mut rx) = mpsc::channel(EVENT_QUEUE);
        let (progress, mut prx) = mpsc::channel(PROGRESS_QUEUE);
        let note = |i: usize| json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"i": i}});
        let prog = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}});
        for i in 0..EVENT_QUEUE * 4 {
            assert!(route_incoming(&backend, note(i), Some(&progress), &events).is_none());
            assert!(route_incoming(&backend, prog.clone(), Some(&progress), &events).is_none());
        }
        assert_eq!(rx.len(), EVENT_QUEUE);
        assert_eq!(prx.len(), PROGRESS_QUEUE);
        let ask =
            json!({"jsonrpc": "2.0", "id": 7, "method": "sampling/createMessage", "params": {}});
        let Some(Reply::Now(answer)) = route_incoming(&backend, ask.clone(), None, &events) else {
            panic!("a request to a full queue must be answered at once");
        };
        assert_eq!(answer["id"], 7);
        assert!(answer["error"]["message"].as_str().unwrap().contains("too many"), "{answer}");
        // Room again: the request is relayed.
        rx.recv().await.unwrap();
        prx.recv().await.unwrap();
        assert!(matches!(
            route_incoming(&backend, ask, None, &events),
            Some(Reply::Relayed { .. })
        ));
    }
}
