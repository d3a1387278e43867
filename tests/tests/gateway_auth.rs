//! Identity through the gateway, against real OpenID providers (oidc-provider and Keycloak),
//! official-SDK backends that record the headers they receive, and SDK clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::StatusCode;
use serde_json::{Value, json};
use vmcp_e2e::gateway::Gateway;
use vmcp_e2e::keycloak::Keycloak;
use vmcp_e2e::oidc::{OidcOptions, OidcProvider, unverified_claims as claims};
use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};

fn gateway_config(
    issuer: &str,
    token_url: &str,
    a: &Backend,
    h: &Backend,
    port_hint: &str,
) -> String {
    format!(
        "resourceUrl: {port_hint}\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {issuer}\n    audience: vmcp-gateway\n    scopes: [openid]\n    leeway: 1s\nbackends:\n  - name: a\n    url: {}\n    auth:\n      type: tokenExchange\n      tokenExchange:\n        tokenUrl: {token_url}\n        clientId: vmcp-gateway\n        clientSecret: {{ env: GW_CLIENT_SECRET }}\n        audience: backend-a\n  - name: h\n    url: {}\n    auth:\n      type: headerInjection\n      headerInjection:\n        headerName: X-Api-Key\n        value: {{ env: H_API_KEY }}\n",
        a.url(),
        h.url()
    )
}

const ENV: &[(&str, &str)] = &[("GW_CLIENT_SECRET", "gateway-secret"), ("H_API_KEY", "k-123")];

async fn post_init(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut rb = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}).to_string());
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    rb.send().await.unwrap()
}

/// Calls the backends through an SDK client with the user's token and checks what arrived.
async fn assert_identity_flow(
    gw: &Gateway,
    a: &Backend,
    h: &Backend,
    user_token: &str,
    sdk: Sdk,
) -> Client {
    let mut c =
        Client::start(sdk, &gw.url(), &[format!("Authorization: Bearer {user_token}")]).await;
    c.ok(json!({"op": "initialize"})).await;
    let got = c.ok(json!({"op": "call_tool", "name": "a_whoami", "arguments": {}})).await;
    let auth = got["text"].as_str().unwrap().to_owned();
    let exchanged = auth.strip_prefix("Bearer ").unwrap_or_else(|| panic!("backend a got {auth}"));
    assert_ne!(exchanged, user_token, "the user's own token must never reach a backend");
    let (user, backend) = (claims(user_token), claims(exchanged));
    assert_eq!(backend["sub"], user["sub"], "exchanged token is for the same user");
    let aud = &backend["aud"];
    assert!(
        aud == "backend-a" || aud.as_array().is_some_and(|a| a.contains(&json!("backend-a"))),
        "aud {aud}"
    );
    let got = c.ok(json!({"op": "call_tool", "name": "h_whoami", "arguments": {}})).await;
    assert_eq!(got["text"], "none", "headerInjection sends no Authorization");
    let hreqs = h.requests();
    assert!(hreqs.iter().any(|r| r["headers"]["x-api-key"] == "k-123"), "h got its secret header");
    for r in a.requests().iter().chain(hreqs.iter()) {
        let sent = r["authorization"].as_str().unwrap_or_default();
        assert!(!sent.contains(user_token), "a backend received the user's token: {r}");
    }
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_provider_through_gateway() {
    let mut idp =
        OidcProvider::start_with(OidcOptions { keep_old_keys: false, ..Default::default() })
            .await
            .unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let port = vmcp_e2e::ports::free_port().unwrap();
    let _ = port;
    let gw = Gateway::start_with_env(
        &gateway_config(idp.issuer(), &idp.token_url(), &a, &h, "http://127.0.0.1:4483/mcp"),
        ENV,
    )
    .await;
    let url = gw.url();

    // No token: 401 with the RFC 9728 challenge.
    let r = post_init(&url, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer resource_metadata=\"http://127.0.0.1:4483/.well-known/oauth-protected-resource/mcp\""), "{challenge}");
    assert!(!challenge.contains("invalid_token"), "no token presented: {challenge}");

    // Metadata documents.
    for path in
        ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"]
    {
        let m: Value = reqwest::get(format!("http://127.0.0.1:{}{path}", gw.port))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(m["resource"], "http://127.0.0.1:4483/mcp", "{m}");
        assert_eq!(m["authorization_servers"][0], idp.issuer());
        assert_eq!(m["bearer_methods_supported"], json!(["header"]));
        assert_eq!(m["scopes_supported"], json!(["openid"]));
    }

    // Bad tokens: 401 with error="invalid_token".
    let good = idp.password_token("alice", "alice-pw", None).await.unwrap();
    let wrong_aud = idp.password_token("alice", "alice-pw", Some("backend-a")).await.unwrap();
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut payload = claims(&good);
    payload["sub"] = json!("mallory");
    let tampered = format!("{}.{}.{}", parts[0], B64.encode(payload.to_string()), parts[2]);
    let none = format!("{}.{}.", B64.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    parts[2] = parts[2].chars().rev().collect();
    let bad_sig = parts.join(".");
    let other = OidcProvider::start().await.unwrap();
    let wrong_issuer = other.password_token("alice", "alice-pw", None).await.unwrap();
    for (what, t) in [
        ("wrong audience", &wrong_aud),
        ("tampered", &tampered),
        ("alg none", &none),
        ("bad signature", &bad_sig),
        ("wrong issuer", &wrong_issuer),
    ] {
        let r = post_init(&url, Some(t)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        let c = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            c.contains("error=\"invalid_token\"") && c.contains("resource_metadata="),
            "{what}: {c}"
        );
    }
    // Expired: a provider issuing 2-second tokens.
    let short = OidcProvider::start_with(OidcOptions { access_ttl: Some(2), ..Default::default() })
        .await
        .unwrap();
    let gw_short = Gateway::start_with_env(
        &gateway_config(short.issuer(), &short.token_url(), &a, &h, "http://127.0.0.1:4483/mcp"),
        ENV,
    )
    .await;
    let expiring = short.password_token("alice", "alice-pw", None).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let r = post_init(&gw_short.url(), Some(&expiring)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "expired");
    // A token in the query string is refused.
    let r = reqwest::Client::new()
        .post(format!("{url}?access_token={good}"))
        .bearer_auth(&good)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), StatusCode::OK);

    // The real flow with both SDK clients.
    let mut c = assert_identity_flow(&gw, &a, &h, &good, Sdk::Python).await;
    assert_identity_flow(&gw, &a, &h, &good, Sdk::TypeScript).await.exit().await;

    // Another user's valid token on alice's session → 404; a refreshed token for alice keeps it.
    let sid = c.ok(json!({"op": "session_id"})).await;
    let bob = idp.password_token("bob", "bob-pw", None).await.unwrap();
    let r = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&bob)
        .header("mcp-session-id", sid.as_str().or(sid["sessionId"].as_str()).unwrap())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Key rotation at the provider is picked up without a restart.
    idp.rotate_keys().await.unwrap();
    // Unknown-kid re-fetches are rate limited (10 s); the wrong-issuer token above used one.
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let fresh = idp.password_token("alice", "alice-pw", None).await.unwrap();
    c.ok(json!({"op": "set_header", "name": "Authorization", "value": format!("Bearer {fresh}")}))
        .await;
    let got =
        c.ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": "rotated"}})).await;
    assert_eq!(got["text"], "h:echo:rotated");
    assert_eq!(c.ok(json!({"op": "session_id"})).await, sid, "a refreshed token keeps the session");
    let got = c.ok(json!({"op": "call_tool", "name": "a_whoami", "arguments": {}})).await;
    assert!(got["text"].as_str().unwrap().starts_with("Bearer "));

    // Provider stopped: the cached exchanged token keeps working.
    idp.stop();
    let got = c.ok(json!({"op": "call_tool", "name": "a_whoami", "arguments": {}})).await;
    assert!(got["text"].as_str().unwrap().starts_with("Bearer "), "{got}");
    c.exit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keycloak_through_gateway() {
    let kc = Keycloak::shared().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let gw = Gateway::start_with_env(
        &gateway_config(&kc.issuer(), &kc.token_url(), &a, &h, "http://127.0.0.1:4483/mcp"),
        ENV,
    )
    .await;
    let r = post_init(&gw.url(), None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let alice = kc.password_token("alice", "alice-pw").await.unwrap();
    let c = assert_identity_flow(&gw, &a, &h, &alice, Sdk::Python).await;
    c.exit().await;
    assert_identity_flow(&gw, &a, &h, &alice, Sdk::TypeScript).await.exit().await;
    // A wrong client secret: the token-exchange backend fails with an error naming it and the
    // OAuth error; the header backend keeps working.
    let env = [("GW_CLIENT_SECRET", "wrong"), ("H_API_KEY", "k-123")];
    let gw_bad = Gateway::start_with_env(
        &gateway_config(&kc.issuer(), &kc.token_url(), &a, &h, "http://127.0.0.1:4483/mcp"),
        &env,
    )
    .await;
    let mut c =
        Client::start(Sdk::Python, &gw_bad.url(), &[format!("Authorization: Bearer {alice}")])
            .await;
    c.ok(json!({"op": "initialize"})).await;
    let r = c.ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": "ok"}})).await;
    assert_eq!(r["text"], "h:echo:ok");
    let r = c.cmd(json!({"op": "call_tool", "name": "a_whoami", "arguments": {}})).await;
    assert_eq!(r["ok"], false, "{r}");
    let e = r["error"].as_str().unwrap();
    assert!(
        e.contains("backend 'a'")
            && (e.contains("unauthorized_client") || e.contains("invalid_client")),
        "{e}"
    );
    c.exit().await;
}

/// With the provider stopped, a cached exchanged token keeps working until it expires; then
/// the token-exchange backend reports a clear error naming it, and the other backend works.
#[tokio::test(flavor = "multi_thread")]
async fn cached_exchange_outlives_the_provider_until_it_expires() {
    let mut idp =
        OidcProvider::start_with(OidcOptions { exchange_ttl: Some(4), ..Default::default() })
            .await
            .unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let gw = Gateway::start_with_env(
        &gateway_config(idp.issuer(), &idp.token_url(), &a, &h, "http://127.0.0.1:4483/mcp"),
        ENV,
    )
    .await;
    let token = idp.password_token("alice", "alice-pw", None).await.unwrap();
    let mut c =
        Client::start(Sdk::Python, &gw.url(), &[format!("Authorization: Bearer {token}")]).await;
    c.ok(json!({"op": "initialize"})).await;
    let first = c.ok(json!({"op": "call_tool", "name": "a_whoami", "arguments": {}})).await;
    // Validation keys are cached too, so incoming tokens still validate.
    idp.stop();
    let cached = c.ok(json!({"op": "call_tool", "name": "a_whoami", "arguments": {}})).await;
    assert_eq!(cached["text"], first["text"], "the cached exchanged token is reused");
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let r = c.cmd(json!({"op": "call_tool", "name": "a_whoami", "arguments": {}})).await;
    assert_eq!(r["ok"], false, "{r}");
    let e = r["error"].as_str().unwrap();
    assert!(e.contains("backend 'a'") && e.contains("token exchange failed"), "{e}");
    let r =
        c.ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": "still"}})).await;
    assert_eq!(r["text"], "h:echo:still");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            "vmcp_token_exchange_idp_duration_seconds_count{backend=\"a\",outcome=\"ok\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "vmcp_token_exchange_idp_duration_seconds_count{backend=\"a\",outcome=\"error\"}"
        ),
        "{metrics}"
    );
    c.exit().await;
}

/// L13: a `tokenUrl` that is not the issuer's discovered token endpoint never receives a
/// user's token: the call fails with an error naming the backend, the other backend works,
/// and nothing connects to that URL. Listing it in `outbound.allowedTokenUrls` opts in.
#[tokio::test(flavor = "multi_thread")]
async fn token_url_other_than_the_issuers_gets_no_token_unless_allowed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let idp = OidcProvider::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    // A "token endpoint" that collects whatever reaches it.
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collected = format!("http://{}/token", collector.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = collector.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(sock);
        }
    });
    let token = idp.password_token("alice", "alice-pw", None).await.unwrap();
    let config = gateway_config(idp.issuer(), &collected, &a, &h, "http://127.0.0.1:4483/mcp");
    let gw = Gateway::start_with_env(&config, ENV).await;
    let mut c =
        Client::start(Sdk::Python, &gw.url(), &[format!("Authorization: Bearer {token}")]).await;
    c.ok(json!({"op": "initialize"})).await;
    let r = c.cmd(json!({"op": "call_tool", "name": "a_whoami", "arguments": {}})).await;
    assert_eq!(r["ok"], false, "{r}");
    let e = r["error"].as_str().unwrap();
    assert!(e.contains("backend 'a'") && e.contains("not allowed"), "{e}");
    assert!(e.contains(&idp.token_url()), "names the allowed endpoint: {e}");
    let r = c.ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": "ok"}})).await;
    assert_eq!(r["text"], "h:echo:ok");
    c.exit().await;
    assert_eq!(connections.load(Ordering::SeqCst), 0, "the user's token went to {collected}");

    // Opted in by the gateway's own configuration: the exchange is attempted there.
    let allowed = format!("{config}outbound:\n  allowedTokenUrls: [\"{collected}\"]\n");
    let gw = Gateway::start_with_env(&allowed, ENV).await;
    let mut c =
        Client::start(Sdk::Python, &gw.url(), &[format!("Authorization: Bearer {token}")]).await;
    c.ok(json!({"op": "initialize"})).await;
    let r = c.cmd(json!({"op": "call_tool", "name": "a_whoami", "arguments": {}})).await;
    assert_eq!(r["ok"], false, "the collector is no token endpoint: {r}");
    assert!(connections.load(Ordering::SeqCst) >= 1, "the allowed URL was not used");
    c.exit().await;
}

/// L6: a Keycloak ID token (payload `typ: ID`) whose `aud` is the configured audience (the
/// client id) is refused like any non-access token; it used to open a session.
#[tokio::test(flavor = "multi_thread")]
async fn keycloak_id_token_is_not_an_access_token() {
    let kc = Keycloak::shared().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let form = [
        ("grant_type", "password"),
        ("client_id", "vmcp-cli"),
        ("username", "alice"),
        ("password", "alice-pw"),
        ("scope", "openid"),
    ];
    let (status, body) = kc.token_request(&form).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let id_token = body["id_token"].as_str().unwrap().to_owned();
    let c = claims(&id_token);
    assert_eq!(c["typ"], "ID", "{c}");
    assert!(
        c["aud"] == "vmcp-cli"
            || c["aud"].as_array().is_some_and(|a| a.contains(&json!("vmcp-cli"))),
        "{c}"
    );
    // A gateway whose audience is that client id, as many deployments configure it.
    let config = gateway_config(&kc.issuer(), &kc.token_url(), &a, &h, "http://127.0.0.1:4483/mcp")
        .replace("    audience: vmcp-gateway\n", "    audience: vmcp-cli\n");
    assert!(config.contains("audience: vmcp-cli"), "{config}");
    let gw = Gateway::start_with_env(&config, ENV).await;
    let r = post_init(&gw.url(), Some(&id_token)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "an ID token opened a session");
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.contains("invalid_token"), "{challenge}");
}

/// Issue 16: the token-exchange client secret is re-read from its file. A gateway whose file
/// holds a stale secret (the provider refuses it) uses the right one as soon as the file
/// changes, on the same session and without a restart (what a rotated, mounted Secret does).
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_client_secret_file_is_used_without_a_restart() {
    let idp = OidcProvider::start().await.unwrap();
    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "stale-secret\n").unwrap();
    let config =
        gateway_config(idp.issuer(), &idp.token_url(), &a, &h, "http://127.0.0.1:4483/mcp")
            .replace("{ env: GW_CLIENT_SECRET }", &format!("{{ file: {} }}", secret.display()));
    let gw = Gateway::start_with_env(&config, ENV).await;
    let pid = gw.pid();
    let token = idp.password_token("alice", "alice-pw", None).await.unwrap();
    let mut c =
        Client::start(Sdk::Python, &gw.url(), &[format!("Authorization: Bearer {token}")]).await;
    let session = c.ok(json!({"op": "initialize"})).await["sessionId"].clone();
    let r = c.cmd(json!({"op": "call_tool", "name": "a_whoami", "arguments": {}})).await;
    assert_eq!(r["ok"], false, "the provider must refuse the stale secret: {r}");

    std::fs::write(&secret, "gateway-secret\n").unwrap();
    let start = std::time::Instant::now();
    let got = loop {
        let r = c.cmd(json!({"op": "call_tool", "name": "a_whoami", "arguments": {}})).await;
        if r["ok"] == true {
            break r["result"]["text"].as_str().unwrap().to_owned();
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "still failing: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    let exchanged = got.strip_prefix("Bearer ").unwrap_or_else(|| panic!("backend a got {got}"));
    assert_ne!(exchanged, token);
    assert_eq!(claims(exchanged)["sub"], claims(&token)["sub"]);
    let r = c.ok(json!({"op": "session_id"})).await;
    assert_eq!(r["sessionId"], session, "the session was kept");
    let r = c.ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": "x"}})).await;
    assert_eq!(r["text"], "h:echo:x");
    assert_eq!(gw.pid(), pid, "no restart");
    c.exit().await;
}
