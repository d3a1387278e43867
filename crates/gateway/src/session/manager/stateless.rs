//! Backend contexts for stateless clients (MCP 2026-07-28): a request without a session is
//! served through a [`Session`] object that this replica keeps per identity binding, so a
//! stateless client pays for backend `initialize`, capability lists and token exchange once
//! per identity and replica, not on every request.
//!
//! - Keyed by the binding of the live request (issuer + subject, or anonymous: I2): backend
//!   sessions opened for one user are never used for another. Anonymous callers share one
//!   context, as they share one identity.
//! - Holds no identity (I1): every request passes its own, and each backend credential is
//!   derived from it (`Slot` and `auth::outgoing`; token exchange results come from the
//!   per-replica cache of `auth/token_exchange`, keyed by binding, backend and grant).
//! - Never stored (nothing to restore: each request carries its whole envelope), never
//!   published among the sessions, unreachable through `Mcp-Session-Id` (the id is not of the
//!   form the gateway issues), and it declares no client capabilities to backends (this
//!   revision has no server-to-client requests on the wire).
//! - Idle contexts are dropped by the manager's idle sweeper like idle sessions (I8); a
//!   configuration reload replaces a context on its next use.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::restore::member;
use super::{BackendSet, SessionManager};
use crate::auth::Identity;
use crate::session::{ClientSide, Session};

/// Ids of stateless contexts start with this (never a valid `Mcp-Session-Id`: those are 32 hex
/// digits), which also keeps their backend session hints out of the store.
pub const CONTEXT_ID_PREFIX: &str = "stateless-";

/// The revision stateless contexts are created for.
const CONTEXT_REVISION: &str = "2026-07-28";

/// The stateless contexts of one replica, by binding.
#[derive(Debug, Default)]
pub struct StatelessContexts {
    by_binding: Mutex<HashMap<String, Context>>,
    next: AtomicU64,
}

#[derive(Debug, Clone)]
struct Context {
    session: Arc<Session>,
    /// The configuration it was built from (a reload replaces the context).
    set: Arc<BackendSet>,
    /// Set once the first request connected the members (single flight).
    ready: Arc<tokio::sync::OnceCell<()>>,
}

impl StatelessContexts {
    /// Number of contexts held.
    pub fn len(&self) -> usize {
        self.by_binding.lock().len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Session {
    /// Is this a stateless client's backend context (not a client session)?
    pub fn is_stateless_context(&self) -> bool {
        self.id.starts_with(CONTEXT_ID_PREFIX)
    }
}

impl SessionManager {
    /// The backend context for a stateless request by `identity`: the one this replica holds
    /// for the identity's binding, or a new one whose members are connected with this
    /// request's identity (concurrent first requests wait for one connect: single flight;
    /// slow members join later, as in [`Self::create`]).
    pub async fn stateless_context(self: &Arc<Self>, identity: &Identity) -> Arc<Session> {
        let set = self.backends();
        let binding = identity.binding();
        let ctx = {
            let mut map = self.stateless.by_binding.lock();
            match map.get(binding.as_str()) {
                Some(c) if Arc::ptr_eq(&c.set, &set) => c.clone(),
                _ => {
                    let n = self.stateless.next.fetch_add(1, Ordering::Relaxed) + 1;
                    let slots = set
                        .order
                        .iter()
                        .filter_map(|name| set.defs.get(name))
                        .map(|d| member(d, None));
                    let side = ClientSide {
                        binding: binding.clone(),
                        protocol_version: CONTEXT_REVISION.to_owned(),
                        capabilities: serde_json::json!({}),
                    };
                    let ctx = Context {
                        session: self.build(
                            format!("{CONTEXT_ID_PREFIX}{n}").into(),
                            side,
                            1,
                            slots.collect(),
                        ),
                        set: set.clone(),
                        ready: Default::default(),
                    };
                    if let Some(old) = map.insert(binding.as_str().to_owned(), ctx.clone()) {
                        // Configuration changed: calls in flight keep their connections.
                        old.session.park();
                    }
                    ctx
                }
            }
        };
        ctx.session.last_used.store(self.now_ms(), Ordering::Relaxed);
        ctx.ready.get_or_init(|| self.connect_all(&ctx.session, identity)).await;
        ctx.session
    }

    /// Drops the contexts unused for longer than the idle timeout (their backend sessions
    /// end on the backends' own idle timers; a later request builds a new context).
    pub(super) fn sweep_stateless_contexts(&self) {
        let idle = self.settings.idle_timeout.as_millis() as u64;
        let now = self.now_ms();
        let dropped: Vec<Context> = {
            let mut map = self.stateless.by_binding.lock();
            let stale: Vec<String> = map
                .iter()
                .filter(|(_, c)| {
                    now.saturating_sub(c.session.last_used.load(Ordering::Relaxed)) > idle
                })
                .map(|(k, _)| k.clone())
                .collect();
            stale.iter().filter_map(|k| map.remove(k)).collect()
        };
        for c in dropped {
            tracing::debug!(context = %c.session.id, "idle stateless context: dropping its connections");
            c.session.park();
        }
    }

    /// The stateless contexts of this replica.
    pub fn stateless_contexts(&self) -> &StatelessContexts {
        &self.stateless
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;
    use vmcp_types::config::AggregationConfig;

    use super::*;
    use crate::auth::UserIdentity;
    use crate::session::SessionError;
    use crate::session::manager::SessionSettings;
    use crate::session::memory::MemoryStore;
    use crate::session::store::SessionStore;

    fn manager(store: Arc<MemoryStore>, idle: Duration) -> Arc<SessionManager> {
        SessionManager::new(
            store,
            BackendSet::new(Vec::new(), AggregationConfig::default()),
            SessionSettings {
                ttl: Duration::from_secs(60),
                idle_timeout: idle,
                init_timeout: Duration::from_secs(2),
            },
            reqwest::Client::new(),
            Arc::new(crate::metrics::Metrics::new()),
        )
    }

    fn user(sub: &str) -> Identity {
        Identity::User(UserIdentity {
            issuer: "https://idp.example".into(),
            subject: sub.into(),
            token: SecretString::from(format!("token-of-{sub}")),
            claims: serde_json::Map::new(),
            expires_at: None,
        })
    }

    #[tokio::test]
    async fn one_context_per_binding_never_stored_nor_reachable_as_a_session() {
        let store = Arc::new(MemoryStore::new());
        let m = manager(store.clone(), Duration::from_secs(60));
        let a1 = m.stateless_context(&user("alice")).await;
        let a2 = m.stateless_context(&user("alice")).await;
        let b = m.stateless_context(&user("bob")).await;
        let anon = m.stateless_context(&Identity::Anonymous).await;
        assert!(Arc::ptr_eq(&a1, &a2), "reused for the same identity");
        assert!(!Arc::ptr_eq(&a1, &b) && !Arc::ptr_eq(&a1, &anon));
        assert!(a1.is_stateless_context() && a1.binding.matches(&user("alice").binding()));
        assert_eq!(m.stateless_contexts().len(), 3);
        // Not a session: nothing stored, nothing published, not resolvable by its id.
        assert_eq!(m.local_count(), 0);
        assert!(!store.exists(&a1.id).await.unwrap());
        assert!(matches!(m.get(&a1.id, &user("alice")).await, Err(SessionError::NotFound)));
    }

    #[tokio::test]
    async fn a_reload_replaces_a_context_and_idle_ones_are_dropped() {
        let m = manager(Arc::new(MemoryStore::new()), Duration::from_millis(50));
        let before = m.stateless_context(&user("alice")).await;
        m.apply_backends(BackendSet::new(Vec::new(), AggregationConfig::default())).await;
        let after = m.stateless_context(&user("alice")).await;
        assert!(!Arc::ptr_eq(&before, &after), "built from the new configuration");
        assert_eq!(m.stateless_contexts().len(), 1);
        tokio::time::sleep(Duration::from_millis(120)).await;
        let _bob = m.stateless_context(&user("bob")).await;
        m.sweep_stateless_contexts();
        assert_eq!(m.stateless_contexts().len(), 1, "alice's idle context is gone, bob's stays");
        let again = m.stateless_context(&user("alice")).await;
        assert!(!Arc::ptr_eq(&after, &again));
    }
}
