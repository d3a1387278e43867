//! RFC 8693 token exchange: the `tokenExchange` outgoing strategy.
//!
//! For each backend, the live request's token (`subject_token`, invariant I1) is exchanged at
//! the authorization server for a token meant for that backend. The client's own token is never
//! sent to a backend.
//!
//! Exchanged tokens are cached in this process only (invariant I6: never written to the session
//! store or anywhere else), keyed by the caller's binding and the source's effective
//! configuration (backend, token URL, client, audience, resource, scopes, token types). An entry
//! lives until `min(expires_in, exp) - skew` (skew 30 s, or 10 % of the lifetime when that is
//! shorter). Concurrent callers with the same key share one request (single flight); a failed
//! exchange is remembered for a short time (negative cache) so a failing authorization server is
//! not hammered. The cache is bounded: expired entries go first, then the soonest to expire.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use vmcp_types::config::{ClientAuthMethod, TokenExchangeAuth};

use super::Identity;
use super::outgoing::{CredentialFactory, CredentialSource, OutgoingAuthError, read_secret};

/// `grant_type` of RFC 8693.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Tuning of the exchange client and cache.
#[derive(Debug, Clone)]
pub struct ExchangeOptions {
    /// How long a failed exchange is answered from the cache (default 5 s).
    pub negative_ttl: Duration,
    /// Most entries in the cache (default 10 000).
    pub max_entries: usize,
    /// Timeout of one token endpoint request (default 10 s).
    pub timeout: Duration,
    /// Safety margin before a token's expiry (default 30 s; at most 10 % of the lifetime).
    pub skew: Duration,
    /// Lifetime assumed when the response has neither `expires_in` nor a JWT `exp`
    /// (default 60 s).
    pub default_lifetime: Duration,
}

impl Default for ExchangeOptions {
    fn default() -> Self {
        Self {
            negative_ttl: Duration::from_secs(5),
            max_entries: 10_000,
            timeout: Duration::from_secs(10),
            skew: Duration::from_secs(30),
            default_lifetime: Duration::from_secs(60),
        }
    }
}

/// Counters for `/metrics` (shared by every source of one factory).
#[derive(Debug, Default)]
pub struct ExchangeMetrics {
    /// Calls answered with a cached token.
    pub hits: AtomicU64,
    /// Calls that found no usable token (they started or joined a request).
    pub misses: AtomicU64,
    /// Calls answered with a cached failure.
    pub negative_hits: AtomicU64,
    /// Requests sent to token endpoints.
    pub idp_requests: AtomicU64,
    /// Of those, the ones that failed (OAuth error, HTTP error, transport error).
    pub idp_errors: AtomicU64,
    /// Total time spent in token endpoint requests, in microseconds.
    pub idp_latency_us: AtomicU64,
}

/// Called after every token endpoint request with the backend name, the duration and whether
/// it succeeded (e.g. to feed a Prometheus histogram).
pub type IdpObserver = Arc<dyn Fn(&str, Duration, bool) + Send + Sync>;

/// Creates [`TokenExchangeSource`]s that share one HTTP client, cache and metrics.
pub struct TokenExchangeFactory {
    http: reqwest::Client,
    cache: Arc<Cache>,
    options: ExchangeOptions,
    observer: Option<IdpObserver>,
}

impl std::fmt::Debug for TokenExchangeFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenExchangeFactory")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TokenExchangeFactory {
    /// A factory with default options.
    pub fn new(http: reqwest::Client) -> Self {
        Self::with_options(http, ExchangeOptions::default())
    }

    /// A factory with explicit options.
    pub fn with_options(http: reqwest::Client, options: ExchangeOptions) -> Self {
        Self {
            http,
            cache: Arc::new(Cache {
                map: Mutex::new(HashMap::new()),
                metrics: Arc::default(),
                max_entries: options.max_entries.max(1),
            }),
            options,
            observer: None,
        }
    }

    /// Observes every token endpoint request (latency histograms).
    pub fn with_observer(mut self, observer: IdpObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The shared counters.
    pub fn metrics(&self) -> Arc<ExchangeMetrics> {
        self.cache.metrics.clone()
    }

    /// `(hits, misses)` over every source of this factory.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.cache.stats()
    }

    /// Number of cache entries (tokens, failures and requests in flight).
    pub fn cache_len(&self) -> usize {
        self.cache.map.lock().len()
    }

    /// Forgets every cached token and failure (e.g. after a configuration reload).
    pub fn clear_cache(&self) {
        self.cache.map.lock().clear();
    }

    /// A source for `backend` (reads the client secret now).
    pub fn source(
        &self,
        backend: &str,
        cfg: &TokenExchangeAuth,
    ) -> Result<TokenExchangeSource, OutgoingAuthError> {
        let p = format!("backends[{backend}].auth.tokenExchange");
        let client_secret = read_secret(&format!("{p}.clientSecret"), &cfg.client_secret)?;
        let (header, bearer) = match &cfg.external_token_header_name {
            None => (http::header::AUTHORIZATION, true),
            Some(h) => (
                HeaderName::from_bytes(h.as_bytes()).map_err(|_| OutgoingAuthError::Secret {
                    what: format!("{p}.externalTokenHeaderName"),
                    reason: "not a valid header name".into(),
                })?,
                false,
            ),
        };
        let scope = (!cfg.scopes.is_empty()).then(|| cfg.scopes.join(" "));
        // Everything that changes the issued token is part of the cache key.
        let mut h = Sha256::new();
        for part in [
            backend,
            &cfg.token_url,
            &cfg.client_id,
            cfg.audience.as_deref().unwrap_or("\u{1}"),
            cfg.resource.as_deref().unwrap_or("\u{1}"),
            scope.as_deref().unwrap_or("\u{1}"),
            &cfg.subject_token_type,
            cfg.requested_token_type.as_deref().unwrap_or("\u{1}"),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        Ok(TokenExchangeSource {
            backend: backend.into(),
            key: h.finalize().into(),
            token_url: cfg.token_url.clone(),
            client_id: cfg.client_id.clone(),
            client_secret,
            method: cfg.client_auth_method,
            audience: cfg.audience.clone(),
            resource: cfg.resource.clone(),
            scope,
            subject_token_type: cfg.subject_token_type.clone(),
            requested_token_type: cfg.requested_token_type.clone(),
            header,
            bearer,
            http: self.http.clone(),
            cache: self.cache.clone(),
            options: self.options.clone(),
            observer: self.observer.clone(),
        })
    }
}

impl CredentialFactory for TokenExchangeFactory {
    fn token_exchange(
        &self,
        backend: &str,
        cfg: &TokenExchangeAuth,
    ) -> Result<Arc<dyn CredentialSource>, OutgoingAuthError> {
        Ok(Arc::new(self.source(backend, cfg)?))
    }
}

/// The `tokenExchange` credential of one backend.
pub struct TokenExchangeSource {
    backend: Arc<str>,
    /// Hash of the effective configuration (second half of the cache key).
    key: [u8; 32],
    token_url: String,
    client_id: String,
    client_secret: SecretString,
    method: ClientAuthMethod,
    audience: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
    subject_token_type: String,
    requested_token_type: Option<String>,
    header: HeaderName,
    bearer: bool,
    http: reqwest::Client,
    cache: Arc<Cache>,
    options: ExchangeOptions,
    observer: Option<IdpObserver>,
}

impl std::fmt::Debug for TokenExchangeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenExchangeSource")
            .field("backend", &self.backend)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("method", &self.method)
            .field("audience", &self.audience)
            .field("resource", &self.resource)
            .field("scope", &self.scope)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// One exchanged token, as cached.
#[derive(Clone)]
struct Issued {
    header: (HeaderName, HeaderValue),
    valid_until: Instant,
}

type Flight = Arc<OnceCell<Result<Issued, OutgoingAuthError>>>;

enum Slot {
    Ready(Issued),
    /// A failed exchange, remembered only against the subject token that failed (a fresh
    /// token of the same user is tried at once).
    Failed {
        error: OutgoingAuthError,
        until: Instant,
        token: [u8; 32],
    },
    Pending(Flight),
}

/// What the issued token depends on: the user (binding), what the user's token was issued
/// for (M2: the client it was issued to, its scopes, the login session and its strength), and
/// the backend's exchange configuration. A token refresh with the same of these reuses the
/// cached token; a down-scoped token or another client's token gets its own exchange.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    binding: String,
    grant: [u8; 32],
    source: [u8; 32],
}

/// Hash of the subject token claims that change what an exchanged token may be
/// (`azp`/`client_id`, `scope`/`scp`, `sid`, `acr`).
fn grant_of(claims: &serde_json::Map<String, Value>) -> [u8; 32] {
    let mut h = Sha256::new();
    for name in ["azp", "client_id", "scope", "scp", "sid", "acr"] {
        h.update(name.as_bytes());
        h.update([0]);
        if let Some(v) = claims.get(name) {
            h.update(v.to_string().as_bytes());
        }
        h.update([0]);
    }
    h.finalize().into()
}

/// Hash of the subject token itself (for the negative cache; the token is never stored).
fn token_hash(token: &SecretString) -> [u8; 32] {
    Sha256::digest(token.expose_secret().as_bytes()).into()
}

struct Cache {
    map: Mutex<HashMap<Key, Slot>>,
    metrics: Arc<ExchangeMetrics>,
    max_entries: usize,
}

impl Cache {
    fn stats(&self) -> (u64, u64) {
        (self.metrics.hits.load(Ordering::Relaxed), self.metrics.misses.load(Ordering::Relaxed))
    }

    /// Makes room for one entry: expired entries first, then the soonest to expire (down to
    /// 90 % of the bound). Requests in flight are never evicted.
    fn make_room(map: &mut HashMap<Key, Slot>, max: usize, now: Instant) {
        if map.len() < max {
            return;
        }
        map.retain(|_, s| match s {
            Slot::Ready(i) => i.valid_until > now,
            Slot::Failed { until, .. } => *until > now,
            Slot::Pending(_) => true,
        });
        if map.len() < max {
            return;
        }
        let target = max - max / 10 - 1;
        let mut by_expiry: Vec<(Instant, Key)> = map
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Ready(i) => Some((i.valid_until, k.clone())),
                Slot::Failed { until, .. } => Some((*until, k.clone())),
                Slot::Pending(_) => None,
            })
            .collect();
        by_expiry.sort_by_key(|(t, _)| *t);
        for (_, k) in by_expiry.into_iter().take(map.len().saturating_sub(target)) {
            map.remove(&k);
        }
    }
}

enum Lookup {
    Done(Result<(HeaderName, HeaderValue), OutgoingAuthError>),
    Wait(Flight),
}

impl TokenExchangeSource {
    /// `(hits, misses)` of the cache shared with the other sources of the factory.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.cache.stats()
    }

    /// The shared counters.
    pub fn metrics(&self) -> Arc<ExchangeMetrics> {
        self.cache.metrics.clone()
    }

    fn lookup(&self, key: &Key, token: &[u8; 32]) -> Lookup {
        let m = &self.cache.metrics;
        let now = Instant::now();
        let mut map = self.cache.map.lock();
        match map.get(key) {
            Some(Slot::Ready(i)) if i.valid_until > now => {
                m.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Done(Ok(i.header.clone()));
            }
            Some(Slot::Failed { error, until, token: failed })
                if *until > now && failed == token =>
            {
                m.negative_hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Done(Err(error.clone()));
            }
            Some(Slot::Pending(f)) => match f.get() {
                // In flight (or its owner went away before it finished): join it.
                None => {
                    m.misses.fetch_add(1, Ordering::Relaxed);
                    return Lookup::Wait(f.clone());
                }
                // Finished, but nobody stored the result (the caller was cancelled).
                Some(Ok(i)) if i.valid_until > now => {
                    m.hits.fetch_add(1, Ordering::Relaxed);
                    return Lookup::Done(Ok(i.header.clone()));
                }
                Some(_) => {}
            },
            _ => {}
        }
        m.misses.fetch_add(1, Ordering::Relaxed);
        let flight: Flight = Arc::default();
        Cache::make_room(&mut map, self.cache.max_entries, now);
        map.insert(key.clone(), Slot::Pending(flight.clone()));
        Lookup::Wait(flight)
    }

    fn settle(
        &self,
        key: &Key,
        token: [u8; 32],
        flight: &Flight,
        result: &Result<Issued, OutgoingAuthError>,
    ) {
        let mut map = self.cache.map.lock();
        if let Some(Slot::Pending(f)) = map.get(key)
            && Arc::ptr_eq(f, flight)
        {
            let slot = match result {
                Ok(i) => Slot::Ready(i.clone()),
                Err(error) => Slot::Failed {
                    error: error.clone(),
                    until: Instant::now() + self.options.negative_ttl,
                    token,
                },
            };
            map.insert(key.clone(), slot);
        }
    }

    /// One request to the token endpoint.
    async fn exchange(&self, subject_token: &SecretString) -> Result<Issued, OutgoingAuthError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", subject_token.expose_secret()),
            ("subject_token_type", &self.subject_token_type),
        ];
        let optional = [
            ("audience", &self.audience),
            ("resource", &self.resource),
            ("scope", &self.scope),
            ("requested_token_type", &self.requested_token_type),
        ];
        form.extend(optional.iter().filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))));
        let mut req = self
            .http
            .post(&self.token_url)
            .timeout(self.options.timeout)
            .header(http::header::ACCEPT, "application/json");
        match self.method {
            ClientAuthMethod::ClientSecretBasic => {
                let mut v = HeaderValue::try_from(basic_auth(&self.client_id, &self.client_secret))
                    .map_err(|_| OutgoingAuthError::Secret {
                        what: format!("backends[{}].auth.tokenExchange.clientSecret", self.backend),
                        reason: "the client id or secret cannot be sent in a header".into(),
                    })?;
                v.set_sensitive(true);
                req = req.header(http::header::AUTHORIZATION, v);
            }
            ClientAuthMethod::ClientSecretPost => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", self.client_secret.expose_secret()));
            }
        }
        let m = &self.cache.metrics;
        m.idp_requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.send(req.form(&form)).await;
        let took = started.elapsed();
        m.idp_latency_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if result.is_err() {
            m.idp_errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(o) = &self.observer {
            o(&self.backend, took, result.is_ok());
        }
        match &result {
            Ok(_) => tracing::debug!(backend = %self.backend, ?took, "token exchange succeeded"),
            Err(e) => tracing::warn!(backend = %self.backend, ?took, "{e}"),
        }
        result
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Issued, OutgoingAuthError> {
        let resp = req.send().await.map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| transport_error(&e))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let field = |name| {
                json.as_ref().and_then(|j| j.get(name)).and_then(Value::as_str).map(sanitize)
            };
            let error = field("error").filter(|e| !e.is_empty() && e.len() <= 64);
            return Err(match error {
                Some(error) => {
                    OutgoingAuthError::Exchange { error, description: field("error_description") }
                }
                None => OutgoingAuthError::Exchange {
                    error: format!("http {}", status.as_u16()),
                    description: None,
                },
            });
        }
        let invalid = |d: &str| OutgoingAuthError::Exchange {
            error: "invalid_response".into(),
            description: Some(d.into()),
        };
        let json = json.ok_or_else(|| {
            invalid("the token endpoint answered with something that is not JSON")
        })?;
        let token = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("the response has no access_token"))?;
        let now = Instant::now();
        let lifetime =
            lifetime(json.get("expires_in"), token).unwrap_or(self.options.default_lifetime);
        let skew = self.options.skew.min(lifetime / 10);
        let value = if self.bearer { format!("Bearer {token}") } else { token.to_owned() };
        let mut value = HeaderValue::try_from(value)
            .map_err(|_| invalid("the issued token is not a valid header value"))?;
        value.set_sensitive(true);
        Ok(Issued {
            header: (self.header.clone(), value),
            valid_until: now + lifetime.saturating_sub(skew),
        })
    }
}

#[async_trait::async_trait]
impl CredentialSource for TokenExchangeSource {
    async fn headers(
        &self,
        identity: &Identity,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, OutgoingAuthError> {
        let Identity::User(user) = identity else { return Err(OutgoingAuthError::NoToken) };
        let key = Key {
            binding: identity.binding().as_str().to_owned(),
            grant: grant_of(&user.claims),
            source: self.key,
        };
        let token = token_hash(&user.token);
        let flight = match self.lookup(&key, &token) {
            Lookup::Done(r) => return r.map(|h| vec![h]),
            Lookup::Wait(f) => f,
        };
        let result = flight
            .get_or_init(|| async {
                // Never cached beyond the subject token's own expiry (M2).
                let mut issued = self.exchange(&user.token).await?;
                if let Some(exp) = user.expires_at {
                    let left = exp.duration_since(SystemTime::now()).unwrap_or_default();
                    issued.valid_until = issued.valid_until.min(Instant::now() + left);
                }
                Ok(issued)
            })
            .await
            .clone();
        self.settle(&key, token, &flight, &result);
        result.map(|i| vec![i.header])
    }

    fn needs_identity(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "tokenExchange"
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
pub(crate) fn basic_auth(client_id: &str, secret: &SecretString) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(client_id), enc(secret.expose_secret()));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

/// `min(expires_in, exp - now)` when either is known.
fn lifetime(expires_in: Option<&Value>, token: &str) -> Option<Duration> {
    let expires_in =
        expires_in.and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())));
    let exp_left = jwt_exp(token).map(|exp| {
        exp - SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
    });
    let secs = match (expires_in, exp_left) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return None,
    };
    Some(Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or_default())
}

/// The `exp` claim of a JWT (unverified: it only shortens the cache lifetime).
fn jwt_exp(token: &str) -> Option<f64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()?.get("exp")?.as_f64()
}

/// Printable ASCII only, at most 200 characters (IdP-provided text in errors and logs).
fn sanitize(s: &str) -> String {
    s.chars().filter(|c| (' '..='~').contains(c)).take(200).collect()
}

fn transport_error(e: &reqwest::Error) -> OutgoingAuthError {
    let error = if e.is_timeout() {
        "transport: timed out"
    } else if e.is_connect() {
        "transport: connection failed"
    } else {
        "transport: request failed"
    };
    let mut detail = None;
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        detail = Some(sanitize(&s.to_string()));
        src = s.source();
    }
    OutgoingAuthError::Exchange { error: error.into(), description: detail }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use axum::{Form, Json, Router};
    use serde_json::json;

    use super::*;
    use crate::auth::UserIdentity;

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
        delay_ms: AtomicU64,
    }

    async fn token(
        State(s): State<Arc<Endpoint>>,
        headers: HeaderMap,
        Form(f): Form<Vec<(String, String)>>,
    ) -> Response {
        let n = s.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let auth = headers.get("authorization").map(|v| v.to_str().unwrap_or_default().to_owned());
        *s.last.lock() = Some((auth, f.clone()));
        let delay = s.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
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
        let sub = f
            .iter()
            .find(|(k, _)| k == "subject_token")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
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
        assert_eq!(a.cache_stats(), (2, 3));
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
        a.headers(&with_claims(user("alice"), json!({"azp": "ide", "scope": "openid"})))
            .await
            .unwrap();
        assert_eq!(fx.requests(), 2, "a down-scoped token is exchanged itself");
        a.headers(&with_claims(
            user("alice"),
            json!({"azp": "other-app", "scope": "openid tools"}),
        ))
        .await
        .unwrap();
        assert_eq!(fx.requests(), 3, "another client's token is exchanged itself");
    }

    #[tokio::test]
    async fn cached_tokens_never_outlive_the_subject_token() {
        let fx = Fixture::start().await;
        let f = TokenExchangeFactory::new(reqwest::Client::new());
        let a = f.source("a", &fx.cfg(json!({}))).unwrap();
        *fx.ep.expires_in.lock() = json!(3600);
        let Identity::User(mut u) = user("alice") else { unreachable!() };
        u.expires_at = Some(SystemTime::now() + Duration::from_millis(600));
        let short = Identity::User(u);
        a.headers(&short).await.unwrap();
        a.headers(&short).await.unwrap();
        assert_eq!(fx.requests(), 1);
        tokio::time::sleep(Duration::from_millis(700)).await;
        a.headers(&user("alice")).await.unwrap();
        assert_eq!(fx.requests(), 2, "the entry ended with the subject token");
    }

    #[tokio::test]
    async fn entries_expire_before_the_token() {
        let fx = Fixture::start().await;
        let f = TokenExchangeFactory::new(reqwest::Client::new());
        let src = f.source("a", &fx.cfg(json!({}))).unwrap();
        // expires_in 2 s: cached for 2 s minus 10 %.
        *fx.ep.expires_in.lock() = json!(2);
        src.headers(&user("alice")).await.unwrap();
        src.headers(&user("alice")).await.unwrap();
        assert_eq!(fx.requests(), 1);
        tokio::time::sleep(Duration::from_millis(1850)).await;
        src.headers(&user("alice")).await.unwrap();
        assert_eq!(fx.requests(), 2);
        // The token's exp (2 s) wins over a long expires_in.
        *fx.ep.expires_in.lock() = json!(3600);
        *fx.ep.token_exp_in.lock() = Some(2);
        src.headers(&user("bob")).await.unwrap();
        src.headers(&user("bob")).await.unwrap();
        assert_eq!(fx.requests(), 3);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        src.headers(&user("bob")).await.unwrap();
        assert_eq!(fx.requests(), 4);
        // Long lifetimes lose 30 s.
        assert_eq!(lifetime(Some(&json!(300)), "x"), Some(Duration::from_secs(300)));
        assert_eq!(lifetime(Some(&json!("120")), "x"), Some(Duration::from_secs(120)));
        assert_eq!(lifetime(None, "opaque"), None);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_request() {
        let fx = Fixture::start().await;
        fx.ep.delay_ms.store(200, Ordering::SeqCst);
        let f = TokenExchangeFactory::new(reqwest::Client::new());
        let src = f.source("a", &fx.cfg(json!({}))).unwrap();
        let alice = user("alice");
        let results = futures::future::join_all((0..32).map(|_| src.headers(&alice))).await;
        assert_eq!(fx.requests(), 1);
        let first = results[0].as_ref().unwrap();
        assert!(results.iter().all(|r| r.as_ref().unwrap() == first));
        assert_eq!(f.cache_stats(), (0, 32));
        assert_eq!(f.metrics().idp_requests.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn failures_are_cached_briefly() {
        let fx = Fixture::start().await;
        *fx.ep.answer.lock() = Some((
            400,
            r#"{"error":"invalid_grant","error_description":"subject_token expired"}"#.into(),
        ));
        let opts =
            ExchangeOptions { negative_ttl: Duration::from_millis(300), ..Default::default() };
        let f = TokenExchangeFactory::with_options(reqwest::Client::new(), opts);
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
        assert_eq!(f.metrics().negative_hits.load(Ordering::Relaxed), 4);
        // A fresh token of the same user is not refused because of the old one's failure.
        let Identity::User(mut fresh) = user("alice") else { unreachable!() };
        fresh.token = SecretString::from("a-fresh-token".to_owned());
        assert!(src.headers(&Identity::User(fresh)).await.is_err());
        assert_eq!(fx.requests(), 2, "tried at once with the fresh token");
        tokio::time::sleep(Duration::from_millis(350)).await;
        *fx.ep.answer.lock() = None;
        src.headers(&user("alice")).await.unwrap();
        assert_eq!(fx.requests(), 3);
        assert_eq!(f.metrics().idp_errors.load(Ordering::Relaxed), 2);
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
        assert!(
            matches!(&e, OutgoingAuthError::Exchange { error, .. } if error == "invalid_response")
        );

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
        let f = TokenExchangeFactory::with_options(reqwest::Client::new(), opts);
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
        fx.ep.delay_ms.store(300, Ordering::SeqCst);
        let f = TokenExchangeFactory::new(reqwest::Client::new());
        let src = f.source("a", &fx.cfg(json!({}))).unwrap();
        let alice = user("alice");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), src.headers(&alice)).await.is_err()
        );
        fx.ep.delay_ms.store(0, Ordering::SeqCst);
        src.headers(&alice).await.unwrap();
        src.headers(&alice).await.unwrap();
        assert_eq!(fx.requests(), 2);
        assert_eq!(f.cache_stats(), (1, 2));
    }
}
