//! The session manager: local cache, creation, identity-aware restore, membership changes,
//! termination and idle eviction.

use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use serde_json::{Value, json};
use vmcp_types::config::AggregationConfig;

use super::record::{SCHEMA_VERSION, SessionRecord};
use super::slot::Slot;
use super::store::{SessionStore, StoreError};
use super::{ClientSide, Session};
use crate::auth::{Binding, Identity};
use crate::backend::BackendDef;
use crate::metrics::{Metrics, StoreOp};

mod members;
mod membership;
mod restore;
pub mod stateless;

pub(super) use members::dispatch_events;
use restore::member;

/// Why a session could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Unknown, expired, terminated, or bound to another identity (always HTTP 404, with no
    /// hint which).
    #[error("session not found")]
    NotFound,
    /// A member backend needs the caller's token and the request has none (I1): HTTP 401.
    #[error("this session's backends need an authenticated caller")]
    AuthRequired,
    /// The store failed: HTTP 503.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The configured backends and aggregation settings (replaced as a whole on reload).
#[derive(Debug, Clone, Default)]
pub struct BackendSet {
    /// Backend names in configuration order.
    pub order: Vec<Arc<str>>,
    /// Backends by name.
    pub defs: BTreeMap<Arc<str>, Arc<BackendDef>>,
    /// Aggregation settings.
    pub aggregation: AggregationConfig,
    /// Merged views shared by sessions of this configuration.
    pub views: Arc<super::views::ViewCache>,
}

impl BackendSet {
    /// Builds the set from definitions in configuration order.
    pub fn new(defs: Vec<Arc<BackendDef>>, aggregation: AggregationConfig) -> Self {
        Self {
            order: defs.iter().map(|d| d.name.clone()).collect(),
            defs: defs.into_iter().map(|d| (d.name.clone(), d)).collect(),
            aggregation,
            views: Default::default(),
        }
    }
}

/// Session timing settings.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Sliding TTL in the store.
    pub ttl: Duration,
    /// Local connections of a session idle this long are dropped (restored on next use).
    pub idle_timeout: Duration,
    /// Deadline for backend initialization when a session starts or is restored.
    pub init_timeout: Duration,
}

/// Owns every session of this replica.
#[derive(Debug)]
pub struct SessionManager {
    local: RwLock<HashMap<Arc<str>, Arc<Session>>>,
    restoring: Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>>,
    store: Arc<dyn SessionStore>,
    backends: RwLock<Arc<BackendSet>>,
    settings: SessionSettings,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    epoch: Instant,
    termination_feed: RwLock<Option<TerminationFeedProbe>>,
    /// Termination notices may have been missed and the cached sessions are not checked yet:
    /// until they are, every cached hit is checked against the store (I5).
    feed_unverified: std::sync::atomic::AtomicBool,
    /// Backend contexts of stateless (2026-07-28) clients, by binding.
    stateless: stateless::StatelessContexts,
    /// Where a client's answer goes when no backend request on this replica waits for it
    /// (the replicas' Redis feed).
    answer_relay: std::sync::OnceLock<Arc<super::redis::RedisStore>>,
}

/// Tells whether the feed of terminations from other replicas (Redis pub/sub) is live.
#[derive(Clone)]
pub struct TerminationFeedProbe(pub Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for TerminationFeedProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TerminationFeedProbe")
    }
}

/// Capabilities the gateway announces to clients.
fn server_capabilities() -> Value {
    json!({
        "tools": { "listChanged": true },
        "resources": { "subscribe": true, "listChanged": true },
        "prompts": { "listChanged": true },
        "completions": {},
        "logging": {},
    })
}

/// A new session id: 128 random bits from the OS CSPRNG, hex (visible ASCII).
fn new_session_id() -> String {
    let mut b = [0u8; 16];
    // ThreadRng is a CSPRNG (ChaCha) seeded from the OS.
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl SessionManager {
    /// A manager over `store` serving `backends`.
    pub fn new(
        store: Arc<dyn SessionStore>,
        backends: BackendSet,
        settings: SessionSettings,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            local: RwLock::new(HashMap::new()),
            restoring: Mutex::new(HashMap::new()),
            store,
            backends: RwLock::new(Arc::new(backends)),
            settings,
            http,
            metrics,
            epoch: Instant::now(),
            termination_feed: RwLock::new(None),
            answer_relay: std::sync::OnceLock::new(),
            feed_unverified: std::sync::atomic::AtomicBool::new(false),
            stateless: Default::default(),
        })
    }

    /// The configured backends.
    pub fn backends(&self) -> Arc<BackendSet> {
        self.backends.read().clone()
    }

    /// Shared HTTP client for backends.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The store, when other replicas share it (so stream events are worth keeping there).
    pub fn shared_store(&self) -> Option<Arc<dyn SessionStore>> {
        self.store.is_shared().then(|| self.store.clone())
    }

    /// Metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Number of sessions held locally.
    pub fn local_count(&self) -> usize {
        self.local.read().len()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    async fn timed<T>(
        &self,
        op: &str,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let r = f.await;
        let label = StoreOp { op: op.to_owned() };
        self.metrics.store_seconds.get_or_create(&label).observe(start.elapsed().as_secs_f64());
        if r.is_err() {
            self.metrics.store_errors.get_or_create(&label).inc();
        }
        r
    }

    /// Creates a session for `initialize`: every configured backend becomes a member; they are
    /// connected concurrently under the init deadline; slow or dead ones are left out of the
    /// view for now and come in later with a `list_changed`.
    pub async fn create(
        self: &Arc<Self>,
        identity: &Identity,
        params: &Value,
    ) -> Result<(Arc<Session>, Value), SessionError> {
        let set = self.backends();
        let requested = params.get("protocolVersion").and_then(Value::as_str);
        let version = crate::protocol::negotiate(requested).to_owned();
        let id: Arc<str> = new_session_id().into();
        let slots: Vec<Arc<Slot>> =
            set.order.iter().filter_map(|n| set.defs.get(n)).map(|d| member(d, None)).collect();
        let client = super::record::restorable_client_params(params);
        let relayed = super::asks::relayed_capabilities(&client);
        let side = ClientSide {
            binding: identity.binding(),
            protocol_version: version.clone(),
            capabilities: relayed,
        };
        let session = self.build(id.clone(), side, 1, slots);
        self.connect_all(&session, identity).await;
        let record = self.record_of(&session, client);
        if let Err(e) =
            self.timed("create", self.store.create(&id, &record, self.settings.ttl)).await
        {
            session.park();
            return Err(e.into());
        }
        // Published only now: no request sees a session that is not stored or not connected.
        self.publish(&session);
        self.metrics.sessions_created.inc();
        let result = json!({
            "protocolVersion": version,
            "capabilities": server_capabilities(),
            "serverInfo": { "name": "vmcp", "title": "vmcp gateway", "version": env!("CARGO_PKG_VERSION") },
        });
        Ok((session, result))
    }

    fn record_of(&self, s: &Session, client: Value) -> SessionRecord {
        let hints = s
            .slots()
            .iter()
            .filter_map(|sl| {
                sl.connection().and_then(|c| c.session_hint()).map(|h| (sl.def.name.to_string(), h))
            })
            .collect();
        SessionRecord {
            v: SCHEMA_VERSION,
            binding: s.binding.as_str().to_owned(),
            protocol_version: s.protocol_version.clone(),
            client,
            generation: s.generation(),
            members: s.member_names(),
            hints,
        }
    }

    /// A new session object (not yet visible to requests: see [`Self::publish`]).
    fn build(
        self: &Arc<Self>,
        id: Arc<str>,
        client: ClientSide,
        generation: u64,
        slots: Vec<Arc<Slot>>,
    ) -> Arc<Session> {
        let manager = Arc::downgrade(self);
        let session =
            Arc::new_cyclic(|me| Session::new(me.clone(), manager, id, client, generation, slots));
        session.last_used.store(self.now_ms(), std::sync::atomic::Ordering::Relaxed);
        session
    }

    /// Makes a connected session visible to requests on this replica.
    fn publish(&self, session: &Arc<Session>) {
        self.local.write().insert(session.id.clone(), session.clone());
        self.metrics.sessions_live.set(self.local_count() as i64);
    }

    /// A request presented a session bound to another identity: 404 like any unknown id, but
    /// audited and counted (the subject, never a token; a prefix of the session id).
    fn reject_foreign(&self, id: &str, identity: &Identity) -> SessionError {
        self.metrics.sessions_foreign.inc();
        tracing::warn!(target: "audit", subject = identity.subject(), session_prefix = &id[..id.len().min(8)], outcome = "foreign_session", "request for a session bound to another identity rejected");
        SessionError::NotFound
    }

    /// Registers the health probe of the termination feed. While it reports the feed down, a
    /// locally cached session is checked against the store on every request, so a DELETE on
    /// another replica still ends it here promptly (I5).
    pub fn set_termination_feed(&self, probe: TerminationFeedProbe) {
        *self.termination_feed.write() = Some(probe);
    }

    /// Relays client answers that no backend request here waits for through `redis` (and
    /// takes the ones other replicas relay: [`super::termination::follow`]).
    pub fn set_answer_relay(&self, redis: Arc<super::redis::RedisStore>) {
        let _ = self.answer_relay.set(redis);
    }

    /// Delivers a client's answer to the backend request it belongs to: on this replica, or
    /// through the relay on the replica holding the backend call. False when neither can.
    pub async fn deliver_answer(&self, session: &Session, message: Value) -> bool {
        if session.asks.answer(message.clone()) {
            return true;
        }
        let Some(relay) = self.answer_relay.get() else { return false };
        match relay.publish_answer(&session.id, &message.to_string()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(session = %session.id, error = %e, "could not relay a client answer to the other replicas");
                false
            }
        }
    }

    /// A relayed answer for a session cached on this replica.
    pub(super) fn take_relayed_answer(&self, session: &str, message: Value) {
        let local = self.local.read().get(session).cloned();
        if let Some(s) = local {
            s.asks.answer(message);
        }
    }

    fn feed_down(&self) -> bool {
        self.feed_unverified.load(std::sync::atomic::Ordering::Acquire)
            || self.termination_feed.read().clone().is_some_and(|p| !(p.0)())
    }

    /// Resolves `Mcp-Session-Id` for a request by `identity`: the local cache, else a restore
    /// from the store re-established with the live identity.
    pub async fn get(
        self: &Arc<Self>,
        id: &str,
        identity: &Identity,
    ) -> Result<Arc<Session>, SessionError> {
        // Ids this gateway issues are 32 lowercase hex digits; anything else is unknown without
        // touching the store or any map.
        if !is_session_id(id) {
            return Err(SessionError::NotFound);
        }
        let local = self.local.read().get(id).cloned();
        let session = match local {
            Some(s) if self.feed_down() => {
                if !self.timed("exists", self.store.exists(id)).await? {
                    self.forget(id);
                    return Err(SessionError::NotFound);
                }
                s
            }
            Some(s) => s,
            // Boxed: a restore's future is large and rare; every request's future would
            // otherwise carry its size.
            None => Box::pin(self.restore(id, identity)).await?,
        };
        if !session.binding.matches(&identity.binding()) {
            return Err(self.reject_foreign(id, identity));
        }
        self.touch(&session);
        Ok(session)
    }

    fn touch(self: &Arc<Self>, session: &Arc<Session>) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.now_ms();
        session.last_used.store(now, Relaxed);
        // Coalesced TTL refresh: at most one store write per tenth of the TTL.
        let every = (self.settings.ttl.as_millis() as u64 / 10).max(1000);
        let last = session.last_touch.load(Relaxed);
        if now.saturating_sub(last) >= every
            && session.last_touch.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
        {
            let me = self.clone();
            let id = session.id.clone();
            tokio::spawn(async move {
                match me.timed("touch", me.store.touch(&id, me.settings.ttl)).await {
                    Ok(false) => me.forget(&id),
                    Ok(true) => {}
                    Err(e) => {
                        tracing::warn!(session = %id, error = %e, "could not refresh the session TTL")
                    }
                }
            });
        }
    }

    /// Ends a session everywhere (DELETE): removes the record, closes backend sessions.
    pub async fn terminate(
        self: &Arc<Self>,
        session: &Arc<Session>,
        identity: &Identity,
    ) -> Result<(), SessionError> {
        self.timed("delete", self.store.delete(&session.id)).await?;
        self.forget(&session.id);
        self.metrics.sessions_terminated.inc();
        session.outbox.close();
        session.streams.close_all();
        let s = session.clone();
        let ident = identity.clone();
        tokio::spawn(async move {
            for slot in s.slots() {
                slot.close(&ident).await;
            }
        });
        Ok(())
    }

    /// DELETE of session `id` by `identity`. A session held here ends as with [`Self::terminate`];
    /// one this replica does not hold is deleted from the store after the binding check,
    /// without restoring it first (L12: no token exchange, no backend initialize, no list calls
    /// just to end it). Its stored backend sessions are ended in the background; the replica
    /// that holds it drops it on the termination notice (I5).
    pub async fn terminate_id(
        self: &Arc<Self>,
        id: &str,
        identity: &Identity,
    ) -> Result<(), SessionError> {
        if !is_session_id(id) {
            return Err(SessionError::NotFound);
        }
        let local = self.local.read().get(id).cloned();
        if let Some(session) = local {
            if !session.binding.matches(&identity.binding()) {
                return Err(self.reject_foreign(id, identity));
            }
            return self.terminate(&session, identity).await;
        }
        let Some(record) = self.timed("load", self.store.load(id)).await? else {
            return Err(SessionError::NotFound);
        };
        if !Binding::from_stored(record.binding.clone()).matches(&identity.binding()) {
            return Err(self.reject_foreign(id, identity));
        }
        self.timed("delete", self.store.delete(id)).await?;
        self.metrics.sessions_terminated.inc();
        let set = self.backends();
        let (http, ident) = (self.http.clone(), identity.clone());
        tokio::spawn(async move {
            for (name, hint) in record.hints {
                if let Some(def) = set.defs.get(name.as_str()) {
                    Slot::end_stored(def.clone(), hint, &ident, &http).await;
                }
            }
        });
        Ok(())
    }

    /// Ends every client GET stream (shutdown: in-flight calls drain, listeners reconnect
    /// elsewhere); the sessions themselves stay, here and in the store.
    pub fn end_client_streams(&self) {
        let sessions: Vec<Arc<Session>> = self.local.read().values().cloned().collect();
        for s in sessions {
            s.outbox.detach();
        }
    }

    /// Drops the local copy of a session (its record stays in the store): its client stream
    /// ends and its backend connections are parked (streams closed, hints kept).
    pub fn forget(&self, id: &str) {
        let removed = self.local.write().remove(id);
        if let Some(s) = removed {
            s.outbox.close();
            s.streams.close_all();
            s.park();
        }
        self.metrics.sessions_live.set(self.local_count() as i64);
    }
}

/// Is `id` of the form this gateway issues (32 lowercase hex digits)?
fn is_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
