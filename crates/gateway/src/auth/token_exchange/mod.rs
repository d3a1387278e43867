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

mod cache;
mod endpoint;
mod request;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use vmcp_types::config::{ClientAuthMethod, TokenExchangeAuth};

use super::Identity;
use super::outgoing::{CredentialFactory, CredentialSource, OutgoingAuthError, read_secret};
use crate::clock::Clock;
use crate::metrics::ExchangeMetrics;
use cache::{Cache, Key, Lookup, grant_of, token_hash};
use endpoint::TokenUrlPolicy;
pub(crate) use request::basic_auth;

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
    /// The incoming OIDC issuer: its discovered `token_endpoint` is a token URL users' tokens
    /// may go to (L13). `None` (and no `allowed_token_urls`): nothing is checked.
    pub token_url_issuer: Option<String>,
    /// Token URLs allowed besides the discovered one (`outbound.allowedTokenUrls`).
    pub allowed_token_urls: Vec<String>,
}

impl Default for ExchangeOptions {
    fn default() -> Self {
        Self {
            negative_ttl: Duration::from_secs(5),
            max_entries: 10_000,
            timeout: Duration::from_secs(10),
            skew: Duration::from_secs(30),
            default_lifetime: Duration::from_secs(60),
            token_url_issuer: None,
            allowed_token_urls: Vec::new(),
        }
    }
}

/// Creates [`TokenExchangeSource`]s that share one HTTP client, cache and metrics.
pub struct TokenExchangeFactory {
    http: reqwest::Client,
    cache: Arc<Cache>,
    policy: Arc<TokenUrlPolicy>,
    options: ExchangeOptions,
}

impl std::fmt::Debug for TokenExchangeFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenExchangeFactory")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TokenExchangeFactory {
    /// A factory with default options whose metrics are not exported.
    pub fn new(http: reqwest::Client) -> Self {
        Self::with_options(http, ExchangeOptions::default(), ExchangeMetrics::default())
    }

    /// A factory with explicit options, updating `metrics` (clones of the handles
    /// [`crate::metrics::Metrics`] exports).
    pub fn with_options(
        http: reqwest::Client,
        options: ExchangeOptions,
        metrics: ExchangeMetrics,
    ) -> Self {
        Self::with_clock(http, options, metrics, Clock::System)
    }

    /// [`Self::with_options`] reading the time (cache and token expiry) from `clock`.
    pub(crate) fn with_clock(
        http: reqwest::Client,
        options: ExchangeOptions,
        metrics: ExchangeMetrics,
        clock: Clock,
    ) -> Self {
        let cache = Arc::new(Cache::new(options.max_entries, options.negative_ttl, metrics, clock));
        let policy = Arc::new(TokenUrlPolicy::new(
            options.token_url_issuer.clone(),
            &options.allowed_token_urls,
            http.clone(),
            options.timeout,
        ));
        Self { http, cache, policy, options }
    }

    /// The counters every source of this factory updates.
    pub fn metrics(&self) -> &ExchangeMetrics {
        self.cache.metrics()
    }

    /// `(hits, misses)` over every source of this factory.
    pub fn cache_stats(&self) -> (u64, u64) {
        let m = self.cache.metrics();
        (m.cache_hits.get(), m.cache_misses.get())
    }

    /// Number of cache entries (tokens, failures and requests in flight).
    pub fn cache_len(&self) -> usize {
        self.cache.len()
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
            policy: self.policy.clone(),
            options: self.options.clone(),
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
    policy: Arc<TokenUrlPolicy>,
    options: ExchangeOptions,
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
        let flight = match self.cache.lookup(&key, &token) {
            Lookup::Done(r) => return r.map(|h| vec![h]),
            Lookup::Wait(f) => f,
        };
        let result = flight
            .get_or_init(|| async {
                // Users' tokens go only to an allowed token endpoint (L13).
                self.policy.check(&self.backend, &self.token_url).await?;
                // Never cached beyond the subject token's own expiry (M2).
                let mut issued = self.exchange(&user.token).await?;
                if let Some(exp) = user.expires_at {
                    let clock = self.cache.clock();
                    let left = exp.duration_since(clock.wall()).unwrap_or_default();
                    issued.valid_until = issued.valid_until.min(clock.now() + left);
                }
                Ok(issued)
            })
            .await
            .clone();
        self.cache.settle(&key, token, &flight, &result);
        result.map(|i| vec![i.header])
    }

    fn needs_identity(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "tokenExchange"
    }
}

#[cfg(test)]
mod tests;
