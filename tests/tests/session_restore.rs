//! Sessions in Redis survive a gateway restart (SIGTERM and SIGKILL) and are shared by two
//! replicas: real redis-server, official-SDK backends and clients, gateway processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use vmcp_e2e::gateway::Gateway;
use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};
use vmcp_e2e::redis::RedisServer;

fn config(redis: &RedisServer, a: &Backend, h: &Backend) -> String {
    format!(
        "sessionStorage:\n  provider: redis\n  redis:\n    url: {}\n    keyPrefix: 'vmcp:test:'\nbackends:\n  - name: a\n    url: {}\n  - name: h\n    url: {}\n    auth:\n      type: headerInjection\n      headerInjection:\n        headerName: X-Api-Key\n        value: {{ env: H_API_KEY }}\n",
        redis.url(),
        a.url(),
        h.url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_the_session_anonymous_and_header_injection() {
    let redis = RedisServer::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let mut gw = Gateway::start_with_env(&config(&redis, &a, &h), &[("H_API_KEY", "k-1")]).await;
    for sdk in [Sdk::Python, Sdk::TypeScript] {
        let mut c = Client::start(sdk, &gw.url(), &[]).await;
        c.ok(json!({"op": "initialize"})).await;
        let sid = c.ok(json!({"op": "session_id"})).await;
        assert_eq!(
            c.ok(json!({"op": "call_tool", "name": "a_echo", "arguments": {"text": "1"}})).await["text"],
            "a:echo:1"
        );
        for signal in ["TERM", "KILL"] {
            gw.restart(signal).await;
            let r = c
                .ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": signal}}))
                .await;
            assert_eq!(r["text"], format!("h:echo:{signal}"), "{sdk:?} after SIG{signal}");
            let r = c
                .ok(json!({"op": "call_tool", "name": "a_echo", "arguments": {"text": signal}}))
                .await;
            assert_eq!(r["text"], format!("a:echo:{signal}"));
            assert_eq!(c.ok(json!({"op": "session_id"})).await, sid, "no re-initialize");
        }
        c.exit().await;
    }
    assert!(gw.log().contains("restoring session from the store"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_sessions_and_delete_is_global() {
    let redis = RedisServer::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let cfg = config(&redis, &a, &h);
    let gw_a = Gateway::start_with_env(&cfg, &[("H_API_KEY", "k-1")]).await;
    let gw_b = Gateway::start_with_env(&cfg, &[("H_API_KEY", "k-1")]).await;
    // Initialize on A, then call on B with the same session id (raw HTTP, as a load
    // balancer without stickiness would route it).
    let http = reqwest::Client::new();
    let init = vmcp_e2e::raw_mcp::initialize(&http, &gw_a.url(), "lb").await;
    let sid = vmcp_e2e::raw_mcp::session_id(&init);
    let call = |url: String, n: u32| {
        let http = http.clone();
        let sid = sid.clone();
        async move {
            http.post(url)
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .header("mcp-session-id", sid)
                .header("mcp-protocol-version", "2025-11-25")
                .body(json!({"jsonrpc":"2.0","id":n,"method":"tools/call","params":{"name":"a_echo","arguments":{"text":n.to_string()}}}).to_string())
                .send()
                .await
                .unwrap()
        }
    };
    for n in 0..6 {
        let url = if n % 2 == 0 { gw_b.url() } else { gw_a.url() };
        let r = call(url, n).await;
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["result"]["content"][0]["text"], format!("a:echo:{n}"), "{v}");
    }
    // DELETE on A: B answers 404 within a second.
    let r = http.delete(gw_a.url()).header("mcp-session-id", &sid).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let status = call(gw_b.url(), 99).await.status();
        if status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B still serves a terminated session ({status})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// I7: a backend that restarts (its sessions lost) answers 404 to the stored session id; the
/// gateway re-initializes only that backend and the call succeeds. Across a gateway restart
/// the other backend's session id is reused (no new initialize there).
#[tokio::test(flavor = "multi_thread")]
async fn i7_backend_restart_reinitializes_only_that_backend() {
    let redis = RedisServer::start().await.unwrap();
    let mut a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let mut gw = Gateway::start_with_env(&config(&redis, &a, &h), &[("H_API_KEY", "k-1")]).await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    c.ok(json!({"op": "call_tool", "name": "a_echo", "arguments": {"text": "1"}})).await;
    let port = a.port;
    a.stop().await;
    let a2 = Backend::start(Sdk::Python, "a", BackendOptions { port, ..Default::default() }).await;
    let r = c.ok(json!({"op": "call_tool", "name": "a_echo", "arguments": {"text": "2"}})).await;
    assert_eq!(r["text"], "a:echo:2");
    assert!(a2.requests().iter().any(|r| r["method"] == "initialize"), "a was re-initialized");
    let metrics = gw.metrics().await;
    assert!(metrics.contains("vmcp_backend_reinitializations_total{backend=\"a\"} 1"), "{metrics}");
    assert!(
        !metrics.contains("vmcp_backend_reinitializations_total{backend=\"h\"}"),
        "only a: {metrics}"
    );
    // Gateway restart: h's stored session id is reused as a hint (the call after the restart
    // carries the same backend session id as before it).
    let h_session = |h: &Backend| {
        h.requests()
            .iter()
            .rev()
            .find(|r| r["method"] == "tools/call")
            .map(|r| r["session_id"].clone())
            .unwrap()
    };
    c.ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": "before"}})).await;
    let before = h_session(&h);
    assert!(before.is_string(), "h issued a session id");
    gw.restart("KILL").await;
    let r = c.ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": "3"}})).await;
    assert_eq!(r["text"], "h:echo:3");
    assert_eq!(h_session(&h), before, "h's session was resumed, not re-initialized");
    let metrics = gw.metrics().await;
    assert!(metrics.contains("vmcp_session_restores_total{outcome=\"ok\"} 1"), "{metrics}");
    assert!(metrics.contains("vmcp_session_restore_duration_seconds_count 1"));
    c.exit().await;
}

/// Redis down: requests that need the store get 503 with Retry-After; when Redis is back the
/// gateway works again without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn redis_unavailable_is_503_and_recovers() {
    let mut redis = RedisServer::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let gw = Gateway::start_with_env(&config(&redis, &a, &h), &[("H_API_KEY", "k-1")]).await;
    let init =
        || async { vmcp_e2e::raw_mcp::initialize(&reqwest::Client::new(), &gw.url(), "x").await };
    assert_eq!(init().await.status(), 200);
    redis.stop();
    let r = init().await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    // An unknown session id of the form the gateway issues cannot be looked up either: 503,
    // not 404 (a malformed id is 404 without any lookup).
    let r = reqwest::Client::new()
        .post(gw.url())
        .header("mcp-session-id", "deadbeef".repeat(4))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let readyz = format!("http://127.0.0.1:{}/readyz", gw.port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while reqwest::get(&readyz).await.unwrap().status() != 503 {
        assert!(std::time::Instant::now() < deadline, "/readyz stays ready without its store");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    redis.restart().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let s = init().await.status();
        if s == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no recovery after Redis came back ({s})");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(gw.log().contains("session store unavailable"), "a clear log line");
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200, "ready again");
}

/// Idle sessions (no request, no open GET stream) drop their local connections (there is no
/// session cap) and are restored on the next request.
#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_are_evicted_locally_and_restored() {
    let redis = RedisServer::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let cfg =
        config(&redis, &a, &h).replace("sessionStorage:\n", "sessionStorage:\n  idleTimeout: 1s\n");
    let gw = Gateway::start_with_env(&cfg, &[("H_API_KEY", "k-1")]).await;
    let http = reqwest::Client::new();
    let post = |sid: Option<String>, body: serde_json::Value| {
        let mut rb = http
            .post(gw.url())
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body.to_string());
        if let Some(s) = sid {
            rb = rb.header("mcp-session-id", s).header("mcp-protocol-version", "2025-11-25");
        }
        rb.send()
    };
    let r = post(None, json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}})).await.unwrap();
    let sid = vmcp_e2e::raw_mcp::session_id(&r);
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let metrics = gw.metrics().await;
    assert!(metrics.contains("vmcp_sessions_live 0"), "evicted locally: {metrics}");
    let r = post(Some(sid), json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a_echo","arguments":{"text":"back"}}})).await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "a:echo:back", "{v}");
    assert!(gw.log().contains("restoring session from the store"));
}

/// A client that only listens on its GET stream keeps its session alive in the store (M1):
/// after more than the TTL without a POST, another replica still restores it.
#[tokio::test(flavor = "multi_thread")]
async fn a_listening_client_outlives_the_ttl_on_every_replica() {
    let redis = RedisServer::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let cfg = config(&redis, &a, &h).replace("sessionStorage:\n", "sessionStorage:\n  ttl: 3s\n");
    let gw_a = Gateway::start_with_env(&cfg, &[("H_API_KEY", "k-1")]).await;
    let gw_b = Gateway::start_with_env(&cfg, &[("H_API_KEY", "k-1")]).await;
    let http = reqwest::Client::new();
    let r = vmcp_e2e::raw_mcp::initialize(&http, &gw_a.url(), "x").await;
    let sid = vmcp_e2e::raw_mcp::session_id(&r);
    let listening = vmcp_e2e::raw_mcp::open_get_stream(&http, &gw_a.url(), &sid).await;
    assert_eq!(listening.status(), 200);
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let r = http
        .post(gw_b.url())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .body(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a_echo","arguments":{"text":"still"}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the record expired while its client was listening");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "a:echo:still", "{v}");
    drop(listening);
}

/// I5 when the termination feed silently dies (M1): replica A's connections to Redis are
/// blackholed (no reset, no error: a NAT forgetting an idle flow), the session is DELETEd on
/// replica B meanwhile, and A comes back. A must not go on serving the session from its cache.
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_missed_by_a_silent_feed_still_ends_the_session() {
    let redis = RedisServer::start().await.unwrap();
    let proxy = vmcp_e2e::tcp_proxy::TcpProxy::start(redis.port()).await;
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let cfg = config(&redis, &a, &h);
    let via_proxy = cfg.replace(
        &format!("url: {}", redis.url()),
        &format!("url: redis://127.0.0.1:{}", proxy.port),
    );
    assert_ne!(cfg, via_proxy);
    let gw_a = Gateway::start_with_env(&via_proxy, &[("H_API_KEY", "k-1")]).await;
    let gw_b = Gateway::start_with_env(&cfg, &[("H_API_KEY", "k-1")]).await;
    let http = reqwest::Client::new();
    let r = vmcp_e2e::raw_mcp::initialize(&http, &gw_b.url(), "x").await;
    let sid = vmcp_e2e::raw_mcp::session_id(&r);
    let call = |url: String| {
        let (http, sid) = (http.clone(), sid.clone());
        async move {
            http.post(url)
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .header("mcp-session-id", sid)
                .header("mcp-protocol-version", "2025-11-25")
                .body(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a_echo","arguments":{"text":"x"}}}).to_string())
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(call(gw_a.url()).await, 200, "A restored and cached the session");
    proxy.blackhole();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let r = http.delete(gw_b.url()).header("mcp-session-id", &sid).send().await.unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    proxy.restore();
    // Once A's connections are back, the session is gone there too (never a 200 again).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = call(gw_a.url()).await;
        if status == 404 {
            break;
        }
        assert!(
            status != 200 || std::time::Instant::now() < deadline,
            "A still serves the deleted session ({status})\n{}",
            gw_a.log()
        );
        assert!(std::time::Instant::now() < deadline, "no 404 from A ({status})");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// L8: a record this gateway cannot read (here: written by a newer gateway) is an unknown
/// session on a replica that must restore it (404: the client starts a new one), not a 503 on
/// every retry.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_from_a_newer_gateway_is_unknown_not_unavailable() {
    use fred::prelude::*;
    let redis = RedisServer::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let cfg = config(&redis, &a, &h);
    let gw_a = Gateway::start_with_env(&cfg, &[("H_API_KEY", "k-1")]).await;
    let http = reqwest::Client::new();
    let init = vmcp_e2e::raw_mcp::initialize(&http, &gw_a.url(), "lb").await;
    let sid = vmcp_e2e::raw_mcp::session_id(&init);
    let raw = Builder::from_config(Config::from_url(&redis.url()).unwrap()).build().unwrap();
    raw.init().await.unwrap();
    let key = format!("vmcp:test:session:{sid}");
    let _: () = raw.hset(&key, ("v", "999")).await.unwrap();
    // A replica that does not hold it must read the record.
    let gw_b = Gateway::start_with_env(&cfg, &[("H_API_KEY", "k-1")]).await;
    let r = http
        .post(gw_b.url())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .body(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "{:?}", r.text().await);
}
