//! What a client puts into `initialize` cannot grow the gateway or its Redis (H4): the record
//! keeps only what restore needs, capped, whatever the params were. Real redis-server, the
//! repository's example backend, the gateway binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fred::prelude::*;
use serde_json::{Value, json};
use vmcp_e2e::example_backend::ExampleBackend;
use vmcp_e2e::gateway::Gateway;
use vmcp_e2e::redis::RedisServer;

const PREFIX: &str = "vmcp:budget:";

async fn initialize(http: &reqwest::Client, url: &str, params: &Value) -> String {
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params});
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "initialize: {}", resp.status());
    resp.headers()["mcp-session-id"].to_str().unwrap().to_owned()
}

fn params(blob: &str) -> Value {
    json!({"protocolVersion": "2025-11-25",
        "capabilities": {"experimental": {"blob": blob}, "sampling": {"blob": blob}, "roots": {}},
        "clientInfo": {"name": blob, "version": blob}, "_meta": {"blob": blob}})
}

async fn used_memory(redis: &fred::clients::Client) -> u64 {
    let info: String = redis.info(Some(fred::types::InfoKind::Memory)).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn initialize_params_never_grow_the_session_record() {
    let redis = RedisServer::start().await.unwrap();
    let weather = ExampleBackend::start("weather").await;
    let gw = Gateway::start(&format!(
        "sessionStorage:\n  provider: redis\n  redis:\n    url: {}\n    keyPrefix: '{PREFIX}'\nbackends:\n  - name: weather\n    url: {}\n",
        redis.url(),
        weather.url()
    ))
    .await;
    let client = Builder::from_config(Config::from_url(&redis.url()).unwrap()).build().unwrap();
    client.init().await.unwrap();
    let http = reqwest::Client::new();

    // One initialize near the 4 MiB body limit: 600 KiB in each of six fields a client
    // controls.
    let sid = initialize(&http, &gw.url(), &params(&"x".repeat(600 << 10))).await;
    let key = format!("{PREFIX}session:{sid}");
    let c_len: u64 = client.hstrlen(&key, "c").await.unwrap();
    assert!(c_len < 1024, "client params field: {c_len} bytes");
    let usage: Option<u64> =
        client.custom(fred::cmd!("MEMORY"), vec!["USAGE", key.as_str()]).await.unwrap();
    let usage = usage.unwrap();
    assert!(usage < 2048, "MEMORY USAGE of one record: {usage} bytes");

    // 10,000 sessions whose params are 8 KiB each: Redis and the gateway grow by a bounded
    // amount per session, not by what the clients sent.
    let before_redis = used_memory(&client).await;
    let pid = gw.pid().unwrap();
    let before_rss = rss_kib(pid);
    let p = params(&"y".repeat(8 << 10));
    let n = 10_000;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, p) = (http.clone(), gw.url(), p.clone());
            tokio::spawn(async move {
                for _ in 0..n / 4 {
                    initialize(&http, &url, &p).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let per_record = (used_memory(&client).await - before_redis) / n;
    assert!(per_record < 2048, "Redis grew {per_record} bytes per session");
    let per_session = (rss_kib(pid).saturating_sub(before_rss)) * 1024 / n;
    assert!(per_session < 16 * 1024, "gateway RSS grew {per_session} bytes per session");
    eprintln!("per session: Redis {per_record} B, gateway RSS {per_session} B (debug build)");
}
