//! The legacy HTTP+SSE transport (MCP 2024-11-05): a GET stream that first names the POST
//! endpoint, then carries every response and notification; requests are POSTed there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::streamable::response_result;
use super::{
    BackendDef, BackendError, BackendEvent, Headers, ProgressSink, apply_headers, route_incoming,
};
use crate::{jsonrpc, sse};

/// In-flight requests: id -> (response waiter, progress sink, progress token).
type Pending =
    Arc<Mutex<HashMap<u64, (oneshot::Sender<Value>, Option<ProgressSink>, Option<Value>)>>>;

/// A legacy SSE session with one backend.
#[derive(Debug)]
pub struct SseConn {
    def: Arc<BackendDef>,
    http: reqwest::Client,
    post_url: url::Url,
    pending: Pending,
    alive: Arc<AtomicBool>,
    pub(super) ids: AtomicU64,
    reader: AbortHandle,
}

impl SseConn {
    pub(super) async fn connect(
        def: Arc<BackendDef>,
        http: reqwest::Client,
        headers: &Headers,
        events: mpsc::UnboundedSender<BackendEvent>,
    ) -> Result<Self, BackendError> {
        let rb = http.get(def.url.clone()).header(http::header::ACCEPT, "text/event-stream");
        let resp = apply_headers(rb, headers)
            .send()
            .await
            .map_err(|e| BackendError::from_reqwest(e, def.timeout))?;
        if !resp.status().is_success() {
            return Err(BackendError::Status {
                status: resp.status().as_u16(),
                body: String::new(),
            });
        }
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        let (endpoint_tx, endpoint_rx) = oneshot::channel::<String>();
        let task = {
            let pending = pending.clone();
            let alive = alive.clone();
            let name = def.name.clone();
            let http = http.clone();
            let base = def.url.clone();
            let reply_headers = headers.clone();
            tokio::spawn(async move {
                let mut endpoint_tx = Some(endpoint_tx);
                let mut post_url: Option<url::Url> = None;
                let mut parser = sse::Parser::default();
                let mut stream = resp.bytes_stream();
                while let Some(Ok(chunk)) = stream.next().await {
                    for ev in parser.feed(&chunk) {
                        if ev.event == "endpoint" {
                            post_url = base.join(&ev.data).ok();
                            if let Some(tx) = endpoint_tx.take() {
                                let _ = tx.send(ev.data);
                            }
                            continue;
                        }
                        let Ok(msg) = serde_json::from_str::<Value>(&ev.data) else { continue };
                        let id = msg.get("id").and_then(Value::as_u64);
                        if msg.get("method").is_none() && id.is_some() {
                            let waiter =
                                pending.lock().ok().and_then(|mut p| id.and_then(|i| p.remove(&i)));
                            if let Some((tx, _, _)) = waiter {
                                let _ = tx.send(msg);
                            }
                            continue;
                        }
                        let progress = progress_sink_for(&pending, &msg);
                        if let Some(reply) = route_incoming(&name, msg, progress.as_ref(), &events)
                            && let Some(u) = &post_url
                        {
                            let rb = http
                                .post(u.clone())
                                .header(http::header::CONTENT_TYPE, "application/json");
                            let _ = apply_headers(rb, &reply_headers)
                                .body(reply.to_string())
                                .send()
                                .await;
                        }
                    }
                }
                alive.store(false, Ordering::Relaxed);
                if let Ok(mut p) = pending.lock() {
                    p.clear();
                }
            })
        };
        let endpoint = tokio::time::timeout(def.timeout, endpoint_rx)
            .await
            .map_err(|_| BackendError::Timeout(def.timeout))?
            .map_err(|_| {
                BackendError::Protocol("the SSE stream ended before the endpoint event".into())
            })?;
        let post_url = def
            .url
            .join(&endpoint)
            .map_err(|e| BackendError::Protocol(format!("invalid endpoint '{endpoint}': {e}")))?;
        Ok(Self {
            def,
            http,
            post_url,
            pending,
            alive,
            ids: super::new_ids(),
            reader: task.abort_handle(),
        })
    }

    async fn post(&self, body: &Value, headers: &Headers) -> Result<(), BackendError> {
        if !self.alive.load(Ordering::Relaxed) {
            return Err(BackendError::SessionExpired);
        }
        let rb = self
            .http
            .post(self.post_url.clone())
            .header(http::header::CONTENT_TYPE, "application/json");
        let resp = apply_headers(rb, headers)
            .timeout(self.def.timeout)
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| BackendError::from_reqwest(e, self.def.timeout))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            404 => Err(BackendError::SessionExpired),
            s => Err(BackendError::Status {
                status: s,
                body: resp.text().await.unwrap_or_default().chars().take(300).collect(),
            }),
        }
    }

    pub(super) async fn request(
        &self,
        id: u64,
        method: &str,
        params: Option<Value>,
        headers: &Headers,
        progress: Option<ProgressSink>,
    ) -> Result<Value, BackendError> {
        let (tx, rx) = oneshot::channel();
        let token = params.as_ref().and_then(|p| p.pointer("/_meta/progressToken")).cloned();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, (tx, progress, token));
        }
        let guard = PendingGuard { pending: &self.pending, id };
        self.post(&jsonrpc::request(&Value::from(id), method, params), headers).await?;
        let msg = tokio::time::timeout(self.def.timeout, rx)
            .await
            .map_err(|_| BackendError::Timeout(self.def.timeout))?
            .map_err(|_| BackendError::SessionExpired)?;
        drop(guard);
        response_result(msg)
    }

    pub(super) async fn notify(
        &self,
        method: &str,
        params: Option<Value>,
        headers: &Headers,
    ) -> Result<(), BackendError> {
        self.post(&jsonrpc::notification(method, params), headers).await
    }

    pub(super) fn close(&self) {
        self.reader.abort();
    }
}

impl Drop for SseConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct PendingGuard<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&self.id);
        }
    }
}

/// The progress sink of the in-flight request whose progress token this notification carries.
fn progress_sink_for(pending: &Pending, msg: &Value) -> Option<ProgressSink> {
    if msg.get("method").and_then(Value::as_str) != Some("notifications/progress") {
        return None;
    }
    let token = msg.pointer("/params/progressToken")?;
    let p = pending.lock().ok()?;
    p.values().find(|(_, _, t)| t.as_ref() == Some(token)).and_then(|(_, sink, _)| sink.clone())
}
