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
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
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
        let mut cause = None;
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            cause = Some(printable(&s.to_string()));
            src = s.source();
        }
        Self { kind, cause }
    }
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
}
