//! OpenID Provider discovery and JWKS download. Errors are short, secret-free summaries
//! (URL and status) for logs and [`super::IncomingAuthError::ProviderUnavailable`].

use std::time::Duration;

use serde::Deserialize;

use super::jwks::KeySet;
use crate::outbound::TransportFailure;

/// Largest discovery or JWKS document accepted.
const MAX_DOC: usize = 1 << 20;

/// The parts of the discovery document the validator uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Discovery {
    pub(crate) issuer: String,
    pub(crate) jwks_uri: String,
    /// Where token exchange may send users' tokens (L13).
    #[serde(default)]
    pub(crate) token_endpoint: Option<String>,
}

/// `<issuer>/.well-known/openid-configuration`.
pub(crate) fn discovery_url(issuer: &str) -> String {
    format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
}

async fn get_json_bytes(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let resp = http
        .get(url)
        .header(http::header::ACCEPT, "application/json")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", TransportFailure::of(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    if resp.content_length().is_some_and(|l| l > MAX_DOC as u64) {
        return Err(format!("GET {url}: the document is larger than {MAX_DOC} bytes"));
    }
    let body =
        resp.bytes().await.map_err(|e| format!("GET {url}: {}", TransportFailure::of(&e)))?;
    if body.len() > MAX_DOC {
        return Err(format!("GET {url}: the document is larger than {MAX_DOC} bytes"));
    }
    Ok(body.to_vec())
}

/// Fetches the discovery document and checks that its `issuer` is exactly `issuer`.
pub(crate) async fn discover(
    http: &reqwest::Client,
    issuer: &str,
    timeout: Duration,
) -> Result<Discovery, String> {
    let url = discovery_url(issuer);
    let body = get_json_bytes(http, &url, timeout).await?;
    let d: Discovery = serde_json::from_slice(&body)
        .map_err(|e| format!("{url}: not a discovery document: {e}"))?;
    if d.issuer != issuer {
        return Err(format!(
            "{url}: its issuer {:?} is not the configured issuer {issuer:?}",
            d.issuer
        ));
    }
    Ok(d)
}

/// Downloads and parses a JWKS.
pub(crate) async fn fetch_jwks(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<KeySet, String> {
    let body = get_json_bytes(http, url, timeout).await?;
    KeySet::parse(&body).map_err(|e| format!("{url}: {e}"))
}
