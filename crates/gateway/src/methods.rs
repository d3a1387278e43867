//! MCP methods of a session: lists answered from the merged view, calls routed to the owning
//! backend under its original name, notifications forwarded. Backend failures become JSON-RPC
//! errors that name the backend; other backends keep working.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::auth::Identity;
use crate::backend::{BackendError, ProgressSink};
use crate::jsonrpc::{
    self, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, RESOURCE_NOT_FOUND,
    RpcError,
};
use crate::metrics::{MethodBackend, RequestLabels};
use crate::protocol::{Method, notification};
use crate::session::{Session, SessionManager};

/// Who a request is served for: the session, and the identity of the live request (I1).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The sessions of this replica.
    pub manager: &'a Arc<SessionManager>,
    /// The request's session.
    pub session: &'a Arc<Session>,
    /// The request's identity.
    pub identity: &'a Identity,
}

/// Handles one client request; returns the JSON-RPC response message.
pub async fn handle_request(
    caller: Caller<'_>,
    id: &Value,
    method: &str,
    params: Option<Value>,
    progress: Option<ProgressSink>,
) -> Value {
    let Caller { manager, session, identity } = caller;
    let start = Instant::now();
    manager.retry_due(session, identity);
    let dispatched = match Method::parse(method) {
        Some(m) => dispatch(caller, id, m, params, progress).await,
        None => Err((
            None,
            RpcError::new(
                METHOD_NOT_FOUND,
                format!("method not found: {}", crate::metrics::for_log(method)),
            ),
        )),
    };
    let (backend, outcome) = match dispatched {
        Ok((backend, result)) => (backend, Ok(result)),
        Err((backend, e)) => (backend, Err(e)),
    };
    let backend_label = backend.as_deref().unwrap_or("").to_owned();
    let outcome_label = match &outcome {
        Ok(_) => "ok",
        Err(e) if e.data.as_ref().is_some_and(|d| d.get("backend").is_some()) => "backend_error",
        Err(_) => "error",
    };
    // H1: the method is client-chosen; labels are bounded to the known methods and log lines
    // carry at most a short prefix of it.
    let method_label = crate::metrics::method_label(method);
    let m = manager.metrics();
    m.requests
        .get_or_create(&RequestLabels {
            method: method_label.to_owned(),
            backend: backend_label.clone(),
            outcome: outcome_label.into(),
        })
        .inc();
    m.request_seconds
        .get_or_create(&MethodBackend {
            method: method_label.to_owned(),
            backend: backend_label.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    tracing::info!(
        target: "audit",
        subject = identity.subject(),
        session = %session.id,
        method = %crate::metrics::for_log(method),
        backend = %backend_label,
        outcome = outcome_label,
        latency_ms = start.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    match outcome {
        Ok(r) => jsonrpc::result(id, r),
        Err(e) => jsonrpc::error(Some(id), &e),
    }
}

type Dispatched = Result<(Option<Arc<str>>, Value), (Option<Arc<str>>, RpcError)>;

async fn dispatch(
    caller: Caller<'_>,
    id: &Value,
    method: Method,
    params: Option<Value>,
    progress: Option<ProgressSink>,
) -> Dispatched {
    let Caller { manager, session, identity } = caller;
    // Answered by the gateway itself: no backend to name.
    let own = |r: Result<Value, RpcError>| r.map(|v| (None, v)).map_err(|e| (None, e));
    match method {
        Method::Ping => own(Ok(json!({}))),
        Method::Initialize => {
            own(Err(RpcError::new(INVALID_REQUEST, "the session is already initialized")))
        }
        Method::ToolsList
        | Method::ResourcesList
        | Method::ResourcesTemplatesList
        | Method::PromptsList => {
            refresh_stale(manager, session, identity).await;
            own(list(session, method, params.as_ref()))
        }
        Method::LoggingSetLevel => {
            for slot in session.slots() {
                if let Some(conn) = slot.connection()
                    && let Ok(h) = slot.def.credentials.headers(identity).await
                {
                    let request =
                        conn.request(conn.next_id(), method.as_str(), params.clone(), &h, None);
                    let _ = Box::pin(request).await;
                }
            }
            own(Ok(json!({})))
        }
        Method::ToolsCall
        | Method::ResourcesRead
        | Method::ResourcesSubscribe
        | Method::ResourcesUnsubscribe
        | Method::PromptsGet
        | Method::CompletionComplete => forward(caller, id, method, params, progress).await,
    }
}

async fn refresh_stale(manager: &Arc<SessionManager>, session: &Arc<Session>, identity: &Identity) {
    let mut changed = false;
    for slot in session.slots().into_iter().filter(|s| s.is_stale() && s.connection().is_some()) {
        if manager.connect_slot(session, &slot, identity, false).await.is_ok() {
            changed = true;
        }
    }
    if changed {
        session.rebuild_view(&manager.backends());
    }
}

fn list(session: &Session, method: Method, params: Option<&Value>) -> Result<Value, RpcError> {
    if params.and_then(|p| p.get("cursor")).is_some_and(|c| !c.is_null()) {
        return Err(RpcError::new(
            INVALID_PARAMS,
            "invalid cursor: the gateway returns complete lists",
        ));
    }
    let view = session.view();
    let agg = view.as_ref().as_ref().map_err(|e| RpcError::new(INTERNAL_ERROR, e.to_string()))?;
    match method {
        Method::ToolsList => Ok(json!({ "tools": agg.tools })),
        Method::ResourcesList => Ok(json!({ "resources": agg.resources })),
        Method::ResourcesTemplatesList => {
            Ok(json!({ "resourceTemplates": agg.resource_templates }))
        }
        Method::PromptsList => Ok(json!({ "prompts": agg.prompts })),
        other => Err(RpcError::new(INTERNAL_ERROR, format!("{} is not a list", other.as_str()))),
    }
}

/// Finds the owning backend and the params rewritten to its original names.
fn route(session: &Session, method: Method, params: &Value) -> Result<(Arc<str>, Value), RpcError> {
    let view = session.view();
    let agg = view.as_ref().as_ref().map_err(|e| RpcError::new(INTERNAL_ERROR, e.to_string()))?;
    let mut p = params.clone();
    let str_param = |k: &str| {
        params
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::new(INVALID_PARAMS, format!("missing string parameter '{k}'")))
    };
    match method {
        Method::ToolsCall | Method::PromptsGet => {
            let name = str_param("name")?;
            let (found, kind) = match method {
                Method::ToolsCall => (agg.routes.tool(name), "tool"),
                _ => (agg.routes.prompt(name), "prompt"),
            };
            let r = found
                .ok_or_else(|| RpcError::new(INVALID_PARAMS, format!("Unknown {kind}: {name}")))?;
            p["name"] = Value::String(r.original.clone());
            Ok((r.backend.clone(), p))
        }
        Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => {
            let uri = str_param("uri")?;
            let r = agg.routes.resource(uri).ok_or_else(|| {
                RpcError::new(RESOURCE_NOT_FOUND, format!("Resource not found: {uri}"))
                    .with_data(json!({ "uri": uri }))
            })?;
            Ok((r.backend.clone(), p))
        }
        Method::CompletionComplete => {
            let reference =
                params.get("ref").ok_or_else(|| RpcError::new(INVALID_PARAMS, "missing 'ref'"))?;
            let (r, rewritten) = agg
                .routes
                .completion(reference)
                .ok_or_else(|| RpcError::new(INVALID_PARAMS, "unknown completion reference"))?;
            p["ref"] = rewritten;
            Ok((r.backend.clone(), p))
        }
        other => Err(RpcError::new(
            INTERNAL_ERROR,
            format!("{} is not routed to one backend", other.as_str()),
        )),
    }
}

async fn forward(
    caller: Caller<'_>,
    client_id: &Value,
    method: Method,
    params: Option<Value>,
    progress: Option<ProgressSink>,
) -> Dispatched {
    let Caller { manager, session, identity } = caller;
    let params = params.unwrap_or_else(|| json!({}));
    let (backend, params) = match route(session, method, &params) {
        Ok(r) => r,
        Err(e) => {
            match Box::pin(unavailable_owner(manager, session, identity, method, &params)).await {
                Some(Ok(())) => route(session, method, &params).map_err(|e| (None, e))?,
                Some(Err(owner_error)) => return Err(owner_error),
                None => return Err((None, e)),
            }
        }
    };
    let fail = |e: RpcError| (Some(backend.clone()), e);
    let slot = session.slot(&backend).ok_or_else(|| {
        fail(backend_error(
            &backend,
            &BackendError::Protocol("not a member of this session".into()),
        ))
    })?;
    // One transparent retry when the backend lost its session (I7): a 404 means the backend
    // did not process the request, so repeating it is safe.
    for attempt in 0..2 {
        let conn = manager
            .connect_slot(session, &slot, identity, true)
            .await
            .map_err(|e| fail(backend_error(&backend, &e)))?;
        let headers = slot
            .def
            .credentials
            .headers(identity)
            .await
            .map_err(|e| fail(backend_error(&backend, &BackendError::Auth(e))))?;
        if session.outbox.is_attached() {
            conn.ensure_stream(&headers);
        }
        let bid = conn.next_id();
        session.track(client_id, backend.clone(), bid);
        // Boxed: the backend request's future is most of this one's size, and a smaller
        // call future is cheaper to start (see `client_streams::call_stream`).
        let r = Box::pin(conn.request(
            bid,
            method.as_str(),
            Some(params.clone()),
            &headers,
            progress.clone(),
        ))
        .await;
        session.untrack(client_id);
        match r {
            Ok(v) => return Ok((Some(backend), v)),
            Err(BackendError::SessionExpired) if attempt == 0 => {
                // Only the first of concurrent calls that hit the expired session re-opens it
                // (L9); the others retry on the session it opened.
                if slot.reset_if_current(&conn) {
                    tracing::info!(session = %session.id, backend = %backend, "backend session expired; re-initializing it and retrying");
                    manager
                        .metrics()
                        .backend_reinit
                        .get_or_create(&crate::metrics::BackendLabel {
                            backend: backend.to_string(),
                        })
                        .inc();
                }
            }
            Err(e) => {
                if matches!(e, BackendError::Unreachable(_) | BackendError::SessionExpired)
                    && slot.reset_if_current(&conn)
                {
                    slot.fail(&e);
                }
                return Err(fail(backend_error(&backend, &e)));
            }
        }
    }
    Err(fail(backend_error(&backend, &BackendError::SessionExpired)))
}

/// A name that is not in the view may belong to a member that is unavailable on this replica
/// (I3: it stays a member). Under `prefix` resolution the prefix tells which: try to connect
/// it now with the live identity, and if that fails answer with an error naming the backend.
async fn unavailable_owner(
    manager: &Arc<SessionManager>,
    session: &Arc<Session>,
    identity: &Identity,
    method: Method,
    params: &Value,
) -> Option<Result<(), (Option<Arc<str>>, RpcError)>> {
    let set = manager.backends();
    if !matches!(method, Method::ToolsCall | Method::PromptsGet)
        || set.aggregation.conflict_resolution != vmcp_types::config::ConflictResolution::Prefix
    {
        return None;
    }
    let name = params.get("name").and_then(Value::as_str)?;
    let slot = session.slots().into_iter().find(|s| {
        s.connection().is_none()
            && name.starts_with(&set.aggregation.prefix_format.replace("{backend}", &s.def.name))
    })?;
    let backend = slot.def.name.clone();
    match manager.connect_slot(session, &slot, identity, true).await {
        Ok(_) => {
            session.rebuild_view(&set);
            Some(Ok(()))
        }
        Err(e) => Some(Err((Some(backend.clone()), backend_error(&backend, &e)))),
    }
}

/// A backend failure as a JSON-RPC error naming the backend. A JSON-RPC error the backend
/// returned keeps its code.
pub fn backend_error(backend: &str, e: &BackendError) -> RpcError {
    match e {
        BackendError::Rpc(inner) => {
            let mut data = json!({ "backend": backend });
            if let Some(d) = &inner.data {
                data["backendData"] = d.clone();
            }
            RpcError::new(inner.code, format!("backend '{backend}': {}", inner.message))
                .with_data(data)
        }
        BackendError::Auth(a) => {
            let mut data = json!({ "backend": backend });
            if let crate::auth::outgoing::OutgoingAuthError::Exchange { error, .. } = a {
                data["oauthError"] = Value::String(error.clone());
            }
            RpcError::new(
                INTERNAL_ERROR,
                format!("backend '{backend}': credential unavailable: {a}"),
            )
            .with_data(data)
        }
        // M7: the details (URLs, backend error pages) go to the log, not to the client.
        other => {
            tracing::warn!(backend, error = %other, "backend call failed");
            let text = match other {
                BackendError::Timeout(_) => format!("backend '{backend}' timed out"),
                _ => format!("backend '{backend}' unavailable"),
            };
            RpcError::new(INTERNAL_ERROR, text).with_data(json!({ "backend": backend }))
        }
    }
}

/// Forwards a client notification: cancellation and progress go to the backend that owns
/// the request; `roots/list_changed` goes to every backend; the rest is absorbed.
pub async fn handle_notification(
    session: &Arc<Session>,
    identity: &Identity,
    method: &str,
    params: Option<Value>,
) {
    match method {
        notification::CANCELLED => {
            let Some(req) = params.as_ref().and_then(|p| p.get("requestId")) else { return };
            let Some((backend, bid)) = session.tracked(req) else { return };
            let Some(slot) = session.slot(&backend) else { return };
            if let (Some(conn), Ok(h)) =
                (slot.connection(), slot.def.credentials.headers(identity).await)
            {
                let mut p = params.clone().unwrap_or_else(|| json!({}));
                p["requestId"] = Value::from(bid);
                let _ = conn.notify(method, Some(p), &h).await;
            }
        }
        notification::ROOTS_LIST_CHANGED => {
            for slot in session.slots() {
                if let (Some(conn), Ok(h)) =
                    (slot.connection(), slot.def.credentials.headers(identity).await)
                {
                    let _ = conn.notify(method, params.clone(), &h).await;
                }
            }
        }
        _ => {}
    }
}
