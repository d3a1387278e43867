//! Requests a backend sends to the client (`sampling/createMessage`, `elicitation/create`,
//! `roots/list`), relayed through the session.
//!
//! The backend's request id is replaced by one this session issues (`vmcp-<n>`), so requests
//! of two backends never collide in the client's id space; the client's answer is matched by
//! that id and sent back to the backend under its own id. The request goes to the client on
//! the response stream of the call that caused it when there is one (the client is listening
//! there), else on the session's GET stream. A client that did not declare the capability, or
//! does not answer within the backend's timeout, gets the backend an error answer instead of
//! a hang.
//!
//! The answer must reach the replica holding the backend call. An answer that arrives on
//! another replica (a balancer without session affinity) is published on the replicas' Redis
//! feed and taken by the replica whose session waits for it
//! ([`super::SessionManager::deliver_answer`], [`super::termination`]); with the in-memory
//! store there is only one replica.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use super::Session;
use crate::backend::BackendEvent;
use crate::jsonrpc::{self, INTERNAL_ERROR, METHOD_NOT_FOUND, RpcError};

/// The client capability a backend request needs, by method.
fn needed_capability(method: &str) -> Option<&'static str> {
    match method {
        "sampling/createMessage" => Some("sampling"),
        "elicitation/create" => Some("elicitation"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}

/// The client capabilities a gateway session declares to its backends: the ones it relays,
/// as the client declared them (from what the session keeps of `initialize`).
pub fn relayed_capabilities(client_params: &Value) -> Value {
    let caps = client_params.get("capabilities").and_then(Value::as_object);
    let kept: serde_json::Map<String, Value> = ["sampling", "elicitation", "roots"]
        .into_iter()
        .filter_map(|k| caps.and_then(|c| c.get(k)).map(|v| (k.to_owned(), v.clone())))
        .collect();
    Value::Object(kept)
}

/// The backend requests of one session that wait for the client.
#[derive(Debug, Default)]
pub struct ClientAsks {
    next: AtomicU64,
    /// Gateway id → where the client's answer goes.
    waiting: Mutex<HashMap<String, oneshot::Sender<Value>>>,
}

impl ClientAsks {
    /// Delivers the client's answer to the backend request it belongs to. False when no
    /// request of this session (on this replica) waits for that id.
    pub fn answer(&self, message: Value) -> bool {
        let Some(id) = message.get("id").and_then(Value::as_str) else { return false };
        let Some(tx) = self.waiting.lock().remove(id) else { return false };
        tx.send(message).is_ok()
    }

    fn register(&self) -> (String, oneshot::Receiver<Value>) {
        let id = format!("vmcp-{}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(id.clone(), tx);
        (id, rx)
    }

    fn forget(&self, id: &str) {
        self.waiting.lock().remove(id);
    }
}

/// Relays `event` (a backend request) to the client of `session` and sends the answer, under
/// the backend's id, to the backend; waits at most `timeout` for the client.
pub(crate) async fn relay(session: &Session, event: BackendEvent, timeout: Duration) {
    let BackendEvent { backend, mut message, reply, call_stream } = event;
    let Some(reply) = reply else { return };
    let backend_id = message.get("id").cloned().unwrap_or(Value::Null);
    let method = message.get("method").and_then(Value::as_str).unwrap_or_default().to_owned();
    let refuse = |code, text: String| jsonrpc::error(Some(&backend_id), &RpcError::new(code, text));
    let declared =
        needed_capability(&method).is_some_and(|c| session.client_capabilities().get(c).is_some());
    if !declared {
        tracing::debug!(session = %session.id, %backend, method = %crate::metrics::for_log(&method), "backend request the client cannot answer");
        let _ = reply.send(refuse(
            METHOD_NOT_FOUND,
            format!("the client does not support {}", crate::metrics::for_log(&method)),
        ));
        return;
    }
    let (id, answer) = session.asks.register();
    message["id"] = Value::String(id.clone());
    let on_call_stream = call_stream.is_some_and(|s| s.try_send(message.clone()).is_ok());
    if !on_call_stream {
        session.outbox.send(message);
    }
    let to_backend = match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(mut a)) => {
            a["id"] = backend_id;
            a
        }
        _ => {
            session.asks.forget(&id);
            tracing::info!(session = %session.id, %backend, method = %method, ?timeout, "the client did not answer a backend request");
            refuse(INTERNAL_ERROR, format!("the client did not answer {method} within {timeout:?}"))
        }
    };
    let _ = reply.send(to_backend);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn relayed_capabilities_keep_only_what_the_gateway_relays() {
        let params = json!({"capabilities": {"sampling": {}, "roots": {"listChanged": true},
            "experimental": {"x": 1}}});
        assert_eq!(
            relayed_capabilities(&params),
            json!({"sampling": {}, "roots": {"listChanged": true}})
        );
        assert_eq!(relayed_capabilities(&json!({})), json!({}));
    }

    #[test]
    fn answers_are_matched_by_the_gateway_id_once() {
        let asks = ClientAsks::default();
        let (id, mut rx) = asks.register();
        let (other, _rx2) = asks.register();
        assert_ne!(id, other);
        assert!(!asks.answer(json!({"id": "vmcp-999", "result": {}})));
        assert!(!asks.answer(json!({"id": 1, "result": {}})), "numeric ids are never ours");
        assert!(asks.answer(json!({"id": id, "result": {"ok": true}})));
        assert_eq!(rx.try_recv().unwrap()["result"]["ok"], true);
        assert!(!asks.answer(json!({"id": id, "result": {}})), "answered once");
    }
}
