//! Resumable streams toward clients (issue 15): the gateway's own SSE responses carry event
//! ids, a 2025-11-25 client gets a priming event with `retry`, and a client whose stream was
//! cut resumes it with `GET` + `Last-Event-ID` — on the same replica, or on a sibling that
//! reads the stream's events from Redis. Real peers: redis-server, the official Python SDK as
//! backend and client, gateway processes behind a round-robin balancer that cuts a stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use vmcp_e2e::balancer::Balancer;
use vmcp_e2e::gateway::Gateway;
use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};
use vmcp_e2e::redis::RedisServer;

fn backends(a: &Backend) -> String {
    format!("backends:\n  - name: a\n    url: {}\n    timeout: 20s\n", a.url())
}

fn redis_store(redis: &RedisServer) -> String {
    format!(
        "sessionStorage:\n  provider: redis\n  redis:\n    url: {}\n    keyPrefix: 'vmcp:streams:'\n",
        redis.url()
    )
}

async fn slow_call_through_a_cut(c: &mut Client, lb: &Balancer) -> Value {
    lb.cut_next_post_streams(1);
    let r = c
        .ok(json!({"op": "call_tool_progress", "name": "a_slow",
                   "arguments": {"steps": 3, "delay_ms": 300}}))
        .await;
    assert_eq!(r["text"], "a:slow:done", "{r}");
    assert_eq!(r["progress"].as_array().map(Vec::len), Some(3), "every progress event: {r}");
    r
}

/// One replica (in-memory sessions): the client resumes from the gateway's own log — the
/// Python SDK client and the TypeScript one (which sees the priming event only with its
/// explicit empty `data:` line).
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_call_stream_is_resumed_on_the_same_replica() {
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let gw = Gateway::start(&backends(&a)).await;
    let lb = Balancer::start(vec![gw.port]).await;
    for sdk in [Sdk::Python, Sdk::TypeScript] {
        let mut c = Client::start(sdk, &lb.url(), &[]).await;
        c.ok(json!({"op": "initialize"})).await;
        slow_call_through_a_cut(&mut c, &lb).await;
        // The session goes on normally afterwards.
        let r =
            c.ok(json!({"op": "call_tool", "name": "a_echo", "arguments": {"text": "x"}})).await;
        assert_eq!(r["text"], "a:echo:x", "{sdk:?}");
        c.exit().await;
    }
}

/// Two replicas behind a balancer without stickiness: the call runs on one replica, the
/// client's `GET` + `Last-Event-ID` lands on the other, which replays the events the first
/// keeps in Redis and follows them until the response.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_call_stream_is_resumed_on_the_sibling_replica_from_redis() {
    let redis = RedisServer::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let cfg = format!("{}{}", redis_store(&redis), backends(&a));
    let gw_a = Gateway::start(&cfg).await;
    let gw_b = Gateway::start(&cfg).await;
    let lb = Balancer::start(vec![gw_a.port, gw_b.port]).await;
    let mut c = Client::start(Sdk::Python, &lb.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    // Round robin, one request at a time: the resuming GET always goes to the replica that
    // did not run the call. Twice, so each replica is the one resuming once.
    slow_call_through_a_cut(&mut c, &lb).await;
    slow_call_through_a_cut(&mut c, &lb).await;
    let from_store =
        |g: &Gateway| g.log().matches("resuming a client stream from the store").count();
    assert_eq!(
        (from_store(&gw_a), from_store(&gw_b)),
        (1, 1),
        "each replica resumed the stream the other one ran"
    );
    c.exit().await;
}

async fn sse_call(http: &reqwest::Client, url: &str, sid: &str, version: &str) -> String {
    sse_call_tool(http, url, sid, version, "a_echo", json!({"text": "x"})).await
}

async fn session(http: &reqwest::Client, url: &str, version: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}});
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init.to_string())
        .send()
        .await
        .unwrap();
    r.headers()["mcp-session-id"].to_str().unwrap().to_owned()
}

/// The stream format: ids on every event; a priming event (id, `retry`, empty data) only for
/// 2025-11-25 clients; `Last-Event-ID` of a finished stream on its own replica replays the
/// events after it; an id the gateway never issued is refused.
#[tokio::test]
async fn event_ids_priming_and_replay_on_the_wire() {
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let gw = Gateway::start(&backends(&a)).await;
    let http = reqwest::Client::new();

    let sid = session(&http, &gw.url(), "2025-11-25").await;
    let body = sse_call(&http, &gw.url(), &sid, "2025-11-25").await;
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.trim().is_empty()).collect();
    assert!(events.len() >= 2, "{body}");
    assert!(events[0].contains("id: p") && events[0].contains("retry: 500"), "{body}");
    assert!(events[0].lines().any(|l| l == "data: "), "an explicit empty data line: {body}");
    assert!(!events[0].contains("jsonrpc"), "priming event has no message: {body}");
    assert!(events[1].contains("id: p") && events[1].contains("a:echo:x"), "{body}");

    let old = session(&http, &gw.url(), "2025-06-18").await;
    let body = sse_call(&http, &gw.url(), &old, "2025-06-18").await;
    assert!(!body.contains("retry:"), "no priming event before 2025-11-25: {body}");
    assert!(body.contains("id: p") && body.contains("a:echo:x"), "{body}");

    let resume = |last: &'static str| {
        http.get(gw.url())
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .header("mcp-session-id", &sid)
            .header("last-event-id", last)
            .send()
    };
    assert_eq!(resume("not-ours").await.unwrap().status(), 400);
    let gone = resume("p0123456789abcdef-0").await.unwrap();
    assert_eq!(gone.status(), 400, "a stream this gateway never had");
}

/// Reads SSE events from `resp` until `n` have arrived; each as (id, data).
async fn read_events(resp: &mut reqwest::Response, n: usize) -> Vec<(String, String)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("events in time")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let field = |name: &str| {
                event.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_default().to_owned()
            };
            if !event.starts_with(':') {
                out.push((field("id: "), field("data: ")));
            }
        }
    }
    out
}

/// The session's GET stream survives its replica: its messages are kept in Redis as they are
/// sent, so after the replica that held it stops, `GET` + `Last-Event-ID` on the sibling
/// replays what the client missed (here a `tools/list_changed` it never read).
#[tokio::test(flavor = "multi_thread")]
async fn a_get_stream_is_replayed_by_the_sibling_after_its_replica_stops() {
    let redis = RedisServer::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let cfg = format!("{}{}", redis_store(&redis), backends(&a));
    let mut gw_a = Gateway::start(&cfg).await;
    let gw_b = Gateway::start(&cfg).await;
    let http = reqwest::Client::new();
    let sid = session(&http, &gw_a.url(), "2025-11-25").await;
    let get = |url: String, last: Option<String>| {
        let mut rb = http
            .get(url)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .header("mcp-session-id", &sid);
        if let Some(l) = last {
            rb = rb.header("last-event-id", l);
        }
        rb.send()
    };
    let mut stream = get(gw_a.url(), None).await.unwrap();
    assert_eq!(stream.status(), 200);
    let priming = read_events(&mut stream, 1).await;
    assert!(priming[0].0.starts_with('g') && priming[0].1.is_empty(), "{priming:?}");
    // The backend announces a new tool; the gateway passes it to the GET stream.
    let body = sse_call_tool(
        &http,
        &gw_a.url(),
        &sid,
        "2025-11-25",
        "a_add_tool",
        json!({"name": "late"}),
    )
    .await;
    assert!(body.contains("added"), "{body}");
    // The client never reads it: its replica stops.
    let sent = read_events(&mut stream, 1).await;
    assert!(sent[0].1.contains("notifications/tools/list_changed"), "{sent:?}");
    drop(stream);
    gw_a.stop("TERM");
    let mut resumed = get(gw_b.url(), Some(priming[0].0.clone())).await.unwrap();
    assert_eq!(resumed.status(), 200);
    let replayed = read_events(&mut resumed, 1).await;
    assert_eq!(replayed[0], sent[0], "the sibling replays the missed message with its id");
}

/// A `tools/call` as an SSE-accepting client of revision `version`; the whole body.
async fn sse_call_tool(
    http: &reqwest::Client,
    url: &str,
    sid: &str,
    version: &str,
    name: &str,
    arguments: Value,
) -> String {
    http.post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", version)
        .header("mcp-session-id", sid)
        .body(
            json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                   "params": {"name": name, "arguments": arguments}})
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
