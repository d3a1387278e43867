//! Unit tests of the session invariants (I1–I7) with the memory store and backends that
//! cannot be reached (so every backend connection fails): what the manager writes and refuses
//! does not depend on a backend answering.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use secrecy::SecretString;
use serde_json::json;
use vmcp_types::config::{AggregationConfig, BackendConfig, BackendTransport, OutgoingAuthConfig};

use super::manager::{BackendSet, SessionSettings};
use super::memory::MemoryStore;
use super::record::{SCHEMA_VERSION, SessionRecord};
use super::store::SessionStore;
use super::{SessionError, SessionManager};
use crate::auth::outgoing::{CredentialSource, OutgoingAuthError, Unauthenticated};
use crate::auth::{Identity, UserIdentity};
use crate::backend::BackendDef;
use crate::metrics::Metrics;

/// A credential that needs the caller's token, like token exchange.
#[derive(Debug)]
struct NeedsToken;

#[async_trait::async_trait]
impl CredentialSource for NeedsToken {
    async fn headers(
        &self,
        identity: &Identity,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, OutgoingAuthError> {
        match identity {
            Identity::Anonymous => Err(OutgoingAuthError::NoToken),
            Identity::User(_) => Ok(Vec::new()),
        }
    }
    fn needs_identity(&self) -> bool {
        true
    }
    fn kind(&self) -> &'static str {
        "test"
    }
}

/// Session ids of the form the gateway issues (32 lowercase hex digits).
const S: &str = "00000000000000000000000000000000";
const S1: &str = "11111111111111111111111111111111";
const S2: &str = "22222222222222222222222222222222";

fn def(name: &str, needs_token: bool) -> Arc<BackendDef> {
    def_at(name, needs_token, "http://127.0.0.1:1/mcp")
}

fn def_at(name: &str, needs_token: bool, url: &str) -> Arc<BackendDef> {
    Arc::new(BackendDef {
        name: Arc::from(name),
        url: url::Url::parse(url).unwrap(),
        http1: crate::backend::http1_pool::Pool::for_url(&url::Url::parse(url).unwrap()),
        transport: BackendTransport::StreamableHttp,
        timeout: Duration::from_secs(2),
        credentials: if needs_token { Arc::new(NeedsToken) } else { Arc::new(Unauthenticated) },
        credential_fingerprint: Default::default(),
        config: BackendConfig {
            name: name.into(),
            url: url.into(),
            transport: BackendTransport::StreamableHttp,
            timeout: Duration::from_secs(2),
            auth: OutgoingAuthConfig::default(),
        },
        catalog: Default::default(),
    })
}

fn manager(store: Arc<MemoryStore>, defs: Vec<Arc<BackendDef>>) -> Arc<SessionManager> {
    SessionManager::new(
        store,
        BackendSet::new(defs, AggregationConfig::default()),
        SessionSettings {
            ttl: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            init_timeout: Duration::from_secs(2),
        },
        reqwest::Client::new(),
        Arc::new(Metrics::new()),
    )
}

fn user(sub: &str, token: &str) -> Identity {
    Identity::User(UserIdentity {
        issuer: "https://idp.example".into(),
        subject: sub.into(),
        token: SecretString::from(token.to_owned()),
        claims: serde_json::Map::new(),
        expires_at: None,
    })
}

fn record(binding: &str, members: &[&str]) -> SessionRecord {
    SessionRecord {
        v: SCHEMA_VERSION,
        binding: binding.into(),
        protocol_version: "2025-11-25".into(),
        client: json!({"protocolVersion": "2025-11-25", "capabilities": {}}),
        generation: 7,
        members: members.iter().map(|m| m.to_string()).collect(),
        hints: [("a".to_owned(), "backend-session-a".to_owned())].into(),
    }
}

#[tokio::test]
async fn i1_restore_without_a_live_token_is_refused_not_emptied() {
    let store = Arc::new(MemoryStore::new());
    let alice = user("alice", "t");
    store
        .create(S1, &record(alice.binding().as_str(), &["a"]), Duration::from_secs(60))
        .await
        .unwrap();
    let m = manager(store.clone(), vec![def("a", true)]);
    // The stored record says "alice", but nothing stored can stand in for her token.
    let anon = m.get(S1, &Identity::Anonymous).await;
    assert!(matches!(anon, Err(SessionError::NotFound)), "anonymous is not alice's binding");
    // Same binding, no token (an anonymous-bound record whose member needs a token): 401.
    store.create(S2, &record("anonymous", &["a"]), Duration::from_secs(60)).await.unwrap();
    assert!(matches!(m.get(S2, &Identity::Anonymous).await, Err(SessionError::AuthRequired)));
    assert_eq!(store.load(S2).await.unwrap().unwrap().members, ["a"], "nothing written");
    // With alice's live identity the restore goes ahead.
    assert!(m.get(S1, &alice).await.is_ok());
}

#[tokio::test]
async fn i2_binding_mismatch_is_not_found_and_nothing_raw_is_stored() {
    let store = Arc::new(MemoryStore::new());
    let m = manager(store.clone(), vec![def("a", false)]);
    let alice = user("alice", "t-alice");
    let (s, _) = m.create(&alice, &json!({"protocolVersion": "2025-11-25"})).await.unwrap();
    assert!(matches!(m.get(&s.id, &user("bob", "t-bob")).await, Err(SessionError::NotFound)));
    assert!(matches!(m.get(&s.id, &Identity::Anonymous).await, Err(SessionError::NotFound)));
    // A refreshed token of the same user keeps the session.
    assert!(m.get(&s.id, &user("alice", "t-alice-2")).await.is_ok());
    let rec = store.load(&s.id).await.unwrap().unwrap();
    assert!(rec.binding.starts_with("sha256:") && !rec.binding.contains("alice"));
}

#[tokio::test]
async fn i3_restore_with_failing_backends_never_shrinks_the_record() {
    let store = Arc::new(MemoryStore::new());
    store.create(S, &record("anonymous", &["a", "b"]), Duration::from_secs(60)).await.unwrap();
    let before = store.load(S).await.unwrap().unwrap();
    let m = manager(store.clone(), vec![def("a", false), def("b", false)]);
    let s = m.get(S, &Identity::Anonymous).await.unwrap();
    assert_eq!(s.member_names(), ["a", "b"], "failed backends stay members");
    assert!(s.slots().iter().all(|sl| sl.connection().is_none()));
    assert_eq!(store.load(S).await.unwrap().unwrap(), before, "the stored record is unchanged");
}

#[tokio::test]
async fn i4_config_change_bumps_the_generation_with_cas_and_keeps_the_session() {
    let store = Arc::new(MemoryStore::new());
    let m = manager(store.clone(), vec![def("a", false)]);
    let (s, _) = m.create(&Identity::Anonymous, &json!({})).await.unwrap();
    let g0 = store.load(&s.id).await.unwrap().unwrap().generation;
    m.apply_backends(BackendSet::new(
        vec![def("a", false), def("b", false)],
        AggregationConfig::default(),
    ))
    .await;
    let rec = store.load(&s.id).await.unwrap().unwrap();
    assert_eq!(
        (rec.generation, rec.members.clone()),
        (g0 + 1, vec!["a".to_owned(), "b".to_owned()])
    );
    assert_eq!(s.generation(), g0 + 1);
    assert!(m.get(&s.id, &Identity::Anonymous).await.is_ok(), "the session is not closed");
    // Another replica already wrote this membership: CAS conflict, adopted, no extra bump.
    let other = manager(store.clone(), vec![def("a", false), def("b", false)]);
    let s2 = other.get(&s.id, &Identity::Anonymous).await.unwrap();
    assert_eq!(s2.generation(), g0 + 1);
    assert_eq!(store.load(&s.id).await.unwrap().unwrap().generation, g0 + 1);
}

#[tokio::test]
async fn i5_termination_is_global() {
    let store = Arc::new(MemoryStore::new());
    let a = manager(store.clone(), vec![def("a", false)]);
    let b = manager(store.clone(), vec![def("a", false)]);
    let (s, _) = a.create(&Identity::Anonymous, &json!({})).await.unwrap();
    assert!(b.get(&s.id, &Identity::Anonymous).await.is_ok());
    a.terminate(&s, &Identity::Anonymous).await.unwrap();
    assert!(matches!(a.get(&s.id, &Identity::Anonymous).await, Err(SessionError::NotFound)));
    assert!(store.load(&s.id).await.unwrap().is_none());
    // Replica b learns it from the termination notice (Redis pub/sub in production).
    b.forget(&s.id);
    assert!(matches!(b.get(&s.id, &Identity::Anonymous).await, Err(SessionError::NotFound)));
}

#[tokio::test]
async fn i6_nothing_secret_is_stored() {
    let store = Arc::new(MemoryStore::new());
    let m = manager(store.clone(), vec![def("a", true)]);
    let (s, _) = m
        .create(&user("alice", "very-secret-user-token"), &json!({"capabilities": {}}))
        .await
        .unwrap();
    let stored = serde_json::to_string(&store.load(&s.id).await.unwrap().unwrap()).unwrap();
    assert!(!stored.contains("very-secret-user-token") && !stored.contains("alice"), "{stored}");
}

#[tokio::test]
async fn i7_stored_backend_session_ids_are_kept_as_hints_across_restore() {
    let store = Arc::new(MemoryStore::new());
    store.create(S, &record("anonymous", &["a"]), Duration::from_secs(60)).await.unwrap();
    let m = manager(store.clone(), vec![def("a", false)]);
    let _ = m.get(S, &Identity::Anonymous).await.unwrap();
    // The backend could not be reached, so the hint was neither used up nor dropped.
    assert_eq!(
        store.load(S).await.unwrap().unwrap().hints.get("a").map(String::as_str),
        Some("backend-session-a")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_restore_once() {
    let store = Arc::new(MemoryStore::new());
    store.create(S, &record("anonymous", &["a"]), Duration::from_secs(60)).await.unwrap();
    let m = manager(store.clone(), vec![def("a", false)]);
    let gets = (0..8).map(|_| {
        let m = m.clone();
        tokio::spawn(async move { m.get(S, &Identity::Anonymous).await.map(|s| s.id.clone()) })
    });
    for r in futures::future::join_all(gets).await {
        assert_eq!(r.unwrap().unwrap().as_ref(), S);
    }
    let ok = crate::metrics::Outcome { outcome: "ok".into() };
    assert_eq!(m.metrics().restores.get_or_create(&ok).get(), 1, "one restore for eight requests");
    assert_eq!(m.local_count(), 1);
}

/// A backend that accepts connections and never answers (its connect runs into the init
/// deadline), kept alive by the returned listener.
async fn hanging_backend(name: &str) -> (Arc<BackendDef>, tokio::net::TcpListener) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let mut d = Arc::into_inner(def(name, false)).unwrap();
    d.url = url::Url::parse(&url).unwrap();
    d.http1 = crate::backend::http1_pool::Pool::for_url(&d.url);
    d.config.url = url;
    (Arc::new(d), listener)
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_during_a_restore_wait_for_it_and_see_the_whole_view() {
    let store = Arc::new(MemoryStore::new());
    store.create(S, &record("anonymous", &["a"]), Duration::from_secs(60)).await.unwrap();
    let (a, _listener) = hanging_backend("a").await;
    let m = manager(store.clone(), vec![a]);
    let first = {
        let m = m.clone();
        tokio::spawn(async move { m.get(S, &Identity::Anonymous).await.map(|s| s.view()) })
    };
    // Later requests arrive while the first one's restore waits for the backend.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = (0..4).map(|_| {
        let m = m.clone();
        tokio::spawn(async move { m.get(S, &Identity::Anonymous).await.map(|s| s.view()) })
    });
    for view in futures::future::join_all(later).await {
        let view = view.unwrap().unwrap();
        assert!(view.is_ok(), "a request saw a half-restored session: {view:?}");
    }
    assert!(first.await.unwrap().unwrap().is_ok());
}

#[tokio::test]
async fn malformed_session_ids_are_unknown_without_a_store_lookup() {
    let store = Arc::new(MemoryStore::new());
    let m = manager(store.clone(), vec![def("a", false)]);
    for id in ["", "s", "../x", &"A".repeat(32), &"0".repeat(33), &"z".repeat(32)] {
        assert!(matches!(m.get(id, &Identity::Anonymous).await, Err(SessionError::NotFound)));
    }
    let load = crate::metrics::StoreOp { op: "load".into() };
    assert!(m.metrics().store_seconds.get(&load).is_none(), "no store access");
}

#[tokio::test]
async fn a_foreign_session_id_is_not_found_audited_and_counted() {
    let store = Arc::new(MemoryStore::new());
    let alice = user("alice", "t");
    store
        .create(S1, &record(alice.binding().as_str(), &["a"]), Duration::from_secs(60))
        .await
        .unwrap();
    let m = manager(store.clone(), vec![def("a", false)]);
    let bob = user("bob", "t");
    // Through a restore, and against the local copy once alice has restored it.
    assert!(matches!(m.get(S1, &bob).await, Err(SessionError::NotFound)));
    assert!(m.get(S1, &alice).await.is_ok());
    assert!(matches!(m.get(S1, &bob).await, Err(SessionError::NotFound)));
    assert_eq!(m.metrics().sessions_foreign.get(), 2);
}

#[tokio::test]
async fn a_member_down_here_keeps_its_names_under_priority() {
    use vmcp_types::config::ConflictResolution;
    let tool = |backend: &str| crate::aggregate::BackendCapabilities {
        backend: Arc::from(backend),
        tools: vec![json!({"name": "search", "inputSchema": {"type": "object"}})],
        ..Default::default()
    };
    // `a` (first in priority) was seen offering `search` but cannot be reached now; `b` is
    // known from its catalog.
    let (a, b) = (def("a", true), def("b", false));
    a.catalog.intern(tool("a"));
    b.catalog.intern(tool("b"));
    let aggregation = AggregationConfig {
        conflict_resolution: ConflictResolution::Priority,
        priority_order: vec!["a".into(), "b".into()],
        ..Default::default()
    };
    let m = SessionManager::new(
        Arc::new(MemoryStore::new()),
        BackendSet::new(vec![a, b], aggregation),
        SessionSettings {
            ttl: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            init_timeout: Duration::from_secs(2),
        },
        reqwest::Client::new(),
        Arc::new(Metrics::new()),
    );
    let (s, _) = m.create(&user("alice", "t"), &json!({})).await.unwrap();
    let view = s.view();
    let routes = &view.as_ref().as_ref().unwrap().routes;
    let route = routes.tool("search").expect("search is routed");
    assert_eq!(route.backend.as_ref(), "a", "not silently re-routed to b");
}

/// F4: a member that failed is left alone for the rest of its backoff: requests get the error
/// naming it at once instead of each making another connection attempt.
#[tokio::test]
async fn a_failed_member_is_not_retried_on_every_request() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, SeqCst);
            drop(socket);
        }
    });
    let m = manager(Arc::new(MemoryStore::new()), vec![def_at("a", false, &url)]);
    let (s, _) = m.create(&Identity::Anonymous, &json!({})).await.unwrap();
    let slot = s.slot("a").unwrap();
    let attempts = accepted.load(SeqCst);
    assert!(attempts >= 1, "create tried the backend");
    assert!(slot.backing_off().is_some(), "{:?}", slot.status());
    for _ in 0..5 {
        let e = m.connect_slot(&s, &slot, &Identity::Anonymous, true).await.unwrap_err();
        assert!(e.to_string().contains("retried in"), "{e}");
    }
    assert_eq!(accepted.load(SeqCst), attempts, "no new attempt during the backoff");
}

/// L12: a DELETE on a replica that does not hold the session checks the binding against the
/// record and deletes it, without restoring it first (no restore, so no token exchange or
/// backend traffic just to end it).
#[tokio::test]
async fn delete_on_a_replica_that_does_not_hold_the_session_does_not_restore_it() {
    let store = Arc::new(MemoryStore::new());
    store
        .create(S, &record(Identity::Anonymous.binding().as_str(), &["a"]), Duration::from_secs(60))
        .await
        .unwrap();
    let m = manager(store.clone(), vec![def("a", false)]);
    let alice = user("alice", "t");
    assert!(matches!(m.terminate_id(S, &alice).await, Err(SessionError::NotFound)));
    assert!(store.load(S).await.unwrap().is_some(), "another identity cannot end it");
    assert!(matches!(m.terminate_id("not-an-id", &alice).await, Err(SessionError::NotFound)));
    m.terminate_id(S, &Identity::Anonymous).await.unwrap();
    assert!(store.load(S).await.unwrap().is_none());
    let restores: u64 = ["ok", "not_found", "auth_required", "store_error"]
        .iter()
        .map(|o| {
            m.metrics()
                .restores
                .get_or_create(&crate::metrics::Outcome { outcome: (*o).into() })
                .get()
        })
        .sum();
    assert_eq!(restores, 0, "ended without a restore");
    assert_eq!(m.metrics().sessions_terminated.get(), 1);
    assert!(matches!(m.terminate_id(S, &Identity::Anonymous).await, Err(SessionError::NotFound)));
}

/// M1(d): a DELETE on another replica while this replica restores the session (here: its
/// backend hangs until the init deadline) ends the restore with 404, and nothing is cached.
#[tokio::test]
async fn a_delete_during_a_restore_is_not_undone_by_it() {
    let store = Arc::new(MemoryStore::new());
    store.create(S, &record("anonymous", &["a"]), Duration::from_secs(60)).await.unwrap();
    let (a, _listener) = hanging_backend("a").await;
    let m = manager(store.clone(), vec![a]);
    let restoring = {
        let m = m.clone();
        tokio::spawn(async move { m.get(S, &Identity::Anonymous).await.map(|s| s.id.clone()) })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another replica ends it (its termination notice may come before this replica publishes).
    store.delete(S).await.unwrap();
    m.forget(S);
    let r = restoring.await.unwrap();
    assert!(matches!(r, Err(SessionError::NotFound)), "{r:?}");
    assert!(matches!(m.get(S, &Identity::Anonymous).await, Err(SessionError::NotFound)));
    assert_eq!(m.local_count(), 0, "the ended session is not cached");
}

/// L7: a reload reconciles local sessions concurrently. A joining backend that accepts and
/// never answers holds each session's reconcile for the whole init timeout (300 ms): 20
/// sessions one after another took 6 s.
#[tokio::test]
async fn a_reload_reconciles_sessions_concurrently() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let store = Arc::new(MemoryStore::new());
    let m = SessionManager::new(
        store.clone(),
        BackendSet::new(vec![def("a", false)], AggregationConfig::default()),
        SessionSettings {
            ttl: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            init_timeout: Duration::from_millis(300),
        },
        reqwest::Client::new(),
        Arc::new(Metrics::new()),
    );
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(m.create(&Identity::Anonymous, &json!({})).await.unwrap().0.id.clone());
    }
    let start = std::time::Instant::now();
    m.apply_backends(BackendSet::new(
        vec![def("a", false), def_at("b", false, &hang)],
        AggregationConfig::default(),
    ))
    .await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "20 sessions reconciled in {took:?}");
    for id in ids {
        assert_eq!(store.load(&id).await.unwrap().unwrap().members, ["a", "b"], "{id}");
    }
}
