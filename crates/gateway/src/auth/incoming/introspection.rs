//! RFC 7662 token introspection for opaque (non-JWT) access tokens.
//!
//! Results (active or not) are cached in memory for at most 30 s, keyed by a SHA-256 of the
//! token, so that a burst of requests with one token costs one introspection call.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use secrecy::SecretString;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use vmcp_types::config::IntrospectionConfig;

use super::IncomingAuthError;
use crate::auth::outgoing::read_secret;
use crate::auth::token_exchange::basic_auth;
use crate::outbound::TransportFailure;

const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 10_000;

type Cached = (Result<Arc<Map<String, Value>>, IncomingAuthError>, Instant);

/// An introspection client.
pub(crate) struct Introspector {
    url: String,
    client_id: String,
    client_secret: SecretString,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl Introspector {
    pub(crate) fn new(cfg: &IntrospectionConfig) -> Result<Self, IncomingAuthError> {
        let client_secret =
            read_secret("incomingAuth.oidc.introspection.clientSecret", &cfg.client_secret)
                .map_err(|e| IncomingAuthError::Config(e.to_string()))?;
        Ok(Self {
            url: cfg.url.clone(),
            client_id: cfg.client_id.clone(),
            client_secret,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The claims of an active token (the caller checks `iss`, `aud`, `exp`, `sub`).
    pub(crate) async fn introspect(
        &self,
        http: &reqwest::Client,
        token: &str,
        timeout: Duration,
    ) -> Result<Arc<Map<String, Value>>, IncomingAuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some((r, until)) = self.cache.lock().get(&key)
            && *until > now
        {
            return r.clone();
        }
        let result = self.call(http, token, timeout).await;
        if let Err(IncomingAuthError::ProviderUnavailable(_)) = result {
            return result; // never cache an outage
        }
        let mut ttl = CACHE_TTL;
        if let Ok(claims) = &result
            && let Some(exp) = claims.get("exp").and_then(Value::as_f64)
        {
            let left = exp
                - SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
            ttl = ttl.min(Duration::try_from_secs_f64(left.max(0.0)).unwrap_or_default());
        }
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_MAX {
                // Still full of live entries (L5): drop the tenth that expires soonest rather
                // than every valid answer at once.
                let mut by_expiry: Vec<([u8; 32], Instant)> =
                    cache.iter().map(|(k, (_, until))| (*k, *until)).collect();
                by_expiry.sort_by_key(|(_, until)| *until);
                for (k, _) in by_expiry.into_iter().take(CACHE_MAX / 10 + 1) {
                    cache.remove(&k);
                }
            }
        }
        cache.insert(key, (result.clone(), now + ttl));
        result
    }

    async fn call(
        &self,
        http: &reqwest::Client,
        token: &str,
        timeout: Duration,
    ) -> Result<Arc<Map<String, Value>>, IncomingAuthError> {
        let unavailable = |what: String| {
            IncomingAuthError::ProviderUnavailable(format!("introspection {}: {what}", self.url))
        };
        let mut auth =
            http::HeaderValue::from_str(&basic_auth(&self.client_id, &self.client_secret))
                .map_err(|_| {
                    IncomingAuthError::Config(
                        "the introspection client id or secret is not header-safe".into(),
                    )
                })?;
        auth.set_sensitive(true);
        let resp = http
            .post(&self.url)
            .timeout(timeout)
            .header(http::header::AUTHORIZATION, auth)
            .header(http::header::ACCEPT, "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| unavailable(TransportFailure::of(&e).to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(unavailable(format!("HTTP {status}")));
        }
        let body: Value =
            resp.json().await.map_err(|e| unavailable(TransportFailure::of(&e).to_string()))?;
        let Value::Object(claims) = body else {
            return Err(unavailable("the response is not a JSON object".into()));
        };
        if claims.get("active").and_then(Value::as_bool) != Some(true) {
            return Err(IncomingAuthError::Inactive);
        }
        Ok(Arc::new(claims))
    }
}
