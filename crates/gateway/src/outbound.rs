//! The HTTP client the gateway uses for every outgoing request: backends (MCP), the token
//! endpoint, OIDC discovery, JWKS and introspection.

use std::time::Duration;

/// Longest wait for a TCP (and TLS) connection to any upstream. Request deadlines are set per
/// call (the backend's `timeout`); this one bounds calls that have none, such as stream GETs.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the shared client.
///
/// Redirects are never followed (M6): MCP endpoints and OAuth endpoints have no reason to
/// redirect, and following one would send credential headers (`headerInjection`, a custom
/// token header, a `client_secret_post` body) to wherever the `Location` points, possibly
/// over plain HTTP. A redirect answer is returned as is and fails the call as an unexpected
/// status.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    http_client_trusting(&[])
}

/// Why extra CA certificates cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A CA file cannot be read.
    #[error("outbound.caFiles: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A CA file holds no usable PEM certificate.
    #[error("outbound.caFiles: {path} holds no PEM certificate ({why})")]
    Pem {
        /// The file.
        path: String,
        /// What the parser said.
        why: String,
    },
    /// The client cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The certificates of the PEM files `paths` (each may hold several).
pub fn read_ca_files(
    paths: &[std::path::PathBuf],
) -> Result<Vec<reqwest::Certificate>, TrustError> {
    let mut out = Vec::new();
    for p in paths {
        let path = p.display().to_string();
        let pem =
            std::fs::read(p).map_err(|source| TrustError::Read { path: path.clone(), source })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| TrustError::Pem { path: path.clone(), why: e.to_string() })?;
        if certs.is_empty() {
            return Err(TrustError::Pem { path, why: "no CERTIFICATE block".into() });
        }
        out.extend(certs);
    }
    Ok(out)
}

/// [`http_client`] that also trusts `extra` CA certificates (besides the built-in roots).
pub fn http_client_trusting(extra: &[reqwest::Certificate]) -> reqwest::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder();
    for c in extra {
        b = b.add_root_certificate(c.clone());
    }
    b.redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .no_proxy()
        .build()
}

/// An outbound request failure in words that are safe for errors and logs: the kind of
/// failure, then its innermost cause in printable ASCII (at most 200 characters). The request
/// URL is never included: backend and IdP URLs may carry credentials (M7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportFailure {
    /// `timed out`, `connection failed`, `reading the response failed` or `request failed`.
    pub kind: &'static str,
    /// The innermost cause (e.g. `Connection refused (os error 111)`), if any.
    pub cause: Option<String>,
}

impl TransportFailure {
    /// Describes `e`.
    pub fn of(e: &reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_decode() || e.is_body() {
            "reading the response failed"
        } else {
            "request failed"
        };
        let cause = std::error::Error::source(e).map(|s| printable(&innermost(s).to_string()));
        Self { kind, cause }
    }

    /// A failure of kind `kind` whose cause is the innermost error of `e`'s chain (`e` itself
    /// when it has no source).
    pub fn with_cause(kind: &'static str, e: &(dyn std::error::Error + 'static)) -> Self {
        Self { kind, cause: Some(printable(&innermost(e).to_string())) }
    }
}

/// The last error of `e`'s source chain (`e` itself when it has no source).
fn innermost<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut inner = e;
    while let Some(s) = inner.source() {
        inner = s;
    }
    inner
}

impl std::fmt::Display for TransportFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cause {
            Some(c) => write!(f, "{} ({c})", self.kind),
            None => f.write_str(self.kind),
        }
    }
}

/// Printable ASCII only, at most 200 characters (peer-provided text in errors and logs).
pub fn printable(s: &str) -> String {
    s.chars().filter(|c| (' '..='~').contains(c)).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;

    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;

    /// A loopback HTTP server answering every request with `answer`; records each request's
    /// headers.
    async fn serve(
        answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
    ) -> (u16, Arc<Mutex<Vec<HeaderMap>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let record = record.clone();
            let answer = answer.clone();
            async move {
                record.lock().push(headers);
                answer()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, seen)
    }

    /// M6: a backend answering `307` to another port (another origin) must not receive
    /// the follow-up; before, reqwest followed it and kept custom credential headers.
    #[tokio::test]
    async fn redirects_are_not_followed_and_credentials_stay_home() {
        let (sink, sink_seen) = serve(|| "sunk".into_response()).await;
        let location = format!("http://127.0.0.1:{sink}/mcp");
        let (backend, backend_seen) = serve(move || {
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location.clone())]).into_response()
        })
        .await;
        let resp = http_client()
            .unwrap()
            .post(format!("http://127.0.0.1:{backend}/mcp"))
            .header("x-api-key", "secret-key")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(backend_seen.lock().len(), 1);
        assert!(sink_seen.lock().is_empty(), "the redirect was followed");
    }

    /// One summary for every outbound failure, and never the URL (it may hold credentials).
    #[tokio::test]
    async fn transport_failures_name_the_kind_and_cause_but_not_the_url() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let url = format!("http://user:s3cret@{addr}/mcp?token=s3cret");
        let e = http_client().unwrap().get(&url).send().await.unwrap_err();
        let f = TransportFailure::of(&e);
        assert_eq!(f.kind, "connection failed");
        let text = f.to_string();
        assert!(text.starts_with("connection failed ("), "{text}");
        assert!(!text.contains("s3cret") && !text.contains(&addr.to_string()), "{text}");
        assert_eq!(printable("a\u{1b}[31mb\n"), "a[31mb");
    }

    #[test]
    fn unusable_ca_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = read_ca_files(&[missing]).unwrap_err().to_string();
        assert!(e.contains("outbound.caFiles") && e.contains("missing.pem"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = read_ca_files(&[junk]).unwrap_err().to_string();
        assert!(e.contains("junk.pem") && e.contains("no PEM certificate"), "{e}");
        assert!(read_ca_files(&[]).unwrap().is_empty());
    }
}
