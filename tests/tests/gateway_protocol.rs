//! Streamable HTTP protocol rules at the gateway's front, asserted on status codes and
//! JSON-RPC error codes (raw HTTP, so every case is explicit).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use vmcp_e2e::gateway::Gateway;
use vmcp_e2e::peers::{Backend, BackendOptions, Sdk};

struct Mcp {
    http: reqwest::Client,
    url: String,
}

impl Mcp {
    fn post(&self, session: Option<&str>, body: &str) -> reqwest::RequestBuilder {
        self.post_accept(session, body, "application/json, text/event-stream")
    }

    /// A client that accepts only JSON answers.
    fn post_json(&self, session: Option<&str>, body: &str) -> reqwest::RequestBuilder {
        self.post_accept(session, body, "application/json")
    }

    fn post_accept(
        &self,
        session: Option<&str>,
        body: &str,
        accept: &str,
    ) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", accept)
            .body(body.to_owned());
        if let Some(s) = session {
            rb = rb.header("mcp-session-id", s).header("mcp-protocol-version", "2025-11-25");
        }
        rb
    }

    async fn initialize(&self, version: &str) -> (String, Value) {
        let r = self
            .post(None, &json!({"jsonrpc":"2.0","id":"init-1","method":"initialize","params":{"protocolVersion":version,"capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let body: Value = r.json().await.unwrap();
        (sid, body)
    }
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let s = r.status();
    let text = r.text().await.unwrap();
    (s, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_errors_and_rules() {
    let b = Backend::start(Sdk::Python, "b", BackendOptions::default()).await;
    let gw = Gateway::start(&format!(
        "http:\n  maxBodyBytes: 4096\nbackends:\n  - name: b\n    url: {}\n",
        b.url()
    ))
    .await;
    let m = Mcp { http: reqwest::Client::new(), url: gw.url() };

    // initialize: version negotiation and a CSPRNG session id (>= 128 bits, visible ASCII).
    let (sid, body) = m.initialize("2025-06-18").await;
    assert_eq!(body["id"], "init-1", "request ids preserved");
    assert_eq!(body["result"]["protocolVersion"], "2025-06-18");
    assert!(sid.len() >= 32 && sid.bytes().all(|c| (0x21..=0x7e).contains(&c)), "{sid}");
    let (sid2, body) = m.initialize("1999-01-01").await;
    assert_ne!(sid, sid2);
    assert_eq!(
        body["result"]["protocolVersion"], "2025-11-25",
        "unknown version → newest supported"
    );
    let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string();
    let r = m.post(Some(&sid), &note).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(r.text().await.unwrap().is_empty(), "202 has no body");

    // A response from the client: 202.
    let r = m.post(Some(&sid), r#"{"jsonrpc":"2.0","id":99,"result":{}}"#).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Unknown session → 404; missing session → 400.
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    assert_eq!(m.post(Some("nope"), list).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let (s, v) = json_of(m.post(None, list).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], -32600);

    // Unsupported MCP-Protocol-Version → 400; absent → assumed 2025-03-26 (allowed).
    let r = m
        .http
        .post(&m.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2024-01-01")
        .body(list)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = m
        .http
        .post(&m.url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-session-id", &sid)
        .body(list)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Batches: rejected on 2025-06-18+, allowed on 2025-03-26.
    let batch =
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#;
    let (s, v) = json_of(m.post(Some(&sid), batch).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], -32600);
    let r = m
        .http
        .post(&m.url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-03-26")
        .body(batch)
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");

    // Origin: foreign → 403, loopback → fine.
    let r = m.post(Some(&sid), list).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r =
        m.post(Some(&sid), list).header("origin", "http://localhost:6274").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Body over the limit → 413.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(8000)
    );
    assert_eq!(
        m.post(Some(&sid), &big).send().await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // Malformed JSON → -32700; invalid request → -32600; unknown method → -32601;
    // bad params → -32602; ids preserved.
    let (s, v) = json_of(m.post(Some(&sid), "{not json").send().await.unwrap()).await;
    assert_eq!((s, v["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!(-32700)));
    let (s, v) = json_of(
        m.post(Some(&sid), r#"{"jsonrpc":"2.0","id":"x","method":7}"#).send().await.unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone(), v["id"].clone()),
        (StatusCode::BAD_REQUEST, json!(-32600), json!("x"))
    );
    let (_, v) = json_of(
        m.post(Some(&sid), r#"{"jsonrpc":"2.0","id":"u-1","method":"no/such"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((v["error"]["code"].clone(), v["id"].clone()), (json!(-32601), json!("u-1")));
    let (_, v) = json_of(
        m.post_json(Some(&sid), r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{}}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((v["error"]["code"].clone(), v["id"].clone()), (json!(-32602), json!(5)));
    let (_, v) = json_of(
        m.post_json(
            Some(&sid),
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"no_such_tool"}}"#,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["error"]["code"], -32602);

    // A newer client's probe before any session: -32601 so it falls back to initialize.
    let (s, v) = json_of(
        m.post(None, r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], -32601);

    // JSON or SSE answers: a JSON-only client gets JSON; an SSE-accepting client gets a stream.
    let call = r#"{"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"b_echo","arguments":{"text":"t"}}}"#;
    let r = m
        .http
        .post(&m.url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .body(call)
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "b:echo:t");
    let r = m.post(Some(&sid), call).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    assert!(text.contains("b:echo:t") && text.contains("\"id\":\"c1\""), "{text}");

    // GET opens an SSE stream; without Accept it is refused.
    let r = m
        .http
        .get(&m.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    drop(r);
    let r = m
        .http
        .get(&m.url)
        .header("accept", "application/json")
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);

    // DELETE ends the session: then 404 for POST, GET and DELETE.
    let r = m.http.delete(&m.url).header("mcp-session-id", &sid).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(m.post(Some(&sid), list).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let r = m
        .http
        .get(&m.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        m.http.delete(&m.url).header("mcp-session-id", &sid).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    // Operations endpoints.
    assert_eq!(
        reqwest::get(format!("http://127.0.0.1:{}/healthz", gw.port)).await.unwrap().status(),
        StatusCode::OK
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("vmcp_requests_total{method=\"tools/call\",backend=\"b\",outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("vmcp_sessions_live"));
    assert!(metrics.contains("vmcp_request_duration_seconds_bucket"));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_lists_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    std::fs::write(
        &p,
        "listen: nope\nbackends:\n  - name: a\n    url: /x\n  - name: a\n    url: http://h/mcp\n",
    )
    .unwrap();
    let out = std::process::Command::new(vmcp_e2e::gateway::gateway_binary())
        .arg("--config")
        .arg(&p)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for e in ["listen:", "backends[0].url", "backends[1].name: duplicate"] {
        assert!(err.contains(e), "{e} missing in:\n{err}");
    }
    std::fs::write(&p, "backends: []\n").unwrap();
    let out = std::process::Command::new(vmcp_e2e::gateway::gateway_binary())
        .arg("--config")
        .arg(&p)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Cancellation, completion and subscriptions reach the backend that owns them.
#[tokio::test(flavor = "multi_thread")]
async fn cancellation_completion_and_subscribe_are_forwarded() {
    let b = Backend::start(Sdk::Python, "b", BackendOptions::default()).await;
    let gw = Gateway::start(&format!("backends:\n  - name: b\n    url: {}\n", b.url())).await;
    let m = Mcp { http: reqwest::Client::new(), url: gw.url() };
    let (sid, _) = m.initialize("2025-11-25").await;
    let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string();
    m.post(Some(&sid), &note).send().await.unwrap();

    let slow = json!({"jsonrpc":"2.0","id":"slow-1","method":"tools/call","params":{"name":"b_slow","arguments":{"steps":40,"delay_ms":100}}}).to_string();
    let call = tokio::spawn(m.post_json(Some(&sid), &slow).send());
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let cancel = json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"slow-1","reason":"user"}}).to_string();
    assert_eq!(m.post(Some(&sid), &cancel).send().await.unwrap().status(), StatusCode::ACCEPTED);
    let _ = call.await;
    let got = |method: &str| b.requests().iter().any(|r| r["method"] == method);
    assert!(got("notifications/cancelled"), "the cancellation reached the owning backend");

    let complete = json!({"jsonrpc":"2.0","id":7,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"b_greet"},"argument":{"name":"who","value":"a"}}}).to_string();
    let (_, v) = json_of(m.post_json(Some(&sid), &complete).send().await.unwrap()).await;
    assert_eq!(v["id"], 7, "{v}");
    assert!(got("completion/complete"), "completion went to b under the original prompt name: {v}");

    let sub =
        json!({"jsonrpc":"2.0","id":8,"method":"resources/subscribe","params":{"uri":"info://b"}})
            .to_string();
    let (_, v) = json_of(m.post_json(Some(&sid), &sub).send().await.unwrap()).await;
    assert_eq!(v["id"], 8, "{v}");
    assert!(got("resources/subscribe"), "{v}");
}

/// JSON logs with one audit line per request (subject, method, backend, outcome, latency), and
/// a graceful shutdown that lets an in-flight call finish.
#[tokio::test(flavor = "multi_thread")]
async fn json_audit_log_and_graceful_drain() {
    let b = Backend::start(Sdk::Python, "b", BackendOptions::default()).await;
    let mut gw = Gateway::start(&format!(
        "telemetry:\n  logFormat: json\nbackends:\n  - name: b\n    url: {}\n",
        b.url()
    ))
    .await;
    let m = Mcp { http: reqwest::Client::new(), url: gw.url() };
    let (sid, _) = m.initialize("2025-11-25").await;
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"b_echo","arguments":{"text":"x"}}}).to_string();
    assert_eq!(m.post_json(Some(&sid), &call).send().await.unwrap().status(), StatusCode::OK);

    // A slow call in flight when SIGTERM arrives still completes.
    let slow = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b_slow","arguments":{"steps":10,"delay_ms":150}}}).to_string();
    let in_flight = tokio::spawn(m.post_json(Some(&sid), &slow).send());
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    tokio::task::spawn_blocking(move || {
        gw.stop("TERM");
        gw
    })
    .await
    .map(|gw| {
        let audit: Vec<Value> = gw
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "audit")
            .collect();
        let line = audit
            .iter()
            .find(|v| v["method"] == "tools/call")
            .unwrap_or_else(|| panic!("no audit line in {}", gw.log()));
        assert_eq!(line["subject"], "anonymous");
        assert_eq!(line["backend"], "b");
        assert_eq!(line["outcome"], "ok");
        assert!(line["latency_ms"].is_number());
    })
    .unwrap();
    let r = in_flight.await.unwrap().unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "b:slow:done", "drained, not cut: {v}");
}

/// `telemetry.metricsListen`: `/metrics` moves to its own port (so a NetworkPolicy can admit
/// scrapers there only) and is gone from the MCP port.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_on_their_own_port() {
    let port = vmcp_e2e::ports::free_port().unwrap();
    let gw = vmcp_e2e::gateway::Gateway::start(&format!(
        "backends: []\ntelemetry:\n  metricsListen: 127.0.0.1:{port}\n"
    ))
    .await;
    let main = |path: &str| reqwest::get(format!("http://127.0.0.1:{}{path}", gw.port));
    assert_eq!(main("/metrics").await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(main("/healthz").await.unwrap().status(), StatusCode::OK);
    let r = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("vmcp_sessions_live"));
    let other = reqwest::get(format!("http://127.0.0.1:{port}/mcp")).await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND, "the metrics port serves nothing else");
}

/// `outbound.caFiles`: a backend behind https with a certificate from a private CA is reached
/// when the CA is configured, and refused (untrusted) when it is not.
#[tokio::test(flavor = "multi_thread")]
async fn private_ca_backend_is_trusted_only_when_configured() {
    let ca = vmcp_e2e::tls::PrivateCa::new();
    let b = Backend::start(Sdk::Python, "b", BackendOptions::default()).await;
    let relay = vmcp_e2e::tls::TlsRelay::start(&ca, b.port).await;
    let url = format!("https://localhost:{}/mcp", relay.port);
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"b_echo","arguments":{"text":"tls"}}}).to_string();

    let trusting = Gateway::start(&format!(
        "outbound:\n  caFiles: [{}]\nbackends:\n  - name: b\n    url: {url}\n",
        ca.ca_pem().display()
    ))
    .await;
    let m = Mcp { http: reqwest::Client::new(), url: trusting.url() };
    let (sid, _) = m.initialize("2025-11-25").await;
    let (_, v) = json_of(m.post_json(Some(&sid), &call).send().await.unwrap()).await;
    assert_eq!(v["result"]["content"][0]["text"], "b:echo:tls", "{v}");

    let plain = Gateway::start(&format!("backends:\n  - name: b\n    url: {url}\n")).await;
    let m = Mcp { http: reqwest::Client::new(), url: plain.url() };
    let (sid, _) = m.initialize("2025-11-25").await;
    let (_, v) = json_of(m.post_json(Some(&sid), &call).send().await.unwrap()).await;
    assert!(v.get("error").is_some() || v["result"]["isError"] == true, "untrusted CA: {v}");
}

/// L14: with `allowLoopbackOrigins: false` (the default of a gateway that does not listen on
/// loopback), a page on any local port is a foreign origin; a listed one still works, and
/// clients that send no `Origin` are unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn loopback_origins_are_refused_unless_allowed() {
    let gw = Gateway::start(
        "http:\n  allowLoopbackOrigins: false\n  allowedOrigins: [\"http://localhost:6274\"]\nbackends: []\n",
    )
    .await;
    let m = Mcp { http: reqwest::Client::new(), url: gw.url() };
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}).to_string();
    for origin in ["http://localhost:9999", "http://127.0.0.1:8000", "http://[::1]:3000"] {
        let r = m.post(None, &init).header("origin", origin).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{origin}");
    }
    let r = m.post(None, &init).header("origin", "http://localhost:6274").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a listed origin");
    assert_eq!(m.post(None, &init).send().await.unwrap().status(), StatusCode::OK, "no Origin");
}
