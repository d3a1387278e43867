//! `vmcp-gateway bridge`: a stdio MCP server (the official Python SDK over stdio) served as
//! Streamable HTTP, aggregated by the gateway like any other backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use vmcp_e2e::gateway::{Gateway, gateway_binary};
use vmcp_e2e::peers::{Client, Sdk, ensure_installed};
use vmcp_e2e::process::Peer;
use vmcp_e2e::repo_root;

#[tokio::test(flavor = "multi_thread")]
async fn stdio_server_behind_the_bridge_behind_the_gateway() {
    ensure_installed();
    let root = repo_root();
    let port = vmcp_e2e::ports::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(gateway_binary());
    cmd.args(["bridge", "--host", "127.0.0.1", "--port", &port.to_string(), "--"])
        .arg(root.join(".cache/peers/venv/bin/python"))
        .arg(root.join("tests/peers/python/backend.py"))
        .args(["--name", "std", "--transport", "stdio"]);
    let mut bridge = Peer::spawn("bridge", cmd, dir.path().join("bridge.log")).unwrap();
    bridge
        .wait_ready(Duration::from_secs(20), || async move {
            reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
        .unwrap();
    let gw = Gateway::start(&format!(
        "backends:\n  - name: std\n    url: http://127.0.0.1:{port}/mcp\n"
    ))
    .await;
    let mut c = Client::start(Sdk::TypeScript, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let r =
        c.ok(json!({"op": "call_tool", "name": "std_echo", "arguments": {"text": "piped"}})).await;
    assert_eq!(r["text"], "std:echo:piped");
    let r = c.ok(json!({"op": "read_resource", "uri": "info://std"})).await;
    assert_eq!(r["text"], "std info");
    // A notification the stdio server sends on its own reaches the client.
    c.ok(json!({"op": "call_tool", "name": "std_add_tool", "arguments": {"name": "piped_tool"}}))
        .await;
    c.ok(json!({"op": "wait_notification", "method": "notifications/tools/list_changed", "timeout_ms": 10000})).await;
    let r = c.ok(json!({"op": "call_tool", "name": "std_piped_tool", "arguments": {}})).await;
    assert_eq!(r["text"], "std:piped_tool");
    c.exit().await;
}

/// Child processes of the bridge's sessions (M8: they are bounded and reaped when idle). Each
/// thread lists the children it forked, so every thread of the bridge is asked.
fn children(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .map(|s| s.split_whitespace().count())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_stdio_sessions_are_reaped_and_their_number_is_capped() {
    ensure_installed();
    let root = repo_root();
    let port = vmcp_e2e::ports::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(gateway_binary());
    cmd.args(["bridge", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--idle-timeout", "6s", "--max-sessions", "3", "--"])
        .arg(root.join(".cache/peers/venv/bin/python"))
        .arg(root.join("tests/peers/python/backend.py"))
        .args(["--name", "std", "--transport", "stdio"]);
    let mut bridge = Peer::spawn("bridge", cmd, dir.path().join("bridge.log")).unwrap();
    bridge
        .wait_ready(Duration::from_secs(20), || async move {
            reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
        .unwrap();
    let pid = bridge.pid().unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let http = reqwest::Client::new();
    let initialize = || {
        http.post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "reaper-test", "version": "1"}}})
                .to_string(),
            )
            .send()
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = initialize().await.unwrap();
        assert_eq!(r.status(), 200);
        ids.push(r.headers()["mcp-session-id"].to_str().unwrap().to_owned());
    }
    assert_eq!(children(pid), 3);
    let r = initialize().await.unwrap();
    assert_eq!(r.status(), 503, "a fourth session is refused, not a fourth process");
    assert!(r.headers().get("retry-after").is_some());
    // Nobody uses them: after the idle timeout the children are gone and the ids unknown.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while children(pid) > 0 {
        assert!(std::time::Instant::now() < deadline, "{} children still running", children(pid));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .header("mcp-session-id", &ids[0])
        .body(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(initialize().await.unwrap().status(), 200, "room for new sessions again");
}

/// M8: a bridge started with `--auth-token-file` refuses `/mcp` requests without that bearer
/// token (no child process is started for them), keeps `/healthz` open, and the gateway,
/// configured with the token as the backend's `bearerToken`, works through it.
#[tokio::test(flavor = "multi_thread")]
async fn bridge_admits_only_callers_with_its_token() {
    ensure_installed();
    let root = repo_root();
    let port = vmcp_e2e::ports::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("bridge-token");
    std::fs::write(&token_file, "b7f3c1d9e2a84f6b\n").unwrap();
    let mut cmd = std::process::Command::new(gateway_binary());
    cmd.args(["bridge", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--auth-token-file")
        .arg(&token_file)
        .arg("--")
        .arg(root.join(".cache/peers/venv/bin/python"))
        .arg(root.join("tests/peers/python/backend.py"))
        .args(["--name", "std", "--transport", "stdio"]);
    let mut bridge = Peer::spawn("bridge", cmd, dir.path().join("bridge.log")).unwrap();
    bridge
        .wait_ready(Duration::from_secs(20), || async move {
            reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
        .unwrap();
    let pid = bridge.pid().unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let http = reqwest::Client::new();
    let initialize = |auth: Option<&'static str>| {
        let mut rb = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "auth-test", "version": "1"}}})
                .to_string(),
            );
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        rb.send()
    };
    for auth in [None, Some("Bearer wrong-token"), Some("Bearer b7f3c1d9e2a84f6"), Some("Basic x")]
    {
        let r = initialize(auth).await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?} admitted");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    let r = http.get(&url).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(r.status(), 401, "the GET stream needs the token too");
    let r = http.delete(&url).header("mcp-session-id", "00").send().await.unwrap();
    assert_eq!(r.status(), 401, "DELETE needs the token too");
    assert_eq!(children(pid), 0, "a refused caller never starts a process");
    let r = initialize(Some("Bearer b7f3c1d9e2a84f6b")).await.unwrap();
    assert_eq!(r.status(), 200, "the right token is admitted");
    assert_eq!(children(pid), 1);

    // The gateway sends the token as the backend's bearerToken, as the operator wires it.
    let gw = Gateway::start(&format!(
        "backends:\n  - name: std\n    url: http://127.0.0.1:{port}/mcp\n    auth:\n      type: bearerToken\n      bearerToken:\n        token:\n          file: {}\n",
        token_file.display()
    ))
    .await;
    let mut c = Client::start(Sdk::TypeScript, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let r =
        c.ok(json!({"op": "call_tool", "name": "std_echo", "arguments": {"text": "authed"}})).await;
    assert_eq!(r["text"], "std:echo:authed");
    c.exit().await;
}
