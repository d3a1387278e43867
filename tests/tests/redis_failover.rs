//! Gateway replicas on a real Redis Cluster (3 masters + 3 replicas) and a real Sentinel
//! deployment (1 master, 2 replicas, 3 sentinels): sessions are shared and a DELETE is global,
//! and a Redis master killed under load costs no acknowledged session, only failures inside
//! the failover window, and the termination feed comes back (I5).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;
use vmcp_e2e::example_backend::ExampleBackend;
use vmcp_e2e::gateway::Gateway;
use vmcp_e2e::redis_topology::{AnyRedis, Topology};

const PREFIX: &str = "vmcp:fo:";

fn config(redis: &AnyRedis, weather: &ExampleBackend) -> String {
    format!(
        "sessionStorage:\n  provider: redis\n  redis:\n    url: '{}'\n    keyPrefix: '{PREFIX}'\n    waitReplicas: 1\n    waitTimeout: 2s\nbackends:\n  - name: weather\n    url: {}\n",
        redis.url(),
        weather.url()
    )
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// `initialize` on `url`: the session id, or the HTTP status (0: no answer).
async fn initialize(c: &reqwest::Client, url: &str) -> Result<String, u16> {
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"failover","version":"1"}}}).to_string())
        .send()
        .await
        .map_err(|_| 0u16)?;
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    Ok(r.headers()["mcp-session-id"].to_str().unwrap().to_owned())
}

/// `tools/call weather_search` in session `sid` on `url`: the HTTP status (0: no answer), 200
/// only when the tool answered.
async fn call(c: &reqwest::Client, url: &str, sid: &str) -> u16 {
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-11-25")
        .body(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"weather_search","arguments":{"query":"q"}}}).to_string())
        .send()
        .await;
    let Ok(r) = r else { return 0 };
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    if status == 200 && !body.contains("\"result\"") {
        return 599;
    }
    status
}

/// Polls `url` until session `sid` answers 404; fails after `within`.
async fn until_gone(c: &reqwest::Client, url: &str, sid: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let status = call(c, url, sid).await;
        if status == 404 {
            return;
        }
        assert!(Instant::now() < deadline, "{url} still answers {status} for a deleted session");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delete(c: &reqwest::Client, url: &str, sid: &str) -> u16 {
    c.delete(url).header("mcp-session-id", sid).send().await.map_or(0, |r| r.status().as_u16())
}

/// Initialize on A, calls alternate over A and B (no stickiness), DELETE on A: B answers 404
/// within a second.
async fn replicas_share_sessions_and_delete_is_global(topology: Topology) {
    let redis = AnyRedis::start(topology).await.unwrap();
    let weather = ExampleBackend::start("weather").await;
    let cfg = config(&redis, &weather);
    let (a, b) = (Gateway::start(&cfg).await, Gateway::start(&cfg).await);
    let c = http();
    let sid = initialize(&c, &a.url()).await.unwrap();
    for n in 0..6 {
        let url = if n % 2 == 0 { b.url() } else { a.url() };
        assert_eq!(call(&c, &url, &sid).await, 200, "{topology:?}: call {n}\n{}", b.log());
    }
    assert_eq!(delete(&c, &a.url(), &sid).await, 200);
    until_gone(&c, &b.url(), &sid, Duration::from_secs(1)).await;
    assert!(b.log().contains("restoring session from the store"), "B restored it from redis");
}

/// What the load saw.
#[derive(Default)]
struct Outcomes {
    /// Sessions whose `initialize` answered 200 (acknowledged).
    sessions: Vec<String>,
    /// (when, what, which replica) of every failed request: HTTP status, 0 = no answer.
    failures: Vec<(Instant, u16, usize)>,
    requests: usize,
}

/// Clients call a tool through 3 replicas (round robin, a new session every 10 calls) while
/// the Redis master holding the first session is killed.
async fn master_killed_under_load(topology: Topology) {
    failover_under_load(topology, false).await;
}

/// As [`master_killed_under_load`] on Sentinel, and once the shard is replicated again the
/// sentinels fail over a second time, away from the first successor, which keeps accepting
/// writes (that no replica acknowledges) until they demote it up to 10 s later: what a
/// sentinel that missed the new master's answers for its 1 s `down-after` did on a loaded CI
/// machine. Failures stay inside the window that ends 10 s after the last topology change, and
/// no acknowledged session is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_fails_over_twice_under_load() {
    failover_under_load(Topology::Sentinel, true).await;
}

async fn failover_under_load(topology: Topology, twice: bool) {
    const CLIENTS: usize = 6;
    let mut redis = AnyRedis::start(topology).await.unwrap();
    let weather = ExampleBackend::start("weather").await;
    let cfg = config(&redis, &weather);
    let gws = [Gateway::start(&cfg).await, Gateway::start(&cfg).await, Gateway::start(&cfg).await];
    let urls: Arc<Vec<String>> = Arc::new(gws.iter().map(Gateway::url).collect());
    let out = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(AtomicBool::new(false));
    // Set-up, not measured: on a loaded machine the first WAIT may time out (503); retry.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        match initialize(&http(), &urls[0]).await {
            Ok(sid) => break sid,
            Err(503) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("{topology:?}: initialize before the kill: {status}"),
        }
    };
    out.lock().await.sessions.push(first.clone());

    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (urls, out, stop) = (urls.clone(), out.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = http();
            let mut sid: Option<String> = None;
            let mut n = client;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let url = &urls[n % urls.len()];
                let status = match &sid {
                    Some(s) => call(&c, url, s).await,
                    None => match initialize(&c, url).await {
                        Ok(s) => {
                            out.lock().await.sessions.push(s.clone());
                            sid = Some(s);
                            200
                        }
                        Err(status) => status,
                    },
                };
                let mut o = out.lock().await;
                o.requests += 1;
                if status != 200 {
                    o.failures.push((Instant::now(), status, n % urls.len()));
                    drop(o);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else if n % 10 == 0 {
                    sid = None;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = out.lock().await.requests;
    assert!(before > 0 && out.lock().await.failures.is_empty(), "load works before the kill");

    let key = format!("{PREFIX}session:{first}");
    let killed_at = Instant::now();
    let killed = redis.kill_master_for(&key).unwrap();
    redis.wait_for_takeover(&killed, Duration::from_secs(30)).await.unwrap();
    let took_over = killed_at.elapsed();
    // `waitReplicas: 1` refuses new sessions until the new master has a replica in sync again.
    // Cluster: the shard's only replica is now its master, until the killed node is back as its
    // replica (Kubernetes restarts it). Sentinel: until the sentinels have pointed the other
    // replica at the new master and it has synced.
    redis.bring_back(&killed).await.unwrap();
    let back = killed_at.elapsed();
    if twice {
        redis.force_failover(Duration::from_secs(30)).await.unwrap();
    }
    // The failover window as the clients may see it: until a replica took over and the shard
    // has a replica again, plus the clients' reconnect backoff (up to 2 s), the
    // unresponsive-connection check (5 s) and the command timeout (2 s). Redis may change its
    // topology again after that: on a loaded machine a sentinel that has not heard from the new
    // master within its 1 s `down-after` starts a second failover, and the sentinels demote
    // the first successor (closing its clients) only when they next look at it, up to 10 s
    // later. The window then ends 10 s after the last such change, and the load goes on until
    // Redis has been quiet for the window's tail plus 3 s.
    let settle_by = killed_at + Duration::from_secs(120);
    let window = loop {
        let last_change = redis
            .last_topology_change()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(killed_at));
        let window = back.max(last_change) + Duration::from_secs(10);
        if killed_at.elapsed() >= window + Duration::from_secs(3) {
            break window;
        }
        assert!(
            Instant::now() < settle_by,
            "{topology:?}: Redis did not settle within 120 s of the kill:\n{}",
            redis.failover_events(killed_at)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let out = out.lock().await;
    let in_window =
        out.failures.iter().filter(|(t, _, _)| *t >= killed_at && *t < killed_at + window).count();
    let mut statuses: Vec<u16> = out.failures.iter().map(|(_, s, _)| *s).collect();
    statuses.sort_unstable();
    statuses.dedup();
    let last_failure = out.failures.iter().map(|(t, _, _)| t.duration_since(killed_at)).max();
    eprintln!(
        "{topology:?}: {} requests by {CLIENTS} clients through 3 replicas; master killed, replica took over after {took_over:?}, shard replicated again after {back:?}, failover window {window:?}; {} failed requests ({in_window} inside the window), statuses {statuses:?}, last failure {last_failure:?} after the kill; {} acknowledged sessions",
        out.requests,
        out.failures.len(),
        out.sessions.len()
    );
    if in_window != out.failures.len() {
        for (t, s, g) in out.failures.iter().filter(|(t, _, _)| *t >= killed_at + window) {
            eprintln!("late failure: {s} from replica {g} at {:?}", t.duration_since(killed_at));
        }
        for (i, g) in gws.iter().enumerate() {
            let log = g.log();
            let lines: Vec<&str> =
                log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
            eprintln!("replica {i}:\n{}", lines[lines.len().saturating_sub(30)..].join("\n"));
        }
        eprintln!("sentinel events (since the kill):\n{}", redis.failover_events(killed_at));
    }
    assert_eq!(in_window, out.failures.len(), "{topology:?}: failures outside the failover window");
    assert!(
        out.failures.len() < out.requests / 2,
        "{topology:?}: most requests failed ({} of {})",
        out.failures.len(),
        out.requests
    );
    assert!(!statuses.contains(&404), "{topology:?}: a session answered 404 during the failover");

    // No acknowledged session was lost: each works on every replica.
    let c = http();
    let mut lost = Vec::new();
    for (i, sid) in out.sessions.iter().enumerate() {
        let status = call(&c, &urls[i % urls.len()], sid).await;
        if status != 200 {
            lost.push((sid.clone(), status));
        }
    }
    assert!(lost.is_empty(), "{topology:?}: acknowledged sessions lost: {lost:?}");

    // The termination feed is back: a DELETE on one replica reaches the others within 1 s.
    for sid in out.sessions.iter().take(3) {
        for url in urls.iter() {
            assert_eq!(call(&c, url, sid).await, 200, "cached on every replica first");
        }
        let t = Instant::now();
        assert_eq!(delete(&c, &urls[0], sid).await, 200);
        until_gone(&c, &urls[1], sid, Duration::from_secs(1)).await;
        until_gone(&c, &urls[2], sid, Duration::from_secs(1).saturating_sub(t.elapsed())).await;
    }
    drop(gws);
}

macro_rules! per_failover_topology {
    ($($case:ident),*) => {
        $(
            mod $case {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn cluster() { super::$case(Topology::Cluster).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sentinel() { super::$case(Topology::Sentinel).await }
            }
        )*
    };
}

per_failover_topology!(replicas_share_sessions_and_delete_is_global, master_killed_under_load);
