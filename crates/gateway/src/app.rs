//! The composition root: a gateway assembled from its configuration ([`App::build`]) and
//! served on a listener until a shutdown signal ([`App::serve`]). `main.rs` only parses flags,
//! sets up logging and calls these, so a test or another binary can run a gateway in-process.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use vmcp_types::config::{GatewayConfig, IncomingAuthType, SessionStorageProvider};

use crate::auth::incoming::{IncomingAuthError, OidcValidator, resource_metadata_url};
use crate::auth::outgoing::CredentialFactory;
use crate::auth::token_exchange::{ExchangeOptions, TokenExchangeFactory};
use crate::config::{
    BuildPhase, GatewayConfigError, build_backends, spawn_reloader, watched_fingerprint,
};
use crate::health::{Monitor, ReadyCheck};
use crate::http::{AppState, Authenticator, HttpSettings, router};
use crate::metrics::Metrics;
use crate::session::SessionManager;
use crate::session::manager::SessionSettings;
use crate::session::memory::MemoryStore;
use crate::session::redis::RedisStore;
use crate::session::store::{SessionStore, StoreError};

/// How often the configuration file is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// How long a starting gateway stays unready while a `waitForFile` backend's file is missing
/// (the kubelet refreshes a mounted Secret within about a minute and a half).
const STARTUP_FILE_GRACE: Duration = Duration::from_secs(180);

/// Why the gateway could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The outbound HTTP client could not be built (TLS roots).
    #[error("building the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// A CA file of `outbound.caFiles` cannot be used.
    #[error("outbound.caFiles: {0}")]
    Trust(#[source] crate::outbound::TrustError),
    /// The separate metrics listener could not be opened.
    #[error("listening on {addr} (telemetry.metricsListen): {source}")]
    MetricsListen {
        /// The configured address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A backend's settings are invalid (every problem listed).
    #[error(transparent)]
    Backends(#[from] GatewayConfigError),
    /// The session store is unreachable or misconfigured.
    #[error("sessionStorage.redis: {0}")]
    Store(#[source] StoreError),
    /// Incoming authentication is misconfigured.
    #[error("incomingAuth: {0}")]
    Auth(#[source] IncomingAuthError),
    /// The listener failed.
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// A gateway ready to serve.
#[derive(Debug)]
pub struct App {
    state: AppState,
    grace: Duration,
    metrics_listen: Option<String>,
}

impl App {
    /// Builds everything `cfg` asks for: the outbound client, credentials, the session store
    /// (and, for Redis, the termination feed: I5), the session manager with its idle sweeper,
    /// the config reloader, backend health probes and incoming authentication. Background
    /// tasks start on the current runtime.
    pub async fn build(config_path: PathBuf, cfg: GatewayConfig) -> Result<Self, AppError> {
        let extra_cas =
            crate::outbound::read_ca_files(&cfg.outbound.ca_files).map_err(AppError::Trust)?;
        let http =
            crate::outbound::http_client_trusting(&extra_cas).map_err(AppError::HttpClient)?;
        let metrics = Arc::new(Metrics::new());
        let exchange = ExchangeOptions {
            token_url_issuer: match cfg.incoming_auth.auth_type {
                IncomingAuthType::Oidc => cfg.incoming_auth.oidc.as_ref().map(|o| o.issuer.clone()),
                IncomingAuthType::Anonymous => None,
            },
            allowed_token_urls: cfg.outbound.allowed_token_urls.clone(),
            ..ExchangeOptions::default()
        };
        let factory: Arc<dyn CredentialFactory> = Arc::new(TokenExchangeFactory::with_options(
            http.clone(),
            exchange,
            metrics.token_exchange.clone(),
        ));
        let watched = watched_fingerprint(&cfg);
        let backends = build_backends(&cfg, factory.as_ref(), BuildPhase::Startup)?;
        // Left out because their secret file is not there yet (`waitForFile`).
        let awaited: Vec<Arc<str>> = cfg
            .backends
            .iter()
            .filter(|b| !backends.defs.contains_key(b.name.as_str()))
            .map(|b| Arc::from(b.name.as_str()))
            .collect();
        let (store, redis): (Arc<dyn SessionStore>, Option<Arc<RedisStore>>) =
            match (cfg.session_storage.provider, cfg.session_storage.redis.as_ref()) {
                (SessionStorageProvider::Redis, Some(r)) => {
                    let s = Arc::new(RedisStore::connect(r).await.map_err(AppError::Store)?);
                    (s.clone(), Some(s))
                }
                _ => (Arc::new(MemoryStore::new()), None),
            };
        let settings = SessionSettings {
            ttl: cfg.session_storage.ttl,
            idle_timeout: cfg.session_storage.idle_timeout,
            init_timeout: cfg.http.init_timeout,
        };
        let manager = SessionManager::new(store, backends, settings, http.clone(), metrics);
        manager.spawn_idle_sweeper();
        if let Some(r) = redis.clone() {
            crate::session::termination::follow(&manager, r);
        }
        spawn_reloader(config_path, cfg.clone(), watched, manager.clone(), factory, RELOAD_EVERY);
        let store_ready: Option<ReadyCheck> = redis.map(|r| {
            let check: ReadyCheck = Arc::new(move || r.is_connected());
            check
        });
        let health = Monitor::spawn(manager.clone(), store_ready);
        health.await_at_startup(awaited, STARTUP_FILE_GRACE);
        let state = AppState {
            health,
            manager,
            auth: Arc::new(authenticator(&cfg, &http)?),
            http: Arc::new(HttpSettings {
                allowed_origins: cfg.http.allowed_origins.clone(),
                allow_loopback_origins: cfg.allows_loopback_origins(),
                resource_url: cfg.resource_url.as_deref().and_then(|u| url::Url::parse(u).ok()),
                max_body_bytes: cfg.http.max_body_bytes,
                // `telemetry.metrics: false` serves `/metrics` nowhere.
                metrics_on_main: cfg.telemetry.metrics && cfg.telemetry.metrics_listen.is_none(),
            }),
        };
        Ok(Self {
            state,
            grace: cfg.http.shutdown_grace,
            metrics_listen: cfg.telemetry.metrics_listen.clone().filter(|_| cfg.telemetry.metrics),
        })
    }

    /// Serves `/mcp` and the operational endpoints on `listener` until `shutdown` completes,
    /// then drains in-flight requests for at most the configured grace period. Client GET
    /// streams end at once (clients reopen them on another replica); stored sessions stay: a
    /// restart is not a logout.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let Self { state, grace, metrics_listen } = self;
        if let Some(addr) = metrics_listen {
            // `/metrics` on its own port (a NetworkPolicy matches ports, so metrics and MCP
            // must not share one).
            let listener = TcpListener::bind(&addr)
                .await
                .map_err(|source| AppError::MetricsListen { addr: addr.clone(), source })?;
            if let Ok(local) = listener.local_addr() {
                tracing::info!(addr = %local, "metrics at /metrics");
            }
            let metrics = crate::http::metrics_router(state.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, metrics).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        let draining = state.manager.clone();
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(no_delay(listener), router(state)).with_graceful_shutdown(
            async move {
                shutdown.await;
                draining.end_client_streams();
                tracing::info!(grace = ?grace, "shutting down: draining in-flight requests; stored sessions are kept");
                let _ = drained_tx.send(());
            },
        );
        tokio::select! {
            r = server => r.map_err(AppError::Serve),
            () = async { let _ = drained_rx.await; tokio::time::sleep(grace).await; } => {
                tracing::warn!("drain deadline reached; exiting with requests still in flight");
                Ok(())
            }
        }
    }
}

/// Builds incoming authentication; OIDC discovery is warmed up in the background (a provider
/// that is down at start-up is retried on the first request).
fn authenticator(cfg: &GatewayConfig, http: &reqwest::Client) -> Result<Authenticator, AppError> {
    let Some(oidc) = cfg
        .incoming_auth
        .oidc
        .as_ref()
        .filter(|_| cfg.incoming_auth.auth_type == IncomingAuthType::Oidc)
    else {
        return Ok(Authenticator::Anonymous);
    };
    let validator = OidcValidator::from_config(oidc, cfg.resource_url.as_deref(), http.clone())
        .map_err(AppError::Auth)?;
    let warm = validator.clone();
    tokio::spawn(async move {
        if let Err(e) = warm.warm_up().await {
            tracing::warn!(error = %e, "OIDC discovery/JWKS not loaded yet; will retry on the first request");
        }
    });
    let resource_url =
        cfg.resource_url.clone().or_else(|| oidc.audience.clone()).unwrap_or_default();
    let metadata_url = resource_metadata_url(&resource_url).map_err(AppError::Auth)?;
    Ok(Authenticator::Oidc { validator, resource_url, metadata_url })
}

/// Every accepted connection gets `TCP_NODELAY`: an answer often leaves as two small writes
/// (SSE headers, then the event), and Nagle's algorithm would hold the second until the
/// client's delayed ACK, about 40 ms later.
pub fn no_delay(
    listener: TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    })
}
