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
