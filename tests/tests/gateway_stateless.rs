//! MCP 2026-07-28 (stateless) on the gateway's client side, against real peers: the official
//! Python SDK's `Client` in its default mode (it probes `server/discover` and stays
//! stateless when offered), official Python and TypeScript SDK backends, a real OpenID
//! provider doing token exchange; older clients on the same gateway keep their sessions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::StatusCode;
use serde_json::{Value, json};
use vmcp_e2e::gateway::Gateway;
use vmcp_e2e::oidc::OidcProvider;
use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};

const V: &str = "2026-07-28";

fn backends_yaml(backends: &[&Backend]) -> String {
    let mut y = String::from("backends:\n");
    for b in backends {
        y.push_str(&format!(
            "  - name: {}\n    url: {}\n    transport: streamable-http\n    timeout: 10s\n",
            b.name,
            b.url()
        ));
    }
    y
}

fn names(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
}

async fn metric(gw: &Gateway, name: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", gw.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The backend sessions (`Mcp-Session-Id`s) that carried `method` to `b`.
fn backend_sessions(b: &Backend, method: &str) -> BTreeSet<String> {
    b.requests()
        .iter()
        .filter(|r| r["method"] == method)
        .filter_map(|r| r["session_id"].as_str().map(str::to_owned))
        .collect()
}

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
async fn python_client_default_mode_is_stateless_and_older_clients_keep_sessions() {
    let alpha = Backend::start(Sdk::Python, "alpha", BackendOptions::default()).await;
    let beta = Backend::start(Sdk::TypeScript, "beta", BackendOptions::default()).await;
    let gw = Gateway::start(&backends_yaml(&[&alpha, &beta])).await;

    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    let conn = c.ok(json!({"op": "connect"})).await;
    assert_eq!(conn["protocolVersion"], V, "{conn}");
    assert_eq!(conn["serverInfo"]["name"], "vmcp");
    assert!(conn["capabilities"]["tools"].is_object(), "{conn}");
    assert_eq!(conn["sessionId"], Value::Null, "no session in this revision");
    assert_eq!(
        conn["posts"],
        json!([{"method": "server/discover", "mcpMethod": "server/discover", "status": 200}]),
        "one probe, answered: no fallback to initialize"
    );

    let tools = names(&c.ok(json!({"op": "list_tools"})).await);
    for t in ["alpha_echo", "beta_echo", "alpha_alpha_only", "beta_beta_only"] {
        assert!(tools.contains(&t.to_owned()), "{t} missing from {tools:?}");
    }
    let r =
        c.ok(json!({"op": "call_tool", "name": "alpha_echo", "arguments": {"text": "hi"}})).await;
    assert_eq!(r["text"], "alpha:echo:hi");
    let r =
        c.ok(json!({"op": "call_tool", "name": "beta_search", "arguments": {"query": "q"}})).await;
    assert_eq!(r["text"], "beta:search:q");
    let r = c.ok(json!({"op": "call_tool", "name": "alpha_fail", "arguments": {}})).await;
    assert_eq!((r["isError"].clone(), r["text"].clone()), (json!(true), json!("alpha:fail")));
    let r = c.ok(json!({"op": "read_resource", "uri": "info://beta"})).await;
    assert_eq!(r["text"], "beta info");
    let prompts = names(&c.ok(json!({"op": "list_prompts"})).await);
    assert!(prompts.contains(&"alpha_greet".to_owned()), "{prompts:?}");
    let r =
        c.ok(json!({"op": "get_prompt", "name": "beta_greet", "arguments": {"who": "ann"}})).await;
    assert!(r.to_string().contains("Hello ann from beta"), "{r}");
    let r = c.ok(json!({"op": "call_tool_progress", "name": "alpha_slow", "arguments": {"steps": 3, "delay_ms": 20}})).await;
    assert_eq!(r["text"], "alpha:slow:done");
    assert_eq!(r["progress"].as_array().unwrap().len(), 3, "{r}");
    // A tool whose argument the SDK mirrors into `Mcp-Param-Region` (x-mcp-header): the
    // gateway checks the header against the body and the call goes through.
    let r = c
        .ok(json!({"op": "call_tool", "name": "alpha_regional", "arguments": {"region": "eu-west"}}))
        .await;
    assert_eq!(r["text"], "alpha:regional:eu-west");
    // An unknown tool: the client gets the error, nothing hangs.
    let r = c.cmd(json!({"op": "call_tool", "name": "no_such_tool", "arguments": {}})).await;
    assert_eq!(r["ok"], false, "{r}");

    // Every request was stateless: no POST carried an initialize, no session was created.
    let posts = c.ok(json!({"op": "posts"})).await;
    for p in posts.as_array().unwrap() {
        assert!(p["method"] != "initialize" && p["mcpMethod"].is_string(), "{p}");
    }
    assert_eq!(metric(&gw, "vmcp_sessions_created_total").await, 0.0);

    // Per-request cost: the backends were initialized once for this identity, not per
    // request: every call of the client reached each backend on one backend session.
    for _ in 0..5 {
        c.ok(json!({"op": "call_tool", "name": "alpha_echo", "arguments": {"text": "again"}}))
            .await;
        c.ok(json!({"op": "call_tool", "name": "beta_echo", "arguments": {"text": "again"}})).await;
    }
    assert_eq!(backend_sessions(&alpha, "tools/call").len(), 1, "{:?}", alpha.requests());
    assert_eq!(backend_sessions(&beta, "tools/call").len(), 1);

    // Older clients on the same gateway: the initialize handshake and a session, as before.
    for sdk in [Sdk::Python, Sdk::TypeScript] {
        let mut old = Client::start(sdk, &gw.url(), &[]).await;
        let init = old.ok(json!({"op": "initialize"})).await;
        assert_eq!(init["protocolVersion"], "2025-11-25", "{sdk:?}: {init}");
        assert!(init["sessionId"].as_str().is_some_and(|s| s.len() == 32), "{init}");
        let r = old
            .ok(json!({"op": "call_tool", "name": "beta_echo", "arguments": {"text": "old"}}))
            .await;
        assert_eq!(r["text"], "beta:echo:old");
        old.exit().await;
    }
    assert_eq!(metric(&gw, "vmcp_sessions_created_total").await, 2.0);
    // The stateless client is unaffected.
    let r = c
        .ok(json!({"op": "call_tool", "name": "alpha_echo", "arguments": {"text": "still"}}))
        .await;
    assert_eq!(r["text"], "alpha:echo:still");
    c.exit().await;
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    serde_json::from_slice(&B64.decode(payload).unwrap_or_default()).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn stateless_requests_use_the_live_identity_for_token_exchange() {
    let idp = OidcProvider::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let config = format!(
        "resourceUrl: http://127.0.0.1:4483/mcp\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: vmcp-gateway\n    scopes: [openid]\n    leeway: 1s\nbackends:\n  - name: a\n    url: {}\n    auth:\n      type: tokenExchange\n      tokenExchange:\n        tokenUrl: {}\n        clientId: vmcp-gateway\n        clientSecret: {{ env: GW_CLIENT_SECRET }}\n        audience: backend-a\n  - name: h\n    url: {}\n    auth:\n      type: headerInjection\n      headerInjection:\n        headerName: X-Api-Key\n        value: {{ env: H_API_KEY }}\n",
        idp.issuer(),
        a.url(),
        idp.token_url(),
        h.url()
    );
    let gw = Gateway::start_with_env(
        &config,
        &[("GW_CLIENT_SECRET", "gateway-secret"), ("H_API_KEY", "k-123")],
    )
    .await;

    // Without a token even the probe is refused (401 with the challenge): the SDK reports it.
    let mut anon = Client::start(Sdk::Python, &gw.url(), &[]).await;
    let r = anon.cmd(json!({"op": "connect"})).await;
    assert_eq!(r["ok"], false, "{r}");
    anon.exit().await;

    let exchanges = "vmcp_token_exchange_idp_duration_seconds_count{backend=\"a\",outcome=\"ok\"}";
    let mut seen_sessions = BTreeSet::new();
    let mut user_tokens: Vec<String> = Vec::new();
    for (n, (user, pw)) in [("alice", "alice-pw"), ("bob", "bob-pw")].into_iter().enumerate() {
        let token = idp.password_token(user, pw, None).await.unwrap();
        user_tokens.push(token.clone());
        let mut c =
            Client::start(Sdk::Python, &gw.url(), &[format!("Authorization: Bearer {token}")])
                .await;
        let conn = c.ok(json!({"op": "connect"})).await;
        assert_eq!(conn["protocolVersion"], V, "{conn}");
        for _ in 0..3 {
            let got = c.ok(json!({"op": "call_tool", "name": "a_whoami", "arguments": {}})).await;
            let auth = got["text"].as_str().unwrap().to_owned();
            let exchanged =
                auth.strip_prefix("Bearer ").unwrap_or_else(|| panic!("backend a got {auth}"));
            assert_ne!(exchanged, token, "the user's own token must never reach a backend");
            assert_eq!(claims(exchanged)["sub"], claims(&token)["sub"], "{user}'s own identity");
            let aud = &claims(exchanged)["aud"];
            assert!(
                aud == "backend-a"
                    || aud.as_array().is_some_and(|a| a.contains(&json!("backend-a"))),
                "aud {aud}"
            );
        }
        let got = c.ok(json!({"op": "call_tool", "name": "h_whoami", "arguments": {}})).await;
        assert_eq!(got["text"], "none", "headerInjection sends no Authorization");
        // One exchange per user, then the per-replica cache (I6): not one per request.
        assert_eq!(metric(&gw, exchanges).await, (n + 1) as f64, "after {user}");
        // Each user's calls reached `a` on a backend session of their own.
        let now = backend_sessions(&a, "tools/call");
        let new: Vec<_> = now.difference(&seen_sessions).cloned().collect();
        assert_eq!(new.len(), 1, "{user}: {now:?} after {seen_sessions:?}");
        seen_sessions = now;
        c.exit().await;
    }
    assert!(h.requests().iter().any(|r| r["headers"]["x-api-key"] == "k-123"));
    for r in a.requests().iter().chain(h.requests().iter()) {
        let sent = r["authorization"].as_str().unwrap_or_default();
        assert!(
            user_tokens.iter().all(|t| !sent.contains(t.as_str())),
            "a backend got a user's token: {r}"
        );
    }
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

/// The newest TypeScript SDK client (`@modelcontextprotocol/client` 2.x): in its default mode
/// (the initialize handshake) and with version negotiation `auto` (stateless when offered).
#[tokio::test(flavor = "multi_thread")]
async fn typescript_sdk_v2_client_default_and_auto_modes() {
    let alpha = Backend::start(Sdk::Python, "alpha", BackendOptions::default()).await;
    let beta = Backend::start(Sdk::TypeScript, "beta", BackendOptions::default()).await;
    let gw = Gateway::start(&backends_yaml(&[&alpha, &beta])).await;
    for (mode, version) in [(Value::Null, "2025-11-25"), (json!("auto"), V)] {
        let mut c = Client::start(Sdk::TypeScriptV2, &gw.url(), &[]).await;
        let conn = c.ok(json!({"op": "connect", "mode": mode})).await;
        assert_eq!(conn["protocolVersion"], version, "mode {mode}: {conn}");
        assert_eq!(conn["serverInfo"]["name"], "vmcp");
        assert_eq!(conn["sessionId"].is_string(), version != V, "{conn}");
        let tools = names(&c.ok(json!({"op": "list_tools"})).await);
        assert!(tools.contains(&"beta_echo".to_owned()), "{tools:?}");
        let r = c
            .ok(json!({"op": "call_tool", "name": "beta_echo", "arguments": {"text": "v2"}}))
            .await;
        assert_eq!(r["text"], "beta:echo:v2");
        let r = c.ok(json!({"op": "call_tool_progress", "name": "alpha_slow", "arguments": {"steps": 2, "delay_ms": 20}})).await;
        assert_eq!(
            (r["text"].clone(), r["progress"].as_array().unwrap().len()),
            (json!("alpha:slow:done"), 2),
            "{r}"
        );
        let r = c.ok(json!({"op": "read_resource", "uri": "info://alpha"})).await;
        assert_eq!(r["text"], "alpha info");
        let posts = c.ok(json!({"op": "posts"})).await;
        let initialized = posts.as_array().unwrap().iter().any(|p| p["method"] == "initialize");
        assert_eq!(initialized, version != V, "{posts}");
        c.exit().await;
    }
    // One session for the handshake client; none for the stateless one.
    assert_eq!(metric(&gw, "vmcp_sessions_created_total").await, 1.0);
}
