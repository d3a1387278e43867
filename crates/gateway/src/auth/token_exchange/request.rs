//! One RFC 8693 request to a token endpoint and the reading of its answer: client
//! authentication (`client_secret_basic` / `client_secret_post`), the cache lifetime of the
//! issued token, and error texts that never echo tokens or unbounded IdP text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::time::Instant;
use vmcp_types::config::ClientAuthMethod;

use super::cache::Issued;
use super::{TOKEN_EXCHANGE_GRANT, TokenExchangeSource};
use crate::auth::outgoing::OutgoingAuthError;
use crate::metrics::RequestOutcome;
use crate::outbound::{TransportFailure, printable as sanitize};

impl TokenExchangeSource {
    /// One request to the token endpoint.
    pub(super) async fn exchange(
        &self,
        subject_token: &SecretString,
    ) -> Result<Issued, OutgoingAuthError> {
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
        let started = Instant::now();
        let result = self.send(req.form(&form)).await;
        let took = started.elapsed();
        let outcome = RequestOutcome {
            backend: self.backend.to_string(),
            outcome: if result.is_ok() { "ok" } else { "error" }.into(),
        };
        let m = self.cache.metrics();
        m.idp_requests.get_or_create(&outcome).inc();
        m.idp_seconds.get_or_create(&outcome).observe(took.as_secs_f64());
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
        let clock = self.cache.clock();
        let now = clock.now();
        let lifetime = lifetime(json.get("expires_in"), token, clock.wall())
            .unwrap_or(self.options.default_lifetime);
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

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
pub(crate) fn basic_auth(client_id: &str, secret: &SecretString) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(client_id), enc(secret.expose_secret()));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

/// `min(expires_in, exp - now)` when either is known.
pub(super) fn lifetime(
    expires_in: Option<&Value>,
    token: &str,
    now: SystemTime,
) -> Option<Duration> {
    let expires_in =
        expires_in.and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())));
    let exp_left = jwt_exp(token)
        .map(|exp| exp - now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64());
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

fn transport_error(e: &reqwest::Error) -> OutgoingAuthError {
    let failure = TransportFailure::of(e);
    OutgoingAuthError::Exchange {
        error: format!("transport: {}", failure.kind),
        description: failure.cause,
    }
}
