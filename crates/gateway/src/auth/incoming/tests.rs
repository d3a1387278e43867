//! Unit tests of the validator against a hand-made issuer on 127.0.0.1 (keys generated here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use vmcp_types::config::OidcConfig;

use super::*;
use crate::clock::{Clock, ManualClock};

struct Key {
    kid: String,
    enc: EncodingKey,
    public: [u8; 32],
    jwk: Value,
}

fn ed_key(kid: &str) -> Key {
    let seed: [u8; 32] = rand::random();
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410).
    let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
    der.extend_from_slice(&seed);
    let jwk = json!({"kty":"OKP","crv":"Ed25519","x":B64.encode(public),"kid":kid,"use":"sig","alg":"EdDSA"});
    Key { kid: kid.into(), enc: EncodingKey::from_ed_der(&der), public, jwk }
}

#[derive(Default)]
struct IdpState {
    issuer: Mutex<String>,
    keys: Mutex<Vec<Value>>,
    /// JWKS requests so far (a watch, so a test can await a background download).
    jwks_hits: tokio::sync::watch::Sender<usize>,
    discovery_hits: AtomicUsize,
    fail: AtomicBool,
    /// JWKS answers wait while a test holds this for writing.
    jwks_hold: tokio::sync::RwLock<()>,
}

struct Idp {
    issuer: String,
    state: Arc<IdpState>,
    _task: tokio::task::JoinHandle<()>,
}

async fn discovery(State(s): State<Arc<IdpState>>) -> Result<Json<Value>, StatusCode> {
    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
    if s.fail.load(Ordering::SeqCst) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    let iss = s.issuer.lock().clone();
    Ok(Json(
        json!({"issuer": iss, "jwks_uri": format!("{iss}/jwks"), "token_endpoint": format!("{iss}/token")}),
    ))
}

async fn jwks(State(s): State<Arc<IdpState>>) -> Result<Json<Value>, StatusCode> {
    s.jwks_hits.send_modify(|n| *n += 1);
    drop(s.jwks_hold.read().await);
    if s.fail.load(Ordering::SeqCst) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(Json(json!({"keys": *s.keys.lock()})))
}

async fn introspect(headers: HeaderMap, Form(f): Form<Vec<(String, String)>>) -> Json<Value> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    // client id "gw client" and secret "s&cret": form-urlencoded before base64 (RFC 6749 §2.3.1).
    let expected =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("gw+client:s%26cret"));
    let token = f.iter().find(|(k, _)| k == "token").map(|(_, v)| v.as_str()).unwrap_or_default();
    if auth != expected {
        return Json(json!({"active": false}));
    }
    let now = now();
    Json(match token {
        "opaque-good" => {
            json!({"active":true,"sub":"opaque-user","aud":["other","gw"],"exp":now+300})
        }
        "opaque-wrong-aud" => {
            json!({"active":true,"sub":"opaque-user","aud":"other","exp":now+300})
        }
        _ => json!({"active": false}),
    })
}

impl Idp {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(IdpState::default());
        *state.issuer.lock() = issuer.clone();
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/introspect", post(introspect))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { issuer, state, _task: task }
    }

    fn publish(&self, k: &Key) {
        self.state.keys.lock().push(k.jwk.clone());
    }

    fn jwks_hits(&self) -> usize {
        *self.state.jwks_hits.borrow()
    }

    /// Waits (for real I/O, not for time) until `n` JWKS requests have arrived.
    async fn jwks_hits_reach(&self, n: usize) {
        let mut hits = self.state.jwks_hits.subscribe();
        let reached = tokio::time::timeout(Duration::from_secs(10), hits.wait_for(|h| *h >= n));
        assert!(reached.await.is_ok(), "{} JWKS requests, expected {n}", self.jwks_hits());
    }

    fn config(&self, extra: Value) -> OidcConfig {
        let mut c = json!({"issuer": self.issuer});
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        serde_json::from_value(c).unwrap()
    }

    fn validator(&self) -> OidcValidator {
        OidcValidator::new(&self.config(json!({})), "gw", reqwest::Client::new()).unwrap()
    }

    /// A validator whose refresh, re-fetch and retry timing follows the returned hand.
    fn validator_on_manual_clock(
        &self,
        extra: Value,
        opts: ValidatorOptions,
    ) -> (OidcValidator, Arc<ManualClock>) {
        let (clock, hand) = Clock::manual();
        let cfg = self.config(extra);
        let v = OidcValidator::with_clock(&cfg, "gw", reqwest::Client::new(), opts, clock).unwrap();
        (v, hand)
    }

    fn claims(&self) -> Value {
        let now = now();
        json!({"iss": self.issuer, "sub": "alice", "aud": "gw", "exp": now + 300, "iat": now})
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn sign(k: &Key, claims: &Value) -> String {
    sign_typ(k, claims, Some("at+jwt"))
}

fn sign_typ(k: &Key, claims: &Value, typ: Option<&str>) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(k.kid.clone());
    h.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &k.enc).unwrap()
}

fn with(mut base: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

#[tokio::test]
async fn accepts_a_valid_token() {
    let idp = Idp::start().await;
    let k = ed_key("k1");
    idp.publish(&k);
    let v = idp.validator();
    let id = v.validate(&sign(&k, &idp.claims())).await.unwrap();
    assert_eq!(id.issuer, idp.issuer);
    assert_eq!(id.subject, "alice");
    assert!(id.expires_at.is_some());
    assert_eq!(id.claims["aud"], "gw");
    // typ JWT and no typ are accepted too; aud may be an array.
    v.validate(&sign_typ(&k, &idp.claims(), Some("JWT"))).await.unwrap();
    v.validate(&sign_typ(&k, &idp.claims(), None)).await.unwrap();
    v.validate(&sign(&k, &with(idp.claims(), json!({"aud": ["x", "gw"]})))).await.unwrap();
    assert_eq!(idp.state.discovery_hits.load(Ordering::SeqCst), 1);
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn rejects_bad_claims() {
    let idp = Idp::start().await;
    let k = ed_key("k1");
    idp.publish(&k);
    let v = idp.validator();
    let t = now();
    let case = |patch: Value| sign(&k, &with(idp.claims(), patch));
    assert_eq!(
        v.validate(&case(json!({"exp": t - 120}))).await.unwrap_err(),
        IncomingAuthError::Expired
    );
    v.validate(&case(json!({"exp": t - 10}))).await.expect("within the 30 s leeway");
    assert_eq!(
        v.validate(&case(json!({"nbf": t + 120}))).await.unwrap_err(),
        IncomingAuthError::NotYetValid
    );
    v.validate(&case(json!({"nbf": t + 10}))).await.expect("within the leeway");
    assert_eq!(
        v.validate(&case(json!({"aud": "other"}))).await.unwrap_err(),
        IncomingAuthError::WrongAudience
    );
    assert_eq!(
        v.validate(&case(json!({"aud": ["a", "b"]}))).await.unwrap_err(),
        IncomingAuthError::WrongAudience
    );
    assert_eq!(
        v.validate(&case(json!({"aud": null}))).await.unwrap_err(),
        IncomingAuthError::WrongAudience
    );
    assert_eq!(
        v.validate(&case(json!({"iss": "https://evil"}))).await.unwrap_err(),
        IncomingAuthError::WrongIssuer
    );
    assert_eq!(
        v.validate(&case(json!({"iss": [idp.issuer.clone()]}))).await.unwrap_err(),
        IncomingAuthError::WrongIssuer
    );
    assert!(matches!(
        v.validate(&case(json!({"sub": null}))).await,
        Err(IncomingAuthError::Malformed(_))
    ));
    assert!(matches!(
        v.validate(&case(json!({"exp": null}))).await,
        Err(IncomingAuthError::Malformed(_))
    ));
    assert!(matches!(
        v.validate(&sign_typ(&k, &idp.claims(), Some("dpop+jwt"))).await,
        Err(IncomingAuthError::Malformed(_))
    ));
    assert!(matches!(v.validate("not-a-jwt").await, Err(IncomingAuthError::Malformed(_))));
}

#[tokio::test]
async fn rejects_tampered_and_forged_tokens() {
    let idp = Idp::start().await;
    let k = ed_key("k1");
    idp.publish(&k);
    let v = idp.validator();
    let good = sign(&k, &idp.claims());
    let parts: Vec<&str> = good.split('.').collect();

    // Payload swapped, signature kept.
    let evil =
        B64.encode(serde_json::to_vec(&with(idp.claims(), json!({"sub": "mallory"}))).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], evil, parts[2]);
    assert_eq!(v.validate(&tampered).await.unwrap_err(), IncomingAuthError::InvalidSignature);

    // One signature byte flipped.
    let mut sig = B64.decode(parts[2]).unwrap();
    sig[5] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig));
    assert_eq!(v.validate(&flipped).await.unwrap_err(), IncomingAuthError::InvalidSignature);

    // Signed by a key that is not published but reuses the published kid.
    let other = Key { kid: "k1".into(), ..ed_key("k1") };
    assert_eq!(
        v.validate(&sign(&other, &idp.claims())).await.unwrap_err(),
        IncomingAuthError::InvalidSignature
    );

    // alg none.
    let none_header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let none = format!("{none_header}.{}.", parts[1]);
    assert!(
        matches!(v.validate(&none).await, Err(IncomingAuthError::AlgorithmNotAllowed(a)) if a == "none")
    );

    // HS256 keyed with the public key (the classic algorithm-confusion attack), both with the
    // raw key bytes and with the JWK text as the secret.
    for secret in [
        k.public.to_vec(),
        serde_json::to_vec(&k.jwk).unwrap(),
        k.jwk["x"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let forged =
            jsonwebtoken::encode(&h, &idp.claims(), &EncodingKey::from_secret(&secret)).unwrap();
        assert!(
            matches!(v.validate(&forged).await, Err(IncomingAuthError::AlgorithmNotAllowed(a)) if a == "HS256")
        );
    }
    // And HMAC can not be switched on by configuration.
    let cfg = idp.config(json!({"algorithms": ["HS256"]}));
    assert!(matches!(
        OidcValidator::new(&cfg, "gw", reqwest::Client::new()),
        Err(IncomingAuthError::Config(_))
    ));
    let cfg = idp.config(json!({"algorithms": ["none"]}));
    assert!(matches!(
        OidcValidator::new(&cfg, "gw", reqwest::Client::new()),
        Err(IncomingAuthError::Config(_))
    ));
    // An algorithm off the configured list.
    let cfg = idp.config(json!({"algorithms": ["RS256"]}));
    let rs_only = OidcValidator::new(&cfg, "gw", reqwest::Client::new()).unwrap();
    assert!(
        matches!(rs_only.validate(&good).await, Err(IncomingAuthError::AlgorithmNotAllowed(a)) if a == "EdDSA")
    );
}

#[tokio::test]
async fn unknown_kid_triggers_one_rate_limited_refetch() {
    let idp = Idp::start().await;
    let k1 = ed_key("k1");
    idp.publish(&k1);
    let v = idp.validator();
    v.validate(&sign(&k1, &idp.claims())).await.unwrap();
    assert_eq!(idp.jwks_hits(), 1);

    // Rotation: the provider publishes k2 and signs with it. Many concurrent requests with the
    // new kid, all waiting while the download is held up, cause exactly one download.
    let k2 = ed_key("k2");
    idp.publish(&k2);
    let hold = idp.state.jwks_hold.write().await;
    let token = sign(&k2, &idp.claims());
    let (results, ()) =
        tokio::join!(futures::future::join_all((0..20).map(|_| v.validate(&token))), async {
            idp.jwks_hits_reach(2).await;
            drop(hold);
        });
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(idp.jwks_hits(), 2, "single flight");

    // A token naming a kid that is not published: no further download within 10 s.
    let stranger = ed_key("k3");
    for _ in 0..5 {
        assert_eq!(
            v.validate(&sign(&stranger, &idp.claims())).await.unwrap_err(),
            IncomingAuthError::UnknownKey
        );
    }
    assert_eq!(idp.jwks_hits(), 2, "rate-limited");
    assert_eq!(v.jwks_fetches(), (2, 0));
}

#[tokio::test]
async fn unknown_kid_refetch_after_the_interval() {
    let idp = Idp::start().await;
    let k1 = ed_key("k1");
    idp.publish(&k1);
    let opts =
        ValidatorOptions { min_refetch_interval: Duration::from_millis(300), ..Default::default() };
    let (v, clock) = idp.validator_on_manual_clock(json!({}), opts);
    let k2 = ed_key("k2");
    assert_eq!(
        v.validate(&sign(&k2, &idp.claims())).await.unwrap_err(),
        IncomingAuthError::UnknownKey
    );
    assert_eq!(idp.jwks_hits(), 2, "initial load + one re-fetch");
    idp.publish(&k2);
    assert_eq!(
        v.validate(&sign(&k2, &idp.claims())).await.unwrap_err(),
        IncomingAuthError::UnknownKey
    );
    assert_eq!(idp.jwks_hits(), 2);
    clock.advance(Duration::from_millis(350));
    v.validate(&sign(&k2, &idp.claims())).await.unwrap();
    assert_eq!(idp.jwks_hits(), 3);
}

#[tokio::test]
async fn periodic_refresh_in_background() {
    let idp = Idp::start().await;
    let k1 = ed_key("k1");
    idp.publish(&k1);
    let (v, clock) =
        idp.validator_on_manual_clock(json!({"jwksRefreshInterval": "1s"}), Default::default());
    let t = sign(&k1, &idp.claims());
    v.validate(&t).await.unwrap();
    clock.advance(Duration::from_millis(1100));
    v.validate(&t).await.unwrap();
    idp.jwks_hits_reach(2).await;
    assert_eq!(idp.jwks_hits(), 2);
    v.validate(&t).await.unwrap();
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn provider_down_at_start_is_retried_lazily() {
    let idp = Idp::start().await;
    let k1 = ed_key("k1");
    idp.publish(&k1);
    idp.state.fail.store(true, Ordering::SeqCst);
    let opts =
        ValidatorOptions { retry_after_failure: Duration::from_millis(100), ..Default::default() };
    let (v, clock) = idp.validator_on_manual_clock(json!({}), opts);
    let err = v.warm_up().await.unwrap_err();
    assert!(
        matches!(&err, IncomingAuthError::ProviderUnavailable(m) if m.contains("discovery")),
        "{err}"
    );
    assert_eq!(crate::http::error::auth_status(&err), StatusCode::SERVICE_UNAVAILABLE);
    let t = sign(&k1, &idp.claims());
    assert!(matches!(v.validate(&t).await, Err(IncomingAuthError::ProviderUnavailable(_))));
    let hits = idp.state.discovery_hits.load(Ordering::SeqCst);
    assert!(matches!(v.validate(&t).await, Err(IncomingAuthError::ProviderUnavailable(_))));
    assert_eq!(
        idp.state.discovery_hits.load(Ordering::SeqCst),
        hits,
        "no retry within retry_after_failure"
    );
    idp.state.fail.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_millis(150));
    v.validate(&t).await.unwrap();
}

#[tokio::test]
async fn discovery_issuer_must_match() {
    let idp = Idp::start().await;
    let k1 = ed_key("k1");
    idp.publish(&k1);
    *idp.state.issuer.lock() = "https://impostor".into();
    let v = idp.validator();
    let err = v.warm_up().await.unwrap_err();
    assert!(
        matches!(&err, IncomingAuthError::ProviderUnavailable(m) if m.contains("not the configured issuer")),
        "{err}"
    );
}

#[tokio::test]
async fn explicit_jwks_url_skips_discovery() {
    let idp = Idp::start().await;
    let k1 = ed_key("k1");
    idp.publish(&k1);
    let cfg = idp.config(json!({"jwksUrl": format!("{}/jwks", idp.issuer)}));
    let v = OidcValidator::new(&cfg, "gw", reqwest::Client::new()).unwrap();
    v.validate(&sign(&k1, &idp.claims())).await.unwrap();
    assert_eq!(idp.state.discovery_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn opaque_tokens_through_introspection() {
    let idp = Idp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s&cret\n").unwrap();
    let cfg = idp.config(json!({"introspection": {
        "url": format!("{}/introspect", idp.issuer), "clientId": "gw client", "clientSecret": {"file": secret}}}));
    let v = OidcValidator::new(&cfg, "gw", reqwest::Client::new()).unwrap();
    let id = v.validate("opaque-good").await.unwrap();
    assert_eq!(id.subject, "opaque-user");
    assert_eq!(id.issuer, idp.issuer);
    assert_eq!(v.validate("opaque-wrong-aud").await.unwrap_err(), IncomingAuthError::WrongAudience);
    assert_eq!(v.validate("opaque-bad").await.unwrap_err(), IncomingAuthError::Inactive);
    // Without introspection an opaque token is just malformed.
    assert!(matches!(
        idp.validator().validate("opaque-good").await,
        Err(IncomingAuthError::Malformed(_))
    ));
}

#[test]
fn audience_comes_from_config_or_resource_url() {
    let cfg: OidcConfig = serde_json::from_value(json!({"issuer": "https://idp"})).unwrap();
    let v =
        OidcValidator::from_config(&cfg, Some("https://gw/mcp"), reqwest::Client::new()).unwrap();
    assert_eq!(v.audience(), "https://gw/mcp");
    let cfg: OidcConfig =
        serde_json::from_value(json!({"issuer": "https://idp", "audience": "gw"})).unwrap();
    let v =
        OidcValidator::from_config(&cfg, Some("https://gw/mcp"), reqwest::Client::new()).unwrap();
    assert_eq!(v.audience(), "gw");
    assert!(OidcValidator::from_config(&cfg, None, reqwest::Client::new()).is_ok());
    let cfg: OidcConfig = serde_json::from_value(json!({"issuer": "https://idp"})).unwrap();
    assert!(OidcValidator::from_config(&cfg, None, reqwest::Client::new()).is_err());
}
