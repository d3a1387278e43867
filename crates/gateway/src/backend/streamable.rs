//! Streamable HTTP client side: one POST per message, JSON or SSE answers, a GET stream for
//! server-initiated messages, `Mcp-Session-Id` kept per backend session.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::task::AbortHandle;

use super::{
    BackendDef, BackendError, EventSink, Headers, ProgressSink, http1_pool, route_incoming,
};
use crate::jsonrpc;
use crate::protocol::{SESSION_HEADER, VERSION_HEADER};
use crate::sse;

const ACCEPT: &str = "application/json, text/event-stream";
const JSON: http::HeaderValue = http::HeaderValue::from_static("application/json");

/// Delay before resuming a response stream whose backend sent no `retry:`.
const RESUME_AFTER: Duration = Duration::from_millis(500);

/// The body of a backend's answer: from the backend's lean HTTP/1.1 pool (plain `http://`)
/// or from reqwest.
#[derive(Debug)]
pub(super) enum AnswerBody {
    /// From [`http1_pool::Pool`].
    Lean(hyper::body::Incoming),
    /// From reqwest.
    Reqwest(reqwest::Body),
}

/// A backend's answer to a POST, or to the GET resuming a response stream.
type Answer = http::Response<AnswerBody>;

impl AnswerBody {
    /// The next chunk of data (trailers are skipped); `None` at the end. `timeout` only names
    /// the backend's timeout in a reqwest timeout error.
    async fn chunk(&mut self, timeout: Duration) -> Result<Option<Bytes>, BackendError> {
        loop {
            let frame = match self {
                Self::Lean(b) => {
                    b.frame().await.transpose().map_err(|e| http1_pool::body_failed(&e))
                }
                Self::Reqwest(b) => {
                    b.frame().await.transpose().map_err(|e| BackendError::from_reqwest(e, timeout))
                }
            }?;
            match frame.map(hyper::body::Frame::into_data) {
                None => return Ok(None),
                Some(Ok(data)) => return Ok(Some(data)),
                Some(Err(_trailers)) => {}
            }
        }
    }

    /// The whole body.
    async fn bytes(self, timeout: Duration) -> Result<Bytes, BackendError> {
        match self {
            Self::Lean(b) => {
                b.collect().await.map(|c| c.to_bytes()).map_err(|e| http1_pool::body_failed(&e))
            }
            Self::Reqwest(b) => b
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|e| BackendError::from_reqwest(e, timeout)),
        }
    }
}

/// A Streamable HTTP session with one backend.
#[derive(Debug)]
pub struct StreamableConn {
    /// Counts the open GET streams (`backend_streams_open`).
    streams: prometheus_client::metrics::gauge::Gauge,
    def: Arc<BackendDef>,
    http: reqwest::Client,
    session_id: Mutex<Option<String>>,
    protocol_version: Mutex<String>,
    pub(super) ids: AtomicU64,
    events: EventSink,
    stream: Mutex<Option<AbortHandle>>,
    /// The backend answered the GET with 400/405: it offers no stream; never retry.
    no_stream: Arc<std::sync::atomic::AtomicBool>,
    /// When the stream was last (re)opened, to reopen at most every [`REOPEN_EVERY`].
    opened_at: Mutex<Option<std::time::Instant>>,
    /// The backend answered the GET stream's opening (false while it is in flight, and after
    /// the stream ended).
    stream_answered: Arc<tokio::sync::watch::Sender<bool>>,
    /// The backend accepted a request in this session (a resumed session id is unconfirmed
    /// until then).
    confirmed: std::sync::atomic::AtomicBool,
}

/// Minimum time between two reopenings of an ended GET stream.
const REOPEN_EVERY: Duration = Duration::from_secs(10);

/// How long after opening the GET stream a request waits for the backend's answer (see
/// [`StreamableConn::await_opening_stream`]).
const STREAM_SETTLE: Duration = Duration::from_secs(1);

impl StreamableConn {
    pub(super) fn new(
        def: Arc<BackendDef>,
        http: reqwest::Client,
        events: EventSink,
        streams: prometheus_client::metrics::gauge::Gauge,
    ) -> Self {
        Self {
            streams,
            def,
            http,
            session_id: Mutex::new(None),
            protocol_version: Mutex::new(crate::protocol::LATEST_VERSION.to_owned()),
            ids: super::new_ids(),
            events,
            stream: Mutex::new(None),
            no_stream: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            opened_at: Mutex::new(None),
            stream_answered: Arc::new(tokio::sync::watch::Sender::new(false)),
            confirmed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Reuses a stored backend session id without a new `initialize` (restore, I7). The GET
    /// stream is not opened here: it exists only while the client holds its own (I8).
    /// The negotiated revision is sent again (H3); a hint of an earlier gateway has none, and
    /// then the latest revision is tried and a 400 means "re-initialize".
    pub(super) fn resume(&self, hint: crate::session::record::BackendHint) {
        if let Some(v) = &hint.protocol_version {
            self.set_protocol_version(v);
        }
        *self.session_id.lock() = Some(hint.session_id);
    }

    /// The session id and negotiated revision, to store as a hint.
    pub(super) fn hint(&self) -> Option<crate::session::record::BackendHint> {
        let protocol_version = Some(self.protocol_version.lock().clone());
        self.session_id()
            .map(|session_id| crate::session::record::BackendHint { session_id, protocol_version })
    }

    pub(super) fn set_protocol_version(&self, v: &str) {
        *self.protocol_version.lock() = v.to_owned();
    }

    /// Whether POSTs go through the lean HTTP/1.1 pool (a plain `http://` backend).
    #[cfg(test)]
    pub(super) fn uses_lean_client(&self) -> bool {
        self.def.http1.is_some()
    }

    pub(super) fn session_id(&self) -> Option<String> {
        self.session_id.lock().clone()
    }

    /// A reqwest request to the backend with this session's headers.
    fn builder(
        &self,
        method: reqwest::Method,
        headers: &Headers,
    ) -> Result<reqwest::RequestBuilder, BackendError> {
        let h = self.session_headers(headers, 0)?;
        Ok(self.http.request(method, self.def.url.clone()).headers(h))
    }

    /// POSTs `body`; the answer's head (its body is left to read). The lean client applies no
    /// timeout: callers bound the exchange with the backend's timeout.
    async fn post(&self, body: &Value, headers: &Headers) -> Result<Answer, BackendError> {
        let had_session = self.session_id().is_some();
        // Straight into a buffer: `Value::to_string` writes through a formatter (about 4.7 k
        // more instructions per forwarded call, callgrind).
        let payload = serde_json::to_vec(body)
            .map_err(|e| BackendError::Protocol(format!("unserializable message: {e}")))?;
        let resp = match &self.def.http1 {
            Some(pool) => {
                let mut h = self.session_headers(headers, 1)?;
                h.append(http::header::CONTENT_TYPE, JSON);
                pool.post(h, Bytes::from(payload), self.def.timeout).await?.map(AnswerBody::Lean)
            }
            None => http::Response::from(
                self.builder(reqwest::Method::POST, headers)?
                    .header(http::header::CONTENT_TYPE, JSON)
                    .timeout(self.def.timeout)
                    .body(payload)
                    .send()
                    .await
                    .map_err(|e| BackendError::from_reqwest(e, self.def.timeout))?,
            )
            .map(AnswerBody::Reqwest),
        };
        if let Some(id) = resp.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
            *self.session_id.lock() = Some(id.to_owned());
        }
        let status = resp.status();
        let confirmed = self.confirmed.load(std::sync::atomic::Ordering::Relaxed);
        // 404: the backend no longer knows the session. 400 on a resumed session before any
        // success: an older server refusing the session id or the protocol revision (H3).
        // Either way a fresh `initialize` recovers it (I7).
        if had_session
            && (status == reqwest::StatusCode::NOT_FOUND
                || (status == reqwest::StatusCode::BAD_REQUEST && !confirmed))
        {
            return Err(BackendError::SessionExpired);
        }
        if status.is_success() && !confirmed {
            self.confirmed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if !status.is_success() {
            let body = resp.into_body().bytes(self.def.timeout).await.unwrap_or_default();
            return Err(BackendError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            });
        }
        Ok(resp)
    }

    /// The headers of every request of this session (either client): `Accept`, the backend's
    /// session id, the protocol version and the caller's `headers` (credentials), with room
    /// for `extra` more.
    fn session_headers(
        &self,
        headers: &Headers,
        extra: usize,
    ) -> Result<http::HeaderMap, BackendError> {
        let invalid = |e: http::header::InvalidHeaderValue| {
            BackendError::Unreachable(
                crate::outbound::TransportFailure::with_cause("request failed", &e).to_string(),
            )
        };
        let mut h = http::HeaderMap::with_capacity(3 + extra + headers.len());
        h.append(http::header::ACCEPT, http::HeaderValue::from_static(ACCEPT));
        if let Some(id) = self.session_id.lock().as_deref() {
            h.append(SESSION_HEADER, http::HeaderValue::from_str(id).map_err(invalid)?);
        }
        let version =
            http::HeaderValue::from_str(&self.protocol_version.lock()).map_err(invalid)?;
        h.append(VERSION_HEADER, version);
        for (k, v) in headers {
            h.append(k, v.clone());
        }
        Ok(h)
    }

    pub(super) async fn request(
        &self,
        id: u64,
        method: &str,
        params: Option<Value>,
        headers: &Headers,
        progress: Option<ProgressSink>,
    ) -> Result<Value, BackendError> {
        let body = jsonrpc::request(&Value::from(id), method, params);
        self.await_opening_stream().await;
        // One deadline for sending, the answer's head and its body (JSON or SSE stream).
        let exchange = async {
            let resp = self.post(&body, headers).await?;
            let is_sse = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("text/event-stream"));
            if is_sse {
                self.read_sse_response(resp, id, progress.as_ref(), headers).await
            } else {
                let bytes = resp.into_body().bytes(self.def.timeout).await?;
                serde_json::from_slice::<Value>(&bytes)
                    .map_err(|e| BackendError::Protocol(format!("invalid JSON response: {e}")))
            }
        };
        let response = tokio::time::timeout(self.def.timeout, exchange)
            .await
            .map_err(|_| BackendError::Timeout(self.def.timeout))??;
        response_result(response)
    }

    /// The client has just opened its GET stream, so this session's GET stream to the backend
    /// is being opened (I8): a request waits until the backend answered it (at most
    /// [`STREAM_SETTLE`] after the opening). Otherwise a backend that sends a server-to-client
    /// request on its GET stream at the start of the call (sampling, elicitation) may find no
    /// stream yet and drop it (the TypeScript SDK server does), and the call hangs until its
    /// timeout. Costs nothing when the stream is up, refused or not wanted.
    async fn await_opening_stream(&self) {
        if *self.stream_answered.borrow()
            || self.stream.lock().as_ref().is_none_or(|h| h.is_finished())
        {
            return;
        }
        let Some(left) = self.opened_at.lock().and_then(|t| STREAM_SETTLE.checked_sub(t.elapsed()))
        else {
            return;
        };
        let mut answered = self.stream_answered.subscribe();
        let _ = tokio::time::timeout(left, answered.wait_for(|a| *a)).await;
    }

    /// Reads a POST's SSE stream until the response to `id`. A stream that ends first but
    /// carried an event id is resumed (2025-11-25): after the `retry:` delay, a GET with
    /// `Last-Event-ID` continues it, as often as the backend closes it (within the call's
    /// timeout, which the caller applies).
    async fn read_sse_response(
        &self,
        resp: Answer,
        id: u64,
        progress: Option<&ProgressSink>,
        headers: &Headers,
    ) -> Result<Value, BackendError> {
        let mut parser = sse::Parser::default();
        let mut resp = resp;
        loop {
            if let Some(msg) =
                self.read_stream_until(resp, &mut parser, id, progress, headers).await?
            {
                return Ok(msg);
            }
            let Some(last) = parser.last_event_id().map(str::to_owned) else {
                return Err(BackendError::Protocol(
                    "the response stream ended before the response".into(),
                ));
            };
            tokio::time::sleep(parser.retry().unwrap_or(RESUME_AFTER)).await;
            parser.next_stream();
            let resumed = self
                .builder(reqwest::Method::GET, headers)?
                .header(http::header::ACCEPT, "text/event-stream")
                .header("last-event-id", last)
                .send()
                .await
                .map_err(|e| BackendError::from_reqwest(e, self.def.timeout))?;
            if !resumed.status().is_success() {
                return Err(BackendError::Status {
                    status: resumed.status().as_u16(),
                    body: "resuming the response stream failed".into(),
                });
            }
            resp = http::Response::from(resumed).map(AnswerBody::Reqwest);
        }
    }

    /// Reads one SSE stream: the response to `id` if it comes, `None` if the stream ends.
    async fn read_stream_until(
        &self,
        resp: Answer,
        parser: &mut sse::Parser,
        id: u64,
        progress: Option<&ProgressSink>,
        headers: &Headers,
    ) -> Result<Option<Value>, BackendError> {
        let mut body = resp.into_body();
        while let Some(chunk) = body.chunk(self.def.timeout).await? {
            for ev in parser.feed(&chunk).map_err(|e| BackendError::Protocol(e.to_string()))? {
                if ev.data.is_empty() {
                    continue;
                }
                let Ok(msg) = serde_json::from_str::<Value>(&ev.data) else { continue };
                if msg.get("method").is_none() && msg.get("id").and_then(Value::as_u64) == Some(id)
                {
                    return Ok(Some(msg));
                }
                if let Some(reply) = route_incoming(&self.def.name, msg, progress, &self.events) {
                    // The backend holds this call open until the client answered.
                    let answer = reply.answer().await;
                    let _ = self.post(&answer, headers).await;
                }
            }
        }
        Ok(None)
    }

    pub(super) async fn notify(
        &self,
        method: &str,
        params: Option<Value>,
        headers: &Headers,
    ) -> Result<(), BackendError> {
        tokio::time::timeout(
            self.def.timeout,
            self.post(&jsonrpc::notification(method, params), headers),
        )
        .await
        .map_err(|_| BackendError::Timeout(self.def.timeout))?
        .map(drop)
    }

    /// Opens the GET stream for server-initiated messages (best effort, reconnects with
    /// backoff until stopped; stops on 400/405 (no stream offered) and 401/403/404).
    fn open_stream(&self, headers: &Headers) {
        let Ok(rb) = self.builder(reqwest::Method::GET, headers) else { return };
        let rb = rb.header(http::header::ACCEPT, "text/event-stream");
        let Some(template) = rb.build().ok() else { return };
        *self.opened_at.lock() = Some(std::time::Instant::now());
        let no_stream = self.no_stream.clone();
        let http = self.http.clone();
        let events = self.events.clone();
        let name = self.def.name.clone();
        let streams = self.streams.clone();
        let answered = self.stream_answered.clone();
        answered.send_replace(false);
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let Some(req) = template.try_clone() else { return };
                let result = http.execute(req).await;
                // Answered (connected, refused or failed): requests waiting for it go on.
                answered.send_replace(true);
                match result {
                    Ok(resp) if resp.status().is_success() => {
                        backoff = Duration::from_millis(500);
                        // Counted while the stream is read (also when the task is aborted).
                        let _open = OpenStream::new(&streams);
                        let mut parser = sse::Parser::default();
                        let mut stream = resp.bytes_stream();
                        while let Some(Ok(chunk)) = stream.next().await {
                            let evs = match parser.feed(&chunk) {
                                Ok(evs) => evs,
                                Err(e) => {
                                    tracing::warn!(backend = %name, error = %e, "backend stream refused; closed");
                                    break;
                                }
                            };
                            for ev in evs {
                                let Ok(msg) = serde_json::from_str::<Value>(&ev.data) else {
                                    continue;
                                };
                                if msg.get("method").is_none() {
                                    continue;
                                }
                                // A server-to-client request is answered (ping) or relayed to
                                // the client without holding up the stream; notifications go
                                // to the session.
                                if let Some(reply) = route_incoming(&name, msg, None, &events) {
                                    let (http, template) = (http.clone(), template.try_clone());
                                    tokio::spawn(async move {
                                        let answer = reply.answer().await;
                                        if let Some(t) = template {
                                            answer_on_post(&http, &t, &answer).await;
                                        }
                                    });
                                }
                            }
                        }
                        answered.send_replace(false);
                    }
                    // No stream offered: never retry.
                    Ok(resp) if matches!(resp.status().as_u16(), 400 | 405) => {
                        no_stream.store(true, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                    // Session gone, or the credential the stream was opened with is no longer
                    // accepted: the session's next call reopens it with a fresh one.
                    Ok(resp) if matches!(resp.status().as_u16(), 401 | 403 | 404) => return,
                    _ => {}
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
        if let Some(old) = self.stream.lock().replace(task.abort_handle()) {
            old.abort();
        }
    }

    /// Opens the GET stream now unless it is running or the backend offers none (the client
    /// just opened its own stream).
    pub(super) fn start_stream(&self, headers: &Headers) {
        if self.no_stream.load(std::sync::atomic::Ordering::Relaxed) || self.session_id().is_none()
        {
            return;
        }
        let running = self.stream.lock().as_ref().is_some_and(|h| !h.is_finished());
        if !running {
            self.open_stream(headers);
        }
    }

    /// Reopens the GET stream if it ended (e.g. its credential expired), with `headers` from
    /// the request being served, at most every [`REOPEN_EVERY`].
    pub(super) fn ensure_stream(&self, headers: &Headers) {
        if self.no_stream.load(std::sync::atomic::Ordering::Relaxed) || self.session_id().is_none()
        {
            return;
        }
        let recent = self.opened_at.lock().is_some_and(|t| t.elapsed() < REOPEN_EVERY);
        let ended = self.stream.lock().as_ref().is_none_or(AbortHandle::is_finished);
        if ended && !recent {
            self.open_stream(headers);
        }
    }

    pub(super) async fn close(&self, headers: &Headers) {
        self.stop_stream();
        if self.session_id().is_some()
            && let Ok(rb) = self.builder(reqwest::Method::DELETE, headers)
        {
            let _ = rb.timeout(self.def.timeout).send().await;
        }
    }

    /// Closes the GET stream (the client closed its own, or the session is parked).
    pub(super) fn stop_stream(&self) {
        if let Some(h) = self.stream.lock().take() {
            h.abort();
        }
        self.stream_answered.send_replace(false);
    }
}

/// Counts one open backend GET stream for as long as it lives.
struct OpenStream(prometheus_client::metrics::gauge::Gauge);

impl OpenStream {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// POSTs the gateway's answer to a server-to-client request that came on the GET stream, with
/// the stream's own session id, protocol version and credentials.
async fn answer_on_post(http: &reqwest::Client, stream_request: &reqwest::Request, reply: &Value) {
    let mut req = reqwest::Request::new(reqwest::Method::POST, stream_request.url().clone());
    *req.headers_mut() = stream_request.headers().clone();
    let h = req.headers_mut();
    h.insert(http::header::ACCEPT, http::HeaderValue::from_static(ACCEPT));
    h.insert(http::header::CONTENT_TYPE, JSON);
    *req.body_mut() = Some(reply.to_string().into());
    *req.timeout_mut() = stream_request.timeout().copied();
    if let Err(e) = http.execute(req).await {
        tracing::debug!(error = %e.without_url(), "could not answer a backend request");
    }
}

impl Drop for StreamableConn {
    fn drop(&mut self) {
        self.stop_stream();
    }
}

/// The `result` of a JSON-RPC response, or its error.
pub(super) fn response_result(response: Value) -> Result<Value, BackendError> {
    if let Some(err) = response.get("error") {
        return Err(BackendError::Rpc(jsonrpc::RpcError::from_value(err)));
    }
    match response {
        Value::Object(mut o) => o
            .remove("result")
            .ok_or_else(|| BackendError::Protocol("response without result or error".into())),
        _ => Err(BackendError::Protocol("response is not an object".into())),
    }
}
