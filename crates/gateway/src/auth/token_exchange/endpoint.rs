//! Where users' tokens may go (L13). A `tokenExchange` backend sends the caller's gateway
//! token as `subject_token` to its `tokenUrl`; whoever writes a backend's auth settings could
//! otherwise point that at a server of their own and collect tokens that the gateway accepts.
//! So a `tokenUrl` is used only when it is the `token_endpoint` that the incoming issuer
//! publishes in its discovery document, or when the gateway's own configuration lists it in
//! `outbound.allowedTokenUrls`. Anything else fails before a token leaves the gateway, with an
//! error naming the backend.

use std::time::Duration;

use url::Url;

use super::OutgoingAuthError;
use crate::auth::incoming::discovery::discover;

/// The allowed token endpoints: the issuer's discovered one and an explicit list.
pub(crate) struct TokenUrlPolicy {
    /// Incoming OIDC issuer (its discovered `token_endpoint` is allowed); `None` without OIDC.
    issuer: Option<String>,
    allowed: Vec<Url>,
    http: reqwest::Client,
    timeout: Duration,
    /// The issuer's `token_endpoint` once discovered (`Some(None)`: it publishes none).
    discovered: tokio::sync::Mutex<Option<Option<Url>>>,
}

impl std::fmt::Debug for TokenUrlPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenUrlPolicy")
            .field("issuer", &self.issuer)
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl TokenUrlPolicy {
    /// With neither an issuer nor a list nothing is checked (no user token can exist then:
    /// incoming auth is anonymous, and an exchange fails for lack of a subject token).
    pub(crate) fn new(
        issuer: Option<String>,
        allowed: &[String],
        http: reqwest::Client,
        timeout: Duration,
    ) -> Self {
        Self {
            issuer,
            allowed: allowed.iter().filter_map(|u| Url::parse(u).ok()).collect(),
            http,
            timeout,
            discovered: tokio::sync::Mutex::new(None),
        }
    }

    /// May `backend` send a user's token to `token_url`?
    pub(crate) async fn check(
        &self,
        backend: &str,
        token_url: &str,
    ) -> Result<(), OutgoingAuthError> {
        let Some(issuer) = &self.issuer else {
            if self.allowed.is_empty() {
                return Ok(());
            }
            return self.refuse(backend, token_url, "no incoming OIDC issuer is configured");
        };
        let Ok(url) = Url::parse(token_url) else {
            return self.refuse(backend, token_url, "it is not a URL");
        };
        if self.allowed.contains(&url) {
            return Ok(());
        }
        let discovered = {
            let mut d = self.discovered.lock().await;
            if d.is_none() {
                match discover(&self.http, issuer, self.timeout).await {
                    Ok(doc) => {
                        *d = Some(doc.token_endpoint.as_deref().and_then(|e| Url::parse(e).ok()))
                    }
                    Err(e) => {
                        // Not remembered: the next exchange tries again.
                        let why = format!("the issuer's discovery document is unavailable: {e}");
                        return self.refuse(backend, token_url, &why);
                    }
                }
            }
            d.clone().flatten()
        };
        match discovered {
            Some(endpoint) if endpoint == url => Ok(()),
            Some(endpoint) => self.refuse(
                backend,
                token_url,
                &format!("the issuer {issuer} publishes the token endpoint {endpoint}"),
            ),
            None => self.refuse(
                backend,
                token_url,
                &format!("the issuer {issuer} publishes no token_endpoint"),
            ),
        }
    }

    fn refuse(&self, backend: &str, token_url: &str, why: &str) -> Result<(), OutgoingAuthError> {
        tracing::warn!(backend, token_url, "{why}; tokenUrl refused, no token sent");
        Err(OutgoingAuthError::TokenUrlNotAllowed {
            backend: backend.to_owned(),
            token_url: token_url.to_owned(),
            reason: why.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::Json;
    use axum::routing::get;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An issuer serving only its discovery document; counts the fetches.
    async fn issuer(publishes: bool) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let iss = format!("http://{}", listener.local_addr().unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let (i, n) = (iss.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/.well-known/openid-configuration",
            get(move || {
                n.fetch_add(1, Ordering::SeqCst);
                let mut doc = serde_json::json!({"issuer": i, "jwks_uri": format!("{i}/jwks")});
                if publishes {
                    doc["token_endpoint"] = format!("{i}/token").into();
                }
                async move { Json(doc) }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (iss, fetches)
    }

    #[tokio::test]
    async fn only_the_discovered_endpoint_or_a_listed_one_is_used() {
        let (iss, fetches) = issuer(true).await;
        let listed = "https://sts.example.com/exchange".to_owned();
        let p = TokenUrlPolicy::new(
            Some(iss.clone()),
            std::slice::from_ref(&listed),
            reqwest::Client::new(),
            Duration::from_secs(5),
        );
        p.check("a", &format!("{iss}/token")).await.unwrap();
        p.check("a", &listed).await.unwrap();
        let e = p.check("evil", "https://collector.example.net/token").await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("'evil'") && text.contains("collector.example.net"), "{text}");
        assert!(text.contains(&format!("{iss}/token")), "names the allowed one: {text}");
        assert!(p.check("b", &format!("{iss}/token/../other")).await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "discovered once");
    }

    #[tokio::test]
    async fn an_issuer_without_token_endpoint_or_discovery_allows_only_the_list() {
        let (iss, _) = issuer(false).await;
        let p = TokenUrlPolicy::new(
            Some(iss.clone()),
            &[],
            reqwest::Client::new(),
            Duration::from_secs(5),
        );
        let e = p.check("a", &format!("{iss}/token")).await.unwrap_err();
        assert!(e.to_string().contains("no token_endpoint"), "{e}");
        let gone = TokenUrlPolicy::new(
            Some("http://127.0.0.1:1".into()),
            &[],
            reqwest::Client::new(),
            Duration::from_secs(5),
        );
        let e = gone.check("a", "http://127.0.0.1:1/token").await.unwrap_err();
        assert!(e.to_string().contains("discovery"), "{e}");
        let none = TokenUrlPolicy::new(None, &[], reqwest::Client::new(), Duration::from_secs(5));
        none.check("a", "http://anything/token").await.unwrap();
    }
}
