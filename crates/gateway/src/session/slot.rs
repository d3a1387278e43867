//! One member backend of one session: its connection (if up), its capabilities, its status.
//! A failed backend stays a member and is only marked unavailable on this replica (I3).

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::aggregate::BackendCapabilities;
use crate::auth::Identity;
use crate::backend::{BackendDef, BackendError, ClientLink, Connection, Headers};

/// How old a backend's catalog may be for a session to start from it instead of listing
/// (the health monitor refreshes it every 10 s).
pub const CATALOG_FRESH: Duration = Duration::from_secs(30);

/// Availability of a member backend on this replica.
#[derive(Debug, Clone)]
pub enum SlotStatus {
    /// Not connected yet (restored sessions connect lazily).
    Idle,
    /// Connected.
    Available,
    /// Failed; retried after `retry_at`.
    Unavailable {
        /// What went wrong (for errors and /readyz).
        reason: String,
        /// When to try again.
        retry_at: Instant,
        /// Consecutive failures (for backoff).
        failures: u32,
        /// The credential could not be obtained (e.g. the token exchange failed): retried with
        /// the next request's identity, whose token may differ (the exchange's own negative
        /// cache keeps a failing token from reaching the IdP again). Other failures wait for
        /// `retry_at` (F4).
        credential: bool,
    },
}

/// A member backend of one session.
#[derive(Debug)]
pub struct Slot {
    /// The backend.
    pub def: Arc<BackendDef>,
    conn: Mutex<Option<Arc<Connection>>>,
    caps: Mutex<Option<Arc<BackendCapabilities>>>,
    stale: std::sync::atomic::AtomicBool,
    status: Mutex<SlotStatus>,
    hint: Mutex<Option<String>>,
    connecting: tokio::sync::Mutex<()>,
    /// A background retry loop is running for this member.
    pub retrying: std::sync::atomic::AtomicBool,
    /// The capabilities came from the backend's shared catalog: the backend session is opened
    /// (or resumed from the hint) on first use, without listing again (I8).
    preloaded: std::sync::atomic::AtomicBool,
}

/// Result of connecting a slot.
#[derive(Debug)]
pub struct Connected {
    /// The connection.
    pub conn: Arc<Connection>,
    /// The backend session id, if it changed (to store as hint).
    pub new_hint: Option<Option<String>>,
    /// Did this call re-initialize a backend session whose stored id the backend no longer
    /// knew (I7)?
    pub reinitialized: bool,
}

impl Slot {
    /// A member backend, optionally with a stored backend session id.
    pub fn new(def: Arc<BackendDef>, hint: Option<String>) -> Self {
        Self {
            def,
            conn: Mutex::new(None),
            caps: Mutex::new(None),
            stale: std::sync::atomic::AtomicBool::new(false),
            status: Mutex::new(SlotStatus::Idle),
            hint: Mutex::new(hint),
            connecting: tokio::sync::Mutex::new(()),
            retrying: std::sync::atomic::AtomicBool::new(false),
            preloaded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A member whose capabilities are known from the backend's catalog (lists fetched by this
    /// replica within the last seconds): nothing is opened until a request needs the backend.
    pub fn preloaded(
        def: Arc<BackendDef>,
        hint: Option<String>,
        caps: Arc<BackendCapabilities>,
    ) -> Self {
        let slot = Self::new(def, hint);
        *slot.caps.lock() = Some(caps);
        slot.preloaded.store(true, std::sync::atomic::Ordering::Relaxed);
        slot
    }

    /// The current connection, if any.
    pub fn connection(&self) -> Option<Arc<Connection>> {
        self.conn.lock().clone()
    }

    /// Current capabilities, if known.
    pub fn capabilities(&self) -> Option<Arc<BackendCapabilities>> {
        self.caps.lock().clone()
    }

    /// Status.
    pub fn status(&self) -> SlotStatus {
        self.status.lock().clone()
    }

    /// Marks the capabilities as outdated (after a backend `list_changed`).
    pub fn mark_stale(&self) {
        self.stale.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Are the capabilities outdated?
    pub fn is_stale(&self) -> bool {
        self.stale.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Should a connection attempt be made now?
    pub fn due(&self) -> bool {
        match self.status() {
            SlotStatus::Available => self.connection().is_none(),
            // A preloaded member connects on first use, not ahead of it.
            SlotStatus::Idle => !self.preloaded.load(std::sync::atomic::Ordering::Relaxed),
            SlotStatus::Unavailable { retry_at, .. } => Instant::now() >= retry_at,
        }
    }

    /// Parks the member: closes its GET stream and drops the local connection, keeping the
    /// backend session id as a hint for the next use (I7, I8).
    pub fn park(&self) {
        let conn = self.conn.lock().take();
        if let Some(conn) = conn {
            conn.stop_stream();
        }
    }

    /// Drops the connection (e.g. the backend answered 404 to its session id).
    pub fn reset(&self) {
        *self.conn.lock() = None;
        *self.hint.lock() = None;
    }

    /// Drops the connection (and its hint) only if it is still `failed`. Of several calls that
    /// saw the same backend session expire or fail, the first resets it; the others reuse the
    /// session it opened again instead of resetting that one too (L9: extra backend sessions,
    /// a flapping stored hint). True when this call reset it.
    pub fn reset_if_current(&self, failed: &Arc<Connection>) -> bool {
        {
            let mut conn = self.conn.lock();
            if !conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, failed)) {
                return false;
            }
            *conn = None;
        }
        *self.hint.lock() = None;
        true
    }

    /// Connects if needed (single-flight), using credentials derived from `identity` (I1):
    /// reuses the stored hint, re-initializes transparently when the backend no longer knows
    /// it (I7), and loads the backend's capabilities.
    pub async fn ensure(
        &self,
        identity: &Identity,
        http: &reqwest::Client,
        link: &ClientLink,
    ) -> Result<Connected, BackendError> {
        let _guard = self.connecting.lock().await;
        if let Some(conn) = self.connection() {
            if self.is_stale() {
                let headers = self.def.credentials.headers(identity).await?;
                Box::pin(self.load_capabilities(&conn, &headers, None)).await?;
            }
            return Ok(Connected { conn, new_hint: None, reinitialized: false });
        }
        // Boxed: connecting is rare and its future large; every call's future passes here.
        let result = Box::pin(self.connect(identity, http, link)).await;
        match &result {
            Ok(_) => self.set_status(SlotStatus::Available),
            Err(e) => self.fail(e),
        }
        result
    }

    async fn connect(
        &self,
        identity: &Identity,
        http: &reqwest::Client,
        link: &ClientLink,
    ) -> Result<Connected, BackendError> {
        let headers = self.def.credentials.headers(identity).await?;
        let hint = self.hint.lock().clone();
        let old_hint = hint.clone();
        if self.preloaded.load(std::sync::atomic::Ordering::Relaxed) && !self.is_stale() {
            // Capabilities are known: resume the stored session (no request at all; a lost one
            // shows as 404/400 on the first call, which re-initializes it), or initialize.
            let (conn, _) =
                Connection::open(self.def.clone(), http.clone(), &headers, hint, link).await?;
            if let Some(newer) = self.def.catalog.fresh(CATALOG_FRESH) {
                *self.caps.lock() = Some(newer);
            }
            return Ok(self.install(conn, old_hint, false));
        }
        if let Some(h) = hint {
            let (conn, _) =
                Connection::open(self.def.clone(), http.clone(), &headers, Some(h), link).await?;
            match self.load_capabilities(&conn, &headers, None).await {
                Ok(()) => return Ok(self.install(conn, old_hint, false)),
                Err(BackendError::SessionExpired) => {
                    tracing::info!(backend = %self.def.name, "backend no longer knows the stored session; re-initializing it");
                }
                Err(e) => return Err(e),
            }
        }
        let (conn, info) =
            Connection::open(self.def.clone(), http.clone(), &headers, None, link).await?;
        self.load_capabilities(&conn, &headers, info.map(|i| i.capabilities)).await?;
        let recovered = old_hint.is_some();
        Ok(self.install(conn, old_hint, recovered))
    }

    fn install(
        &self,
        conn: Connection,
        old_hint: Option<String>,
        reinitialized: bool,
    ) -> Connected {
        let conn = Arc::new(conn);
        let hint = conn.session_hint();
        *self.conn.lock() = Some(conn.clone());
        self.hint.lock().clone_from(&hint);
        let new_hint = (hint != old_hint).then_some(hint);
        Connected { conn, new_hint, reinitialized }
    }

    /// Fetches tools, resources, templates and prompts (following cursors). With unknown
    /// capabilities (a resumed session) every list is tried and "method not found" is empty.
    async fn load_capabilities(
        &self,
        conn: &Connection,
        headers: &Headers,
        caps: Option<Value>,
    ) -> Result<(), BackendError> {
        let has = |k: &str| caps.as_ref().is_none_or(|c| c.get(k).is_some());
        async fn list(
            conn: &Connection,
            h: &Headers,
            m: &str,
            k: &str,
            on: bool,
        ) -> Result<Vec<Value>, BackendError> {
            if !on {
                return Ok(Vec::new());
            }
            match conn.list_all(m, k, h).await {
                Err(BackendError::Rpc(e)) if e.code == crate::jsonrpc::METHOD_NOT_FOUND => {
                    Ok(Vec::new())
                }
                other => other,
            }
        }
        // The four lists are independent: asked at once they cost one round trip, not four
        // (a restore on a fresh replica waits for them before its first call).
        let (tools, resources, templates, prompts) = futures::try_join!(
            list(conn, headers, "tools/list", "tools", has("tools")),
            list(conn, headers, "resources/list", "resources", has("resources")),
            list(conn, headers, "resources/templates/list", "resourceTemplates", has("resources")),
            list(conn, headers, "prompts/list", "prompts", has("prompts")),
        )?;
        let caps = self.def.catalog.intern(BackendCapabilities {
            backend: self.def.name.clone(),
            tools,
            resources,
            resource_templates: templates,
            prompts,
        });
        *self.caps.lock() = Some(caps);
        self.stale.store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn set_status(&self, s: SlotStatus) {
        *self.status.lock() = s;
    }

    /// Records a failure and schedules the next attempt with exponential backoff (1 s … 30 s).
    pub fn fail(&self, e: &BackendError) {
        let failures = match self.status() {
            SlotStatus::Unavailable { failures, .. } => failures + 1,
            _ => 1,
        };
        let delay = Duration::from_millis(500u64.saturating_mul(1 << failures.min(6)))
            .min(Duration::from_secs(30));
        let credential = matches!(e, BackendError::Auth(_));
        if credential {
            tracing::warn!(backend = %self.def.name, error = %e, "no credential for the backend in this session; the next request's identity is tried");
        } else {
            tracing::warn!(backend = %self.def.name, error = %e, retry_in = ?delay, "backend unavailable for this session");
        }
        self.set_status(SlotStatus::Unavailable {
            reason: e.to_string(),
            retry_at: Instant::now() + delay,
            failures,
            credential,
        });
    }

    /// How long a request must leave this unconnected member alone: the rest of its backoff
    /// after a failure that a new request cannot change (unreachable, timeout, protocol).
    pub fn backing_off(&self) -> Option<Duration> {
        match self.status() {
            SlotStatus::Unavailable { retry_at, credential: false, .. }
                if self.connection().is_none() =>
            {
                let left = retry_at.saturating_duration_since(Instant::now());
                (!left.is_zero()).then_some(left)
            }
            _ => None,
        }
    }

    /// Refreshes the backend's shared catalog: a short-lived backend session that lists the
    /// capabilities and is closed again (the health probe of identity-free backends).
    pub async fn discover(
        def: Arc<BackendDef>,
        http: &reqwest::Client,
    ) -> Result<(), BackendError> {
        let slot = Self::new(def, None);
        let (events, _rx) = mpsc::channel(8);
        let link =
            ClientLink { events, capabilities: serde_json::json!({}), streams: Default::default() };
        slot.connect(&Identity::Anonymous, http, &link).await?;
        slot.close(&Identity::Anonymous).await;
        Ok(())
    }

    /// Ends a backend session known only by its stored hint (its client session was deleted
    /// on a replica that did not hold it): a DELETE with `identity`'s credentials, nothing
    /// else. Legacy SSE sessions cannot be resumed and end with their stream.
    pub async fn end_stored(
        def: Arc<BackendDef>,
        hint: String,
        identity: &Identity,
        http: &reqwest::Client,
    ) {
        if def.transport != vmcp_types::config::BackendTransport::StreamableHttp {
            return;
        }
        let Ok(headers) = def.credentials.headers(identity).await else { return };
        let (events, _rx) = mpsc::channel(8);
        let link =
            ClientLink { events, capabilities: serde_json::json!({}), streams: Default::default() };
        if let Ok((conn, _)) =
            Connection::open(def, http.clone(), &headers, Some(hint), &link).await
        {
            conn.close(&headers).await;
        }
    }

    /// Closes the backend session (DELETE) with the given identity's credentials.
    pub async fn close(&self, identity: &Identity) {
        let conn = self.conn.lock().take();
        if let Some(conn) = conn {
            let headers = self.def.credentials.headers(identity).await.unwrap_or_default();
            conn.close(&headers).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmcp_types::config::{BackendConfig, BackendTransport, OutgoingAuthConfig};

    fn def() -> Arc<BackendDef> {
        let url = "http://127.0.0.1:1/mcp";
        Arc::new(BackendDef {
            name: Arc::from("a"),
            url: url::Url::parse(url).unwrap(),
            http1: crate::backend::http1_pool::Pool::for_url(&url::Url::parse(url).unwrap()),
            transport: BackendTransport::StreamableHttp,
            timeout: Duration::from_secs(1),
            credentials: Arc::new(crate::auth::outgoing::Unauthenticated),
            credential_fingerprint: Default::default(),
            config: BackendConfig {
                name: "a".into(),
                url: url.into(),
                transport: BackendTransport::StreamableHttp,
                timeout: Duration::from_secs(1),
                auth: OutgoingAuthConfig::default(),
            },
            catalog: Default::default(),
        })
    }

    /// A resumed Streamable HTTP connection (no I/O).
    async fn resumed(slot: &Slot, hint: &str) -> Arc<Connection> {
        let (events, _rx) = mpsc::channel(8);
        let link =
            ClientLink { events, capabilities: serde_json::json!({}), streams: Default::default() };
        let (conn, _) = Connection::open(
            slot.def.clone(),
            reqwest::Client::new(),
            &Vec::new(),
            Some(hint.into()),
            &link,
        )
        .await
        .unwrap();
        slot.install(conn, None, false).conn
    }

    /// L9: two calls failed on the same backend session; the first resets it and a new one is
    /// opened; the second must not reset the new one.
    #[tokio::test]
    async fn only_the_first_of_concurrent_failures_resets_the_member() {
        let slot = Slot::new(def(), None);
        let old = resumed(&slot, "s-1").await;
        assert!(slot.reset_if_current(&old));
        let new = resumed(&slot, "s-2").await;
        assert!(!slot.reset_if_current(&old), "a stale failure leaves the new session alone");
        assert!(slot.connection().is_some_and(|c| Arc::ptr_eq(&c, &new)));
        assert!(slot.reset_if_current(&new));
        assert!(slot.connection().is_none());
    }
}
