//! MCP sessions: creation at `initialize`, lookup and identity-aware restore, membership,
//! termination. The whole session story lives in this folder:
//!
//! - [`record`]: what is stored (no secrets, I6), [`store`]: the store contract,
//!   [`memory`]: the single-replica store.
//! - [`slot`]: one member backend of a session (connection, capabilities, availability; I3).
//! - [`manager`]: the local cache, restore with the live identity (I1, I2, I7), generation
//!   bumps on config change (I4), termination (I5), idle eviction.
//! - [`outbox`]: delivery of server-to-client messages to the GET stream.
//! - [`streams`]: the client's SSE streams, with event ids and replay (resumability).
//! - [`termination`]: the feed of DELETEs from other replicas (I5).
//! - [`views`]: merged views shared by sessions with the same member lists (I8).

pub mod asks;
pub mod manager;
pub mod memory;
pub mod outbox;
pub mod record;
pub mod redis;
pub mod slot;
pub mod store;
pub mod streams;
pub mod termination;
pub mod views;

pub use manager::{SessionError, SessionManager};

use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::aggregate::{Aggregated, BackendCapabilities};
use crate::auth::Binding;
use crate::backend::ClientLink;
use outbox::Outbox;
use slot::Slot;

/// The merged view of a session: the aggregation result, or why there is none.
pub type View = Arc<Result<Aggregated, ViewError>>;

/// Why a session has no merged view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// The session was just installed and its members are not aggregated yet (requests wait
    /// for a restore to finish, so clients do not normally see this).
    #[error("not aggregated yet")]
    Pending,
    /// The members' capabilities cannot be merged under the configuration (manual conflicts).
    #[error(transparent)]
    Unmergeable(#[from] crate::aggregate::AggregationError),
}

/// One live MCP session on this replica.
#[derive(Debug)]
pub struct Session {
    /// `Mcp-Session-Id`.
    pub id: Arc<str>,
    /// The identity binding (I2).
    pub binding: Binding,
    /// Protocol revision negotiated with the client.
    pub protocol_version: String,
    generation: AtomicU64,
    /// Member backends in configuration order (one lock: names and order never drift apart).
    members: RwLock<Vec<Arc<Slot>>>,
    view: RwLock<View>,
    /// Server-to-client messages.
    pub outbox: Outbox,
    /// The SSE streams to the client, kept for resumption.
    pub streams: streams::Streams,
    inflight: Mutex<std::collections::HashMap<String, (Arc<str>, u64)>>,
    last_used: AtomicU64,
    last_touch: AtomicU64,
    /// The client capabilities the gateway relays (sampling, elicitation, roots), declared to
    /// every backend this session opens.
    client_capabilities: Value,
    /// Backend requests waiting for the client's answer.
    pub(crate) asks: asks::ClientAsks,
    /// Backend events of this session; the channel and its dispatcher task exist only once a
    /// backend connection does (an idle session costs no task: I8).
    link: std::sync::OnceLock<ClientLink>,
    dispatcher: Mutex<Option<tokio::task::AbortHandle>>,
    me: std::sync::Weak<Session>,
    manager: std::sync::Weak<SessionManager>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(h) = self.dispatcher.lock().take() {
            h.abort();
        }
    }
}

/// The client side of a session, fixed at `initialize`.
#[derive(Debug)]
pub(crate) struct ClientSide {
    /// The identity binding (I2).
    pub binding: Binding,
    /// The negotiated protocol revision.
    pub protocol_version: String,
    /// The client capabilities the gateway relays to backends.
    pub capabilities: Value,
}

impl Session {
    fn new(
        me: std::sync::Weak<Session>,
        manager: std::sync::Weak<SessionManager>,
        id: Arc<str>,
        client: ClientSide,
        generation: u64,
        slots: Vec<Arc<Slot>>,
    ) -> Self {
        let ClientSide { binding, protocol_version, capabilities: client_capabilities } = client;
        Self {
            id,
            binding,
            protocol_version,
            generation: AtomicU64::new(generation),
            members: RwLock::new(slots),
            view: RwLock::new(Arc::new(Err(ViewError::Pending))),
            outbox: Outbox::default(),
            streams: streams::Streams::default(),
            inflight: Mutex::new(Default::default()),
            last_used: AtomicU64::new(0),
            last_touch: AtomicU64::new(0),
            client_capabilities,
            asks: asks::ClientAsks::default(),
            link: std::sync::OnceLock::new(),
            dispatcher: Mutex::new(None),
            me,
            manager,
        }
    }

    /// Member backends in configuration order.
    pub fn slots(&self) -> Vec<Arc<Slot>> {
        self.members.read().clone()
    }

    /// One member backend.
    pub fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.members.read().iter().find(|s| &*s.def.name == name).cloned()
    }

    /// Member names in order (what the record's `members` holds).
    pub fn member_names(&self) -> Vec<String> {
        self.members.read().iter().map(|s| s.def.name.to_string()).collect()
    }

    /// Membership generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The current merged view.
    pub fn view(&self) -> View {
        self.view.read().clone()
    }

    /// Recomputes the merged view from the members' capabilities (shared with other sessions
    /// whose members offer the same lists). A member that is down on this replica keeps what
    /// it offered when last seen (M3, I3): its names stay routed to it, so a call gets an error
    /// naming it instead of silently going to another backend under `priority`.
    pub fn rebuild_view(&self, set: &manager::BackendSet) {
        let slots = self.slots();
        let order: Vec<Arc<str>> = slots.iter().map(|s| s.def.name.clone()).collect();
        let caps: Vec<Arc<BackendCapabilities>> = slots
            .iter()
            .filter_map(|s| s.capabilities().or_else(|| s.def.catalog.last()))
            .collect();
        let view = set.views.view(&set.aggregation, &order, caps);
        *self.view.write() = view;
    }

    /// The client opened its GET stream: open the member backends' streams with the live
    /// identity's credentials (I1), so their notifications reach it. Members not connected yet
    /// open theirs on first use.
    pub async fn open_backend_streams(&self, identity: &crate::auth::Identity) {
        for slot in self.slots() {
            let Some(conn) = slot.connection() else { continue };
            match slot.def.credentials.headers(identity).await {
                Ok(h) => conn.start_stream(&h),
                Err(e) => {
                    tracing::debug!(session = %self.id, backend = %slot.def.name, error = %e, "no credential for the backend stream")
                }
            }
        }
    }

    /// The client holds no GET stream any more: close the member backends' streams, so an
    /// idle session holds no socket (I8).
    pub fn close_backend_streams_if_detached(&self) {
        if self.outbox.is_attached() {
            return;
        }
        for slot in self.slots() {
            if let Some(conn) = slot.connection() {
                conn.stop_stream();
            }
        }
    }

    /// Tells the client that every list may have changed (the merged view was rebuilt).
    pub fn announce_lists_changed(&self) {
        for method in crate::protocol::notification::LISTS_CHANGED {
            self.outbox.send(crate::jsonrpc::notification(method, None));
        }
    }

    /// Parks every member: streams closed, local connections dropped, hints kept.
    pub fn park(&self) {
        for slot in self.slots() {
            slot.park();
        }
    }

    /// Records a client request id routed to a backend request id (for cancellation).
    pub fn track(&self, client_id: &Value, backend: Arc<str>, backend_id: u64) {
        self.inflight.lock().insert(client_id.to_string(), (backend, backend_id));
    }

    /// Forgets a finished request.
    pub fn untrack(&self, client_id: &Value) {
        self.inflight.lock().remove(&client_id.to_string());
    }

    /// Where a client request id went.
    pub fn tracked(&self, client_id: &Value) -> Option<(Arc<str>, u64)> {
        self.inflight.lock().get(&client_id.to_string()).cloned()
    }

    /// What new backend connections of this session get: the sender for their events and the
    /// client capabilities to declare. The first call starts the task that dispatches events.
    pub fn link(&self) -> &ClientLink {
        self.link.get_or_init(|| {
            let (events, rx) = mpsc::channel(crate::backend::EVENT_QUEUE);
            let task =
                tokio::spawn(manager::dispatch_events(self.manager.clone(), self.me.clone(), rx));
            *self.dispatcher.lock() = Some(task.abort_handle());
            let streams = self
                .manager
                .upgrade()
                .map(|m| m.metrics().backend_streams.clone())
                .unwrap_or_default();
            ClientLink { events, capabilities: self.client_capabilities.clone(), streams }
        })
    }

    /// The client capabilities relayed to backends (`{}` when the client declared none).
    pub fn client_capabilities(&self) -> &Value {
        &self.client_capabilities
    }

    fn set_members(&self, slots: Vec<Arc<Slot>>, generation: u64) {
        *self.members.write() = slots;
        self.generation.store(generation, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
