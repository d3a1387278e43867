//! [`OidcValidator`]: validates bearer tokens of one OpenID provider.
//!
//! Keys come from the provider's JWKS (found by discovery unless `jwksUrl` is configured) and
//! are kept in memory:
//! - loaded on first use (or by [`OidcValidator::warm_up`] at start-up); a provider that is
//!   down at start-up does not stop the gateway: the next request retries (at most once per
//!   `retry_after_failure`), and requests get 503 until keys are known;
//! - refreshed in the background after `jwksRefreshInterval` (requests keep using the old keys
//!   meanwhile);
//! - re-fetched when a token names an unknown `kid` (key rotation), at most once per
//!   `min_refetch_interval` and single-flight: concurrent requests wait for one download.

use parking_lot::RwLock;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use secrecy::SecretString;
use serde_json::{Map, Value};
use tokio::time::Instant;
use vmcp_types::config::OidcConfig;

use super::IncomingAuthError;
use super::claims::{self, Expect};
use super::discovery::{discover, fetch_jwks};
use super::header::{JwtHeader, check_jwt_header, parse_algorithms};
use super::introspection::Introspector;
use super::jwks::KeySet;
use crate::auth::UserIdentity;
use crate::clock::Clock;

/// Tuning knobs that are not part of the user configuration.
#[derive(Debug, Clone)]
pub struct ValidatorOptions {
    /// Least time between two JWKS re-fetches caused by an unknown `kid` (default 10 s).
    pub min_refetch_interval: Duration,
    /// Least time between two attempts to load keys while none are known (default 1 s).
    pub retry_after_failure: Duration,
    /// Timeout of discovery, JWKS and introspection requests (default 10 s).
    pub http_timeout: Duration,
}

impl Default for ValidatorOptions {
    fn default() -> Self {
        Self {
            min_refetch_interval: Duration::from_secs(10),
            retry_after_failure: Duration::from_secs(1),
            http_timeout: Duration::from_secs(10),
        }
    }
}

/// Validates access tokens of one issuer for one audience. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct OidcValidator {
    inner: Arc<Inner>,
}

struct KeyState {
    set: Arc<KeySet>,
    loaded: bool,
    /// Bumped on every successful download.
    generation: u64,
    /// When the background refresh is due.
    refresh_due: Instant,
}

#[derive(Default)]
struct FetchState {
    jwks_uri: Option<String>,
    last_kid_refetch: Option<Instant>,
    last_failure: Option<(Instant, String)>,
}

struct Inner {
    issuer: String,
    audience: String,
    scopes: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    refresh_interval: Duration,
    configured_jwks: Option<String>,
    http: reqwest::Client,
    opts: ValidatorOptions,
    /// Reads the time of refreshes, re-fetches and retries.
    clock: Clock,
    introspector: Option<Introspector>,
    keys: RwLock<KeyState>,
    /// Held while downloading: one download at a time (single flight).
    fetch: tokio::sync::Mutex<FetchState>,
    refreshing: AtomicBool,
    fetch_ok: AtomicU64,
    fetch_failed: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcValidator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl OidcValidator {
    /// A validator for tokens of `cfg.issuer` whose `aud` contains `audience` (the configured
    /// `audience`, else the gateway's `resourceUrl`; see [`Self::from_config`]). No network
    /// access happens here.
    pub fn new(
        cfg: &OidcConfig,
        audience: &str,
        http: reqwest::Client,
    ) -> Result<Self, IncomingAuthError> {
        Self::with_options(cfg, audience, http, ValidatorOptions::default())
    }

    /// [`Self::new`] with the audience taken from `cfg.audience`, else `resource_url`.
    pub fn from_config(
        cfg: &OidcConfig,
        resource_url: Option<&str>,
        http: reqwest::Client,
    ) -> Result<Self, IncomingAuthError> {
        let audience = cfg.audience.as_deref().or(resource_url).ok_or_else(|| {
            IncomingAuthError::Config("set incomingAuth.oidc.audience or resourceUrl".into())
        })?;
        Self::new(cfg, audience, http)
    }

    /// [`Self::new`] with explicit [`ValidatorOptions`].
    pub fn with_options(
        cfg: &OidcConfig,
        audience: &str,
        http: reqwest::Client,
        opts: ValidatorOptions,
    ) -> Result<Self, IncomingAuthError> {
        Self::with_clock(cfg, audience, http, opts, Clock::System)
    }

    /// [`Self::with_options`] reading the time from `clock`.
    pub(crate) fn with_clock(
        cfg: &OidcConfig,
        audience: &str,
        http: reqwest::Client,
        opts: ValidatorOptions,
        clock: Clock,
    ) -> Result<Self, IncomingAuthError> {
        if audience.is_empty() {
            return Err(IncomingAuthError::Config("the expected audience is empty".into()));
        }
        crate::auth::jwt_crypto::install();
        let introspector = cfg.introspection.as_ref().map(Introspector::new).transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                issuer: cfg.issuer.clone(),
                audience: audience.to_owned(),
                scopes: cfg.scopes.clone(),
                algorithms: parse_algorithms(&cfg.algorithms)?,
                leeway: cfg.leeway,
                refresh_interval: cfg.jwks_refresh_interval.max(Duration::from_secs(1)),
                configured_jwks: cfg.jwks_url.clone(),
                http,
                opts,
                introspector,
                keys: RwLock::new(KeyState {
                    set: Arc::default(),
                    loaded: false,
                    generation: 0,
                    refresh_due: clock.now(),
                }),
                clock,
                fetch: tokio::sync::Mutex::new(FetchState::default()),
                refreshing: AtomicBool::new(false),
                fetch_ok: AtomicU64::new(0),
                fetch_failed: AtomicU64::new(0),
            }),
        })
    }

    /// The configured issuer (`iss` of accepted tokens; `authorization_servers` in metadata).
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The expected audience.
    pub fn audience(&self) -> &str {
        &self.inner.audience
    }

    /// The configured scopes (for `WWW-Authenticate` and the resource metadata).
    pub fn scopes(&self) -> &[String] {
        &self.inner.scopes
    }

    /// JWKS downloads so far: (succeeded, failed). Discovery failures count as failed.
    pub fn jwks_fetches(&self) -> (u64, u64) {
        (
            self.inner.fetch_ok.load(Ordering::Relaxed),
            self.inner.fetch_failed.load(Ordering::Relaxed),
        )
    }

    /// Runs discovery and loads the JWKS now (call at start-up). A failure is logged and
    /// returned, and is not fatal: requests retry.
    pub async fn warm_up(&self) -> Result<(), IncomingAuthError> {
        let mut f = self.inner.fetch.lock().await;
        self.inner
            .fetch_locked(&mut f)
            .await
            .map(|_| ())
            .map_err(IncomingAuthError::ProviderUnavailable)
    }

    /// Validates a bearer token: a JWT (allowed `alg`, signature by a JWKS key, `iss`, `aud`,
    /// `exp`/`nbf` with leeway, `sub`), or, when introspection is configured, an opaque token
    /// through RFC 7662.
    pub async fn validate(&self, token: &str) -> Result<UserIdentity, IncomingAuthError> {
        let inner = &self.inner;
        let Some(JwtHeader { alg, kid }) = check_jwt_header(token, &inner.algorithms)? else {
            return match &inner.introspector {
                Some(i) => self.validate_introspected(i, token).await,
                None => Err(IncomingAuthError::Malformed("the token is not a JWT")),
            };
        };
        let kid = kid.as_deref();

        let (mut set, generation) = inner.keys_for_use(&self.inner).await?;
        if set.candidates(kid, alg).next().is_none() {
            set = inner.refetch_for_unknown_kid(generation).await;
        }
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let mut claims = None;
        let mut last = IncomingAuthError::UnknownKey;
        for key in set.candidates(kid, alg) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(d) => {
                    claims = Some(d.claims);
                    break;
                }
                Err(e) => last = map_jwt_error(e.kind()),
            }
        }
        let Some(claims) = claims else {
            tracing::debug!(kid, ?alg, "bearer token rejected: {last}");
            return Err(last);
        };
        let (subject, expires_at) =
            claims::check_jwt_claims(&claims, &inner.issuer, &inner.audience, inner.leeway)?;
        Ok(UserIdentity {
            issuer: inner.issuer.clone(),
            subject,
            token: SecretString::from(token.to_owned()),
            claims,
            expires_at,
        })
    }

    async fn validate_introspected(
        &self,
        i: &Introspector,
        token: &str,
    ) -> Result<UserIdentity, IncomingAuthError> {
        let inner = &self.inner;
        let claims = i.introspect(&inner.http, token, inner.opts.http_timeout).await?;
        let (subject, expires_at) = claims::check(&claims, inner.introspected_claims())?;
        Ok(UserIdentity {
            issuer: inner.issuer.clone(),
            subject,
            token: SecretString::from(token.to_owned()),
            claims: (*claims).clone(),
            expires_at,
        })
    }
}

impl Inner {
    /// What the claims of an introspected (opaque) token must satisfy: `iss` and `exp` are
    /// optional there (RFC 7662), unlike in a JWT.
    fn introspected_claims(&self) -> Expect<'_> {
        Expect {
            issuer: &self.issuer,
            audience: &self.audience,
            leeway: self.leeway,
            require_iss_exp: false,
        }
    }

    /// The current keys (loading them first if none are known), and their generation.
    async fn keys_for_use(
        &self,
        this: &Arc<Inner>,
    ) -> Result<(Arc<KeySet>, u64), IncomingAuthError> {
        {
            let s = self.keys.read();
            if s.loaded {
                if self.clock.now() >= s.refresh_due {
                    Self::spawn_refresh(this);
                }
                return Ok((s.set.clone(), s.generation));
            }
        }
        let mut f = self.fetch.lock().await;
        {
            let s = self.keys.read();
            if s.loaded {
                return Ok((s.set.clone(), s.generation));
            }
        }
        if let Some((at, why)) = &f.last_failure
            && self.clock.now().saturating_duration_since(*at) < self.opts.retry_after_failure
        {
            return Err(IncomingAuthError::ProviderUnavailable(why.clone()));
        }
        self.fetch_locked(&mut f).await.map_err(IncomingAuthError::ProviderUnavailable)
    }

    /// After a token named a `kid` (or `alg`) that `generation` does not have: re-fetch once
    /// (rate-limited, single flight) and return the keys to try.
    async fn refetch_for_unknown_kid(&self, generation: u64) -> Arc<KeySet> {
        let mut f = self.fetch.lock().await;
        let current = {
            let s = self.keys.read();
            if s.generation != generation {
                return s.set.clone(); // someone downloaded while we waited
            }
            s.set.clone()
        };
        let now = self.clock.now();
        if f.last_kid_refetch
            .is_some_and(|t| now.saturating_duration_since(t) < self.opts.min_refetch_interval)
        {
            return current;
        }
        f.last_kid_refetch = Some(now);
        tracing::info!(issuer = %self.issuer, "a token names an unknown signing key; re-fetching the JWKS");
        self.fetch_locked(&mut f).await.map(|(s, _)| s).unwrap_or(current)
    }

    fn spawn_refresh(this: &Arc<Inner>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        if this.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = this.clone();
        rt.spawn(async move {
            let mut f = inner.fetch.lock().await;
            let due = inner.clock.now() >= inner.keys.read().refresh_due;
            if due && inner.fetch_locked(&mut f).await.is_err() {
                // Keep the old keys; try again a little later rather than on every request.
                let retry = inner.refresh_interval.min(Duration::from_secs(30));
                inner.keys.write().refresh_due = inner.clock.now() + retry;
            }
            inner.refreshing.store(false, Ordering::Release);
        });
    }

    /// Discovery (once) and a JWKS download; the caller holds the fetch lock.
    async fn fetch_locked(&self, f: &mut FetchState) -> Result<(Arc<KeySet>, u64), String> {
        let result = async {
            let uri = match (&self.configured_jwks, &f.jwks_uri) {
                (Some(u), _) | (None, Some(u)) => u.clone(),
                (None, None) => {
                    let d = discover(&self.http, &self.issuer, self.opts.http_timeout)
                        .await
                        .map_err(|e| format!("OIDC discovery failed: {e}"))?;
                    f.jwks_uri = Some(d.jwks_uri.clone());
                    d.jwks_uri
                }
            };
            fetch_jwks(&self.http, &uri, self.opts.http_timeout)
                .await
                .map_err(|e| format!("JWKS download failed: {e}"))
        }
        .await;
        match result {
            Ok(set) => {
                self.fetch_ok.fetch_add(1, Ordering::Relaxed);
                f.last_failure = None;
                if set.keys.is_empty() {
                    tracing::warn!(issuer = %self.issuer, "the JWKS has no usable signature key");
                } else {
                    tracing::debug!(issuer = %self.issuer, kids = ?set.kids(), "JWKS loaded");
                }
                let set = Arc::new(set);
                let mut s = self.keys.write();
                s.set = set.clone();
                s.loaded = true;
                s.generation += 1;
                s.refresh_due = self.clock.now() + self.refresh_interval;
                Ok((set, s.generation))
            }
            Err(why) => {
                self.fetch_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(issuer = %self.issuer, "{why}; bearer tokens cannot be verified until it succeeds (retried on the next request)");
                f.last_failure = Some((self.clock.now(), why.clone()));
                Err(why)
            }
        }
    }
}

fn map_jwt_error(kind: &ErrorKind) -> IncomingAuthError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => IncomingAuthError::InvalidSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => IncomingAuthError::AlgorithmNotAllowed(String::new()),
        _ => IncomingAuthError::Malformed("the token is not a well-formed JWT"),
    }
}
