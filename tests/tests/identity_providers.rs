//! Incoming token validation and outgoing token exchange against real OpenID providers:
//! the `oidc-provider` peer (one per test) and Keycloak (one per test process, shared).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use vmcp_e2e::keycloak::{ALICE_SUB, BOB_SUB, Keycloak};
use vmcp_e2e::oidc::{GATEWAY_CLIENT_ID, GATEWAY_CLIENT_SECRET, OidcProvider};
use vmcp_gateway::auth::incoming::{IncomingAuthError, OidcValidator};
use vmcp_gateway::auth::outgoing::{CredentialFactory, OutgoingAuthError};
use vmcp_gateway::auth::token_exchange::TokenExchangeFactory;
use vmcp_gateway::auth::{Identity, UserIdentity};
use vmcp_types::config::{OidcConfig, TokenExchangeAuth};

// ---- helpers -------------------------------------------------------------------------------

fn validator(issuer: &str, audience: &str) -> OidcValidator {
    let cfg: OidcConfig = serde_json::from_value(json!({ "issuer": issuer })).unwrap();
    OidcValidator::new(&cfg, audience, reqwest::Client::new()).unwrap()
}

/// A client secret file and the exchange configuration that reads it.
struct Exchange {
    _dir: tempfile::TempDir,
    secret: std::path::PathBuf,
}

impl Exchange {
    fn new(secret: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client-secret");
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        Self { _dir: dir, secret: path }
    }

    fn cfg(&self, token_url: &str, method: &str, audience: &str) -> TokenExchangeAuth {
        serde_json::from_value(json!({
            "tokenUrl": token_url,
            "clientId": GATEWAY_CLIENT_ID,
            "clientSecret": { "file": self.secret },
            "clientAuthMethod": method,
            "audience": audience,
        }))
        .unwrap()
    }
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
}

fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let h: Value = serde_json::from_slice(&B64.decode(header).unwrap()).unwrap();
    h["kid"].as_str().unwrap().to_owned()
}

/// The token with its payload's `sub` replaced and the signature kept.
fn tampered(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims(token);
    c["sub"] = json!("mallory");
    format!("{}.{}.{}", parts[0], B64.encode(serde_json::to_vec(&c).unwrap()), parts[2])
}

fn bearer(headers: &[(http::HeaderName, http::HeaderValue)]) -> String {
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0].0, http::header::AUTHORIZATION);
    headers[0].1.to_str().unwrap().strip_prefix("Bearer ").expect("a Bearer credential").to_owned()
}

async fn identity(v: &OidcValidator, token: &str) -> Identity {
    let user: UserIdentity = v.validate(token).await.expect("the user token validates");
    Identity::User(user)
}

// ---- oidc-provider -------------------------------------------------------------------------

#[tokio::test]
async fn oidc_password_token_validates() {
    let idp = OidcProvider::start().await.expect("start the oidc peer");
    let token = idp.password_token("alice", "alice-pw", None).await.unwrap();
    let v = validator(idp.issuer(), "vmcp-gateway");
    let user = v.validate(&token).await.unwrap_or_else(|e| panic!("{e}\n{}", idp.log_tail()));
    assert_eq!(user.issuer, idp.issuer());
    assert_eq!(user.subject, "alice-sub");
    assert_eq!(user.claims["preferred_username"], "alice");
    assert!(user.expires_at.is_some());
    assert_eq!(
        Identity::User(user).binding(),
        Identity::User(v.validate(&token).await.unwrap()).binding()
    );
}

#[tokio::test]
async fn oidc_rejects_wrong_audience_and_tampered_tokens() {
    let idp = OidcProvider::start().await.unwrap();
    let v = validator(idp.issuer(), "vmcp-gateway");
    let for_backend = idp.password_token("alice", "alice-pw", Some("backend-a")).await.unwrap();
    assert_eq!(v.validate(&for_backend).await.unwrap_err(), IncomingAuthError::WrongAudience);
    let token = idp.password_token("alice", "alice-pw", None).await.unwrap();
    assert_eq!(
        v.validate(&tampered(&token)).await.unwrap_err(),
        IncomingAuthError::InvalidSignature
    );
    let other_issuer = validator("http://127.0.0.1:1/not-this-one", "vmcp-gateway");
    assert!(matches!(
        other_issuer.validate(&token).await,
        Err(IncomingAuthError::ProviderUnavailable(_))
    ));
}

#[tokio::test]
async fn oidc_key_rotation_is_picked_up_without_restart() {
    let idp = OidcProvider::start().await.unwrap();
    let v = validator(idp.issuer(), "vmcp-gateway");
    let before = idp.password_token("alice", "alice-pw", None).await.unwrap();
    v.validate(&before).await.unwrap();
    let new_kid = idp.rotate_keys().await.unwrap();
    let after = idp.password_token("bob", "bob-pw", None).await.unwrap();
    assert_eq!(kid(&after), new_kid);
    assert_ne!(kid(&before), new_kid);
    let user = v.validate(&after).await.expect("the new kid is fetched on demand");
    assert_eq!(user.subject, "bob-sub");
    assert_eq!(v.jwks_fetches(), (2, 0), "one initial download, one re-fetch for the new kid");
    // The old key left the JWKS: tokens signed with it are no longer accepted.
    assert_eq!(v.validate(&before).await.unwrap_err(), IncomingAuthError::UnknownKey);
}

#[tokio::test]
async fn oidc_token_exchange_with_basic_and_post_client_auth() {
    let idp = OidcProvider::start().await.unwrap();
    let gateway = validator(idp.issuer(), "vmcp-gateway");
    let backend = validator(idp.issuer(), "backend-a");
    let alice =
        identity(&gateway, &idp.password_token("alice", "alice-pw", None).await.unwrap()).await;
    let ex = Exchange::new(GATEWAY_CLIENT_SECRET);
    let factory = TokenExchangeFactory::new(reqwest::Client::new());
    for method in ["client_secret_basic", "client_secret_post"] {
        let src = factory
            .token_exchange(&format!("a-{method}"), &ex.cfg(&idp.token_url(), method, "backend-a"))
            .unwrap();
        let token = bearer(
            &src.headers(&alice)
                .await
                .unwrap_or_else(|e| panic!("{method}: {e}\n{}", idp.log_tail())),
        );
        let exchanged =
            backend.validate(&token).await.expect("the exchanged token is valid for backend-a");
        assert_eq!(exchanged.subject, "alice-sub", "{method}");
        assert_eq!(exchanged.claims["aud"], "backend-a");
        assert_eq!(exchanged.claims["act"], json!({ "sub": GATEWAY_CLIENT_ID }));
        assert!(gateway.validate(&token).await.is_err(), "not a token for the gateway");
    }
    assert_eq!(factory.cache_stats(), (0, 2));
}

#[tokio::test]
async fn oidc_wrong_client_secret_is_an_oauth_error() {
    let idp = OidcProvider::start().await.unwrap();
    let gateway = validator(idp.issuer(), "vmcp-gateway");
    let alice =
        identity(&gateway, &idp.password_token("alice", "alice-pw", None).await.unwrap()).await;
    let ex = Exchange::new("not-the-secret");
    let factory = TokenExchangeFactory::new(reqwest::Client::new());
    for method in ["client_secret_basic", "client_secret_post"] {
        let src =
            factory.token_exchange(method, &ex.cfg(&idp.token_url(), method, "backend-a")).unwrap();
        let err = src.headers(&alice).await.unwrap_err();
        assert!(
            matches!(&err, OutgoingAuthError::Exchange { error, .. } if error == "invalid_client"),
            "{method}: {err:?}"
        );
        assert!(!err.to_string().contains("not-the-secret"));
    }
    // Anonymous callers never reach the IdP.
    let src = factory
        .token_exchange("anon", &ex.cfg(&idp.token_url(), "client_secret_basic", "backend-a"))
        .unwrap();
    assert!(matches!(src.headers(&Identity::Anonymous).await, Err(OutgoingAuthError::NoToken)));
}

#[tokio::test]
async fn oidc_idp_errors_are_mapped() {
    let idp = OidcProvider::start().await.unwrap();
    let gateway = validator(idp.issuer(), "vmcp-gateway");
    let alice =
        identity(&gateway, &idp.password_token("alice", "alice-pw", None).await.unwrap()).await;
    let ex = Exchange::new(GATEWAY_CLIENT_SECRET);
    let factory = TokenExchangeFactory::new(reqwest::Client::new());
    let c = factory
        .token_exchange("c", &ex.cfg(&idp.token_url(), "client_secret_basic", "backend-c"))
        .unwrap();
    let err = c.headers(&alice).await.unwrap_err();
    assert!(
        matches!(&err, OutgoingAuthError::Exchange { error, description: Some(_) } if error == "invalid_target"),
        "{err:?}"
    );
    idp.fail_exchange("backend-b", "temporarily_unavailable", 503, Some(1)).await.unwrap();
    let b = factory
        .token_exchange("b", &ex.cfg(&idp.token_url(), "client_secret_basic", "backend-b"))
        .unwrap();
    let err = b.headers(&alice).await.unwrap_err();
    assert!(
        matches!(&err, OutgoingAuthError::Exchange { error, .. } if error == "temporarily_unavailable"),
        "{err:?}"
    );
    // Negative cache: the same error for a few seconds without asking the IdP again.
    let again = b.headers(&alice).await.unwrap_err();
    assert_eq!(again.to_string(), err.to_string());
    let m = factory.metrics();
    assert_eq!((m.idp_requests("c", "error"), m.idp_requests("b", "error")), (1, 1));
}

#[tokio::test]
async fn oidc_cached_exchanged_token_survives_provider_outage() {
    let mut idp = OidcProvider::start().await.unwrap();
    let gateway = validator(idp.issuer(), "vmcp-gateway");
    let alice =
        identity(&gateway, &idp.password_token("alice", "alice-pw", None).await.unwrap()).await;
    let bob = identity(&gateway, &idp.password_token("bob", "bob-pw", None).await.unwrap()).await;
    let ex = Exchange::new(GATEWAY_CLIENT_SECRET);
    let factory = Arc::new(TokenExchangeFactory::new(reqwest::Client::new()));
    let src = factory
        .token_exchange("a", &ex.cfg(&idp.token_url(), "client_secret_basic", "backend-a"))
        .unwrap();
    let first = src.headers(&alice).await.unwrap();
    idp.stop();
    assert_eq!(
        src.headers(&alice).await.unwrap(),
        first,
        "served from the cache while the IdP is down"
    );
    assert_eq!(factory.cache_stats(), (1, 1));
    let err = src.headers(&bob).await.unwrap_err();
    assert!(
        matches!(&err, OutgoingAuthError::Exchange { error, .. } if error.starts_with("transport")),
        "{err:?}"
    );
}

// ---- Keycloak ------------------------------------------------------------------------------

async fn keycloak() -> &'static Keycloak {
    let kc = Keycloak::shared().await.expect("start Keycloak");
    eprintln!("Keycloak at {} (started in {:.1} s)", kc.base_url(), kc.started_in().as_secs_f64());
    kc
}

#[tokio::test]
async fn keycloak_password_token_validates() {
    let kc = keycloak().await;
    let token = kc.password_token("alice", "alice-pw").await.unwrap();
    let v = validator(&kc.issuer(), "vmcp-gateway");
    let user = v.validate(&token).await.unwrap();
    assert_eq!(user.issuer, kc.issuer());
    assert_eq!(user.subject, ALICE_SUB);
    assert_eq!(user.claims["azp"], "vmcp-cli");
    // Keycloak's JWKS also lists an `enc` key; it is ignored, not an error.
    assert_eq!(v.jwks_fetches(), (1, 0));
}

#[tokio::test]
async fn keycloak_rejects_wrong_audience_and_tampered_tokens() {
    let kc = keycloak().await;
    let token = kc.password_token("bob", "bob-pw").await.unwrap();
    let as_backend = validator(&kc.issuer(), "backend-a");
    assert_eq!(as_backend.validate(&token).await.unwrap_err(), IncomingAuthError::WrongAudience);
    let v = validator(&kc.issuer(), "vmcp-gateway");
    assert_eq!(
        v.validate(&tampered(&token)).await.unwrap_err(),
        IncomingAuthError::InvalidSignature
    );
    assert_eq!(v.validate(&token).await.unwrap().subject, BOB_SUB);
}

#[tokio::test]
async fn keycloak_key_rotation_is_picked_up_without_restart() {
    let kc = keycloak().await;
    let v = validator(&kc.issuer(), "vmcp-gateway");
    let before = kc.password_token("alice", "alice-pw").await.unwrap();
    v.validate(&before).await.unwrap();
    let new_kid = kc.rotate_keys().await.unwrap();
    let after = kc.password_token("alice", "alice-pw").await.unwrap();
    assert_eq!(kid(&after), new_kid);
    assert_ne!(kid(&before), new_kid);
    v.validate(&after).await.expect("the new kid is fetched on demand");
    assert_eq!(v.jwks_fetches(), (2, 0));
    v.validate(&before).await.expect("the old key is still published");
}

#[tokio::test]
async fn keycloak_token_exchange_with_basic_and_post_client_auth() {
    let kc = keycloak().await;
    let gateway = validator(&kc.issuer(), "vmcp-gateway");
    let backend = validator(&kc.issuer(), "backend-a");
    let alice = identity(&gateway, &kc.password_token("alice", "alice-pw").await.unwrap()).await;
    let ex = Exchange::new(GATEWAY_CLIENT_SECRET);
    let factory = TokenExchangeFactory::new(reqwest::Client::new());
    for method in ["client_secret_basic", "client_secret_post"] {
        let src = factory
            .token_exchange(&format!("a-{method}"), &ex.cfg(&kc.token_url(), method, "backend-a"))
            .unwrap();
        let token = bearer(&src.headers(&alice).await.unwrap_or_else(|e| panic!("{method}: {e}")));
        let exchanged =
            backend.validate(&token).await.expect("the exchanged token is valid for backend-a");
        assert_eq!(exchanged.subject, ALICE_SUB, "{method}");
        assert_eq!(exchanged.claims["aud"], "backend-a");
        assert_eq!(exchanged.claims["azp"], GATEWAY_CLIENT_ID);
        // A second call is a cache hit.
        assert_eq!(bearer(&src.headers(&alice).await.unwrap()), token);
    }
    assert_eq!(factory.cache_stats(), (2, 2));
}

#[tokio::test]
async fn keycloak_wrong_client_secret_is_an_oauth_error() {
    let kc = keycloak().await;
    let gateway = validator(&kc.issuer(), "vmcp-gateway");
    let alice = identity(&gateway, &kc.password_token("alice", "alice-pw").await.unwrap()).await;
    let ex = Exchange::new("not-the-secret");
    let factory = TokenExchangeFactory::new(reqwest::Client::new());
    for method in ["client_secret_basic", "client_secret_post"] {
        let src =
            factory.token_exchange(method, &ex.cfg(&kc.token_url(), method, "backend-a")).unwrap();
        let err = src.headers(&alice).await.unwrap_err();
        assert!(
            matches!(&err, OutgoingAuthError::Exchange { error, .. } if error == "unauthorized_client"),
            "{method}: {err:?}"
        );
    }
    // An audience that is not allowed for the gateway.
    let ok = Exchange::new(GATEWAY_CLIENT_SECRET);
    let c = factory
        .token_exchange("c", &ok.cfg(&kc.token_url(), "client_secret_basic", "backend-c"))
        .unwrap();
    let err = c.headers(&alice).await.unwrap_err();
    assert!(
        matches!(&err, OutgoingAuthError::Exchange { error, .. } if error == "invalid_request"),
        "{err:?}"
    );
}
