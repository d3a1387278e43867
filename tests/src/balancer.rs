//! A round-robin HTTP load balancer without stickiness: each request goes to the next
//! upstream, so one client's requests alternate between gateway replicas.

// Test harness: a failed setup step panics with its reason, which is the test's failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures::TryStreamExt;

#[derive(Clone)]
struct Upstreams {
    ports: Arc<Vec<u16>>,
    next: Arc<AtomicUsize>,
    http: reqwest::Client,
    /// How many more POST event streams to cut after their first event (a network fault:
    /// the client sees the stream end early and must resume it).
    cut_streams: Arc<AtomicUsize>,
}

/// A running balancer; stops when dropped.
#[derive(Debug)]
pub struct Balancer {
    /// Its port.
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
    cut_streams: Arc<AtomicUsize>,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Balancer {
    /// Balances over gateways listening on 127.0.0.1 at `ports`.
    pub async fn start(ports: Vec<u16>) -> Balancer {
        let state = Upstreams {
            ports: Arc::new(ports),
            next: Arc::new(AtomicUsize::new(0)),
            http: reqwest::Client::new(),
            cut_streams: Arc::new(AtomicUsize::new(0)),
        };
        let cut_streams = state.cut_streams.clone();
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Balancer { port, task, cut_streams }
    }

    /// Cuts the next `n` POST responses that are event streams right after their first
    /// event: the client gets the first event (a priming event, if the gateway sends one),
    /// then the stream ends; the gateway sees its client go away.
    pub fn cut_next_post_streams(&self, n: usize) {
        self.cut_streams.store(n, Ordering::SeqCst);
    }

    /// The MCP endpoint behind the balancer.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

async fn forward(State(up): State<Upstreams>, req: Request) -> Response {
    let i = up.next.fetch_add(1, Ordering::Relaxed) % up.ports.len();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("http://127.0.0.1:{}{path}", up.ports[i]);
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let is_post = parts.method == http::Method::POST;
    let mut rb = up.http.request(parts.method, url).body(bytes);
    for (k, v) in &parts.headers {
        if k != http::header::HOST {
            rb = rb.header(k, v);
        }
    }
    match rb.send().await {
        Ok(resp) => {
            let mut out = Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                out = out.header(k, v);
            }
            let sse = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let cut = is_post
                && sse
                && up
                    .cut_streams
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if cut {
                return out.body(Body::from_stream(first_event(resp))).unwrap();
            }
            let stream = resp.bytes_stream().map_err(std::io::Error::other);
            out.body(Body::from_stream(stream)).unwrap()
        }
        Err(e) => Response::builder().status(502).body(Body::from(e.to_string())).unwrap(),
    }
}

/// The bytes of `resp` up to the end of its first SSE event; the upstream connection is
/// dropped after that.
fn first_event(
    resp: reqwest::Response,
) -> impl futures::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    futures::stream::unfold(Some((resp, Vec::<u8>::new())), |st| async move {
        let (mut resp, mut seen) = st?;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                _ => return None,
            };
            seen.extend_from_slice(&chunk);
            let text = String::from_utf8_lossy(&seen).replace("\r\n", "\n");
            if let Some(end) = text.find("\n\n") {
                let first = axum::body::Bytes::from(text[..end + 2].to_owned());
                return Some((Ok(first), None));
            }
        }
    })
}
