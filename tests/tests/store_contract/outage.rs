//! One `redis-server` of this test: password and database selection, connecting to nothing,
//! and an outage (every operation fails fast, the same store recovers when Redis is back).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Config, KeysInterface};
use vmcp_e2e::redis::RedisServer;
use vmcp_gateway::session::redis::RedisStore;
use vmcp_gateway::session::store::{CasOutcome, SessionStore, StoreError};
use vmcp_types::config::{RedisConfig, SecretSource};

use super::{LONG, config_for, names, record};

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
