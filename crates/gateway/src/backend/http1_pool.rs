//! A lean HTTP/1.1 client for the hot path: the POSTs of Streamable HTTP sessions to a plain
//! `http://` backend, on keep-alive connections pooled per backend definition.
//!
//! reqwest (over hyper-util's pooling client) costs about a quarter of the instructions of a
//! forwarded call: a task spawned per request to give the connection back, URL handling by the
//! redirect policy, a timeout wrapper, header map merging. Here a call takes a ready connection
//! handle from the pool (or opens one), sends its request on it and puts the handle back when
//! the response head arrives (not after an error status: see [`Pool::post`]). The caller bounds the whole exchange with the backend's timeout.
//! `https://` backends and the other requests (GET streams, DELETE) keep using reqwest.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;

use super::BackendError;
use crate::outbound::{CONNECT_TIMEOUT, TransportFailure};

/// Most connection handles a pool keeps (those beyond are closed once their response is read).
pub const MAX_IDLE: usize = 64;

/// A connection unused for longer is closed instead of reused (like reqwest's pool), at the
/// latest on the next [`Pool::close_idle`] (the health monitor's tick).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Where a pool's connections go.
#[derive(Debug)]
enum Host {
    Name(String),
    Ip(IpAddr),
}

/// A pooled connection handle, busy (its response not read yet) or ready.
struct Pooled {
    tx: SendRequest<Full<Bytes>>,
    /// When it was last handed out.
    used: Instant,
}

/// The keep-alive connections to one `http://` backend URL.
pub struct Pool {
    host: Host,
    port: u16,
    /// The request target: path and query of the URL.
    target: Uri,
    /// `Host` header: host, and the port unless 80.
    host_header: HeaderValue,
    /// Userinfo of the URL as `Basic` credentials (as reqwest sends it).
    basic_auth: Option<HeaderValue>,
    handles: Mutex<Vec<Pooled>>,
    /// Requests sent again on a new connection (to check the keep-alive race is covered).
    #[cfg(test)]
    retried: std::sync::atomic::AtomicUsize,
    /// Connections not kept because they answered with an error status.
    #[cfg(test)]
    dropped: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Pool {
    // The URL parts are left out: they may hold credentials (M7).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("connections", &self.handles.lock().len()).finish()
    }
}

impl Pool {
    /// A pool for `url` if it is a plain `http://` URL this client can reach (else reqwest is
    /// used).
    pub fn for_url(url: &url::Url) -> Option<Self> {
        if url.scheme() != "http" {
            return None;
        }
        let host = match url.host()? {
            url::Host::Domain(d) => Host::Name(d.to_owned()),
            url::Host::Ipv4(ip) => Host::Ip(ip.into()),
            url::Host::Ipv6(ip) => Host::Ip(ip.into()),
        };
        let port = url.port_or_known_default()?;
        let target = url[url::Position::BeforePath..url::Position::AfterQuery].parse().ok()?;
        let host_str = url.host_str()?;
        let host_header = match url.port() {
            Some(p) => HeaderValue::from_str(&format!("{host_str}:{p}")),
            None => HeaderValue::from_str(host_str),
        }
        .ok()?;
        let basic_auth = userinfo_credentials(url)?;
        Some(Self {
            host,
            port,
            target,
            host_header,
            basic_auth,
            handles: Mutex::new(Vec::new()),
            #[cfg(test)]
            retried: Default::default(),
            #[cfg(test)]
            dropped: Default::default(),
        })
    }

    /// A POST of `body` with `headers` (the caller's; `Host` and the URL's credentials are
    /// added here). Not bounded in time: the caller applies the backend's timeout, which is
    /// also `timeout` in a connect timeout error. A connection that answers with an error
    /// status is not reused.
    pub async fn post(
        &self,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response<Incoming>, BackendError> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.target.clone();
        let h = req.headers_mut();
        *h = headers;
        if let Some(auth) = &self.basic_auth {
            h.append(http::header::AUTHORIZATION, auth.clone());
        }
        h.entry(http::header::HOST).or_insert_with(|| self.host_header.clone());
        let (mut tx, reused) = match self.checkout() {
            Some(tx) => (tx, true),
            None => (self.connect(timeout).await?, false),
        };
        match tx.try_send_request(req).await {
            Ok(resp) => Ok(self.checkin_after(tx, resp)),
            // The backend closed a kept-alive connection before the request went out (a
            // keep-alive race): once more, on a new connection.
            Err(mut e) if reused && e.message().is_some() => {
                let Some(req) = e.take_message() else {
                    return Err(request_failed(&e.into_error()));
                };
                #[cfg(test)]
                self.retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut tx = self.connect(timeout).await?;
                let resp =
                    tx.try_send_request(req).await.map_err(|e| request_failed(&e.into_error()))?;
                Ok(self.checkin_after(tx, resp))
            }
            Err(e) => Err(request_failed(&e.into_error())),
        }
    }

    /// Keeps the connection that carried `resp` for later requests, unless `resp` is an error
    /// status: then the connection closes once `resp` is read, and the next request opens a
    /// new one. A connection made while the backend's address was not routed yet (a new
    /// Kubernetes Service before kube-proxy programmed it) may have reached something else
    /// that answers every request with an error; reused, it would keep the backend unavailable
    /// long after its Service works.
    fn checkin_after(
        &self,
        tx: SendRequest<Full<Bytes>>,
        resp: Response<Incoming>,
    ) -> Response<Incoming> {
        let status = resp.status();
        if status.is_client_error() || status.is_server_error() {
            #[cfg(test)]
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            self.checkin(tx);
        }
        resp
    }

    /// Closes the connections unused for [`IDLE_TIMEOUT`] and those the backend closed, so an
    /// idle gateway holds no socket to a backend it no longer calls (I8); returns how many
    /// connections stay pooled.
    pub fn close_idle(&self) -> usize {
        self.close_idle_at(Instant::now())
    }

    /// [`Pool::close_idle`] as of `now`.
    fn close_idle_at(&self, now: Instant) -> usize {
        let mut handles = self.handles.lock();
        handles.retain(|p| !p.tx.is_closed() && Self::keep(p, now));
        handles.len()
    }

    /// Busy handles stay; ready ones only while used within [`IDLE_TIMEOUT`].
    fn keep(p: &Pooled, now: Instant) -> bool {
        !p.tx.is_ready() || now.duration_since(p.used) <= IDLE_TIMEOUT
    }

    /// A ready handle from the pool, the most recently used first. Closed handles and those
    /// unused for [`IDLE_TIMEOUT`] are dropped; busy ones stay.
    fn checkout(&self) -> Option<SendRequest<Full<Bytes>>> {
        let now = Instant::now();
        let mut handles = self.handles.lock();
        handles.retain(|p| !p.tx.is_closed() && Self::keep(p, now));
        let i = handles.iter().rposition(|p| p.tx.is_ready())?;
        Some(handles.swap_remove(i).tx)
    }

    /// Puts a handle whose response head arrived back into the pool (if there is room); it is
    /// ready again once that response's body is read.
    fn checkin(&self, tx: SendRequest<Full<Bytes>>) {
        let mut handles = self.handles.lock();
        if handles.len() < MAX_IDLE {
            handles.push(Pooled { tx, used: Instant::now() });
        }
    }

    /// A new connection (its I/O driven by a spawned task until the backend or the pool
    /// closes it).
    async fn connect(&self, timeout: Duration) -> Result<SendRequest<Full<Bytes>>, BackendError> {
        let connecting = async {
            match &self.host {
                Host::Ip(ip) => {
                    tokio::net::TcpStream::connect(SocketAddr::new(*ip, self.port)).await
                }
                Host::Name(name) => {
                    tokio::net::TcpStream::connect((name.as_str(), self.port)).await
                }
            }
        };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(failure("connection failed", &e)),
            Err(_) => return Err(BackendError::Timeout(timeout)),
        };
        stream.set_nodelay(true).map_err(|e| failure("connection failed", &e))?;
        let (tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| failure("connection failed", &e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %TransportFailure::with_cause("connection ended", &e), "backend connection closed");
            }
        });
        Ok(tx)
    }
}

/// The `Authorization: Basic` value for a URL's userinfo, as reqwest builds it (`None` inside
/// when there is none; `None` outside when it is not UTF-8 once decoded).
fn userinfo_credentials(url: &url::Url) -> Option<Option<HeaderValue>> {
    use base64::Engine as _;
    let decode = |s| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(String::from);
    let user = decode(url.username())?;
    let password = match url.password() {
        Some(p) => Some(decode(p)?),
        None => None,
    };
    if user.is_empty() && password.is_none() {
        return Some(None);
    }
    let plain = format!("{user}:{}", password.unwrap_or_default());
    let encoded = base64::engine::general_purpose::STANDARD.encode(plain);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(Some(value))
}

/// A transport failure in [`TransportFailure`]'s words (never the URL).
fn failure(kind: &'static str, e: &(dyn std::error::Error + 'static)) -> BackendError {
    BackendError::Unreachable(TransportFailure::with_cause(kind, e).to_string())
}

fn request_failed(e: &hyper::Error) -> BackendError {
    failure("request failed", e)
}

/// Reading a response body failed.
pub fn body_failed(e: &hyper::Error) -> BackendError {
    failure("reading the response failed", e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An axum server echoing each POST body (with the status in `x-status`, default 200); counts the connections it accepted and records
    /// each request's headers and target.
    async fn echo() -> (url::Url, Arc<AtomicUsize>, Arc<Mutex<Vec<(String, HeaderMap)>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let status = headers
                .get("x-status")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(http::StatusCode::OK);
            record.lock().push((uri.to_string(), headers));
            async move { (status, body) }
        });
        let (addr, accepted) = serve_counted(move |stream| {
            let svc = hyper::service::service_fn({
                let app = app.clone();
                move |req: Request<Incoming>| {
                    let mut app = app.clone();
                    async move { tower::Service::call(&mut app, req).await }
                }
            });
            async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            }
        })
        .await;
        let url = url::Url::parse(&format!("http://u%40x:p%3Aw@{addr}/mcp?k=v")).unwrap();
        (url, accepted, seen)
    }

    /// A loopback listener that runs `serve` on each accepted connection (in its own task)
    /// and counts the connections.
    async fn serve_counted<F, Fut>(serve: F) -> (std::net::SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let n = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                n.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        (addr, accepted)
    }

    async fn body(resp: Response<Incoming>) -> Bytes {
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection_and_carry_host_and_userinfo() {
        let (url, accepted, seen) = echo().await;
        let pool = Pool::for_url(&url).unwrap();
        for i in 0..5 {
            let mut h = HeaderMap::new();
            h.insert("x-n", HeaderValue::from(i));
            let resp = pool.post(h, Bytes::from(format!("call {i}")), T).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(body(resp).await, format!("call {i}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        let seen = seen.lock();
        let (target, headers) = &seen[4];
        assert_eq!(target, "/mcp?k=v");
        assert_eq!(headers["x-n"], "4");
        assert_eq!(
            headers["host"],
            url.host_str().unwrap().to_owned() + ":" + &url.port().unwrap().to_string()
        );
        // reqwest's encoding of the userinfo `u@x` / `p:w`.
        assert_eq!(headers["authorization"], "Basic dUB4OnA6dw==");
    }

    #[tokio::test]
    async fn connections_unused_for_the_idle_timeout_are_closed_without_a_call() {
        let closed = Arc::new(AtomicUsize::new(0));
        let counter = closed.clone();
        let (addr, _) = serve_counted(move |stream| {
            let counter = counter.clone();
            async move {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await;
        let pool = Pool::for_url(&url::Url::parse(&format!("http://{addr}/mcp")).unwrap()).unwrap();
        assert_eq!(body(pool.post(HeaderMap::new(), Bytes::new(), T).await.unwrap()).await, "ok");
        assert_eq!(pool.close_idle(), 1, "a connection used just now stays");
        // Once its response is read the handle is ready (idle); past the timeout it goes.
        let later = Instant::now() + IDLE_TIMEOUT + Duration::from_secs(1);
        let deadline = Instant::now() + T;
        while pool.close_idle_at(later) > 0 {
            assert!(Instant::now() < deadline, "the idle connection was kept");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while closed.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the backend still has the connection open");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn concurrent_requests_open_a_connection_each_then_reuse_them() {
        let (url, accepted, _) = echo().await;
        let pool = Arc::new(Pool::for_url(&url).unwrap());
        for _ in 0..3 {
            let calls = (0..4).map(|i| {
                let pool = pool.clone();
                async move {
                    body(pool.post(HeaderMap::new(), Bytes::from(vec![b'a' + i]), T).await.unwrap())
                        .await
                }
            });
            let bodies = futures::future::join_all(calls).await;
            assert_eq!(bodies, ["a", "b", "c", "d"]);
        }
        assert!(accepted.load(Ordering::SeqCst) <= 4 + 1, "{}", accepted.load(Ordering::SeqCst));
    }

    /// A backend that closes every connection right after its response (no `Connection:
    /// close`): the next request must not fail, whether or not the pool noticed the close.
    #[tokio::test]
    async fn a_connection_the_backend_closed_is_not_a_failure() {
        let (addr, accepted) = serve_counted(|mut s| async move {
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            // Headers and the 2-byte body.
            while !got.windows(4).any(|w| w == b"\r\n\r\n") || !got.ends_with(b"{}") {
                let k = s.read(&mut buf).await.unwrap();
                if k == 0 {
                    return;
                }
                got.extend_from_slice(&buf[..k]);
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
            // Closed when `s` drops.
        })
        .await;
        let url = url::Url::parse(&format!("http://{addr}/mcp")).unwrap();
        let pool = Pool::for_url(&url).unwrap();
        for i in 0..20 {
            let resp = pool.post(HeaderMap::new(), Bytes::from_static(b"{}"), T).await.unwrap();
            assert_eq!(body(resp).await, "ok");
            if i % 2 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 20);
    }

    /// A connection whose reads end (EOF) once `hung_up` is set, as if the backend had closed
    /// it, without waking its connection task: the close is noticed only when the next
    /// request arrives.
    struct HangUp {
        inner: tokio::net::TcpStream,
        hung_up: Arc<std::sync::atomic::AtomicBool>,
    }

    impl tokio::io::AsyncRead for HangUp {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.hung_up.load(Ordering::SeqCst) {
                return std::task::Poll::Ready(Ok(()));
            }
            std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for HangUp {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// The keep-alive race: the backend closed a pooled connection that still looks ready
    /// (the pool has not seen the close). hyper gives the request back unsent, and it goes
    /// out on a new connection; the call succeeds.
    #[tokio::test]
    async fn a_request_on_a_connection_closed_unnoticed_is_retried_on_a_new_one() {
        let (url, accepted, seen) = echo().await;
        let pool = Pool::for_url(&url).unwrap();
        let stream =
            tokio::net::TcpStream::connect(url.socket_addrs(|| None).unwrap()[0]).await.unwrap();
        let hung_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let io = HangUp { inner: stream, hung_up: hung_up.clone() };
        let (tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await.unwrap();
        tokio::spawn(conn);
        for _ in 0..100 {
            if tx.is_ready() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(tx.is_ready());
        pool.handles.lock().push(Pooled { tx, used: Instant::now() });
        hung_up.store(true, Ordering::SeqCst);
        let resp = pool.post(HeaderMap::new(), Bytes::from_static(b"again"), T).await.unwrap();
        assert_eq!(body(resp).await, "again");
        assert_eq!(pool.retried.load(Ordering::Relaxed), 1);
        // The hung-up connection and the new one; the request went out once.
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(seen.lock().len(), 1);
    }

    /// Something that answers every request with 404 on a kept-alive connection (as the
    /// network of the test node does for a ClusterIP kube-proxy has not programmed yet): the
    /// connection is not reused, so the next request reaches whatever serves the address now.
    #[tokio::test]
    async fn a_connection_that_answered_an_error_status_is_not_reused() {
        let (url, accepted, seen) = echo().await;
        let pool = Pool::for_url(&url).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-status", HeaderValue::from_static("404"));
        let resp = pool.post(h, Bytes::from_static(b"lost"), T).await.unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(body(resp).await, "lost");
        for _ in 0..3 {
            let resp = pool.post(HeaderMap::new(), Bytes::from_static(b"ok"), T).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(body(resp).await, "ok");
        }
        assert_eq!(pool.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "one connection after the 404");
        assert_eq!(seen.lock().len(), 4);
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable_without_the_url() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let url = url::Url::parse(&format!("http://user:s3cret@{addr}/mcp?token=s3cret")).unwrap();
        let pool = Pool::for_url(&url).unwrap();
        let e = pool.post(HeaderMap::new(), Bytes::new(), T).await.unwrap_err();
        let BackendError::Unreachable(text) = &e else { panic!("{e:?}") };
        assert!(text.starts_with("connection failed ("), "{text}");
        assert!(!text.contains("s3cret") && !text.contains(&addr.to_string()), "{text}");
        assert!(!format!("{pool:?}").contains("s3cret"));
    }

    #[test]
    fn only_plain_http_urls_get_a_pool() {
        assert!(Pool::for_url(&url::Url::parse("https://example.com/mcp").unwrap()).is_none());
        let p = Pool::for_url(&url::Url::parse("http://[::1]/mcp").unwrap()).unwrap();
        assert_eq!(p.host_header, "[::1]");
        assert_eq!(p.port, 80);
        assert!(p.basic_auth.is_none());
    }
}
