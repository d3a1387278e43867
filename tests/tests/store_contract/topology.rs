//! Redis-only cases run on each deployment: what is stored (small, no secrets), the termination
//! feed (I5), and (Cluster, Sentinel) that a failover loses no acknowledged write.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Config, HashesInterface, KeysInterface};
use vmcp_e2e::redis_topology::{AnyRedis, Topology};
use vmcp_gateway::session::redis::RedisStore;
use vmcp_gateway::session::store::{SessionStore, StoreError};
use vmcp_types::config::RedisConfig;

use super::{LONG, config_for, record};

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
pub(crate) async fn failover_keeps_every_acknowledged_write_and_the_feed(topology: Topology) {
    let mut redis = AnyRedis::start(topology).await.unwrap();
    let cfg = RedisConfig {
        key_prefix: "fo:".into(),
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(300),
        ..RedisConfig::new(redis.url())
    };
    let writer = RedisStore::connect(&cfg).await.unwrap();
    let listener = RedisStore::connect(&cfg).await.unwrap();
    // A replica of a deployment that has just started may still be in its first sync and
    // not acknowledge within `wait_timeout` (seen under a loaded `make test`): on each master
    // this test writes to, fresh sessions are created until its replica acknowledges one.
    for id in ["before", "deleted"] {
        let master = redis.master_for(&writer.session_key(id)).unwrap();
        let warm_ups: Vec<String> = (0..3000)
            .map(|i| format!("warm-up-{id}-{i}"))
            .filter(|w| redis.master_for(&writer.session_key(w)).unwrap() == master)
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        vmcp_e2e::wait::eventually(
            "a replica acknowledging writes",
            Duration::from_secs(30),
            || async {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                writer.create(&warm_ups[n], &record(1), LONG).await.ok()
            },
        )
        .await;
    }
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
    // After the takeover the remaining replica re-syncs from the new master (the ballast
    // included) and may not acknowledge within `wait_timeout` at first (seen under a loaded
    // `make test`): fresh sessions are created until one is acknowledged, then it is deleted.
    let attempt = std::sync::atomic::AtomicUsize::new(0);
    let after = vmcp_e2e::wait::eventually(
        "a replica acknowledging writes after the failover",
        Duration::from_secs(30),
        || async {
            let id =
                format!("after-{}", attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            writer.create(&id, &record(1), LONG).await.ok().map(|()| id)
        },
    )
    .await;
    assert!(writer.delete(&after).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(id)) if id == after => break,
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

pub(crate) async fn redis_record_is_small_and_holds_no_secrets(topology: Topology) {
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

pub(crate) async fn redis_delete_publishes_termination(topology: Topology) {
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
