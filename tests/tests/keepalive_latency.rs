//! Regression guard for Nagle's algorithm on the request path (not a benchmark: `make bench`
//! measures latency). A Streamable HTTP answer leaves a server as two small writes (headers,
//! then the SSE event); without `TCP_NODELAY` the second waits for the peer's delayed ACK and
//! every call on a keep-alive connection costs ~40 ms. Through the gateway that happens twice
//! over: on the gateway's own listener and on every backend built like the example backends.
//! A call the backend answers at once is sent whole by the gateway: one write with a
//! `Content-Length` instead of headers, event and end of chunks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use vmcp_e2e::example_backend::ExampleBackend;
use vmcp_e2e::gateway::Gateway;
use vmcp_e2e::raw_mcp::{open_session, post};

/// One keep-alive connection (a pool of one, requests in sequence).
fn one_connection_client() -> reqwest::Client {
    reqwest::Client::builder().http1_only().pool_max_idle_per_host(1).no_proxy().build().unwrap()
}

/// Median wall time of `n` sequential `tools/call`s on one keep-alive connection to `url`.
async fn median_call(url: &str, tool: &str, n: usize) -> Duration {
    let c = one_connection_client();
    let sid = open_session(&c, url, "keepalive-latency").await;
    // Warm up the connection pools on both hops.
    let call = |i: usize| {
        json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
               "params": {"name": tool, "arguments": {"query": "q"}}})
    };
    for i in 1..=3 {
        post(&c, url, sid.as_deref(), call(i)).await;
    }
    let mut took = Vec::new();
    for i in 0..n {
        let start = Instant::now();
        let (_, body) = post(&c, url, sid.as_deref(), call(10 + i)).await;
        took.push(start.elapsed());
        assert!(body.contains("result"), "tools/call failed: {body}");
    }
    took.sort();
    took[n / 2]
}

#[tokio::test]
async fn forwarded_call_on_a_keepalive_connection_is_not_delayed_by_nagle() {
    let weather = ExampleBackend::start("weather").await;
    let gw = Gateway::start(&format!(
        "backends:\n  - name: weather\n    url: {}\n    transport: streamable-http\n",
        weather.url()
    ))
    .await;
    let direct = median_call(&weather.url(), "search", 9).await;
    let through = median_call(&gw.url(), "weather_search", 9).await;
    // Nagle costs ~40 ms per call; a loaded CI machine answers in a few ms.
    assert!(direct < Duration::from_millis(20), "example backend: median {direct:?} per call");
    assert!(
        through < Duration::from_millis(20),
        "through the gateway: median {through:?} per call"
    );
}

/// A quick call is sent whole: a length, not chunks; still SSE, with its event id. Timing on
/// a loaded machine may stream some calls, so one whole answer of twenty is enough; the old
/// gateway streamed every one.
#[tokio::test]
async fn a_call_answered_at_once_is_sent_whole() {
    let weather = ExampleBackend::start("weather").await;
    let gw = Gateway::start(&format!(
        "backends:\n  - name: weather\n    url: {}\n    transport: streamable-http\n",
        weather.url()
    ))
    .await;
    let c = one_connection_client();
    let sid = open_session(&c, &gw.url(), "whole-answers").await.unwrap();
    let mut whole = 0;
    for i in 0..20 {
        let r = c
            .post(gw.url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .header("mcp-session-id", &sid)
            .body(
                json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                       "params": {"name": "weather_search", "arguments": {"query": "q"}}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let length = r.headers().get("content-length").map(|v| v.to_str().unwrap().to_owned());
        let text = r.text().await.unwrap();
        assert!(text.contains("id: p") && text.contains("weather results"), "{text}");
        if let Some(length) = length {
            assert_eq!(length, text.len().to_string());
            assert!(text.contains("retry: 500"), "the priming event is kept: {text}");
            whole += 1;
        }
    }
    assert!(whole > 0, "no call of twenty was sent whole");
}
