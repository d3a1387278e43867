//! I7 with a backend built on an OLD official SDK (H3): `mcp` 1.12.4 negotiates 2025-06-18 and
//! answers 400 to any other `MCP-Protocol-Version`. A restored session must resume that
//! backend's session with the revision it negotiated (same backend session id, no new
//! `initialize`), after a gateway restart and on a cold second replica; a hint stored by an
//! earlier gateway (session id only, no revision) is recovered by re-initializing that backend.
//! Real redis-server, official-SDK backends (old and current) and client, gateway processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fred::prelude::*;
use serde_json::{Value, json};
use vmcp_e2e::gateway::Gateway;
use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};
use vmcp_e2e::redis::RedisServer;

/// The revision `mcp` 1.12.4 negotiates (its latest).
const OLD_SDK_REVISION: &str = "2025-06-18";
const PREFIX: &str = "vmcp:test:";

/// `o` is the old-SDK backend, `a` a current-SDK one.
fn config(redis: &RedisServer, o: &Backend, a: &Backend) -> String {
    format!(
        "sessionStorage:\n  provider: redis\n  redis:\n    url: {}\n    keyPrefix: '{PREFIX}'\nbackends:\n  - name: o\n    url: {}\n  - name: a\n    url: {}\n",
        redis.url(),
        o.url(),
        a.url()
    )
}

async fn redis_client(redis: &RedisServer) -> fred::clients::Client {
    let client = Builder::from_config(Config::from_url(&redis.url()).unwrap()).build().unwrap();
    client.init().await.unwrap();
    client
}

/// The `tools/call` requests the backend logged, from entry `from` on.
fn tool_calls(b: &Backend, from: usize) -> Vec<Value> {
    b.requests().into_iter().skip(from).filter(|r| r["method"] == "tools/call").collect()
}

/// Every request after entry `from` that belongs to backend session `sid` carried the revision
/// the old SDK negotiated; there is at least one.
fn assert_resumed_with_negotiated_revision(o: &Backend, from: usize, sid: &Value, when: &str) {
    let log = o.requests();
    let resumed: Vec<&Value> = log.iter().skip(from).filter(|r| &r["session_id"] == sid).collect();
    assert!(!resumed.is_empty(), "{when}: no request resumed backend session {sid}: {log:#?}");
    for r in resumed {
        assert_eq!(
            r["headers"]["mcp-protocol-version"], OLD_SDK_REVISION,
            "{when}: a resumed request carried another revision: {r}"
        );
    }
}

/// Raw JSON-RPC POST (as a load balancer without stickiness would route the session).
async fn post(url: &str, sid: &str, version: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", version)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{body}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_resumes_an_old_sdk_backend_with_its_negotiated_revision() {
    let redis = RedisServer::start().await.unwrap();
    let o = Backend::start(Sdk::PythonMcp1, "o", BackendOptions::default()).await;
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let cfg = config(&redis, &o, &a);
    let mut gw = Gateway::start(&cfg).await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    let init = c.ok(json!({"op": "initialize"})).await;
    let client_revision = init["protocolVersion"].as_str().unwrap().to_owned();
    let sid = c.ok(json!({"op": "session_id"})).await["sessionId"].as_str().unwrap().to_owned();
    let r = c.ok(json!({"op": "call_tool", "name": "o_echo", "arguments": {"text": "1"}})).await;
    assert_eq!(r["text"], "o:echo:1");
    let first = tool_calls(&o, 0);
    let backend_sid = first.last().unwrap()["session_id"].clone();
    assert!(backend_sid.is_string(), "the old SDK issued a session id: {first:?}");
    assert_eq!(first.last().unwrap()["headers"]["mcp-protocol-version"], OLD_SDK_REVISION);

    // Gateway restart (graceful): the stored hint is resumed with 2025-06-18.
    let mark = o.requests().len();
    gw.restart("TERM").await;
    let tools = c.ok(json!({"op": "list_tools"})).await;
    let names: Vec<&str> =
        tools.as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"o_echo") && names.contains(&"a_echo"), "after SIGTERM: {names:?}");
    let r = c.ok(json!({"op": "call_tool", "name": "o_echo", "arguments": {"text": "2"}})).await;
    assert_eq!(r["text"], "o:echo:2");
    let calls = tool_calls(&o, mark);
    assert_eq!(calls.len(), 1, "one call reached the old backend: {calls:?}");
    assert_eq!(calls[0]["session_id"], backend_sid, "the hint was reused (no re-initialize)");
    assert_resumed_with_negotiated_revision(&o, mark, &backend_sid, "after SIGTERM");
    let r = c.ok(json!({"op": "call_tool", "name": "a_echo", "arguments": {"text": "2"}})).await;
    assert_eq!(r["text"], "a:echo:2");

    // A second replica that never saw the session restores it cold from Redis.
    let mark = o.requests().len();
    let gw_b = Gateway::start(&cfg).await;
    let v = post(
        &gw_b.url(),
        &sid,
        &client_revision,
        json!({"jsonrpc":"2.0","id":7,"method":"tools/list"}),
    )
    .await;
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"o_echo") && names.contains(&"a_echo"), "cold replica: {v}");
    let v = post(
        &gw_b.url(),
        &sid,
        &client_revision,
        json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"o_echo","arguments":{"text":"3"}}}),
    )
    .await;
    assert_eq!(v["result"]["content"][0]["text"], "o:echo:3", "{v}");
    let calls = tool_calls(&o, mark);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["session_id"], backend_sid, "the cold replica reused the hint too");
    assert_resumed_with_negotiated_revision(&o, mark, &backend_sid, "cold replica");
    assert!(gw_b.log().contains("restoring session from the store"), "{}", gw_b.log());
    c.exit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hint_without_revision_reinitializes_the_old_sdk_backend() {
    let redis = RedisServer::start().await.unwrap();
    let o = Backend::start(Sdk::PythonMcp1, "o", BackendOptions::default()).await;
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let mut gw = Gateway::start(&config(&redis, &o, &a)).await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let sid = c.ok(json!({"op": "session_id"})).await["sessionId"].as_str().unwrap().to_owned();
    let r = c.ok(json!({"op": "call_tool", "name": "o_echo", "arguments": {"text": "1"}})).await;
    assert_eq!(r["text"], "o:echo:1");
    let old_sid = tool_calls(&o, 0).last().unwrap()["session_id"].as_str().unwrap().to_owned();

    // Rewrite the stored hint in the form an earlier gateway wrote (session id only) while no
    // gateway runs, then start it again: it does not know which revision that session had.
    gw.stop("TERM");
    let store = redis_client(&redis).await;
    let key = format!("{PREFIX}session:{sid}");
    let stored: String = store.hget(&key, "h:o").await.unwrap();
    assert_eq!(stored.split(' ').next(), Some(old_sid.as_str()), "stored hint {stored:?}");
    let _: () = store.hset(&key, ("h:o", old_sid.as_str())).await.unwrap();
    let mark = o.requests().len();
    gw.restart("TERM").await;

    // The gateway tries the latest revision, gets 400, re-initializes o, and the call succeeds.
    let r = c.ok(json!({"op": "call_tool", "name": "o_echo", "arguments": {"text": "2"}})).await;
    assert_eq!(r["text"], "o:echo:2");
    let after = o.requests().into_iter().skip(mark).collect::<Vec<_>>();
    assert!(
        after.iter().any(|r| r["session_id"] == old_sid.as_str()
            && r["headers"]["mcp-protocol-version"] != OLD_SDK_REVISION),
        "the old hint was tried first: {after:#?}"
    );
    assert!(after.iter().any(|r| r["method"] == "initialize"), "o was re-initialized: {after:#?}");
    let calls = tool_calls(&o, mark);
    let last = calls.last().unwrap();
    let new_sid = last["session_id"].as_str().unwrap().to_owned();
    assert_ne!(new_sid, old_sid, "the call ran in a new backend session");
    assert_eq!(last["headers"]["mcp-protocol-version"], OLD_SDK_REVISION);
    // The hint was updated, now with the revision.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stored: String = store.hget(&key, "h:o").await.unwrap();
        if stored == format!("{new_sid} {OLD_SDK_REVISION}") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "hint not updated: {stored:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = gw.metrics().await;
    assert!(metrics.contains("vmcp_backend_reinitializations_total{backend=\"o\"} 1"), "{metrics}");
    // The current-SDK backend is untouched by o's recovery.
    let r = c.ok(json!({"op": "call_tool", "name": "a_echo", "arguments": {"text": "2"}})).await;
    assert_eq!(r["text"], "a:echo:2");
    c.exit().await;
}
