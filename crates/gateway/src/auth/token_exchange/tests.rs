//! Token exchange against an in-process token endpoint: client authentication, caching per
//! binding and grant, expiry, single flight, negative cache, error mapping, bounds.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use serde_json::{Value, json};

use super::request::lifetime;
use super::*;
use crate::auth::UserIdentity;
use crate::clock::Clock;
use tokio::time::Instant;

type Seen = (Option<String>, Vec<(String, String)>);

#[derive(Default)]
struct Endpoint {
    requests: AtomicUsize,
    /// (authorization header, form) of the last request.
    last: Mutex<Option<Seen>>,
    /// What to answer: status and body; `None`: a fresh token.
    answer: Mutex<Option<(u16, String)>>,
    expires_in: Mutex<Value>,
    token_exp_in: Mutex<Option<i64>>,
    /// Told of every request, once it is counted.
    arrived: tokio::sync::Notify,
    /// Answers wait while a test holds this for writing.
    hold: tokio::sync::RwLock<()>,
}

async fn token(
    State(s): State<Arc<Endpoint>>,
    headers: HeaderMap,
    Form(f): Form<Vec<(String, String)>>,
) -> Response {
    let n = s.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let auth = headers.get("authorization").map(|v| v.to_str().unwrap_or_default().to_owned());
    *s.last.lock() = Some((auth, f.clone()));
    s.arrived.notify_one();
    drop(s.hold.read().await);
    if let Some((status, body)) = s.answer.lock().clone() {
        let ct = if body.starts_with('{') { "application/json" } else { "text/plain" };
        return (StatusCode::from_u16(status).unwrap(), [("content-type", ct)], body)
            .into_response();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let exp = s.token_exp_in.lock().map(|e| now + e).unwrap_or(now + 3600);
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let sub =
        f.iter().find(|(k, _)| k == "subject_token").map(|(_, v)| v.clone()).unwrap_or_default();
    let jwt = format!(
        "{}.{}.sig",
        b64(&json!({"alg":"RS256"})),
        b64(&json!({"sub": sub, "exp": exp, "n": n}))
    );
    let expires_in = s.expires_in.lock().clone();
    let mut body = json!({"access_token": jwt, "token_type": "Bearer",
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"});
    if !expires_in.is_null() {
        body["expires_in"] = expires_in;
    }
    Json(body).into_response()
}

struct Fixture {
    ep: Arc<Endpoint>,
    url: String,
    _dir: tempfile::TempDir,
    secret_file: std::path::PathBuf,
    _task: tokio::task::JoinHandle<()>,
}

impl Fixture {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let ep = Arc::new(Endpoint::default());
        *ep.expires_in.lock() = json!(300);
        let app = Router::new().route("/token", post(token)).with_state(ep.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, "s&cret:x\n").unwrap();
        Self { ep, url, _dir: dir, secret_file, _task: task }
    }

    fn cfg(&self, extra: Value) -> TokenExchangeAuth {
        let mut c = json!({"tokenUrl": self.url, "clientId": "gw client",
            "clientSecret": {"file": self.secret_file}, "audience": "backend-a"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        serde_json::from_value(c).unwrap()
    }

    fn requests(&self) -> usize {
        self.ep.requests.load(Ordering::SeqCst)
    }

    fn last_form(&self) -> HashMap<String, String> {
        self.ep.last.lock().clone().unwrap().1.into_iter().collect()
    }

    fn last_auth(&self) -> Option<String> {
        self.ep.last.lock().clone().unwrap().0
    }
}

fn user(sub: &str) -> Identity {
    Identity::User(UserIdentity {
        issuer: "https://idp".into(),
        subject: sub.into(),
        token: SecretString::from(format!("user-token-of-{sub}")),
        claims: Default::default(),
        expires_at: None,
    })
}

fn header_value(h: &[(HeaderName, HeaderValue)]) -> String {
    assert_eq!(h.len(), 1);
    h[0].1.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn basic_auth_request_and_bearer_header() {
    let fx = Fixture::start().await;
    let f = TokenExchangeFactory::new(reqwest::Client::new());
    let cfg = fx.cfg(json!({"resource": "http://backend-a/mcp", "scopes": ["read", "write"],
        "requestedTokenType": "urn:ietf:params:oauth:token-type:access_token"}));
    let src = f.token_exchange("a", &cfg).unwrap();
    assert!(src.needs_identity());
    assert_eq!(src.kind(), "tokenExchange");
    let h = src.headers(&user("alice")).await.unwrap();
    assert_eq!(h[0].0, http::header::AUTHORIZATION);
    assert!(header_value(&h).starts_with("Bearer ey"));
    assert!(h[0].1.is_sensitive());
    let form = fx.last_form();
    assert_eq!(form["grant_type"], TOKEN_EXCHANGE_GRANT);
    assert_eq!(form["subject_token"], "user-token-of-alice");
    assert_eq!(form["subject_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert_eq!(form["audience"], "backend-a");
    assert_eq!(form["resource"], "http://backend-a/mcp");
    assert_eq!(form["scope"], "read write");
    assert_eq!(form["requested_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert!(!form.contains_key("client_id") && !form.contains_key("client_secret"));
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
    let expected = base64::engine::general_purpose::STANDARD.encode("gw+client:s%26cret%3Ax");
    assert_eq!(fx.last_auth(), Some(format!("Basic {expected}")));
    assert!(!format!("{src:?}").contains("s&cret"));
}

#[tokio::test]
async fn post_auth_and_custom_header() {
    let fx = Fixture::start().await;
    let f = TokenExchangeFactory::new(reqwest::Client::new());
    let cfg = fx.cfg(json!({"clientAuthMethod": "client_secret_post", "externalTokenHeaderName": "X-Backend-Token"}));
    let h = f.source("a", &cfg).unwrap().headers(&user("alice")).await.unwrap();
    assert_eq!(h[0].0.as_str(), "x-backend-token");
    assert!(header_value(&h).starts_with("ey"), "raw token, no Bearer prefix");
    let form = fx.last_form();
    assert_eq!(form["client_id"], "gw client");
    assert_eq!(form["client_secret"], "s&cret:x");
    assert_eq!(fx.last_auth(), None);
    assert!(!form.contains_key("resource") && !form.contains_key("scope"));
}

#[tokio::test]
async fn anonymous_has_no_token() {
    let fx = Fixture::start().await;
    let f = TokenExchangeFactory::new(reqwest::Client::new());
    let src = f.source("a", &fx.cfg(json!({}))).unwrap();
    assert!(matches!(src.headers(&Identity::Anonymous).await, Err(OutgoingAuthError::NoToken)));
    assert_eq!(fx.requests(), 0);
}

#[tokio::test]
async fn cache_hits_per_binding_and_backend() {
    let fx = Fixture::start().await;
    let f = TokenExchangeFactory::new(reqwest::Client::new());
    let a = f.source("a", &fx.cfg(json!({}))).unwrap();
    let b = f.source("b", &fx.cfg(json!({"audience": "backend-b"}))).unwrap();
    let first = a.headers(&user("alice")).await.unwrap();
    assert_eq!(a.headers(&user("alice")).await.unwrap(), first);
    assert_eq!(fx.requests(), 1);
    assert_eq!(f.cache_stats(), (1, 1));
    assert_ne!(a.headers(&user("bob")).await.unwrap(), first, "another binding");
    b.headers(&user("alice")).await.unwrap();
    assert_eq!(fx.requests(), 3, "another backend");
    // A refreshed user token keeps the binding, so the cached token is reused.
    let mut refreshed = user("alice");
    if let Identity::User(u) = &mut refreshed {
        u.token = SecretString::from("a-newer-token".to_owned());
    }
    assert_eq!(a.headers(&refreshed).await.unwrap(), first);
    assert_eq!(fx.requests(), 3);
    assert_eq!(f.cache_stats(), (2, 3));
}

fn with_claims(identity: Identity, claims: serde_json::Value) -> Identity {
    let Identity::User(mut u) = identity else { unreachable!() };
    u.claims = claims.as_object().unwrap().clone();
    Identity::User(u)
}

#[tokio::test]
async fn other_scopes_or_clients_of_the_same_user_get_their_own_exchange() {
    let fx = Fixture::start().await;
    let f = TokenExchangeFactory::new(reqwest::Client::new());
    let a = f.source("a", &fx.cfg(json!({}))).unwrap();
    let full = with_claims(user("alice"), json!({"azp": "ide", "scope": "openid tools"}));
    a.headers(&full).await.unwrap();
    a.headers(&full).await.unwrap();
    assert_eq!(fx.requests(), 1);
    a.headers(&with_claims(user("alice"), json!({"azp": "ide", "scope": "openid"}))).await.unwrap();
    assert_eq!(fx.requests(), 2, "a down-scoped token is exchanged itself");
    a.headers(&with_claims(user("alice"), json!({"azp": "other-app", "scope": "openid tools"})))
        .await
        .unwrap();
    assert_eq!(fx.requests(), 3, "another client's token is exchanged itself");
}

#[tokio::test]
async fn cached_tokens_never_outlive_the_subject_token() {
    let fx = Fixture::start().await;
    let (clock, hand) = Clock::manual();
    let f = TokenExchangeFactory::with_clock(
        reqwest::Client::new(),
        ExchangeOptions::default(),
        crate::metrics::ExchangeMetrics::default(),
        clock.clone(),
    );
    let a = f.source("a", &fx.cfg(json!({}))).unwrap();
    *fx.ep.expires_in.lock() = json!(3600);
    let Identity::User(mut u) = user("alice") else { unreachable!() };
    u.expires_at = Some(clock.wall() + Duration::from_millis(600));
    let short = Identity::User(u);
    a.headers(&short).await.unwrap();
    a.headers(&short).await.unwrap();
    assert_eq!(fx.requests(), 1);
    hand.advance(Duration::from_millis(700));
    a.headers(&user("alice")).await.unwrap();
    assert_eq!(fx.requests(), 2, "the entry ended with the subject token");
}

/// How long an issued token is kept is computed from the answer (the cache's own expiry is
/// tested with a paused clock in `cache.rs`), so no test sleeps for it.
#[tokio::test]
async fn entries_expire_before_the_token() {
    let fx = Fixture::start().await;
    let f = TokenExchangeFactory::new(reqwest::Client::new());
    let src = f.source("a", &fx.cfg(json!({}))).unwrap();
    let subject = SecretString::from("user-token".to_owned());
    let kept = |i: &cache::Issued| i.valid_until.saturating_duration_since(Instant::now());
    // expires_in 2 s: kept for 2 s minus 10 %.
    *fx.ep.expires_in.lock() = json!(2);
    let k = kept(&src.exchange(&subject).await.unwrap());
    assert!(k <= Duration::from_millis(1800) && k > Duration::from_millis(1000), "{k:?}");
    // The token's exp (at most 2 s ahead: whole seconds) wins over a long expires_in.
    *fx.ep.expires_in.lock() = json!(3600);
    *fx.ep.token_exp_in.lock() = Some(2);
    let k = kept(&src.exchange(&subject).await.unwrap());
    assert!(k <= Duration::from_secs(2), "{k:?}");
    // Long lifetimes lose 30 s.
    *fx.ep.token_exp_in.lock() = None;
    let k = kept(&src.exchange(&subject).await.unwrap());
    assert!(k <= Duration::from_secs(3570) && k > Duration::from_secs(3560), "{k:?}");
    let now = SystemTime::now();
    assert_eq!(lifetime(Some(&json!(300)), "x", now), Some(Duration::from_secs(300)));
    assert_eq!(lifetime(Some(&json!("120")), "x", now), Some(Duration::from_secs(120)));
    assert_eq!(lifetime(None, "opaque", now), None);
}

#[tokio::test]
async fn concurrent_callers_share_one_request() {
    let fx = Fixture::start().await;
    let f = TokenExchangeFactory::new(reqwest::Client::new());
    let src = f.source("a", &fx.cfg(json!({}))).unwrap();
    let alice = user("alice");
    // Every caller asks while the one request is held up at the endpoint.
    let hold = fx.ep.hold.write().await;
    let (results, ()) =
        tokio::join!(futures::future::join_all((0..32).map(|_| src.headers(&alice))), async {
            fx.ep.arrived.notified().await;
            drop(hold);
        });
    assert_eq!(fx.requests(), 1);
    let first = results[0].as_ref().unwrap();
    assert!(results.iter().all(|r| r.as_ref().unwrap() == first));
    assert_eq!(f.cache_stats(), (0, 32));
    assert_eq!(f.metrics().idp_requests("a", "ok"), 1);
}

#[tokio::test]
async fn failures_are_cached_briefly() {
    let fx = Fixture::start().await;
    *fx.ep.answer.lock() = Some((
        400,
        r#"{"error":"invalid_grant","error_description":"subject_token expired"}"#.into(),
    ));
    let opts = ExchangeOptions { negative_ttl: Duration::from_millis(300), ..Default::default() };
    let f = TokenExchangeFactory::with_options(
        reqwest::Client::new(),
        opts,
        crate::metrics::ExchangeMetrics::default(),
    );
    let src = f.source("a", &fx.cfg(json!({}))).unwrap();
    for _ in 0..5 {
        let e = src.headers(&user("alice")).await.unwrap_err();
        assert!(
            matches!(&e, OutgoingAuthError::Exchange { error, description: Some(d) }
                if error == "invalid_grant" && d == "subject_token expired"),
            "{e:?}"
        );
    }
    assert_eq!(fx.requests(), 1);
    assert_eq!(f.metrics().negative_hits.get(), 4);
    // A fresh token of the same user is not refused because of the old one's failure.
    let Identity::User(mut fresh) = user("alice") else { unreachable!() };
    fresh.token = SecretString::from("a-fresh-token".to_owned());
    assert!(src.headers(&Identity::User(fresh)).await.is_err());
    assert_eq!(fx.requests(), 2, "tried at once with the fresh token");
    assert_eq!(f.metrics().idp_requests("a", "error"), 2);
    assert_eq!(f.metrics().idp_requests("a", "ok"), 0);
}

#[tokio::test]
async fn error_mapping() {
    let fx = Fixture::start().await;
    let f = TokenExchangeFactory::new(reqwest::Client::new());
    let src = f.source("a", &fx.cfg(json!({}))).unwrap();
    *fx.ep.answer.lock() = Some((503, "upstream down, token=secret".into()));
    let e = src.headers(&user("u1")).await.unwrap_err();
    assert!(
        matches!(&e, OutgoingAuthError::Exchange { error, description: None } if error == "http 503"),
        "{e:?}"
    );
    *fx.ep.answer.lock() = Some((401, r#"{"error":"invalid_client"}"#.into()));
    let e = src.headers(&user("u2")).await.unwrap_err();
    assert!(
        matches!(&e, OutgoingAuthError::Exchange { error, description: None } if error == "invalid_client")
    );
    assert_eq!(e.to_string(), "token exchange failed: invalid_client");
    *fx.ep.answer.lock() = Some((200, r#"{"token_type":"Bearer"}"#.into()));
    let e = src.headers(&user("u3")).await.unwrap_err();
    assert!(matches!(&e, OutgoingAuthError::Exchange { error, .. } if error == "invalid_response"));

    // Nothing listens on the port.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", closed.local_addr().unwrap());
    drop(closed);
    let src = f.source("b", &fx.cfg(json!({"tokenUrl": url}))).unwrap();
    let e = src.headers(&user("u1")).await.unwrap_err();
    assert!(
        matches!(&e, OutgoingAuthError::Exchange { error, .. } if error == "transport: connection failed"),
        "{e:?}"
    );
    assert!(!format!("{e:?}").contains("user-token"));

    // Unreadable secret.
    let bad = fx.cfg(json!({"clientSecret": {"file": "/nonexistent/secret"}}));
    let e = f.source("c", &bad).unwrap_err();
    assert!(
        matches!(&e, OutgoingAuthError::Secret { what, .. } if what == "backends[c].auth.tokenExchange.clientSecret")
    );
}

#[tokio::test]
async fn cache_is_bounded() {
    let fx = Fixture::start().await;
    let opts = ExchangeOptions { max_entries: 10, ..Default::default() };
    let f = TokenExchangeFactory::with_options(
        reqwest::Client::new(),
        opts,
        crate::metrics::ExchangeMetrics::default(),
    );
    let src = f.source("a", &fx.cfg(json!({}))).unwrap();
    for i in 0..25 {
        src.headers(&user(&format!("user{i}"))).await.unwrap();
        assert!(f.cache_len() <= 10, "{}", f.cache_len());
    }
    // The most recent entries survive.
    src.headers(&user("user24")).await.unwrap();
    assert_eq!(fx.requests(), 25);
}

#[tokio::test]
async fn a_cancelled_caller_does_not_wedge_the_key() {
    let fx = Fixture::start().await;
    let f = TokenExchangeFactory::new(reqwest::Client::new());
    let src = f.source("a", &fx.cfg(json!({}))).unwrap();
    let alice = user("alice");
    // The caller is dropped while its request is held up at the endpoint.
    let hold = fx.ep.hold.write().await;
    tokio::select! {
        r = src.headers(&alice) => panic!("answered while held: {r:?}"),
        () = fx.ep.arrived.notified() => {}
    }
    drop(hold);
    src.headers(&alice).await.unwrap();
    src.headers(&alice).await.unwrap();
    assert_eq!(fx.requests(), 2);
    assert_eq!(f.cache_stats(), (1, 2));
}
