//! Regression guard for Nagle's algorithm on the request path (not a benchmark: `make bench`
//! measures latency). A Streamable HTTP answer leaves a server as two small writes (headers,
//! then the SSE event); without `TCP_NODELAY` the second waits for the peer's delayed ACK and
//! every call on a keep-alive connection costs ~40 ms. Through the gateway that happens twice
//! over: on the gateway's own listener and on every backend built like the example backends.
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
