//! A minimal MCP client over Streamable HTTP: one HTTP/1.1 keep-alive connection (TCP_NODELAY,
//! no pool) and sessions that are plain values, so one connection can create many sessions (the
//! idle-session workload) or carry one session's calls (the load workloads).

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// The protocol revision the client asks for (every target here speaks it).
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The endpoint URL is not `http://host:port/path`.
    #[error("bad endpoint URL {0:?}")]
    Url(String),
    /// TCP connect failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// HTTP-level failure (connection closed, bad framing, …).
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// Building the request failed (bad header value).
    #[error("request: {0}")]
    Request(#[from] http::Error),
    /// The server answered with a non-success status.
    #[error("{method}: HTTP {status}: {body}")]
    Status {
        /// The JSON-RPC method.
        method: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer was not a JSON-RPC result.
    #[error("{method}: {detail}")]
    Protocol {
        /// The JSON-RPC method.
        method: String,
        /// What was wrong.
        detail: String,
    },
    /// No answer in time.
    #[error("{0}: no answer within the request timeout")]
    Timeout(String),
}

/// Host, port and path of an `http://` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`.
    pub authority: String,
    /// Path (and query), e.g. `/mcp`.
    pub path: String,
}

impl Endpoint {
    /// Parses `http://host:port/path`.
    pub fn parse(url: &str) -> Result<Self, McpError> {
        let uri: http::Uri = url.parse().map_err(|_| McpError::Url(url.to_owned()))?;
        if uri.scheme_str() != Some("http") || uri.port_u16().is_none() {
            return Err(McpError::Url(url.to_owned()));
        }
        let authority = uri.authority().ok_or_else(|| McpError::Url(url.to_owned()))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Ok(Self { authority: authority.to_string(), path: path.to_owned() })
    }
}

/// One MCP session: its id, negotiated protocol revision and the bearer token it presents.
#[derive(Debug, Clone)]
pub struct Session {
    /// `Mcp-Session-Id` (absent when the server runs stateless).
    pub id: Option<String>,
    /// The negotiated protocol revision.
    pub protocol: String,
    /// `Authorization: Bearer …` value, when the target wants one.
    pub bearer: Option<String>,
}

/// One keep-alive HTTP/1.1 connection to an MCP endpoint.
#[derive(Debug)]
pub struct Conn {
    endpoint: Endpoint,
    sender: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
    next_id: u64,
}

impl Conn {
    /// A connection to `endpoint` (opened lazily, reopened when the server closes it).
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        Self { endpoint, sender: None, timeout, next_id: 0 }
    }

    /// The same, numbering its JSON-RPC ids from `base`: connections that share one session
    /// must not reuse each other's ids (a server may pair answers with requests by id).
    pub fn with_id_base(endpoint: Endpoint, timeout: Duration, base: u64) -> Self {
        Self { next_id: base, ..Self::new(endpoint, timeout) }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, McpError> {
        let alive = match self.sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !alive {
            let addr = self.endpoint.authority.clone();
            let stream = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|source| McpError::Connect { addr: addr.clone(), source })?;
            stream.set_nodelay(true).map_err(|source| McpError::Connect { addr, source })?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or_else(|| McpError::Protocol {
            method: "connect".into(),
            detail: "no connection".into(),
        })
    }

    /// Sends one JSON-RPC message; returns the response headers' session id and the body.
    async fn post(
        &mut self,
        session: Option<&Session>,
        method: &str,
        message: Value,
    ) -> Result<(Option<String>, Option<Value>), McpError> {
        let limit = self.timeout;
        let work = async {
            let endpoint = self.endpoint.clone();
            let mut req = http::Request::post(&endpoint.path)
                .header(HOST, &endpoint.authority)
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "application/json, text/event-stream");
            if let Some(s) = session {
                if let Some(id) = &s.id {
                    req = req.header("mcp-session-id", id);
                }
                req = req.header("mcp-protocol-version", &s.protocol);
                if let Some(b) = &s.bearer {
                    req = req.header(AUTHORIZATION, format!("Bearer {b}"));
                }
            }
            let req = req.body(Full::new(Bytes::from(message.to_string())))?;
            let resp = self.sender().await?.send_request(req).await?;
            let status = resp.status();
            let sid = resp
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let sse = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let body = resp.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                return Err(McpError::Status {
                    method: method.to_owned(),
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                });
            }
            if body.is_empty() {
                return Ok((sid, None));
            }
            let value =
                if sse { response_from_sse(&body) } else { serde_json::from_slice(&body).ok() };
            match value {
                Some(v) => Ok((sid, Some(v))),
                None => Err(McpError::Protocol {
                    method: method.to_owned(),
                    detail: format!(
                        "unreadable body: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    ),
                }),
            }
        };
        match tokio::time::timeout(limit, work).await {
            Ok(r) => {
                if r.is_err() {
                    // A failed exchange may leave the connection mid-message: start afresh.
                    self.sender = None;
                }
                r
            }
            Err(_) => {
                self.sender = None;
                Err(McpError::Timeout(method.to_owned()))
            }
        }
    }

    /// A JSON-RPC request; returns its `result`.
    pub async fn request(
        &mut self,
        session: &Session,
        method: &str,
        params: Value,
    ) -> Result<Value, McpError> {
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        let (_, body) = self.post(Some(session), method, msg).await?;
        result_of(method, body)
    }

    /// `DELETE` the session (ends it on the server); the status code.
    pub async fn delete(&mut self, session: &Session) -> Result<u16, McpError> {
        let Some(id) = &session.id else { return Ok(0) };
        let endpoint = self.endpoint.clone();
        let mut req = http::Request::delete(&endpoint.path)
            .header(HOST, &endpoint.authority)
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", &session.protocol);
        if let Some(b) = &session.bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {b}"));
        }
        let req = req.body(Full::new(Bytes::new()))?;
        let limit = self.timeout;
        let work = async {
            let resp = self.sender().await?.send_request(req).await?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await?;
            Ok(status)
        };
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => {
                self.sender = None;
                Err(McpError::Timeout("DELETE".into()))
            }
        }
    }

    /// `initialize` + `notifications/initialized`: a new session.
    pub async fn open_session(&mut self, bearer: Option<String>) -> Result<Session, McpError> {
        self.next_id += 1;
        let init = json!({"jsonrpc": "2.0", "id": self.next_id, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "vmcp-bench", "version": env!("CARGO_PKG_VERSION")},
        }});
        let pre = Session { id: None, protocol: PROTOCOL_VERSION.to_owned(), bearer };
        let (sid, body) = self.post(Some(&pre), "initialize", init).await?;
        let result = result_of("initialize", body)?;
        let protocol = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(PROTOCOL_VERSION)
            .to_owned();
        let session = Session { id: sid, protocol, bearer: pre.bearer };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.post(Some(&session), "notifications/initialized", note).await?;
        Ok(session)
    }
}

fn result_of(method: &str, body: Option<Value>) -> Result<Value, McpError> {
    let Some(body) = body else {
        return Err(McpError::Protocol { method: method.to_owned(), detail: "empty body".into() });
    };
    if let Some(r) = body.get("result") {
        return Ok(r.clone());
    }
    Err(McpError::Protocol {
        method: method.to_owned(),
        detail: match body.get("error") {
            Some(e) => format!("JSON-RPC error {e}"),
            None => format!("no result in {body}"),
        },
    })
}

/// The JSON-RPC response in an SSE body: the first event whose data is a JSON object with a
/// `result` or an `error` (notifications before it are skipped).
pub fn response_from_sse(body: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(body).ok()?;
    let mut data = String::new();
    let mut found = None;
    let mut flush = |data: &mut String| {
        if found.is_none()
            && let Ok(v) = serde_json::from_str::<Value>(data)
            && (v.get("result").is_some() || v.get("error").is_some())
        {
            found = Some(v);
        }
        data.clear();
    };
    for line in text.lines() {
        if line.is_empty() {
            flush(&mut data);
        } else if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    flush(&mut data);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parses_host_port_and_path() {
        let e = Endpoint::parse("http://127.0.0.1:4483/mcp").unwrap();
        assert_eq!(e, Endpoint { authority: "127.0.0.1:4483".into(), path: "/mcp".into() });
        assert!(Endpoint::parse("https://127.0.0.1:1/mcp").is_err());
        assert!(Endpoint::parse("http://127.0.0.1/mcp").is_err());
    }

    #[test]
    fn sse_body_yields_the_response_not_the_notification() {
        let body = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n\
id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"ok\":true}}\n\n";
        let v = response_from_sse(body).unwrap();
        assert_eq!(v["result"]["ok"], true);
    }

    #[test]
    fn sse_body_without_a_trailing_blank_line_and_priming_event() {
        let body = b"id: 0\ndata:\n\nretry: 3000\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-1}}";
        let v = response_from_sse(body).unwrap();
        assert_eq!(v["error"]["code"], -1);
        assert!(response_from_sse(b"data: nope\n\n").is_none());
    }

    #[test]
    fn result_of_reports_jsonrpc_errors() {
        let e = result_of("tools/call", Some(json!({"error": {"code": -32602}}))).unwrap_err();
        assert!(e.to_string().contains("-32602"), "{e}");
        assert!(result_of("x", None).is_err());
    }
}
