//! Gateway core against real peers: official Python and TypeScript SDK backends and clients,
//! the `vmcp-gateway` binary as its own process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmcp_e2e::gateway::{Gateway, backends_yaml};
use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};

fn names(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
}

/// Two backends (one per SDK), a client of each SDK: everything the issue lists.
async fn full_flow(client_sdk: Sdk) {
    let alpha = Backend::start(Sdk::Python, "alpha", BackendOptions::default()).await;
    let beta = Backend::start(Sdk::TypeScript, "beta", BackendOptions::default()).await;
    let gw = Gateway::start(&backends_yaml(&[&alpha, &beta])).await;
    let mut c = Client::start(client_sdk, &gw.url(), &[]).await;

    let init = c.ok(json!({"op": "initialize"})).await;
    assert_eq!(init["serverInfo"]["name"], "vmcp");
    let tools = names(&c.ok(json!({"op": "list_tools"})).await);
    for t in [
        "alpha_echo",
        "alpha_search",
        "beta_echo",
        "beta_search",
        "alpha_alpha_only",
        "beta_beta_only",
    ] {
        assert!(tools.contains(&t.to_owned()), "{t} missing from {tools:?}");
    }
    assert!(!tools.contains(&"search".to_owned()), "prefix resolution leaves no bare name");

    // Routed to the right backend under the original name.
    let r =
        c.ok(json!({"op": "call_tool", "name": "beta_search", "arguments": {"query": "q"}})).await;
    assert_eq!(r["text"], "beta:search:q");
    let r =
        c.ok(json!({"op": "call_tool", "name": "alpha_echo", "arguments": {"text": "hi"}})).await;
    assert_eq!(r["text"], "alpha:echo:hi");
    let beta_calls: Vec<_> =
        beta.requests().into_iter().filter(|r| r["method"] == "tools/call").collect();
    assert_eq!(beta_calls.len(), 1, "only beta_search went to beta");
    // Each backend got its own Host.
    assert!(
        alpha
            .requests()
            .iter()
            .all(|r| r["headers"]["host"] == format!("127.0.0.1:{}", alpha.port))
    );

    // Tool errors pass through as results.
    let r = c.ok(json!({"op": "call_tool", "name": "alpha_fail", "arguments": {}})).await;
    assert_eq!(r["isError"], true);
    assert_eq!(r["text"], "alpha:fail");

    // Resources and prompts.
    let r = c.ok(json!({"op": "read_resource", "uri": "info://beta"})).await;
    assert_eq!(r["text"], "beta info");
    let prompts = names(&c.ok(json!({"op": "list_prompts"})).await);
    assert!(
        prompts.contains(&"alpha_greet".to_owned()) && prompts.contains(&"beta_greet".to_owned()),
        "{prompts:?}"
    );
    let r =
        c.ok(json!({"op": "get_prompt", "name": "beta_greet", "arguments": {"who": "ann"}})).await;
    assert!(r.to_string().contains("Hello ann from beta"), "{r}");

    // Progress notifications arrive.
    let r = c.ok(json!({"op": "call_tool_progress", "name": "alpha_slow", "arguments": {"steps": 3, "delay_ms": 20}})).await;
    assert_eq!(r["text"], "alpha:slow:done");
    assert_eq!(r["progress"].as_array().unwrap().len(), 3, "{r}");

    // A backend's list_changed reaches the client, and the new tool is routable.
    c.ok(json!({"op": "call_tool", "name": "beta_add_tool", "arguments": {"name": "fresh"}})).await;
    c.ok(json!({"op": "wait_notification", "method": "notifications/tools/list_changed", "timeout_ms": 10000})).await;
    let tools = names(&c.ok(json!({"op": "list_tools"})).await);
    assert!(tools.contains(&"beta_fresh".to_owned()), "{tools:?}");
    let r = c.ok(json!({"op": "call_tool", "name": "beta_fresh", "arguments": {}})).await;
    assert_eq!(r["text"], "beta:fresh");

    // DELETE, then any request is 404.
    c.ok(json!({"op": "terminate"})).await;
    let r = c.cmd(json!({"op": "list_tools"})).await;
    assert_eq!(r["ok"], false, "{r}");
    c.exit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_client_through_gateway() {
    full_flow(Sdk::Python).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn typescript_client_through_gateway() {
    full_flow(Sdk::TypeScript).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_sse_backend_is_aggregated() {
    let sse =
        Backend::start(Sdk::Python, "legacy", BackendOptions { sse: true, ..Default::default() })
            .await;
    let ts_sse = Backend::start(
        Sdk::TypeScript,
        "tslegacy",
        BackendOptions { sse: true, ..Default::default() },
    )
    .await;
    let gw = Gateway::start(&backends_yaml(&[&sse, &ts_sse])).await;
    let mut c = Client::start(Sdk::TypeScript, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let r =
        c.ok(json!({"op": "call_tool", "name": "legacy_echo", "arguments": {"text": "old"}})).await;
    assert_eq!(r["text"], "legacy:echo:old");
    let r = c
        .ok(json!({"op": "call_tool", "name": "tslegacy_echo", "arguments": {"text": "old"}}))
        .await;
    assert_eq!(r["text"], "tslegacy:echo:old");
    let r = c.ok(json!({"op": "call_tool_progress", "name": "legacy_slow", "arguments": {"steps": 2, "delay_ms": 20}})).await;
    assert_eq!(r["progress"].as_array().unwrap().len(), 2, "{r}");
    c.exit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn priority_and_manual_resolution() {
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let b = Backend::start(Sdk::TypeScript, "b", BackendOptions::default()).await;
    let gw = Gateway::start(&format!(
        "{}aggregation:\n  conflictResolution: priority\n  priorityOrder: [b, a]\n  tools:\n    - backend: a\n      filter: [search, echo, a_only]\n      overrides:\n        a_only:\n          name: only_from_a\n          description: renamed\n",
        backends_yaml(&[&a, &b]),
    ))
    .await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let tools = c.ok(json!({"op": "list_tools"})).await;
    let n = names(&tools);
    assert!(
        n.contains(&"search".to_owned())
            && n.contains(&"only_from_a".to_owned())
            && n.contains(&"b_only".to_owned()),
        "{n:?}"
    );
    assert!(
        !n.contains(&"a_only".to_owned()) && !n.contains(&"whoami".to_owned())
            || n.contains(&"whoami".to_owned()),
        "{n:?}"
    );
    assert_eq!(n.iter().filter(|x| *x == "search").count(), 1);
    let r = c.ok(json!({"op": "call_tool", "name": "search", "arguments": {"query": "x"}})).await;
    assert_eq!(r["text"], "b:search:x", "b has priority");
    let r = c.ok(json!({"op": "call_tool", "name": "only_from_a", "arguments": {}})).await;
    assert_eq!(r["text"], "a:only");
    c.exit().await;

    // manual with an unresolved conflict: the error names the tool and both backends.
    let gw = Gateway::start(&format!(
        "{}aggregation:\n  conflictResolution: manual\n",
        backends_yaml(&[&a, &b])
    ))
    .await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let r = c.cmd(json!({"op": "list_tools"})).await;
    assert_eq!(r["ok"], false);
    let e = r["error"].as_str().unwrap();
    assert!(e.contains("'echo'") || e.contains("'search'"), "{e}");
    assert!(e.contains("\"a\"") && e.contains("\"b\""), "{e}");
    c.exit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_and_slow_backends_never_block_initialize() {
    let alive = Backend::start(Sdk::Python, "alive", BackendOptions::default()).await;
    let dead_port = vmcp_e2e::ports::free_port().unwrap();
    // A slow backend: accepts connections and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    let cfg = format!(
        "http:\n  initTimeout: 2s\nbackends:\n  - name: alive\n    url: {}\n  - name: dead\n    url: http://127.0.0.1:{dead_port}/mcp\n  - name: slow\n    url: http://127.0.0.1:{hole_port}/mcp\n    timeout: 60s\n",
        alive.url()
    );
    let gw = Gateway::start(&cfg).await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    let start = Instant::now();
    c.ok(json!({"op": "initialize"})).await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "initialize waited for the slow backend ({took:?}), not the 2 s deadline"
    );
    let tools = names(&c.ok(json!({"op": "list_tools"})).await);
    assert!(tools.contains(&"alive_echo".to_owned()), "{tools:?}");
    assert!(!tools.iter().any(|t| t.starts_with("dead_")));
    let r =
        c.cmd(json!({"op": "call_tool", "name": "alive_echo", "arguments": {"text": "x"}})).await;
    assert_eq!(r["result"]["text"], "alive:echo:x");

    // /readyz names the unavailable backends (from the background probes).
    let readyz = format!("http://127.0.0.1:{}/readyz", gw.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready: Value = reqwest::get(&readyz).await.unwrap().json().await.unwrap();
        let status = |n: &str| {
            ready["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["name"] == n)
                .map(|b| b["status"].clone())
        };
        if status("dead") == Some(json!("unavailable")) {
            assert_eq!(status("alive"), Some(json!("ready")), "{ready}");
            assert_eq!(
                ready["status"], "ready",
                "unavailable backends do not make the gateway unready"
            );
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never reported the dead backend: {ready}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The dead backend comes up: its tools join and the client hears list_changed.
    let _late = Backend::start(
        Sdk::TypeScript,
        "dead",
        BackendOptions { port: dead_port, ..Default::default() },
    )
    .await;
    c.ok(json!({"op": "wait_notification", "method": "notifications/tools/list_changed", "timeout_ms": 40000})).await;
    let tools = names(&c.ok(json!({"op": "list_tools"})).await);
    assert!(tools.contains(&"dead_echo".to_owned()), "{tools:?}");
    c.exit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn config_reload_adds_and_removes_backends_without_dropping_sessions() {
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let b = Backend::start(Sdk::TypeScript, "b", BackendOptions::default()).await;
    let gw = Gateway::start(&backends_yaml(&[&a])).await;
    let mut c = Client::start(Sdk::TypeScript, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let sid = c.ok(json!({"op": "session_id"})).await;
    gw.rewrite_config(&backends_yaml(&[&a, &b]));
    c.ok(json!({"op": "wait_notification", "method": "notifications/tools/list_changed", "timeout_ms": 15000})).await;
    let tools = names(&c.ok(json!({"op": "list_tools"})).await);
    assert!(tools.contains(&"b_echo".to_owned()), "{tools:?}");
    let r = c.ok(json!({"op": "call_tool", "name": "b_echo", "arguments": {"text": "new"}})).await;
    assert_eq!(r["text"], "b:echo:new");
    gw.rewrite_config(&backends_yaml(&[&b]));
    c.ok(json!({"op": "wait_notification", "method": "notifications/tools/list_changed", "timeout_ms": 15000})).await;
    let tools = names(&c.ok(json!({"op": "list_tools"})).await);
    assert!(!tools.contains(&"a_echo".to_owned()), "{tools:?}");
    assert_eq!(c.ok(json!({"op": "session_id"})).await, sid, "same session throughout");
    // An invalid config is rejected and the running one kept.
    std::fs::write(&gw.config, "listen: nope\nbackends: 3\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r =
        c.ok(json!({"op": "call_tool", "name": "b_echo", "arguments": {"text": "still"}})).await;
    assert_eq!(r["text"], "b:echo:still");
    assert!(gw.log().contains("configuration change rejected"), "{}", gw.log());
    c.exit().await;
}
