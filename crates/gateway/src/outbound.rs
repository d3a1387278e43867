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
}
