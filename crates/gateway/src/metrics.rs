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
    /// Token exchange cache hits.
    pub token_cache_hits: Counter,
    /// Token exchange cache misses (IdP requests).
    pub token_cache_misses: Counter,
    /// Token endpoint latency per backend and outcome.
    pub idp_seconds: Family<RequestOutcome, Histogram, fn() -> Histogram>,
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
        let token_cache_hits = Counter::default();
        registry.register(
            "token_exchange_cache_hits",
            "Token exchange cache hits",
            token_cache_hits.clone(),
        );
        let token_cache_misses = Counter::default();
        registry.register(
            "token_exchange_cache_misses",
            "Token exchange cache misses",
            token_cache_misses.clone(),
        );
        let idp_seconds =
            Family::<RequestOutcome, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        registry.register(
            "token_exchange_idp_duration_seconds",
            "Token endpoint latency of token exchanges",
            idp_seconds.clone(),
        );
        let sessions_foreign = Counter::default();
        registry.register(
            "session_binding_rejections",
            "Requests rejected because the session is bound to another identity",
            sessions_foreign.clone(),
        );
        Self {
            registry,
            sessions_foreign,
            idp_seconds,
            requests,
            request_seconds,
            sessions_live,
            sessions_created,
            restores,
            restore_seconds,
            sessions_terminated,
            backend_reinit,
            store_seconds,
            store_errors,
            token_cache_hits,
            token_cache_misses,
        }
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
