//! `vmcp-gateway bridge`: a stdio MCP server (the official Python SDK over stdio) served as
//! Streamable HTTP, aggregated by the gateway like any other backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use vmcp_e2e::gateway::{Gateway, gateway_binary};
use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk, ensure_installed};
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
    bridge.wait_healthz(port).await.unwrap();
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
        .args(["--idle-timeout", "15s", "--max-sessions", "3", "--"])
        .arg(root.join(".cache/peers/venv/bin/python"))
        .arg(root.join("tests/peers/python/backend.py"))
        .args(["--name", "std", "--transport", "stdio"]);
    let mut bridge = Peer::spawn("bridge", cmd, dir.path().join("bridge.log")).unwrap();
    bridge.wait_healthz(port).await.unwrap();
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
    // Starting three Python servers took longer than a 6 s idle timeout on a loaded machine
    // (twice: sessions 11 and 14), hence 15 s; a request on each session resets its idle
    // clock, so none is reaped before the fourth.
    for id in &ids {
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .header("mcp-session-id", id)
            .body(json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }
    let r = initialize().await.unwrap();
    assert_eq!(r.status(), 503, "a fourth session is refused, not a fourth process");
    assert!(r.headers().get("retry-after").is_some());
    // Nobody uses them: after the idle timeout the children are gone and the ids unknown.
    let deadline = std::time::Instant::now() + Duration::from_secs(35);
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
    bridge.wait_healthz(port).await.unwrap();
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

/// A bridge in front of the Python SDK stdio server `std`, admitting only `token_file`'s token.
async fn bridge_with_token(port: u16, token_file: &std::path::Path, log: &std::path::Path) -> Peer {
    let root = repo_root();
    let mut cmd = std::process::Command::new(gateway_binary());
    cmd.args(["bridge", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--auth-token-file")
        .arg(token_file)
        .arg("--")
        .arg(root.join(".cache/peers/venv/bin/python"))
        .arg(root.join("tests/peers/python/backend.py"))
        .args(["--name", "std", "--transport", "stdio"]);
    let mut bridge = Peer::spawn("bridge", cmd, log.to_owned()).unwrap();
    bridge.wait_healthz(port).await.unwrap();
    bridge
}

/// Calls `std_echo` on `c`'s session until it answers (the gateway reloads within about a
/// second of a file change); panics after `timeout` with the last answer.
async fn until_std_echo_works(c: &mut Client, timeout: Duration) {
    let start = std::time::Instant::now();
    loop {
        let r =
            c.cmd(json!({"op": "call_tool", "name": "std_echo", "arguments": {"text": "t"}})).await;
        if r["ok"] == json!(true) && r["result"]["text"] == "std:echo:t" {
            return;
        }
        assert!(start.elapsed() < timeout, "std_echo still failing: {r}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Issue 16: the kubelet syncs the gateway's ConfigMap and its bridge tokens Secret
/// independently. A gateway started with a stdio backend whose token file does not exist yet
/// (`waitForFile`) serves the other backends, logs the missing file naming the backend, and
/// serves that backend once the file is written: no restart, the open session kept. A later
/// configuration naming another missing token file applies everything else and names that
/// backend and file.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_file_written_after_start_brings_its_backend_in_without_a_restart() {
    ensure_installed();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("bridge-token");
    std::fs::write(&token, "4c1e7a9d0b2f4e6a8c3d5e7f9a1b3c5d\n").unwrap();
    let port = vmcp_e2e::ports::free_port().unwrap();
    let _bridge = bridge_with_token(port, &token, &dir.path().join("bridge.log")).await;
    let other = Backend::start(Sdk::Python, "other", BackendOptions::default()).await;
    let mounted = dir.path().join("gateway-tokens");
    std::fs::create_dir_all(&mounted).unwrap();
    let std_file = mounted.join("std");
    let late_file = mounted.join("late");
    let backends = |extra: &str| {
        format!(
            "backends:\n  - name: other\n    url: {}\n  - name: std\n    url: http://127.0.0.1:{port}/mcp\n    auth:\n      type: bearerToken\n      bearerToken:\n        token:\n          file: {}\n        waitForFile: true\n{extra}",
            other.url(),
            std_file.display()
        )
    };
    let gw = Gateway::start(&backends("")).await;
    let pid = gw.pid();
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    let session = c.ok(json!({"op": "initialize"})).await["sessionId"].clone();
    let tools = c.ok(json!({"op": "list_tools"})).await.to_string();
    assert!(tools.contains("other_echo") && !tools.contains("std_echo"), "{tools}");
    let r =
        c.ok(json!({"op": "call_tool", "name": "other_echo", "arguments": {"text": "a"}})).await;
    assert_eq!(r["text"], "other:echo:a");
    let log = gw.log();
    assert!(
        log.lines().any(|l| l.contains("left out")
            && l.contains("std")
            && l.contains(std_file.to_str().unwrap())),
        "{log}"
    );
    // A gateway that started without the file is not ready: a pod created before the kubelet
    // wrote the key gets no traffic without that backend.
    let readyz = gw.url().replace("/mcp", "/readyz");
    let r = reqwest::get(&readyz).await.unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("waiting for the secret files of: std"), "{body}");

    // A later configuration: a new backend `other2` and a backend `late` whose token file
    // does not exist. `other2` joins; `late` is named with its file.
    gw.rewrite_config(&backends(&format!(
        "  - name: other2\n    url: {}\n  - name: late\n    url: http://127.0.0.1:{port}/mcp\n    auth:\n      type: bearerToken\n      bearerToken:\n        token:\n          file: {}\n",
        other.url(),
        late_file.display()
    )));
    let start = std::time::Instant::now();
    loop {
        let tools = c.ok(json!({"op": "list_tools"})).await.to_string();
        if tools.contains("other2_echo") {
            assert!(!tools.contains("late_") && !tools.contains("std_"), "{tools}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "other2 never joined: {tools}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let log = gw.log();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("late")
            && l.contains(late_file.to_str().unwrap())),
        "{log}"
    );

    // The kubelet writes the token: the backend joins the open session.
    std::fs::write(&std_file, std::fs::read(&token).unwrap()).unwrap();
    until_std_echo_works(&mut c, Duration::from_secs(20)).await;
    // Ready now; `late`, which only a later configuration named, never held readiness.
    let r = reqwest::get(&readyz).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let r = c.ok(json!({"op": "session_id"})).await;
    assert_eq!(r["sessionId"], session, "the session was kept");
    let r =
        c.ok(json!({"op": "call_tool", "name": "other_echo", "arguments": {"text": "b"}})).await;
    assert_eq!(r["text"], "other:echo:b");
    assert_eq!(gw.pid(), pid, "no restart");
    c.exit().await;
}

/// Issue 16: a token file whose content changes is read again. The stdio server's token is
/// re-created (its bridge restarts with the new token, as its pods roll); once the new token
/// is in the gateway's file, the backend works again on the same session, without a gateway
/// restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_token_file_is_used_without_a_restart() {
    ensure_installed();
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old-token"), dir.path().join("new-token"));
    std::fs::write(&old, "0a1b2c3d4e5f60718293a4b5c6d7e8f9\n").unwrap();
    std::fs::write(&new, "f9e8d7c6b5a4938271605f4e3d2c1b0a\n").unwrap();
    let port = vmcp_e2e::ports::free_port().unwrap();
    let mut bridge = bridge_with_token(port, &old, &dir.path().join("bridge-1.log")).await;
    let gateway_file = dir.path().join("std");
    std::fs::copy(&old, &gateway_file).unwrap();
    let gw = Gateway::start(&format!(
        "backends:\n  - name: std\n    url: http://127.0.0.1:{port}/mcp\n    auth:\n      type: bearerToken\n      bearerToken:\n        token:\n          file: {}\n",
        gateway_file.display()
    ))
    .await;
    let pid = gw.pid();
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    let session = c.ok(json!({"op": "initialize"})).await["sessionId"].clone();
    until_std_echo_works(&mut c, Duration::from_secs(5)).await;

    bridge.signal_and_wait("KILL");
    let _bridge = bridge_with_token(port, &new, &dir.path().join("bridge-2.log")).await;
    let r = c.cmd(json!({"op": "call_tool", "name": "std_echo", "arguments": {"text": "t"}})).await;
    assert_ne!(r["result"]["text"], "std:echo:t", "the old token must not be admitted: {r}");

    std::fs::copy(&new, &gateway_file).unwrap();
    until_std_echo_works(&mut c, Duration::from_secs(20)).await;
    let r = c.ok(json!({"op": "session_id"})).await;
    assert_eq!(r["sessionId"], session, "the session was kept");
    assert_eq!(gw.pid(), pid, "no restart");
    c.exit().await;
}
