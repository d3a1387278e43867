//! Prometheus metrics (prometheus-client), served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a client request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// JSON-RPC method.
    pub method: String,
    /// Backend name, or empty for gateway-answered methods.
    pub backend: String,
    /// `ok`, `error`, `backend_error`.
    pub outcome: String,
}

/// Labels with a method and a backend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodBackend {
    /// JSON-RPC method.
    pub method: String,
    /// Backend name, or empty.
    pub backend: String,
}

/// Labels with an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `ok`, `not_found`, `error`, …
    pub outcome: String,
}

/// Labels with a backend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    /// Backend name.
    pub backend: String,
}

/// Labels with a store operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOp {
    /// Store operation (`load`, `create`, …).
    pub op: String,
}

/// The `method` label of every method that is not a known [`crate::protocol::Method`].
pub const OTHER_METHOD: &str = "other";

/// The `method` label for a client-chosen JSON-RPC method: itself when it is a known MCP
/// method, else [`OTHER_METHOD`].
pub fn method_label(method: &str) -> &'static str {
    crate::protocol::Method::parse(method).map_or(OTHER_METHOD, crate::protocol::Method::as_str)
}

/// At most this many bytes of a client-chosen string go into a log line.
pub const MAX_LOGGED_LEN: usize = 64;

/// A client-chosen string for a log line: at most [`MAX_LOGGED_LEN`] bytes of it (cut at a
/// character boundary, `…` appended when cut), control characters shown as `?`.
pub fn for_log(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_LOGGED_LEN && !s.chars().any(char::is_control) {
        return s.into();
    }
    let mut out = String::with_capacity(MAX_LOGGED_LEN + 3);
    for c in s.chars() {
        if out.len() + c.len_utf8() > MAX_LOGGED_LEN {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out.into()
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.5, 14))
}

/// All gateway metrics.
#[derive(Debug)]
pub struct Metrics {
    /// The registry to encode.
    pub registry: Registry,
    /// Client requests by method, backend and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Client request latency by method and backend.
    pub request_seconds: Family<MethodBackend, Histogram, fn() -> Histogram>,
    /// Sessions held on this replica.
    pub sessions_live: Gauge,
    /// Backend GET streams open on this replica (I8: only while a client holds its own).
    pub backend_streams: Gauge,
    /// Sessions created by `initialize`.
    pub sessions_created: Counter,
    /// Restores by outcome.
    pub restores: Family<Outcome, Counter>,
    /// Restore latency.
    pub restore_seconds: Histogram,
    /// Sessions terminated (DELETE or expiry).
    pub sessions_terminated: Counter,
    /// Backend sessions re-initialized after a 404 (I7).
    pub backend_reinit: Family<BackendLabel, Counter>,
    /// Store operation latency.
    pub store_seconds: Family<StoreOp, Histogram, fn() -> Histogram>,
    /// Store errors.
    pub store_errors: Family<StoreOp, Counter>,
    /// Token exchange (RFC 8693) cache and token endpoint metrics, updated where they happen.
    pub token_exchange: ExchangeMetrics,
    /// Requests for a session bound to another identity (answered 404).
    pub sessions_foreign: Counter,
}

/// Labels with a backend and an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestOutcome {
    /// Backend name.
    pub backend: String,
    /// `ok` or `error`.
    pub outcome: String,
}

/// Token exchange metrics. The handles are shared: the exchange code increments clones of the
/// ones [`Metrics::new`] registered, so `/metrics` is current (no copying, no poller).
#[derive(Debug, Clone)]
pub struct ExchangeMetrics {
    /// Calls answered with a cached token.
    pub cache_hits: Counter,
    /// Calls that found no usable token (they started or joined a token endpoint request).
    pub cache_misses: Counter,
    /// Calls answered with a cached failure (negative cache).
    pub negative_hits: Counter,
    /// Token endpoint requests per backend and outcome (`ok`/`error`).
    pub idp_requests: Family<RequestOutcome, Counter>,
    /// Their latency, per backend and outcome.
    pub idp_seconds: Family<RequestOutcome, Histogram, fn() -> Histogram>,
}

impl Default for ExchangeMetrics {
    /// Handles not registered anywhere (unit tests; a factory built without [`Metrics`]).
    fn default() -> Self {
        Self {
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            negative_hits: Counter::default(),
            idp_requests: Family::default(),
            idp_seconds: Family::new_with_constructor(latency),
        }
    }
}

impl ExchangeMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "token_exchange_cache_hits",
            "Token exchange cache hits",
            self.cache_hits.clone(),
        );
        registry.register(
            "token_exchange_cache_misses",
            "Token exchange cache misses (token endpoint requests started or joined)",
            self.cache_misses.clone(),
        );
        registry.register(
            "token_exchange_negative_cache_hits",
            "Token exchanges answered with a recently failed result",
            self.negative_hits.clone(),
        );
        registry.register(
            "token_exchange_idp_requests",
            "Token endpoint requests of token exchanges, per backend and outcome",
            self.idp_requests.clone(),
        );
        registry.register(
            "token_exchange_idp_duration_seconds",
            "Token endpoint latency of token exchanges",
            self.idp_seconds.clone(),
        );
    }

    /// Token endpoint requests made for `backend` that ended with `outcome` (`ok`/`error`).
    pub fn idp_requests(&self, backend: &str, outcome: &str) -> u64 {
        let labels = RequestOutcome { backend: backend.into(), outcome: outcome.into() };
        self.idp_requests.get(&labels).map_or(0, |c| c.get())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vmcp");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Client JSON-RPC requests", requests.clone());
        let request_seconds =
            Family::<MethodBackend, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        registry.register(
            "request_duration_seconds",
            "Client request latency",
            request_seconds.clone(),
        );
        let sessions_live = Gauge::default();
        registry.register("sessions_live", "Sessions held on this replica", sessions_live.clone());
        let backend_streams = Gauge::default();
        registry.register(
            "backend_streams_open",
            "Backend GET streams open on this replica (only while a client holds its own)",
            backend_streams.clone(),
        );
        let sessions_created = Counter::default();
        registry.register(
            "sessions_created",
            "Sessions created by initialize",
            sessions_created.clone(),
        );
        let restores = Family::<Outcome, Counter>::default();
        registry.register(
            "session_restores",
            "Session restores from the store by outcome",
            restores.clone(),
        );
        let restore_seconds = latency();
        registry.register(
            "session_restore_duration_seconds",
            "Session restore latency",
            restore_seconds.clone(),
        );
        let sessions_terminated = Counter::default();
        registry.register(
            "sessions_terminated",
            "Sessions terminated",
            sessions_terminated.clone(),
        );
        let backend_reinit = Family::<BackendLabel, Counter>::default();
        registry.register(
            "backend_reinitializations",
            "Backend sessions re-initialized after 404",
            backend_reinit.clone(),
        );
        let store_seconds =
            Family::<StoreOp, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        registry.register("store_duration_seconds", "Session store latency", store_seconds.clone());
        let store_errors = Family::<StoreOp, Counter>::default();
        registry.register("store_errors", "Session store errors", store_errors.clone());
        let token_exchange = ExchangeMetrics::default();
        token_exchange.register(&mut registry);
        let sessions_foreign = Counter::default();
        registry.register(
            "session_binding_rejections",
            "Requests rejected because the session is bound to another identity",
            sessions_foreign.clone(),
        );
        Self {
            registry,
            sessions_foreign,
            token_exchange,
            requests,
            request_seconds,
            sessions_live,
            backend_streams,
            sessions_created,
            restores,
            restore_seconds,
            sessions_terminated,
            backend_reinit,
            store_seconds,
            store_errors,
        }
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(method_label("tools/call"), "tools/call");
        assert_eq!(method_label("initialize"), "initialize");
        assert_eq!(method_label("tools/call2"), OTHER_METHOD);
        assert_eq!(method_label(&"x".repeat(1 << 20)), OTHER_METHOD);
    }

    /// H1: 1,000 distinct method names used to add 2,000 label sets (each holding the name).
    #[test]
    fn distinct_unknown_methods_share_one_series() {
        let m = Metrics::new();
        for i in 0..1000 {
            let method = format!("{i}/{}", "m".repeat(1024));
            m.requests
                .get_or_create(&RequestLabels {
                    method: method_label(&method).into(),
                    backend: String::new(),
                    outcome: "error".into(),
                })
                .inc();
        }
        let text = m.encode();
        assert!(text.len() < 4096, "{} bytes", text.len());
        assert!(text.contains("method=\"other\""), "{text}");
    }

    #[test]
    fn logged_strings_are_cut_at_a_char_boundary() {
        assert_eq!(for_log("tools/call"), "tools/call");
        let long = "é".repeat(100);
        let cut = for_log(&long);
        assert!(cut.len() <= MAX_LOGGED_LEN + "…".len(), "{cut}");
        assert!(cut.ends_with('…'));
        assert_eq!(for_log("a\nb"), "a?b");
    }
}
