//! The legacy HTTP+SSE transport (MCP 2024-11-05): a GET stream that first names the POST
//! endpoint, then carries every response and notification; requests are POSTed there.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::streamable::response_result;
use super::{
    BackendDef, BackendError, EventSink, Headers, ProgressSink, apply_headers, route_incoming,
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
        events: EventSink,
    ) -> Result<Self, BackendError> {
        // One deadline for the GET and the `endpoint` event: this runs under the slot's
        // connect lock, so a backend that accepts and never answers must not hold it (M5).
        let deadline = tokio::time::Instant::now() + def.timeout;
        let rb = http.get(def.url.clone()).header(http::header::ACCEPT, "text/event-stream");
        let resp = tokio::time::timeout_at(deadline, apply_headers(rb, headers).send())
            .await
            .map_err(|_| BackendError::Timeout(def.timeout))?
            .map_err(|e| BackendError::from_reqwest(e, def.timeout))?;
        if !resp.status().is_success() {
            return Err(BackendError::Status {
                status: resp.status().as_u16(),
                body: String::new(),
            });
        }
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        let (endpoint_tx, endpoint_rx) = oneshot::channel::<Result<url::Url, BackendError>>();
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
                'read: while let Some(Ok(chunk)) = stream.next().await {
                    let evs = match parser.feed(&chunk) {
                        Ok(evs) => evs,
                        Err(e) => {
                            tracing::warn!(backend = %name, error = %e, "backend stream refused; closed");
                            break;
                        }
                    };
                    for ev in evs {
                        if ev.event == "endpoint" {
                            let url = endpoint_url(&base, &ev.data);
                            let refused = url.is_err();
                            if let Some(tx) = endpoint_tx.take() {
                                let _ = tx.send(url.clone());
                            }
                            match url {
                                Ok(u) => post_url = Some(u),
                                Err(e) => {
                                    tracing::warn!(backend = %name, error = %e, "legacy SSE backend named a POST endpoint on another origin; closing the stream");
                                }
                            }
                            if refused {
                                break 'read;
                            }
                            continue;
                        }
                        let Ok(msg) = serde_json::from_str::<Value>(&ev.data) else { continue };
                        let id = msg.get("id").and_then(Value::as_u64);
                        if msg.get("method").is_none() && id.is_some() {
                            let waiter = id.and_then(|i| pending.lock().remove(&i));
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
                            let rb = apply_headers(rb, &reply_headers);
                            // Answered without holding up the stream (the call's response
                            // comes on it after the answer).
                            tokio::spawn(async move {
                                let answer = reply.answer().await;
                                let _ = rb.body(answer.to_string()).send().await;
                            });
                        }
                    }
                }
                alive.store(false, Ordering::Relaxed);
                pending.lock().clear();
            })
        };
        let endpoint = match tokio::time::timeout_at(deadline, endpoint_rx).await {
            Ok(Ok(url)) => url,
            Ok(Err(_)) => {
                Err(BackendError::Protocol("the SSE stream ended before the endpoint event".into()))
            }
            Err(_) => Err(BackendError::Timeout(def.timeout)),
        };
        let post_url = match endpoint {
            Ok(url) => url,
            Err(e) => {
                task.abort();
                return Err(e);
            }
        };
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
        self.pending.lock().insert(id, (tx, progress, token));
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
        self.pending.lock().remove(&self.id);
    }
}

/// The POST URL an `endpoint` event names, resolved against the SSE URL. It must have the
/// SSE URL's origin (scheme, host and port): every request, with the backend's credential
/// headers, goes there, so a backend must not be able to send them elsewhere (M4).
fn endpoint_url(base: &url::Url, data: &str) -> Result<url::Url, BackendError> {
    let url = base
        .join(data.trim())
        .map_err(|e| BackendError::Protocol(format!("invalid endpoint event: {e}")))?;
    if url.origin() != base.origin() {
        return Err(BackendError::Protocol(
            "the endpoint event names a URL on another origin than the SSE stream".into(),
        ));
    }
    Ok(url)
}

/// The progress sink of the in-flight request whose progress token this notification carries.
fn progress_sink_for(pending: &Pending, msg: &Value) -> Option<ProgressSink> {
    if msg.get("method").and_then(Value::as_str) != Some(crate::protocol::notification::PROGRESS) {
        return None;
    }
    let token = msg.pointer("/params/progressToken")?;
    let p = pending.lock();
    p.values().find(|(_, _, t)| t.as_ref() == Some(token)).and_then(|(_, sink, _)| sink.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> url::Url {
        url::Url::parse("http://127.0.0.1:8080/sse").unwrap()
    }

    #[test]
    fn relative_and_same_origin_endpoints_are_accepted() {
        assert_eq!(
            endpoint_url(&base(), "/messages?sessionId=1").unwrap().as_str(),
            "http://127.0.0.1:8080/messages?sessionId=1"
        );
        assert_eq!(
            endpoint_url(&base(), "http://127.0.0.1:8080/m?x=1").unwrap().as_str(),
            "http://127.0.0.1:8080/m?x=1"
        );
    }

    /// M4: an absolute URL on another host, port or scheme would receive the credential
    /// headers and every call's arguments.
    #[test]
    fn endpoints_on_another_origin_are_refused() {
        for data in [
            "http://127.0.0.1:9999/x",
            "https://127.0.0.1:8080/x",
            "http://evil.example/x",
            "//evil.example:8080/x",
            "http://user@127.0.0.2:8080/x",
        ] {
            assert!(
                matches!(endpoint_url(&base(), data), Err(BackendError::Protocol(_))),
                "{data}"
            );
        }
    }
}
