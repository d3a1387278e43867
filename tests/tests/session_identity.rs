//! The mission's core, end to end: sessions in real Redis restored after gateway restarts and
//! shared by replicas, with backend credentials always derived from the live request's token
//! (RFC 8693 exchange at a real OpenID provider), never from stored state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fred::prelude::*;
use serde_json::{Value, json};
use vmcp_e2e::gateway::Gateway;
use vmcp_e2e::keycloak::Keycloak;
use vmcp_e2e::oidc::{OidcProvider, unverified_claims as claims};
use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};
use vmcp_e2e::redis::RedisServer;

const PREFIX: &str = "vmcp:e2e:";

fn config(redis: &RedisServer, issuer: &str, token_url: &str, a: &Backend, h: &Backend) -> String {
    format!(
        "resourceUrl: http://127.0.0.1:4483/mcp\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {issuer}\n    audience: vmcp-gateway\nsessionStorage:\n  provider: redis\n  redis:\n    url: {}\n    keyPrefix: '{PREFIX}'\nbackends:\n  - name: a\n    url: {}\n    auth:\n      type: tokenExchange\n      tokenExchange:\n        tokenUrl: {token_url}\n        clientId: vmcp-gateway\n        clientSecret: {{ env: GW_CLIENT_SECRET }}\n        audience: backend-a\n  - name: h\n    url: {}\n    auth:\n      type: headerInjection\n      headerInjection:\n        headerName: X-Api-Key\n        value: {{ env: H_API_KEY }}\n",
        redis.url(),
        a.url(),
        h.url()
    )
}

const GOOD: &[(&str, &str)] = &[("GW_CLIENT_SECRET", "gateway-secret"), ("H_API_KEY", "k-1")];
const BAD_EXCHANGE: &[(&str, &str)] =
    &[("GW_CLIENT_SECRET", "not-the-secret"), ("H_API_KEY", "k-1")];

/// The exchanged token backend `a` received on this call (through `a_whoami`).
async fn token_at_a(c: &mut Client) -> String {
    let r = c.ok(json!({"op": "call_tool", "name": "a_whoami", "arguments": {}})).await;
    r["text"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("a got {r}"))
        .to_owned()
}

/// AC1: restart (SIGTERM, then SIGKILL): the same client's next call succeeds without
/// re-initializing, and backend `a` gets a freshly exchanged token for that user.
async fn ac1_restart(issuer: &str, token_url: &str, user_token: &str) {
    let redis = RedisServer::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let mut gw = Gateway::start_with_env(&config(&redis, issuer, token_url, &a, &h), GOOD).await;
    let user = claims(user_token);
    for sdk in [Sdk::Python, Sdk::TypeScript] {
        let mut c =
            Client::start(sdk, &gw.url(), &[format!("Authorization: Bearer {user_token}")]).await;
        c.ok(json!({"op": "initialize"})).await;
        let sid = c.ok(json!({"op": "session_id"})).await;
        let mut seen = vec![token_at_a(&mut c).await];
        for signal in ["TERM", "KILL"] {
            gw.restart(signal).await;
            // AC4: the restored session has the token-exchange backend's tools right away,
            // because it was re-established with the live request's token (a restore from
            // stored identity would have no token and come back without them).
            let tools = c.ok(json!({"op": "list_tools"})).await;
            let names: Vec<&str> =
                tools.as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
            assert!(
                names.contains(&"a_whoami") && names.contains(&"h_echo"),
                "{sdk:?} SIG{signal}: restored with {names:?}"
            );
            let t = token_at_a(&mut c).await;
            let cl = claims(&t);
            assert_eq!(cl["sub"], user["sub"], "{sdk:?} SIG{signal}: exchanged for the same user");
            assert!(
                cl["aud"] == "backend-a"
                    || cl["aud"].as_array().is_some_and(|x| x.contains(&json!("backend-a")))
            );
            assert!(
                !seen.contains(&t),
                "{sdk:?} SIG{signal}: a fresh exchange after the restart, not a reused token"
            );
            assert_ne!(t, user_token);
            seen.push(t);
            let r = c
                .ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": signal}}))
                .await;
            assert_eq!(r["text"], format!("h:echo:{signal}"));
            assert_eq!(c.ok(json!({"op": "session_id"})).await, sid, "{sdk:?}: no re-initialize");
        }
        c.exit().await;
    }
    let log = gw.log();
    assert!(log.contains("restoring session from the store"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ac1_restart_with_token_exchange_oidc_provider() {
    let idp = OidcProvider::start().await.unwrap();
    let token = idp.password_token("alice", "alice-pw", None).await.unwrap();
    ac1_restart(idp.issuer(), &idp.token_url(), &token).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ac1_restart_with_token_exchange_keycloak() {
    let kc = Keycloak::shared().await.unwrap();
    let token = kc.password_token("alice", "alice-pw").await.unwrap();
    ac1_restart(&kc.issuer(), &kc.token_url(), &token).await;
}

struct Raw {
    http: reqwest::Client,
    token: String,
}

impl Raw {
    async fn post(&self, url: &str, sid: Option<&str>, body: Value) -> reqwest::Response {
        let mut rb = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("mcp-protocol-version", "2025-11-25")
            .body(body.to_string());
        if let Some(s) = sid {
            rb = rb.header("mcp-session-id", s);
        }
        rb.send().await.unwrap()
    }

    async fn initialize(&self, url: &str) -> String {
        let r = self
            .post(url, None, json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"lb","version":"1"}}}))
            .await;
        assert_eq!(r.status(), 200);
        r.headers()["mcp-session-id"].to_str().unwrap().to_owned()
    }

    async fn call(&self, url: &str, sid: &str, tool: &str) -> (u16, Value) {
        let r = self
            .post(url, Some(sid), json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":{"text":"x"}}}))
            .await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

async fn stored(redis: &RedisServer, sid: &str) -> (String, String) {
    let client = Builder::from_config(Config::from_url(&redis.url()).unwrap()).build().unwrap();
    client.init().await.unwrap();
    let rec: std::collections::HashMap<String, String> =
        client.hgetall(format!("{PREFIX}session:{sid}")).await.unwrap();
    client.quit().await.unwrap();
    (rec.get("m").cloned().unwrap_or_default(), rec.get("g").cloned().unwrap_or_default())
}

/// AC2: replicas A and B share Redis; requests alternate; then token exchange fails for B
/// only: B's calls to `a` fail with an error naming it, B's `h` works, A keeps every backend,
/// the stored membership is unchanged, and A never drops its session.
#[tokio::test(flavor = "multi_thread")]
async fn ac2_two_replicas_and_an_exchange_failure_on_one() {
    let redis = RedisServer::start().await.unwrap();
    let idp = OidcProvider::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let cfg = config(&redis, idp.issuer(), &idp.token_url(), &a, &h);
    let gw_a = Gateway::start_with_env(&cfg, GOOD).await;
    let mut gw_b = Gateway::start_with_env(&cfg, GOOD).await;
    let raw = Raw {
        http: reqwest::Client::new(),
        token: idp.password_token("alice", "alice-pw", None).await.unwrap(),
    };
    let sid = raw.initialize(&gw_a.url()).await;
    for n in 0..6 {
        let url = if n % 2 == 0 { gw_b.url() } else { gw_a.url() };
        for tool in ["a_echo", "h_echo"] {
            let (s, v) = raw.call(&url, &sid, tool).await;
            assert_eq!(s, 200);
            assert!(
                v["result"]["content"][0]["text"].as_str().unwrap().ends_with(":echo:x"),
                "{tool} via {url}: {v}"
            );
        }
    }
    let before = stored(&redis, &sid).await;
    assert_eq!(before.0, r#"["a","h"]"#);

    // B now fails to exchange tokens (wrong client secret on B only).
    gw_b.stop("TERM");
    let gw_b = Gateway::start_with_env(&cfg, BAD_EXCHANGE).await;
    for _ in 0..3 {
        let (s, v) = raw.call(&gw_b.url(), &sid, "a_echo").await;
        assert_eq!(s, 200);
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("backend 'a'"), "B's call to a fails naming the backend: {v}");
        assert_eq!(v["error"]["data"]["backend"], "a");
        let (_, v) = raw.call(&gw_b.url(), &sid, "h_echo").await;
        assert_eq!(v["result"]["content"][0]["text"], "h:echo:x", "B's other backend works");
        let (_, v) = raw.call(&gw_a.url(), &sid, "a_echo").await;
        assert_eq!(v["result"]["content"][0]["text"], "a:echo:x", "A keeps every backend: {v}");
    }
    assert_eq!(
        stored(&redis, &sid).await,
        before,
        "the stored membership and generation are unchanged"
    );
    let (_, v) = raw.call(&gw_a.url(), &sid, "h_echo").await;
    assert_eq!(v["result"]["content"][0]["text"], "h:echo:x", "A never closed its session");
}

/// Security on the restore path: a fresh replica refuses another user's token (404) and a
/// request without a token (401) for alice's session; a refreshed token of alice works.
#[tokio::test(flavor = "multi_thread")]
async fn security_on_restore() {
    let redis = RedisServer::start().await.unwrap();
    let idp = OidcProvider::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let cfg = config(&redis, idp.issuer(), &idp.token_url(), &a, &h);
    let gw_a = Gateway::start_with_env(&cfg, GOOD).await;
    let alice = Raw {
        http: reqwest::Client::new(),
        token: idp.password_token("alice", "alice-pw", None).await.unwrap(),
    };
    let sid = alice.initialize(&gw_a.url()).await;
    let gw_b = Gateway::start_with_env(&cfg, GOOD).await;
    let bob = Raw {
        http: reqwest::Client::new(),
        token: idp.password_token("bob", "bob-pw", None).await.unwrap(),
    };
    assert_eq!(bob.call(&gw_b.url(), &sid, "h_echo").await.0, 404);
    let r = reqwest::Client::new()
        .post(gw_b.url())
        .header("mcp-session-id", &sid)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refreshed = Raw {
        http: reqwest::Client::new(),
        token: idp.password_token("alice", "alice-pw", None).await.unwrap(),
    };
    assert_ne!(refreshed.token, alice.token);
    let (s, v) = refreshed.call(&gw_b.url(), &sid, "a_echo").await;
    assert_eq!((s, v["result"]["content"][0]["text"].clone()), (200, json!("a:echo:x")), "{v}");
}

/// AC2 with the official SDK clients behind a round-robin balancer (no stickiness): every call
/// succeeds while both replicas are healthy; after B loses its token exchange, calls to `a`
/// that land on B fail naming `a`, the ones on A succeed, `h` always works, and the client
/// keeps its session throughout.
#[tokio::test(flavor = "multi_thread")]
async fn ac2_sdk_clients_alternating_through_a_balancer() {
    let redis = RedisServer::start().await.unwrap();
    let idp = OidcProvider::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let cfg = config(&redis, idp.issuer(), &idp.token_url(), &a, &h);
    let gw_a = Gateway::start_with_env(&cfg, GOOD).await;
    let mut gw_b = Gateway::start_with_env(&cfg, GOOD).await;
    let lb = vmcp_e2e::balancer::Balancer::start(vec![gw_a.port, gw_b.port]).await;
    let token = idp.password_token("alice", "alice-pw", None).await.unwrap();
    let mut clients = Vec::new();
    for sdk in [Sdk::Python, Sdk::TypeScript] {
        let mut c =
            Client::start(sdk, &lb.url(), &[format!("Authorization: Bearer {token}")]).await;
        c.ok(json!({"op": "initialize"})).await;
        for n in 0..4 {
            let r = c.ok(json!({"op": "call_tool", "name": "a_echo", "arguments": {"text": n.to_string()}})).await;
            assert_eq!(r["text"], format!("a:echo:{n}"), "{sdk:?}");
            let r = c.ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": n.to_string()}})).await;
            assert_eq!(r["text"], format!("h:echo:{n}"));
        }
        let sid = c.ok(json!({"op": "session_id"})).await;
        clients.push((c, sid));
    }
    gw_b.restart_with_env("TERM", BAD_EXCHANGE).await;
    for (c, sid) in clients.iter_mut() {
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..6 {
            let r = c
                .cmd(json!({"op": "call_tool", "name": "a_echo", "arguments": {"text": "x"}}))
                .await;
            if r["ok"] == true {
                assert_eq!(r["result"]["text"], "a:echo:x");
                ok += 1;
            } else {
                let e = r["error"].as_str().unwrap_or_default();
                assert!(e.contains("backend 'a'"), "{e}");
                failed += 1;
            }
        }
        for _ in 0..2 {
            let r = c
                .ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": "y"}}))
                .await;
            assert_eq!(r["text"], "h:echo:y", "h works on both replicas");
        }
        assert!(ok > 0 && failed > 0, "A serves a, B fails a: ok={ok} failed={failed}");
        assert_eq!(&c.ok(json!({"op": "session_id"})).await, sid, "the client kept its session");
    }
    for (c, _) in clients {
        c.exit().await;
    }
}
