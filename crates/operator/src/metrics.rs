//! Prometheus metrics of the operator and the `/metrics`, `/healthz`, `/readyz` endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a controller (`virtualmcpserver`, `mcpserver`, `mcpgroup`,
/// `mcpexternalauthconfig`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// The controller.
    pub controller: String,
}

/// Labels of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The controller.
    pub controller: String,
    /// Error kind (`kube`, `render`, ...).
    pub error: String,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// Every operator metric, plus the process's readiness.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles by controller.
    pub reconciles: Family<ControllerLabel, Counter>,
    /// Failed reconciles by controller and error kind.
    pub failures: Family<FailureLabels, Counter>,
    /// Reconcile duration by controller.
    pub reconcile_seconds: Family<ControllerLabel, Histogram, fn() -> Histogram>,
    /// Status writes by controller (a reconcile that changes nothing writes none).
    pub status_writes: Family<ControllerLabel, Counter>,
    /// 1 while this replica holds the leader lease (or leader election is off).
    pub leader: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered under the `vmcp_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vmcp_operator");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let reconcile_seconds =
            Family::<ControllerLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        let status_writes = Family::<ControllerLabel, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles by controller", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Failed reconciles by controller and error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by controller",
            reconcile_seconds.clone(),
        );
        registry.register("status_writes", "Status writes by controller", status_writes.clone());
        registry.register("leader", "1 while this replica is the leader", leader.clone());
        Self {
            registry,
            reconciles,
            failures,
            reconcile_seconds,
            status_writes,
            leader,
            ready: AtomicBool::new(false),
        }
    }

    /// Starts timing one reconcile of `controller`; the time is recorded when the guard drops.
    pub fn reconcile(&self, controller: &str) -> ReconcileTimer<'_> {
        let label = ControllerLabel { controller: controller.to_owned() };
        self.reconciles.get_or_create(&label).inc();
        ReconcileTimer { metrics: self, label, start: Instant::now() }
    }

    /// Counts a failed reconcile.
    pub fn failure(&self, controller: &str, error: &str) {
        self.failures
            .get_or_create(&FailureLabels { controller: controller.into(), error: error.into() })
            .inc();
    }

    /// Counts a status write.
    pub fn status_write(&self, controller: &str) {
        self.status_writes.get_or_create(&ControllerLabel { controller: controller.into() }).inc();
    }

    /// Marks the process ready (`/readyz` answers 200) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Is the process ready?
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Records a reconcile's duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    label: ControllerLabel,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_seconds
            .get_or_create(&self.label)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// The router of `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(metrics)
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        m.encode(),
    )
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    axum::serve(listener, router(metrics)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reconcile_metrics() {
        let m = Metrics::new();
        {
            let _t = m.reconcile("virtualmcpserver");
        }
        m.failure("virtualmcpserver", "kube");
        m.leader.set(1);
        let text = m.encode();
        assert!(text.contains("vmcp_operator_reconciles_total{controller=\"virtualmcpserver\"} 1"));
        assert!(text.contains("vmcp_operator_reconcile_failures_total"));
        assert!(text.contains("vmcp_operator_reconcile_duration_seconds_count"));
        assert!(text.contains("vmcp_operator_leader 1"));
        assert!(!m.is_ready());
        m.set_ready(true);
        assert!(m.is_ready());
    }
}
