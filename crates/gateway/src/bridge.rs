//! `vmcp-gateway bridge -- CMD ARGS`: serves Streamable HTTP for a stdio MCP server, so the
//! operator can run stdio servers behind the gateway. Each MCP session gets its own child
//! process (started at `initialize`, killed at DELETE, after [`BridgeLimits::idle_timeout`]
//! without a request or an open GET stream, or when the bridge stops; at most
//! [`BridgeLimits::max_sessions`] at once: M8). Requests are
//! written to its stdin, responses matched by id from its stdout, and everything else it sends
//! goes to the session's GET stream. With `--auth-token-file`, only callers presenting that
//! token reach `/mcp` ([`crate::bridge_auth`]).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::convert::Infallible;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use rand::RngCore;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;
use tokio_stream::wrappers::ReceiverStream;

use crate::jsonrpc::{self, Message, PARSE_ERROR, RpcError};
use crate::session::outbox::Outbox;

use crate::bridge_auth::{BridgeToken, require_token};
use crate::http::EdgeError;
use crate::http::error::json_response;
use crate::protocol::{Method, SESSION_HEADER};
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Why the bridge could not serve.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The stdio server could not be started.
    #[error("cannot start the stdio server `{command}`: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The stdio server closed its stdin/stdout or exited.
    #[error("the stdio server exited")]
    Exited,
    /// No response in time.
    #[error("the stdio server did not answer within {0:?}")]
    Timeout(Duration),
}

/// Bounds on the child processes of a bridge.
#[derive(Debug, Clone, Copy)]
pub struct BridgeLimits {
    /// A session with no request and no open GET stream for this long is ended (its child
    /// killed); the gateway re-initializes it on next use (I7).
    pub idle_timeout: Duration,
    /// Sessions (child processes) at once; `initialize` beyond it is refused with 503.
    pub max_sessions: usize,
}

impl Default for BridgeLimits {
    fn default() -> Self {
        Self { idle_timeout: Duration::from_secs(600), max_sessions: 256 }
    }
}

/// The command the bridge runs per session.
#[derive(Debug, Clone)]
pub struct BridgeCommand {
    /// Program.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
}

type Pending = Mutex<HashMap<String, oneshot::Sender<Value>>>;

#[derive(Debug)]
struct StdioSession {
    child: tokio::sync::Mutex<Child>,
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Arc<Pending>,
    outbox: Arc<Outbox>,
    last_used: Mutex<std::time::Instant>,
}

impl StdioSession {
    async fn start(cmd: &BridgeCommand) -> Result<Arc<Self>, BridgeError> {
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| BridgeError::Spawn { command: cmd.program.clone(), source })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(BridgeError::Exited);
        };
        let pending: Arc<Pending> = Arc::new(Mutex::new(HashMap::new()));
        let outbox = Arc::new(Outbox::default());
        let (p, o) = (pending.clone(), outbox.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                    tracing::debug!(line, "stdio server wrote a non-JSON line; ignored");
                    continue;
                };
                let is_response = msg.get("method").is_none();
                let waiter = match (is_response, msg.get("id")) {
                    (true, Some(id)) => p.lock().remove(&id.to_string()),
                    _ => None,
                };
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(msg);
                    }
                    None => o.send(msg),
                }
            }
            p.lock().clear();
        });
        Ok(Arc::new(Self {
            child: tokio::sync::Mutex::new(child),
            stdin: tokio::sync::Mutex::new(stdin),
            pending,
            outbox,
            last_used: Mutex::new(std::time::Instant::now()),
        }))
    }

    fn used(&self) {
        *self.last_used.lock() = std::time::Instant::now();
    }

    /// Idle longer than `limit`, with no GET stream open?
    fn idle(&self, limit: Duration) -> bool {
        !self.outbox.is_attached() && self.last_used.lock().elapsed() > limit
    }

    async fn write(&self, msg: &Value) -> Result<(), BridgeError> {
        let mut line = msg.to_string();
        line.push('\n');
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(line.as_bytes()).await.map_err(|_| BridgeError::Exited)?;
        stdin.flush().await.map_err(|_| BridgeError::Exited)
    }

    async fn request(&self, id: &Value, msg: &Value) -> Result<Value, BridgeError> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id.to_string(), tx);
        self.write(msg).await?;
        let r = tokio::time::timeout(REQUEST_TIMEOUT, rx).await;
        self.pending.lock().remove(&id.to_string());
        r.map_err(|_| BridgeError::Timeout(REQUEST_TIMEOUT))?.map_err(|_| BridgeError::Exited)
    }

    async fn kill(&self) {
        let _ = self.child.lock().await.kill().await;
        self.outbox.close();
    }
}

#[derive(Debug, Clone)]
struct BridgeState {
    command: Arc<BridgeCommand>,
    limits: BridgeLimits,
    sessions: Arc<Mutex<HashMap<String, Arc<StdioSession>>>>,
}

impl BridgeState {
    fn session(&self, headers: &HeaderMap) -> Result<Arc<StdioSession>, EdgeError> {
        let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            return Err(EdgeError::Refused(
                StatusCode::BAD_REQUEST,
                "missing Mcp-Session-Id header",
            ));
        };
        let session = self
            .sessions
            .lock()
            .get(id)
            .cloned()
            .ok_or(EdgeError::Session(crate::session::SessionError::NotFound))?;
        session.used();
        Ok(session)
    }

    fn count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Ends the sessions idle longer than the limit (runs while the bridge runs).
    fn spawn_reaper(&self) {
        let me = self.clone();
        let every = (self.limits.idle_timeout / 4)
            .clamp(Duration::from_millis(200), Duration::from_secs(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let idle: Vec<(String, Arc<StdioSession>)> = {
                    let mut m = me.sessions.lock();
                    let ids: Vec<String> = m
                        .iter()
                        .filter(|(_, s)| s.idle(me.limits.idle_timeout))
                        .map(|(id, _)| id.clone())
                        .collect();
                    ids.into_iter().filter_map(|id| m.remove(&id).map(|s| (id, s))).collect()
                };
                for (id, s) in idle {
                    tracing::info!(session = %id, "idle stdio session ended");
                    s.kill().await;
                }
            }
        });
    }
}

fn failure(id: &Value, e: &BridgeError) -> EdgeError {
    EdgeError::Rpc {
        status: StatusCode::OK,
        id: Some(id.clone()),
        error: RpcError::new(jsonrpc::INTERNAL_ERROR, e.to_string()),
    }
}

async fn post(
    State(st): State<BridgeState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, EdgeError> {
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        EdgeError::bad_request(None, RpcError::new(PARSE_ERROR, format!("parse error: {e}")))
    })?;
    let msg = jsonrpc::classify(value.clone()).map_err(|e| EdgeError::bad_request(None, e))?;
    if let Message::Request { id, method, .. } = &msg
        && method == Method::Initialize.as_str()
    {
        if st.count() >= st.limits.max_sessions {
            tracing::warn!(
                max = st.limits.max_sessions,
                "stdio session limit reached; initialize refused"
            );
            return Err(EdgeError::Overloaded("too many sessions; retry later"));
        }
        let session = StdioSession::start(&st.command).await.map_err(|e| failure(id, &e))?;
        let resp = match session.request(id, &value).await {
            Ok(r) => r,
            Err(e) => {
                session.kill().await;
                return Err(failure(id, &e));
            }
        };
        // Idle time counts from the end of initialize (a slow server start is not idleness).
        session.used();
        let mut b = [0u8; 16];
        rand::rng().fill_bytes(&mut b);
        let sid = hex::encode(b);
        st.sessions.lock().insert(sid.clone(), session);
        let mut r = json_response(StatusCode::OK, &resp);
        if let Ok(v) = HeaderValue::from_str(&sid) {
            r.headers_mut().insert(SESSION_HEADER, v);
        }
        return Ok(r);
    }
    let session = st.session(&headers)?;
    match msg {
        Message::Request { id, .. } => match session.request(&id, &value).await {
            Ok(r) => Ok(json_response(StatusCode::OK, &r)),
            Err(e) => Err(failure(&id, &e)),
        },
        _ => match session.write(&value).await {
            Ok(()) => Ok(StatusCode::ACCEPTED.into_response()),
            Err(e) => Err(EdgeError::BadGateway(e.to_string())),
        },
    }
}

async fn get_stream(
    State(st): State<BridgeState>,
    headers: HeaderMap,
) -> Result<Response, EdgeError> {
    let session = st.session(&headers)?;
    let stream = ReceiverStream::new(session.outbox.attach())
        .map(|v| Ok::<_, Infallible>(Event::default().event("message").data(v.to_string())));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

async fn delete(State(st): State<BridgeState>, headers: HeaderMap) -> Result<Response, EdgeError> {
    let id =
        headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let session = st.sessions.lock().remove(&id);
    let s = session.ok_or(EdgeError::Session(crate::session::SessionError::NotFound))?;
    s.kill().await;
    Ok(StatusCode::OK.into_response())
}

/// The bridge's router (`/mcp`, `/healthz`); starts the idle reaper (call inside a runtime).
/// With a `token`, `/mcp` admits only callers presenting it ([`crate::bridge_auth`]).
pub fn router(command: BridgeCommand, limits: BridgeLimits, token: Option<BridgeToken>) -> Router {
    let state = BridgeState {
        command: Arc::new(command),
        limits,
        sessions: Arc::new(Mutex::new(HashMap::new())),
    };
    state.spawn_reaper();
    let mut mcp = Router::new().route("/mcp", get(get_stream).post(post).delete(delete));
    if let Some(token) = token {
        mcp = mcp.route_layer(axum::middleware::from_fn_with_state(token, require_token));
    }
    mcp.route("/healthz", get(|| async { "ok" })).with_state(state)
}
