//! One contract for every `SessionStore`: the same cases run against `MemoryStore` and against
//! `RedisStore` on a real `redis-server` (started per test on a free loopback port, persistence
//! off, in a temp dir). Redis-only cases check what is stored (no secrets, small), the
//! termination pub/sub (I5), password/db handling and behaviour while Redis is down.

// Test helpers panic on purpose: the panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Config, HashesInterface, KeysInterface};
use serde_json::json;
use tokio::sync::Barrier;
use vmcp_e2e::redis::RedisServer;
use vmcp_e2e::redis_topology::{AnyRedis, Topology};
use vmcp_gateway::session::memory::MemoryStore;
use vmcp_gateway::session::record::{SCHEMA_VERSION, SessionRecord};
use vmcp_gateway::session::redis::RedisStore;
use vmcp_gateway::session::store::{CasOutcome, SessionStore, StoreError, StoredEvent};
use vmcp_gateway::session::streams::WINDOW;
use vmcp_types::config::{RedisConfig, SecretSource};

// ---------------------------------------------------------------------------------------------
// redis-server harness
// ---------------------------------------------------------------------------------------------

/// A real `redis-server` of this test (the e2e harness's), with the helpers the contract
/// needs.
struct Redis {
    server: RedisServer,
    port: u16,
    password: Option<String>,
}

impl Redis {
    async fn start() -> Self {
        Self::start_with_password(None).await
    }

    async fn start_with_password(password: Option<&str>) -> Self {
        let server = match password {
            Some(p) => RedisServer::start_with(&["--requirepass", p]).await,
            None => RedisServer::start().await,
        }
        .expect("start redis-server (make test installs it)");
        Self { port: server.port(), server, password: password.map(str::to_owned) }
    }

    fn kill(&mut self) {
        self.server.stop();
    }

    /// Starts the server again on the same port (empty: persistence is off).
    async fn restart(&mut self) {
        self.server.restart().await.expect("restart redis-server");
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn config(&self, prefix: &str) -> RedisConfig {
        config_for(self.url(), prefix)
    }

    /// A plain fred client to look at what is stored.
    async fn raw(&self, db: u8) -> fred::clients::Client {
        let mut config = Config::from_url(&self.url()).expect("url");
        config.password = self.password.clone();
        config.database = Some(db);
        let client = fred::types::Builder::from_config(config).build().expect("client");
        client.init().await.expect("raw redis client");
        client
    }
}

/// A typical record: 3 members, 3 hints, realistic client params.
fn record(generation: u64) -> SessionRecord {
    SessionRecord {
        v: SCHEMA_VERSION,
        binding: format!("sha256:{}", "a1".repeat(32)),
        protocol_version: "2025-11-25".into(),
        client: json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {"roots": {"listChanged": true}, "sampling": {}, "elicitation": {}},
            "clientInfo": {"name": "example-client", "title": "Example Client", "version": "1.4.2"}
        }),
        generation,
        members: vec!["github".into(), "jira".into(), "filesystem".into()],
        hints: [
            ("github", "5f0c1e2a-8a47-4d2b-9a3e-1b7f6c2d9e01"),
            ("jira", "b3a9d4c2-6e1f-4a8b-8c7d-2e5f9a1b3c4d"),
            ("filesystem", "0d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect::<BTreeMap<_, _>>(),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

const LONG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// the contract (any SessionStore)
// ---------------------------------------------------------------------------------------------

async fn create_load_round_trip(store: Arc<dyn SessionStore>) {
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

async fn ttl_expiry(store: Arc<dyn SessionStore>) {
    store.create("short", &record(1), Duration::from_millis(300)).await.unwrap();
    assert!(store.exists("short").await.unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(store.load("short").await.unwrap(), None);
    assert!(!store.exists("short").await.unwrap());
    assert!(!store.touch("short", LONG).await.unwrap(), "touch of an expired record");
}

async fn touch_extends(store: Arc<dyn SessionStore>) {
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

async fn set_hint_keeps_membership(store: Arc<dyn SessionStore>) {
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

async fn cas_members_outcomes(store: Arc<dyn SessionStore>) {
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

async fn delete_removes(store: Arc<dyn SessionStore>) {
    store.create("d", &record(1), LONG).await.unwrap();
    assert!(store.delete("d").await.unwrap());
    assert_eq!(store.load("d").await.unwrap(), None);
    assert!(!store.exists("d").await.unwrap());
    assert!(!store.touch("d", LONG).await.unwrap());
    assert!(!store.delete("d").await.unwrap(), "second delete");
    assert_eq!(store.cas_members("d", 1, &names(&["a"])).await.unwrap(), CasOutcome::Missing);
}

async fn concurrent_cas_single_winner(store: Arc<dyn SessionStore>) {
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

async fn stream_events_round_trip(store: Arc<dyn SessionStore>) {
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

/// Generates one test per contract case for a store constructor.
macro_rules! contract {
    ($store:ident, $make:expr) => {
        mod $store {
            use super::*;
            contract!(@case $make; create_load_round_trip, ttl_expiry, touch_extends,
                set_hint_keeps_membership, cas_members_outcomes, delete_removes,
                concurrent_cas_single_winner, stream_events_round_trip);
        }
    };
    (@case $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $make.await;
                super::$case(store).await;
            }
        )*
    };
}

async fn memory_store() -> (Arc<dyn SessionStore>, ()) {
    (Arc::new(MemoryStore::new()), ())
}

/// The store's settings for a deployment at `url`.
fn config_for(url: String, prefix: &str) -> RedisConfig {
    RedisConfig { key_prefix: prefix.to_owned(), ..RedisConfig::new(url) }
}

/// A store on a fresh deployment of `topology`.
async fn redis_store(topology: Topology) -> (Arc<dyn SessionStore>, AnyRedis) {
    let redis = AnyRedis::start(topology).await.expect("start redis (make test installs it)");
    let store = RedisStore::connect(&config_for(redis.url(), "contract:"))
        .await
        .unwrap_or_else(|e| panic!("connect to {topology:?} redis: {e}"));
    (Arc::new(store), redis)
}

contract!(memory, memory_store());
contract!(redis, redis_store(Topology::Standalone));
contract!(redis_cluster, redis_store(Topology::Cluster));
contract!(redis_sentinel, redis_store(Topology::Sentinel));

/// Generates one test per Redis deployment for a Redis-only case `fn(Topology)`.
macro_rules! per_topology {
    ($($case:ident),*) => {
        mod each_topology {
            use super::*;
            $(
                mod $case {
                    use super::*;
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn standalone() { super::super::$case(Topology::Standalone).await }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn cluster() { super::super::$case(Topology::Cluster).await }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn sentinel() { super::super::$case(Topology::Sentinel).await }
                }
            )*
        }
    };
}

per_topology!(redis_record_is_small_and_holds_no_secrets, redis_delete_publishes_termination);

/// Generates one test per deployment that can fail over (Cluster, Sentinel).
macro_rules! per_failover_topology {
    ($($case:ident),*) => {
        mod each_failover_topology {
            use super::*;
            $(
                mod $case {
                    use super::*;
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn cluster() { super::super::$case(Topology::Cluster).await }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn sentinel() { super::super::$case(Topology::Sentinel).await }
                }
            )*
        }
    };
}

per_failover_topology!(failover_keeps_every_acknowledged_write_and_the_feed);

/// Waits until `store` answers again after a failover; returns how long that took.
async fn until_served(store: &RedisStore, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        match store.exists("probe").await {
            Ok(_) => return started.elapsed(),
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(30), "{what}: no recovery: {e}")
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Acknowledged means replicated (`waitReplicas: 1`): a creation the replicas never received
/// (they are frozen) is refused, and every creation and deletion the store acknowledged
/// survives the death of the master that took it. Afterwards the termination feed works again:
/// a DELETE reaches another store within 1 s.
async fn failover_keeps_every_acknowledged_write_and_the_feed(topology: Topology) {
    let mut redis = AnyRedis::start(topology).await.unwrap();
    let cfg = RedisConfig {
        key_prefix: "fo:".into(),
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(300),
        ..RedisConfig::new(redis.url())
    };
    let writer = RedisStore::connect(&cfg).await.unwrap();
    let listener = RedisStore::connect(&cfg).await.unwrap();
    writer.create("before", &record(1), LONG).await.unwrap();
    writer.create("deleted", &record(1), LONG).await.unwrap();
    assert!(writer.delete("deleted").await.unwrap());
    let key = writer.session_key("before");
    let master = redis.master_for(&key).unwrap();
    // A session id whose key the same master holds (Cluster: the same shard).
    let during = (0..200)
        .map(|i| format!("during-{i}"))
        .find(|id| redis.master_for(&writer.session_key(id)).unwrap() == master)
        .expect("an id on the same master");
    let replicas = redis.replicas_for(&key).unwrap();
    assert!(!replicas.is_empty(), "{topology:?}: the master has replicas");

    redis.freeze(&replicas, true);
    // A frozen replica's kernel still accepts what the master sends until its socket buffers
    // are full: fill them (a key in the same slot), so the next write stays on the master.
    let raw = raw_client(&redis).await;
    let ballast = "x".repeat(32 << 20);
    let _: () = raw.set(format!("{{{key}}}:ballast"), ballast, None, None, false).await.unwrap();
    let unreplicated = writer.create(&during, &record(1), LONG).await;
    let killed = redis.kill_master_for(&key).unwrap();
    redis.freeze(&replicas, false);
    let took = Instant::now();
    redis.wait_for_takeover(&killed, Duration::from_secs(30)).await.unwrap();
    let recovered = until_served(&writer, "writer").await;
    eprintln!(
        "{topology:?}: replica took over after {:?}; store served again {recovered:?} after that; unreplicated create: {unreplicated:?}",
        took.elapsed()
    );

    assert!(writer.load("before").await.unwrap().is_some(), "an acknowledged session was lost");
    assert!(!writer.exists("deleted").await.unwrap(), "an acknowledged delete was undone");
    match unreplicated {
        Ok(()) => assert!(
            writer.exists(&during).await.unwrap(),
            "{topology:?}: the store acknowledged a session that no replica had, and the failover lost it"
        ),
        Err(e) => assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}"),
    }

    // The termination feed of the other store comes back and carries deletions again.
    let started = Instant::now();
    until_served(&listener, "listener").await;
    while !listener.subscription_healthy() {
        assert!(started.elapsed() < Duration::from_secs(30), "the termination feed stays down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{topology:?}: termination feed healthy {:?} after the store came back",
        started.elapsed()
    );
    let mut rx = listener.subscribe_terminations();
    writer.create("after", &record(1), LONG).await.unwrap();
    assert!(writer.delete("after").await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(id)) if id == "after" => break,
            Ok(Ok(_)) => {}
            other => panic!(
                "{topology:?}: no termination notice within 1 s after the failover: {other:?}"
            ),
        }
    }
}

/// A plain fred client on a deployment, to look at what is stored.
async fn raw_client(redis: &AnyRedis) -> fred::clients::Client {
    let config = Config::from_url(&redis.url()).expect("url");
    let client = fred::types::Builder::from_config(config).build().expect("client");
    client.init().await.expect("raw redis client");
    client
}

// ---------------------------------------------------------------------------------------------
// Redis only
// ---------------------------------------------------------------------------------------------

async fn redis_record_is_small_and_holds_no_secrets(topology: Topology) {
    let redis = AnyRedis::start(topology).await.unwrap();
    let store = RedisStore::connect(&config_for(redis.url(), "vmcp:")).await.unwrap();
    store.create("sess-1", &record(1), LONG).await.unwrap();

    let key = store.session_key("sess-1");
    assert_eq!(key, "vmcp:session:sess-1");
    let raw = raw_client(&redis).await;
    let fields: BTreeMap<String, String> = raw.hgetall(&key).await.unwrap();
    let text: String = fields.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let field_bytes: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
    let dump: Vec<u8> = raw.dump(&key).await.unwrap();
    eprintln!("stored fields: {field_bytes} bytes, DUMP: {} bytes\n{text}", dump.len());

    let lower = text.to_lowercase();
    for word in ["token", "secret", "bearer"] {
        assert!(!lower.contains(word), "stored record mentions {word:?}:\n{text}");
        let dump_lower = String::from_utf8_lossy(&dump).to_lowercase();
        assert!(!dump_lower.contains(word), "serialized record mentions {word:?}");
    }
    assert!(field_bytes < 2048, "record is {field_bytes} bytes");
    assert!(dump.len() < 2048, "serialized record is {} bytes", dump.len());
    let pttl: i64 = raw.pttl(&key).await.unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "record must carry the TTL, got {pttl}");
}

async fn redis_delete_publishes_termination(topology: Topology) {
    let redis = AnyRedis::start(topology).await.unwrap();
    let cfg = |prefix: &str| config_for(redis.url(), prefix);
    let listener = RedisStore::connect(&cfg("pub:")).await.unwrap();
    let other = RedisStore::connect(&cfg("pub:")).await.unwrap();
    assert!(listener.subscription_healthy());
    assert_eq!(listener.termination_channel(), "pub:terminated");
    let mut rx = listener.subscribe_terminations();
    let mut own = other.subscribe_terminations();

    other.create("gone", &record(1), LONG).await.unwrap();
    assert!(other.delete("gone").await.unwrap());
    let got = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
    assert_eq!(got.expect("no termination notice within 1 s").unwrap(), "gone");
    let got = tokio::time::timeout(Duration::from_secs(1), own.recv()).await;
    assert_eq!(got.expect("the deleting replica hears it too").unwrap(), "gone");
    assert!(!listener.exists("gone").await.unwrap());

    // Another prefix is another channel.
    let foreign = RedisStore::connect(&cfg("other:")).await.unwrap();
    foreign.delete("gone").await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_err());
}

#[tokio::test]
async fn redis_password_db_and_bare_host_port() {
    let redis = Redis::start_with_password(Some("s3cr3t-pw")).await;
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "s3cr3t-pw\n").unwrap();
    let cfg = RedisConfig {
        db: 3,
        password: Some(SecretSource { env: None, file: Some(pw_file) }),
        key_prefix: "auth:".into(),
        ..RedisConfig::new(format!("127.0.0.1:{}", redis.port))
    };
    let store = RedisStore::connect(&cfg).await.expect("connect with password and db");
    store.create("p", &record(1), LONG).await.unwrap();
    assert!(store.load("p").await.unwrap().is_some());
    assert!(!format!("{store:?}").contains("s3cr3t"), "Debug must not show the password");

    let (db3, db0) = (redis.raw(3).await, redis.raw(0).await);
    assert_eq!(db3.exists::<i64, _>("auth:session:p").await.unwrap(), 1);
    assert_eq!(db0.exists::<i64, _>("auth:session:p").await.unwrap(), 0);

    // Without the password: refused at connect, and the error does not leak anything.
    let no_pw = RedisConfig { password: None, ..cfg.clone() };
    let started = Instant::now();
    let err = RedisStore::connect(&no_pw).await.expect_err("must need the password");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A password source that cannot be read.
    let missing = RedisConfig {
        password: Some(SecretSource { env: None, file: Some(dir.path().join("none")) }),
        ..cfg
    };
    assert!(matches!(RedisStore::connect(&missing).await, Err(StoreError::Unavailable(_))));
}

#[tokio::test]
async fn redis_connect_to_nothing_fails_fast() {
    let cfg =
        config_for(format!("redis://127.0.0.1:{}", vmcp_e2e::ports::free_port().unwrap()), "x:");
    let started = Instant::now();
    let err = RedisStore::connect(&cfg).await.expect_err("nothing listens there");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let bad = RedisConfig { url: "redis://".into(), ..cfg };
    assert!(matches!(RedisStore::connect(&bad).await, Err(StoreError::Unavailable(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_is_unavailable_fast_and_recovers_without_restart() {
    let mut redis = Redis::start().await;
    let store = Arc::new(RedisStore::connect(&redis.config("down:")).await.unwrap());
    store.create("before", &record(1), LONG).await.unwrap();
    let mut terminations = store.subscribe_terminations();

    redis.kill();

    // Every operation answers Unavailable, each within ~3 s (run together to keep it short).
    type Op = std::pin::Pin<Box<dyn std::future::Future<Output = Option<StoreError>> + Send>>;
    let s = || store.clone();
    let ops: Vec<(&str, Op)> = vec![
        (
            "load",
            Box::pin({
                let s = s();
                async move { s.load("before").await.err() }
            }),
        ),
        (
            "exists",
            Box::pin({
                let s = s();
                async move { s.exists("before").await.err() }
            }),
        ),
        (
            "touch",
            Box::pin({
                let s = s();
                async move { s.touch("before", LONG).await.err() }
            }),
        ),
        (
            "create",
            Box::pin({
                let s = s();
                async move { s.create("new", &record(1), LONG).await.err() }
            }),
        ),
        (
            "set_hint",
            Box::pin({
                let s = s();
                async move { s.set_hint("before", "jira", Some("h")).await.err() }
            }),
        ),
        (
            "cas_members",
            Box::pin({
                let s = s();
                async move { s.cas_members("before", 1, &names(&["a"])).await.err() }
            }),
        ),
        (
            "delete",
            Box::pin({
                let s = s();
                async move { s.delete("before").await.err() }
            }),
        ),
    ];
    let started = Instant::now();
    let timed = ops.into_iter().map(|(name, op)| async move {
        let t = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), op).await;
        (name, err, t.elapsed())
    });
    for (name, err, took) in futures::future::join_all(timed).await {
        let err = err.unwrap_or_else(|_| panic!("{name} hung while redis was down"));
        assert!(
            matches!(err, Some(StoreError::Unavailable(_))),
            "{name} while redis is down: {err:?}"
        );
        assert!(took < Duration::from_millis(3500), "{name} took {took:?}");
    }
    eprintln!("all operations failed over in {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(3);
    while store.subscription_healthy() {
        assert!(Instant::now() < deadline, "subscription still reported healthy while down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Same port, new (empty) server: the same store works again, scripts included.
    redis.restart().await;
    let restarted = Instant::now();
    loop {
        match store.exists("anything").await {
            Ok(_) => break,
            Err(e) => {
                assert!(restarted.elapsed() < Duration::from_secs(15), "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eprintln!("recovered {:?} after the restart", restarted.elapsed());
    store.create("after", &record(2), LONG).await.unwrap();
    store.set_hint("after", "jira", Some("again")).await.unwrap();
    assert_eq!(
        store.cas_members("after", 2, &names(&["jira"])).await.unwrap(),
        CasOutcome::Updated(3)
    );
    let got = store.load("after").await.unwrap().unwrap();
    assert_eq!(got.hints.get("jira").map(String::as_str), Some("again"));
    assert!(store.touch("after", LONG).await.unwrap());

    // The termination subscription comes back too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.subscription_healthy() {
        assert!(Instant::now() < deadline, "termination subscription did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while terminations.try_recv().is_ok() {}
    assert!(store.delete("after").await.unwrap());
    let got = tokio::time::timeout(Duration::from_secs(1), terminations.recv()).await;
    assert_eq!(got.expect("no termination notice after recovery").unwrap(), "after");
}
