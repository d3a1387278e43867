//! Running out of file descriptors (issue #10): a flood of client connections that uses every
//! descriptor the gateway may open must not stop it serving the sessions it already has, and a
//! session must never silently lack a backend while no backend socket can be opened (its tools
//! stay listed; a call that cannot reach it gets an error naming it), and once descriptors are
//! free again everything works. Against the gateway binary with its open-file limit lowered by
//! `prlimit` and the repository's rmcp example backends (one of them replaced mid-flood, so the
//! gateway must open a new socket to reach it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmcp_e2e::example_backend::{ExampleBackend, backends_config};
use vmcp_e2e::gateway::Gateway;
use vmcp_e2e::raw_mcp::{self, post};

/// Descriptors the gateway may open beyond those it holds when the limit is lowered.
const HEADROOM: usize = 6;
/// Longer than a backend's catalog stays fresh without a successful health probe (30 s).
const CATALOG_STALE: Duration = Duration::from_secs(32);
/// Connections of the flood beyond the free descriptor numbers below the limit.
const SURPLUS: usize = 64;

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The highest descriptor number open: the limit bounds numbers, not the count.
fn highest_descriptor(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).max().unwrap_or(0))
        .unwrap_or(0)
}

fn set_nofile(pid: u32, limit: usize) {
    let out = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:{limit}")])
        .output()
        .expect("prlimit (util-linux) runs");
    assert!(out.status.success(), "prlimit failed: {}", String::from_utf8_lossy(&out.stderr));
}

async fn call(c: &reqwest::Client, url: &str, sid: &str, tool: &str) -> Value {
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": {"query": "q"}}});
    message(&post(c, url, Some(sid), req).await.1)
}

async fn tool_names(c: &reqwest::Client, url: &str, sid: &str) -> Vec<String> {
    let req = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let answer = message(&post(c, url, Some(sid), req).await.1);
    answer["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("tools/list failed: {answer}"))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

/// The JSON-RPC message of an answer sent as JSON or as one SSE event.
fn message(body: &str) -> Value {
    let json = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:").map(str::trim))
        .find(|d| !d.is_empty())
        .unwrap_or(body);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON-RPC ({e}): {body}"))
}

/// The call was answered by the tool.
fn served(answer: &Value) -> bool {
    answer["result"]["content"].is_array() && answer["result"]["isError"] != json!(true)
}

/// The answer is an error about `backend` that names it (never "unknown tool": a backend
/// silently missing from the session).
fn names(answer: &Value, backend: &str) -> bool {
    answer["error"]["data"]["backend"] == json!(backend)
        && answer["error"]["message"].as_str().is_some_and(|m| m.contains(&format!("'{backend}'")))
}

#[tokio::test]
async fn exhausted_descriptors_keep_sessions_served_and_name_the_backend_out_of_reach() {
    let weather = ExampleBackend::start("weather").await;
    let notes = ExampleBackend::start("notes").await;
    let gw = Gateway::start(&backends_config(&[&weather, &notes])).await;
    let url = gw.url();
    // One keep-alive connection to the gateway, opened before the flood.
    let c = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
    let sid = raw_mcp::open_session(&c, &url, "before-the-flood").await.unwrap();
    assert!(served(&call(&c, &url, &sid, "weather_search").await));
    assert!(served(&call(&c, &url, &sid, "notes_search").await));

    let pid = gw.pid().unwrap();
    // Every number below the limit can be taken; none above it is open.
    let limit = highest_descriptor(pid) + 1 + HEADROOM;
    set_nofile(pid, limit);
    let mut flood = Vec::new();
    for _ in 0..(limit - open_descriptors(pid) + SURPLUS) {
        // The kernel completes these handshakes into the listen backlog even when the gateway
        // can no longer accept them.
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await {
            flood.push(s);
        }
    }
    let exhausted = |what: &str| {
        let what = what.to_owned();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while open_descriptors(pid) < limit && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(open_descriptors(pid), limit, "descriptors not exhausted {what}");
        }
    };
    exhausted("by the flood").await;

    // The session that already has its connection is served promptly: the gateway's pooled
    // connections to both backends still work.
    let started = Instant::now();
    for _ in 0..3 {
        assert!(served(&call(&c, &url, &sid, "weather_search").await));
        assert!(served(&call(&c, &url, &sid, "notes_search").await));
    }
    assert!(started.elapsed() < Duration::from_secs(10), "calls stalled: {:?}", started.elapsed());

    // `notes` is replaced at the same URL: the gateway's connection to it closes, the
    // descriptor that frees goes to the next flood connection, and no new socket to `notes`
    // can be opened. Calls to it fail at once with an error naming it; `weather` is served.
    let port = notes.port;
    drop(notes);
    let _replacement = ExampleBackend::start_on("notes", port).await;
    exhausted("after notes was replaced").await;
    let started = Instant::now();
    let answer = call(&c, &url, &sid, "notes_search").await;
    assert!(!served(&answer) && names(&answer, "notes"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10), "call stalled: {:?}", started.elapsed());
    assert!(served(&call(&c, &url, &sid, "weather_search").await));
    // A session created now lists both backends' tools, `notes` out of reach included, and a
    // call to it names it: never a session that silently lacks a backend. Once the health
    // probe has not reached `notes` for longer than its catalog stays fresh, a new session
    // tries to connect `notes` at once, fails, and still lists its last-seen tools.
    let mut during = Vec::new();
    for wait in [Duration::ZERO, CATALOG_STALE] {
        tokio::time::sleep(wait).await;
        let sid = raw_mcp::open_session(&c, &url, "during-the-flood").await.unwrap();
        let listed = tool_names(&c, &url, &sid).await;
        for tool in ["weather_search", "notes_search"] {
            assert!(listed.iter().any(|n| n == tool), "{tool} missing ({wait:?}): {listed:?}");
        }
        let answer = call(&c, &url, &sid, "notes_search").await;
        assert!(!served(&answer) && names(&answer, "notes"), "{answer}");
        assert!(served(&call(&c, &url, &sid, "weather_search").await));
        during.push(sid);
    }
    assert_eq!(open_descriptors(pid), limit);

    // The flood ends: new connections are accepted again, and both sessions reach both
    // backends: `notes` is reconnected once its backoff ends (at most 30 s after its last
    // failure) and its backend session, lost with the old process, re-initialized (I7).
    drop(flood);
    let fresh = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let mut answers = Vec::new();
        for s in std::iter::once(&sid).chain(&during) {
            answers.push(call(&fresh, &url, s, "weather_search").await);
            answers.push(call(&fresh, &url, s, "notes_search").await);
        }
        if answers.iter().all(served) {
            break;
        }
        for a in answers.iter().filter(|a| !served(a)) {
            assert!(names(a, "notes"), "an error that does not name the backend: {a}");
        }
        assert!(Instant::now() < deadline, "not served 45 s after the flood: {answers:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = raw_mcp::open_session(&fresh, &url, "after-the-flood").await.unwrap();
    assert!(served(&call(&fresh, &url, &after, "notes_search").await));
    // The operator can see why: the failed accepts are logged.
    let log = gw.log();
    assert!(
        log.contains("Too many open files") || log.contains("os error 24"),
        "EMFILE not logged"
    );
}
