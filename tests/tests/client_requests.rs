//! Backends that ask the client something work through the gateway (issue 15): a backend built
//! on an official SDK (Python, TypeScript) asks for sampling (`sampling/createMessage`) and elicitation
//! (`elicitation/create`) in the middle of a tool call; an official-SDK client answers; the
//! gateway relays both ways (ids mapped, the backend's timeout applied). A client that did not
//! declare the capability gets the backend a clear error instead of a 30 s hang.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmcp_e2e::gateway::{Gateway, backends_yaml};
use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};

fn asked_methods(asked: &Value) -> Vec<String> {
    asked.as_array().unwrap().iter().map(|a| a["method"].as_str().unwrap().to_owned()).collect()
}

async fn relays_sampling_and_elicitation(backend: Sdk, client: Sdk) {
    let a = Backend::start(backend, "asker", BackendOptions::default()).await;
    let other = Backend::start(Sdk::Python, "other", BackendOptions::default()).await;
    let gw = Gateway::start(&backends_yaml(&[&a, &other])).await;
    let mut c = Client::start(client, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize", "sampling_reply": "forty-two",
        "elicit_reply": {"action": "accept", "content": {"name": "Ada"}}}))
        .await;

    let r = c
        .ok(json!({"op": "call_tool", "name": "asker_ask_model", "arguments": {"prompt": "why?"}}))
        .await;
    assert_eq!(r["text"], "asker:model:forty-two", "{r}");
    let r = c
        .ok(json!({"op": "call_tool", "name": "asker_ask_user", "arguments": {"question": "name?"}}))
        .await;
    assert_eq!(r["text"], "asker:user:accept:Ada", "{r}");
    // Two backends asking in turn: ids never collide, each answer reaches its asker.
    let r = c
        .ok(json!({"op": "call_tool", "name": "other_ask_model", "arguments": {"prompt": "b?"}}))
        .await;
    assert_eq!(r["text"], "other:model:forty-two", "{r}");

    let asked = c.ok(json!({"op": "asked"})).await;
    assert_eq!(
        asked_methods(&asked),
        ["sampling/createMessage", "elicitation/create", "sampling/createMessage"],
        "{asked}"
    );
    assert_eq!(asked[0]["params"]["messages"][0]["content"]["text"], "why?", "{asked}");
    assert_eq!(asked[1]["params"]["message"], "name?", "{asked}");
    // (The SDK server only sends these when the gateway declared sampling and elicitation in
    // its initialize with the backend: the client's capabilities are passed on.)
    c.exit().await;
}

#[tokio::test]
async fn python_backend_asks_python_client_through_the_gateway() {
    relays_sampling_and_elicitation(Sdk::Python, Sdk::Python).await;
}

#[tokio::test]
async fn typescript_backend_asks_typescript_client_through_the_gateway() {
    relays_sampling_and_elicitation(Sdk::TypeScript, Sdk::TypeScript).await;
}

#[tokio::test]
async fn python_backend_asks_typescript_client_through_the_gateway() {
    relays_sampling_and_elicitation(Sdk::Python, Sdk::TypeScript).await;
}

/// A backend request that comes on the backend's GET stream (not tied to a call) reaches the
/// client on its GET stream and the answer goes back at once.
#[tokio::test]
async fn a_request_on_the_backend_get_stream_is_relayed_at_once() {
    let a = Backend::start(Sdk::Python, "asker", BackendOptions::default()).await;
    let gw = Gateway::start(&backends_yaml(&[&a])).await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize", "sampling_reply": "from-the-get-stream"})).await;
    // The backend's GET stream is open while the client's is (I8): the first call opens it.
    c.ok(json!({"op": "call_tool", "name": "asker_echo", "arguments": {"text": "x"}})).await;
    let start = Instant::now();
    let r = c
        .ok(json!({"op": "call_tool", "name": "asker_ask_model",
            "arguments": {"prompt": "p", "standalone": true}}))
        .await;
    assert_eq!(r["text"], "asker:model:from-the-get-stream", "{r}");
    assert!(start.elapsed() < Duration::from_secs(8), "took {:?}", start.elapsed());
    c.exit().await;
}

#[tokio::test]
async fn a_client_without_the_capability_gets_the_backend_an_error_at_once() {
    let a = Backend::start(Sdk::Python, "asker", BackendOptions::default()).await;
    let gw = Gateway::start(&backends_yaml(&[&a])).await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let start = Instant::now();
    let r = c
        .cmd(json!({"op": "call_tool", "name": "asker_ask_model", "arguments": {"prompt": "x"}}))
        .await;
    // The backend got "the client does not support sampling/createMessage" and failed its
    // tool; nothing waited for the backend's 10 s timeout.
    assert!(r.to_string().contains("does not support sampling"), "expected a failed call: {r}");
    assert!(start.elapsed() < Duration::from_secs(8), "took {:?}", start.elapsed());
    let asked = c.ok(json!({"op": "asked"})).await;
    assert_eq!(asked, json!([]), "the client was not asked");
    c.exit().await;
}

/// Two replicas behind a balancer without stickiness: the backend call (and its request to the
/// client) runs on one replica, the client's answer lands on the other, which relays it over
/// Redis to the replica holding the call. On a gateway without the relay the answer was
/// dropped and the backend waited out its timeout.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_that_lands_on_the_other_replica_reaches_the_backend() {
    let redis = vmcp_e2e::redis::RedisServer::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "asker", BackendOptions::default()).await;
    let cfg = format!(
        "sessionStorage:\n  provider: redis\n  redis:\n    url: {}\n    keyPrefix: 'vmcp:asks:'\n{}",
        redis.url(),
        backends_yaml(&[&a])
    );
    let gw_a = Gateway::start(&cfg).await;
    let gw_b = Gateway::start(&cfg).await;
    let lb = vmcp_e2e::balancer::Balancer::start(vec![gw_a.port, gw_b.port]).await;
    for client in [Sdk::Python, Sdk::TypeScript] {
        let mut c = Client::start(client, &lb.url(), &[]).await;
        c.ok(json!({"op": "initialize", "sampling_reply": "forty-two",
            "elicit_reply": {"action": "accept", "content": {"name": "Ada"}}}))
            .await;
        // One request at a time through a round robin: each answer goes to the replica that
        // did not receive the call. Twice, so each replica relays once.
        for prompt in ["one?", "two?"] {
            let started = Instant::now();
            let r = c
                .ok(json!({"op": "call_tool", "name": "asker_ask_model",
                           "arguments": {"prompt": prompt}}))
                .await;
            assert_eq!(r["text"], "asker:model:forty-two", "{client:?}: {r}");
            assert!(started.elapsed() < Duration::from_secs(8), "answered, not timed out");
        }
        let r = c
            .ok(json!({"op": "call_tool", "name": "asker_ask_user", "arguments": {"question": "n?"}}))
            .await;
        assert_eq!(r["text"], "asker:user:accept:Ada", "{client:?}: {r}");
        c.exit().await;
    }
}
