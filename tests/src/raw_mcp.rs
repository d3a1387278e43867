//! Plain Streamable HTTP requests for tests that must control the connection (keep-alive,
//! one socket) or count what the gateway holds: no SDK in between.

// Test harness: a failed request panics with its reason, which is the test's failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::{Value, json};

/// POSTs one JSON-RPC message (with `Mcp-Session-Id` when given) and returns the session id
/// the answer carries (empty if none) and the body. Fails the test on a non-2xx status.
pub async fn post(
    c: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: Value,
) -> (String, String) {
    let mut rb = c
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25");
    if let Some(s) = session {
        rb = rb.header("mcp-session-id", s);
    }
    let resp = rb.body(body.to_string()).send().await.unwrap();
    assert!(resp.status().is_success(), "{url} answered {}", resp.status());
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (sid, resp.text().await.unwrap())
}

/// Sends a 2025-11-25 `initialize` as `client_name` and returns the response as it is (the
/// caller checks the status: some tests expect a refusal).
pub async fn initialize(c: &reqwest::Client, url: &str, client_name: &str) -> reqwest::Response {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": client_name, "version": "1"}}});
    c.post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init.to_string())
        .send()
        .await
        .unwrap()
}

/// The `Mcp-Session-Id` of an `initialize` response.
pub fn session_id(resp: &reqwest::Response) -> String {
    resp.headers()["mcp-session-id"].to_str().unwrap().to_owned()
}

/// `initialize` + `notifications/initialized`; returns the session id (`None` when the
/// server issues none).
pub async fn open_session(c: &reqwest::Client, url: &str, client_name: &str) -> Option<String> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": client_name, "version": "1"}}});
    let (sid, body) = post(c, url, None, init).await;
    assert!(body.contains("protocolVersion"), "initialize failed: {body}");
    let sid = (!sid.is_empty()).then_some(sid);
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    post(c, url, sid.as_deref(), note).await;
    sid
}

/// Opens the client's GET stream of session `sid` (2025-11-25) and returns the response as it
/// is; the stream stays open until the response is dropped.
pub async fn open_get_stream(c: &reqwest::Client, url: &str, sid: &str) -> reqwest::Response {
    c.get(url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap()
}
