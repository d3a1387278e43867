//! Raw HTTP against the stateless revision: the `server/discover` answer, the request
//! envelope (`_meta`, `Mcp-Method`, `Mcp-Name`) and its errors, and cancellation when the client
//! closes the response stream.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use vmcp_e2e::gateway::{Gateway, backends_yaml};
use vmcp_e2e::peers::{Backend, BackendOptions, Sdk};

use super::{V, names};

/// A stateless request with a correct envelope; `tweak` edits headers before sending.
fn modern(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    tweak: impl FnOnce(&mut reqwest::header::HeaderMap),
) -> reqwest::RequestBuilder {
    let method = body["method"].as_str().unwrap_or_default();
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("accept", "application/json, text/event-stream".parse().unwrap());
    h.insert("mcp-protocol-version", V.parse().unwrap());
    h.insert("mcp-method", method.parse().unwrap());
    let name = body["params"]["name"].as_str().or(body["params"]["uri"].as_str());
    if let Some(n) = name {
        h.insert("mcp-name", n.parse().unwrap());
    }
    tweak(&mut h);
    http.post(url).headers(h).body(body.to_string())
}

type Tweak = Box<dyn Fn(&mut reqwest::header::HeaderMap)>;

fn set(name: &'static str, value: &'static str) -> Tweak {
    Box::new(move |h: &mut reqwest::header::HeaderMap| {
        h.insert(name, value.parse().unwrap());
    })
}

fn unset(name: &'static str) -> Tweak {
    Box::new(move |h: &mut reqwest::header::HeaderMap| {
        h.remove(name);
    })
}

fn add(name: &'static str, value: &'static str) -> Tweak {
    Box::new(move |h: &mut reqwest::header::HeaderMap| {
        h.append(name, value.parse().unwrap());
    })
}

fn request(id: Value, method: &str, mut params: Value) -> Value {
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(V);
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({});
    params["_meta"]["io.modelcontextprotocol/clientInfo"] = json!({"name": "raw", "version": "1"});
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let s = r.status();
    let text = r.text().await.unwrap();
    (s, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{s} {text}: {e}")))
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_shape_envelope_errors_and_mismatched_headers() {
    let alpha = Backend::start(Sdk::Python, "alpha", BackendOptions::default()).await;
    let gw = Gateway::start(&backends_yaml(&[&alpha])).await;
    let (http, url) = (reqwest::Client::new(), gw.url());

    // server/discover: versions, capabilities, identity, caching hints; no session id.
    let r = modern(&http, &url, &request(json!("d"), "server/discover", json!({})), |_| {})
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("mcp-session-id").is_none());
    let (s, v) = json_of(r).await;
    assert_eq!(s, StatusCode::OK);
    let d = &v["result"];
    assert_eq!(v["id"], "d");
    assert_eq!(d["resultType"], "complete");
    assert_eq!(d["supportedVersions"], json!([V, "2025-11-25", "2025-06-18", "2025-03-26"]));
    assert!(["tools", "resources", "prompts"].iter().all(|k| d["capabilities"][k].is_object()));
    assert_eq!(d["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "vmcp");
    assert!(d["ttlMs"].as_u64().is_some() && d["cacheScope"] == "public", "{d}");

    // A list: the revision's result fields, under the client's id.
    let (s, v) = json_of(
        modern(&http, &url, &request(json!(7), "tools/list", json!({})), |_| {})
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["id"], 7);
    assert_eq!(v["result"]["resultType"], "complete");
    assert_eq!(
        (v["result"]["cacheScope"].clone(), v["result"]["ttlMs"].clone()),
        (json!("private"), json!(0))
    );
    assert!(names(&v["result"]["tools"]).contains(&"alpha_echo".to_owned()));

    // A call, and the same call with a base64-encoded Mcp-Name.
    let call =
        request(json!(8), "tools/call", json!({"name": "alpha_echo", "arguments": {"text": "x"}}));
    for name in ["alpha_echo", "=?base64?YWxwaGFfZWNobw==?="] {
        let r = modern(&http, &url, &call, |h| {
            h.insert("mcp-name", name.parse().unwrap());
            h.insert("accept", "application/json".parse().unwrap());
        })
        .send()
        .await
        .unwrap();
        let (s, v) = json_of(r).await;
        assert_eq!(
            (s, v["result"]["content"][0]["text"].clone()),
            (StatusCode::OK, json!("alpha:echo:x")),
            "{v}"
        );
    }

    // Mcp-Param-* headers of an x-mcp-header argument: equal passes, different or missing
    // or without the argument is a mismatch.
    let regional = request(
        json!(12),
        "tools/call",
        json!({"name": "alpha_regional", "arguments": {"region": "eu-west"}}),
    );
    let (s, v) = json_of(
        modern(&http, &url, &regional, |h| {
            h.insert("mcp-param-region", "eu-west".parse().unwrap());
        })
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["result"]["content"][0]["text"].clone()),
        (StatusCode::OK, json!("alpha:regional:eu-west")),
        "{v}"
    );
    let mut no_arg = regional.clone();
    no_arg["params"]["arguments"] = json!({});
    for (body, tweak) in [
        (&regional, set("mcp-param-region", "us-east")),
        (&regional, unset("mcp-param-region")),
        (&no_arg, set("mcp-param-region", "eu-west")),
    ] {
        let (s, v) = json_of(modern(&http, &url, body, |h| tweak(h)).send().await.unwrap()).await;
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (StatusCode::BAD_REQUEST, json!(-32020)),
            "{v}"
        );
    }

    // Header/body mismatches: 400 with -32020, and nothing reaches the backend.
    let calls_before = alpha.requests().iter().filter(|r| r["method"] == "tools/call").count();
    let cases: Vec<(&str, Tweak)> = vec![
        ("Mcp-Name differs", set("mcp-name", "alpha_fail")),
        ("Mcp-Name missing", unset("mcp-name")),
        ("Mcp-Method differs", set("mcp-method", "tools/list")),
        ("Mcp-Method missing", unset("mcp-method")),
        ("version header differs from _meta", set("mcp-protocol-version", "2025-11-25")),
        ("Mcp-Method twice", add("mcp-method", "tools/call")),
    ];
    for (what, tweak) in cases {
        let (s, v) = json_of(modern(&http, &url, &call, |h| tweak(h)).send().await.unwrap()).await;
        assert_eq!(
            (s, v["error"]["code"].clone(), v["id"].clone()),
            (StatusCode::BAD_REQUEST, json!(-32020), json!(8)),
            "{what}: {v}"
        );
    }
    // The body's envelope without the header, and no session: the same mismatch.
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "alpha_echo")
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!((s, v["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!(-32020)), "{v}");
    let calls_after = alpha.requests().iter().filter(|r| r["method"] == "tools/call").count();
    assert_eq!(calls_before, calls_after, "a refused request never reaches a backend");

    // Missing envelope fields: 400 with -32602.
    let mut bare = call.clone();
    bare["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    let (s, v) = json_of(modern(&http, &url, &bare, |_| {}).send().await.unwrap()).await;
    assert_eq!((s, v["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!(-32602)), "{v}");

    // A revision the gateway does not serve: 400 with -32022 naming what it serves.
    let mut future = request(json!(9), "tools/list", json!({}));
    future["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let r = modern(&http, &url, &future, |h| {
        h.insert("mcp-protocol-version", "2099-01-01".parse().unwrap());
    });
    let (s, v) = json_of(r.send().await.unwrap()).await;
    assert_eq!((s, v["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!(-32022)), "{v}");
    assert_eq!(v["error"]["data"]["requested"], "2099-01-01");
    assert!(v["error"]["data"]["supported"].as_array().unwrap().contains(&json!(V)));

    // Methods this revision removed (or the gateway does not serve): 404 with -32601.
    for m in ["ping", "initialize", "logging/setLevel", "subscriptions/listen", "no/such"] {
        let (s, v) = json_of(
            modern(&http, &url, &request(json!(10), m, json!({})), |_| {}).send().await.unwrap(),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (StatusCode::NOT_FOUND, json!(-32601)),
            "{m}: {v}"
        );
    }
    // An unknown resource: -32602 in this revision (-32002 is retired).
    let read = request(json!(11), "resources/read", json!({"uri": "info://nobody"}));
    let (s, v) = json_of(modern(&http, &url, &read, |_| {}).send().await.unwrap()).await;
    assert_eq!((s, v["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!(-32602)), "{v}");

    // A notification: accepted and dropped. A posted response or a batch: 400.
    let n =
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}});
    let r = modern(&http, &url, &n, |_| {}).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for body in [
        json!({"jsonrpc": "2.0", "id": 1, "result": {}}),
        json!([request(json!(1), "tools/list", json!({}))]),
    ] {
        let (s, v) = json_of(modern(&http, &url, &body, |_| {}).send().await.unwrap()).await;
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (StatusCode::BAD_REQUEST, json!(-32600)),
            "{v}"
        );
    }

    // An older client's probe (no envelope, no session) still gets -32601 and falls back.
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}"#)
        .send()
        .await
        .unwrap();
    let (_, v) = json_of(r).await;
    assert_eq!(v["error"]["code"], -32601);
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_the_response_stream_cancels_the_request() {
    let alpha = Backend::start(Sdk::Python, "alpha", BackendOptions::default()).await;
    let gw = Gateway::start(&backends_yaml(&[&alpha])).await;
    let http = reqwest::Client::new();
    let call = request(
        json!("long"),
        "tools/call",
        json!({"name": "alpha_slow", "arguments": {"steps": 100, "delay_ms": 100},
               "_meta": {"progressToken": "p1"}}),
    );
    let mut r = modern(&http, &gw.url(), &call, |_| {}).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    // The first progress notification: the backend is working on it.
    let mut seen = String::new();
    while !seen.contains("notifications/progress") {
        let chunk =
            tokio::time::timeout(Duration::from_secs(10), r.chunk()).await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("stream ended early")));
    }
    assert!(seen.contains("\"progressToken\":\"p1\""), "{seen}");
    drop(r);

    // The backend is told, under its own request id, well before the call would have ended.
    let started = Instant::now();
    let cancelled = loop {
        let reqs = alpha.requests();
        if let Some(c) = reqs.iter().find(|r| r["method"] == "notifications/cancelled") {
            break c.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no cancellation reached the backend");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let call_session = alpha
        .requests()
        .iter()
        .find(|r| r["method"] == "tools/call")
        .map(|r| r["session_id"].clone())
        .unwrap();
    assert_eq!(cancelled["session_id"], call_session, "sent on the backend session of the call");
    // A completed stateless request is not cancelled afterwards.
    let quick = request(
        json!("q"),
        "tools/call",
        json!({"name": "alpha_echo", "arguments": {"text": "ok"}}),
    );
    let text = modern(&http, &gw.url(), &quick, |_| {}).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("alpha:echo:ok"), "{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = alpha.requests().iter().filter(|r| r["method"] == "notifications/cancelled").count();
    assert_eq!(n, 1);
}
