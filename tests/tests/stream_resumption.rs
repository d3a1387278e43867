//! Resumable streams toward backends (issue 15): a 2025-11-25 backend built on the official
//! Python SDK (with an event store) closes a call's SSE stream right after its priming event
//! and delivers the result on the stream the client resumes with `Last-Event-ID`. Directly,
//! an SDK client gets the result; through the gateway it used to fail at once with "the
//! response stream ended before the response".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use vmcp_e2e::gateway::Gateway;
use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};

#[tokio::test]
async fn a_call_whose_backend_closes_the_stream_is_resumed_with_last_event_id() {
    let b = Backend::start(
        Sdk::Python,
        "poller",
        BackendOptions { resumable: true, ..Default::default() },
    )
    .await;
    // The peer does it directly (the behaviour the gateway must match).
    let mut direct = Client::start(Sdk::Python, &b.url(), &[]).await;
    direct.ok(json!({"op": "initialize"})).await;
    let r = direct
        .ok(json!({"op": "call_tool", "name": "polled", "arguments": {"delay_ms": 300}}))
        .await;
    assert_eq!(r["text"], "poller:polled", "{r}");
    direct.exit().await;

    let gw = Gateway::start(&format!(
        "backends:\n  - name: poller\n    url: {}\n    timeout: 10s\n",
        b.url()
    ))
    .await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    for delay in [0, 300, 1200] {
        let r = c
            .ok(json!({"op": "call_tool", "name": "poller_polled", "arguments": {"delay_ms": delay}}))
            .await;
        assert_eq!(r["text"], "poller:polled", "delay {delay}: {r}");
    }
    // The gateway resumed with GET + Last-Event-ID.
    let resumed = b
        .requests()
        .into_iter()
        .filter(|r| r["http_method"] == "GET" && r["headers"].get("last-event-id").is_some())
        .count();
    assert!(resumed >= 3, "{resumed} resumed streams");
    c.exit().await;
}
