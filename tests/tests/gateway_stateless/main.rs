//! MCP 2026-07-28 (stateless) on the gateway's client side, against real peers: the official
//! Python SDK's `Client` in its default mode (it probes `server/discover` and stays
//! stateless when offered), official Python and TypeScript SDK backends, a real OpenID
//! provider doing token exchange; older clients on the same gateway keep their sessions.
//!
//! Layout: the SDK client tests are here, the token-exchange test in `identity.rs`, the raw
//! HTTP tests of the envelope, `server/discover` and cancellation in `envelope.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod envelope;
mod identity;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use vmcp_e2e::gateway::{Gateway, backends_yaml};
use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};

/// The stateless protocol revision.
pub(crate) const V: &str = "2026-07-28";

pub(crate) fn names(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
}

/// The backend sessions (`Mcp-Session-Id`s) that carried `method` to `b`.
pub(crate) fn backend_sessions(b: &Backend, method: &str) -> BTreeSet<String> {
    b.requests()
        .iter()
        .filter(|r| r["method"] == method)
        .filter_map(|r| r["session_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_client_default_mode_is_stateless_and_older_clients_keep_sessions() {
    let alpha = Backend::start(Sdk::Python, "alpha", BackendOptions::default()).await;
    let beta = Backend::start(Sdk::TypeScript, "beta", BackendOptions::default()).await;
    let gw = Gateway::start(&backends_yaml(&[&alpha, &beta])).await;

    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    let conn = c.ok(json!({"op": "connect"})).await;
    assert_eq!(conn["protocolVersion"], V, "{conn}");
    assert_eq!(conn["serverInfo"]["name"], "vmcp");
    assert!(conn["capabilities"]["tools"].is_object(), "{conn}");
    assert_eq!(conn["sessionId"], Value::Null, "no session in this revision");
    assert_eq!(
        conn["posts"],
        json!([{"method": "server/discover", "mcpMethod": "server/discover", "status": 200}]),
        "one probe, answered: no fallback to initialize"
    );

    let tools = names(&c.ok(json!({"op": "list_tools"})).await);
    for t in ["alpha_echo", "beta_echo", "alpha_alpha_only", "beta_beta_only"] {
        assert!(tools.contains(&t.to_owned()), "{t} missing from {tools:?}");
    }
    let r =
        c.ok(json!({"op": "call_tool", "name": "alpha_echo", "arguments": {"text": "hi"}})).await;
    assert_eq!(r["text"], "alpha:echo:hi");
    let r =
        c.ok(json!({"op": "call_tool", "name": "beta_search", "arguments": {"query": "q"}})).await;
    assert_eq!(r["text"], "beta:search:q");
    let r = c.ok(json!({"op": "call_tool", "name": "alpha_fail", "arguments": {}})).await;
    assert_eq!((r["isError"].clone(), r["text"].clone()), (json!(true), json!("alpha:fail")));
    let r = c.ok(json!({"op": "read_resource", "uri": "info://beta"})).await;
    assert_eq!(r["text"], "beta info");
    let prompts = names(&c.ok(json!({"op": "list_prompts"})).await);
    assert!(prompts.contains(&"alpha_greet".to_owned()), "{prompts:?}");
    let r =
        c.ok(json!({"op": "get_prompt", "name": "beta_greet", "arguments": {"who": "ann"}})).await;
    assert!(r.to_string().contains("Hello ann from beta"), "{r}");
    let r = c.ok(json!({"op": "call_tool_progress", "name": "alpha_slow", "arguments": {"steps": 3, "delay_ms": 20}})).await;
    assert_eq!(r["text"], "alpha:slow:done");
    assert_eq!(r["progress"].as_array().unwrap().len(), 3, "{r}");
    // A tool whose argument the SDK mirrors into `Mcp-Param-Region` (x-mcp-header): the
    // gateway checks the header against the body and the call goes through.
    let r = c
        .ok(json!({"op": "call_tool", "name": "alpha_regional", "arguments": {"region": "eu-west"}}))
        .await;
    assert_eq!(r["text"], "alpha:regional:eu-west");
    // An unknown tool: the client gets the error, nothing hangs.
    let r = c.cmd(json!({"op": "call_tool", "name": "no_such_tool", "arguments": {}})).await;
    assert_eq!(r["ok"], false, "{r}");

    // Every request was stateless: no POST carried an initialize, no session was created.
    let posts = c.ok(json!({"op": "posts"})).await;
    for p in posts.as_array().unwrap() {
        assert!(p["method"] != "initialize" && p["mcpMethod"].is_string(), "{p}");
    }
    assert_eq!(gw.metric("vmcp_sessions_created_total").await, 0.0);

    // Per-request cost: the backends were initialized once for this identity, not per
    // request: every call of the client reached each backend on one backend session.
    for _ in 0..5 {
        c.ok(json!({"op": "call_tool", "name": "alpha_echo", "arguments": {"text": "again"}}))
            .await;
        c.ok(json!({"op": "call_tool", "name": "beta_echo", "arguments": {"text": "again"}})).await;
    }
    assert_eq!(backend_sessions(&alpha, "tools/call").len(), 1, "{:?}", alpha.requests());
    assert_eq!(backend_sessions(&beta, "tools/call").len(), 1);

    // Older clients on the same gateway: the initialize handshake and a session, as before.
    for sdk in [Sdk::Python, Sdk::TypeScript] {
        let mut old = Client::start(sdk, &gw.url(), &[]).await;
        let init = old.ok(json!({"op": "initialize"})).await;
        assert_eq!(init["protocolVersion"], "2025-11-25", "{sdk:?}: {init}");
        assert!(init["sessionId"].as_str().is_some_and(|s| s.len() == 32), "{init}");
        let r = old
            .ok(json!({"op": "call_tool", "name": "beta_echo", "arguments": {"text": "old"}}))
            .await;
        assert_eq!(r["text"], "beta:echo:old");
        old.exit().await;
    }
    assert_eq!(gw.metric("vmcp_sessions_created_total").await, 2.0);
    // The stateless client is unaffected.
    let r = c
        .ok(json!({"op": "call_tool", "name": "alpha_echo", "arguments": {"text": "still"}}))
        .await;
    assert_eq!(r["text"], "alpha:echo:still");
    c.exit().await;
}

/// The newest TypeScript SDK client (`@modelcontextprotocol/client` 2.x): in its default mode
/// (the initialize handshake) and with version negotiation `auto` (stateless when offered).
#[tokio::test(flavor = "multi_thread")]
async fn typescript_sdk_v2_client_default_and_auto_modes() {
    let alpha = Backend::start(Sdk::Python, "alpha", BackendOptions::default()).await;
    let beta = Backend::start(Sdk::TypeScript, "beta", BackendOptions::default()).await;
    let gw = Gateway::start(&backends_yaml(&[&alpha, &beta])).await;
    for (mode, version) in [(Value::Null, "2025-11-25"), (json!("auto"), V)] {
        let mut c = Client::start(Sdk::TypeScriptV2, &gw.url(), &[]).await;
        let conn = c.ok(json!({"op": "connect", "mode": mode})).await;
        assert_eq!(conn["protocolVersion"], version, "mode {mode}: {conn}");
        assert_eq!(conn["serverInfo"]["name"], "vmcp");
        assert_eq!(conn["sessionId"].is_string(), version != V, "{conn}");
        let tools = names(&c.ok(json!({"op": "list_tools"})).await);
        assert!(tools.contains(&"beta_echo".to_owned()), "{tools:?}");
        let r = c
            .ok(json!({"op": "call_tool", "name": "beta_echo", "arguments": {"text": "v2"}}))
            .await;
        assert_eq!(r["text"], "beta:echo:v2");
        let r = c.ok(json!({"op": "call_tool_progress", "name": "alpha_slow", "arguments": {"steps": 2, "delay_ms": 20}})).await;
        assert_eq!(
            (r["text"].clone(), r["progress"].as_array().unwrap().len()),
            (json!("alpha:slow:done"), 2),
            "{r}"
        );
        let r = c.ok(json!({"op": "read_resource", "uri": "info://alpha"})).await;
        assert_eq!(r["text"], "alpha info");
        let posts = c.ok(json!({"op": "posts"})).await;
        let initialized = posts.as_array().unwrap().iter().any(|p| p["method"] == "initialize");
        assert_eq!(initialized, version != V, "{posts}");
        c.exit().await;
    }
    // One session for the handshake client; none for the stateless one.
    assert_eq!(gw.metric("vmcp_sessions_created_total").await, 1.0);
}
