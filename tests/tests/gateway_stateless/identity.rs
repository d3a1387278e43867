//! Stateless requests carry the live identity: each user's token is exchanged for the backend
//! (once per user, then cached per replica), and each user gets backend sessions of their own.

use std::collections::BTreeSet;

use serde_json::json;
use vmcp_e2e::gateway::Gateway;
use vmcp_e2e::oidc::{OidcProvider, unverified_claims as claims};
use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};

use super::{V, backend_sessions};

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
        assert_eq!(gw.metric(exchanges).await, (n + 1) as f64, "after {user}");
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
