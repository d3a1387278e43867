//! The contract cases: what every `SessionStore` must do, run against `MemoryStore` and
//! `RedisStore` on each Redis deployment (the tests are generated in `main.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use vmcp_e2e::redis_topology::{AnyRedis, Topology};
use vmcp_gateway::session::memory::MemoryStore;
use vmcp_gateway::session::redis::RedisStore;
use vmcp_gateway::session::store::{CasOutcome, SessionStore, StoredEvent};
use vmcp_gateway::session::streams::WINDOW;

use super::{LONG, config_for, names, record};

pub(crate) async fn create_load_round_trip(store: Arc<dyn SessionStore>) {
    let r = record(1);
    store.create("s1", &r, LONG).await.unwrap();
    assert_eq!(store.load("s1").await.unwrap(), Some(r.clone()));
    assert!(store.exists("s1").await.unwrap());
    assert_eq!(store.load("nope").await.unwrap(), None);
    assert!(!store.exists("nope").await.unwrap());

    // Creating again replaces the whole record (old hints included).
    let mut r2 = record(4);
    r2.hints.clear();
    r2.members = names(&["only"]);
    store.create("s1", &r2, LONG).await.unwrap();
    assert_eq!(store.load("s1").await.unwrap(), Some(r2));
}

pub(crate) async fn ttl_expiry(store: Arc<dyn SessionStore>) {
    store.create("short", &record(1), Duration::from_millis(300)).await.unwrap();
    assert!(store.exists("short").await.unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(store.load("short").await.unwrap(), None);
    assert!(!store.exists("short").await.unwrap());
    assert!(!store.touch("short", LONG).await.unwrap(), "touch of an expired record");
}

pub(crate) async fn touch_extends(store: Arc<dyn SessionStore>) {
    let ttl = Duration::from_millis(600);
    store.create("t", &record(1), ttl).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.touch("t", ttl).await.unwrap());
    // Past the original expiry (600 ms), before the extended one (~1000 ms).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.exists("t").await.unwrap(), "touch did not extend the TTL");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!store.exists("t").await.unwrap(), "record outlived its extended TTL");
    assert!(!store.touch("missing", ttl).await.unwrap());
}

pub(crate) async fn set_hint_keeps_membership(store: Arc<dyn SessionStore>) {
    let r = record(3);
    store.create("h", &r, LONG).await.unwrap();
    store.set_hint("h", "jira", Some("new-hint")).await.unwrap();
    let got = store.load("h").await.unwrap().unwrap();
    assert_eq!(got.hints.get("jira").map(String::as_str), Some("new-hint"));
    assert_eq!(got.members, r.members);
    assert_eq!(got.generation, r.generation);
    assert_eq!(got.binding, r.binding);
    assert_eq!(got.client, r.client);

    store.set_hint("h", "github", None).await.unwrap();
    let got = store.load("h").await.unwrap().unwrap();
    assert!(!got.hints.contains_key("github"));
    assert_eq!(got.hints.len(), 2);
    assert_eq!((got.members, got.generation), (r.members, r.generation));

    // A hint for an unknown session is a no-op (it must not create a record).
    store.set_hint("ghost", "jira", Some("x")).await.unwrap();
    assert!(!store.exists("ghost").await.unwrap());
}

pub(crate) async fn cas_members_outcomes(store: Arc<dyn SessionStore>) {
    store.create("c", &record(5), LONG).await.unwrap();

    let next = names(&["github", "filesystem", "slack"]);
    assert_eq!(store.cas_members("c", 5, &next).await.unwrap(), CasOutcome::Updated(6));
    let got = store.load("c").await.unwrap().unwrap();
    assert_eq!((got.generation, &got.members), (6, &next));
    // Hints of removed members are dropped, the others kept.
    assert!(!got.hints.contains_key("jira"));
    assert!(got.hints.contains_key("github") && got.hints.contains_key("filesystem"));

    match store.cas_members("c", 5, &names(&["x"])).await.unwrap() {
        CasOutcome::Conflict(current) => assert_eq!(Some(*current), store.load("c").await.unwrap()),
        other => panic!("stale generation must conflict, got {other:?}"),
    }
    let unchanged = store.load("c").await.unwrap().unwrap();
    assert_eq!((unchanged.generation, unchanged.members), (6, next));

    assert_eq!(store.cas_members("missing", 0, &names(&["x"])).await.unwrap(), CasOutcome::Missing);
    assert!(!store.exists("missing").await.unwrap());
}

pub(crate) async fn delete_removes(store: Arc<dyn SessionStore>) {
    store.create("d", &record(1), LONG).await.unwrap();
    assert!(store.delete("d").await.unwrap());
    assert_eq!(store.load("d").await.unwrap(), None);
    assert!(!store.exists("d").await.unwrap());
    assert!(!store.touch("d", LONG).await.unwrap());
    assert!(!store.delete("d").await.unwrap(), "second delete");
    assert_eq!(store.cas_members("d", 1, &names(&["a"])).await.unwrap(), CasOutcome::Missing);
}

pub(crate) async fn concurrent_cas_single_winner(store: Arc<dyn SessionStore>) {
    for round in 0..20u64 {
        let id = format!("race{round}");
        store.create(&id, &record(round), LONG).await.unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let task = |members: Vec<String>| {
            let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.cas_members(&id, round, &members).await.unwrap()
            })
        };
        let a = task(names(&["a"]));
        let b = task(names(&["b"]));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let (won, lost) = match (&a, &b) {
            (CasOutcome::Updated(_), CasOutcome::Conflict(_)) => (a, b),
            (CasOutcome::Conflict(_), CasOutcome::Updated(_)) => (b, a),
            _ => panic!("exactly one CAS must win: {a:?} / {b:?}"),
        };
        assert_eq!(won, CasOutcome::Updated(round + 1));
        let CasOutcome::Conflict(current) = lost else { unreachable!() };
        assert_eq!(current.generation, round + 1);
        assert_eq!(Some(*current), store.load(&id).await.unwrap());
    }
}

pub(crate) async fn stream_events_round_trip(store: Arc<dyn SessionStore>) {
    let ev = |seq: u64, data: &str| StoredEvent { seq, data: data.to_owned() };
    assert_eq!(store.load_events("s", "p1").await.unwrap(), None);
    store.append_events("s", "p1", &[ev(0, ""), ev(1, r#"{"a": 1}"#)], false, LONG).await.unwrap();
    assert_eq!(
        store.load_events("s", "p1").await.unwrap(),
        Some((vec![ev(0, ""), ev(1, r#"{"a": 1}"#)], false))
    );
    store.append_events("s", "p1", &[ev(2, "x y z")], true, LONG).await.unwrap();
    assert_eq!(
        store.load_events("s", "p1").await.unwrap(),
        Some((vec![ev(0, ""), ev(1, r#"{"a": 1}"#), ev(2, "x y z")], true))
    );
    // A bounded window: the newest events stay.
    let many: Vec<StoredEvent> = (0..WINDOW as u64 + 5).map(|i| ev(i, "m")).collect();
    store.append_events("s", "p2", &many, true, LONG).await.unwrap();
    let (kept, over) = store.load_events("s", "p2").await.unwrap().unwrap();
    assert!(over);
    assert_eq!((kept.len(), kept[0].seq), (WINDOW, 5));
    // Events expire.
    store.append_events("s", "p3", &[ev(0, "")], false, Duration::from_millis(300)).await.unwrap();
    assert!(store.load_events("s", "p3").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(store.load_events("s", "p3").await.unwrap(), None);
}

pub(crate) async fn memory_store() -> (Arc<dyn SessionStore>, ()) {
    (Arc::new(MemoryStore::new()), ())
}

/// A store on a fresh deployment of `topology`.
pub(crate) async fn redis_store(topology: Topology) -> (Arc<dyn SessionStore>, AnyRedis) {
    let redis = AnyRedis::start(topology).await.expect("start redis (make test installs it)");
    let store = RedisStore::connect(&config_for(redis.url(), "contract:"))
        .await
        .unwrap_or_else(|e| panic!("connect to {topology:?} redis: {e}"));
    (Arc::new(store), redis)
}
