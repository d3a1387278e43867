//! The `vmcp-gateway` binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use vmcp_gateway::auth::incoming::{OidcValidator, resource_metadata_url};
use vmcp_gateway::auth::outgoing::CredentialFactory;
use vmcp_gateway::auth::token_exchange::TokenExchangeFactory;
use vmcp_gateway::config::{build_backends, spawn_reloader};
use vmcp_gateway::http::{AppState, Authenticator, HttpSettings, router};
use vmcp_gateway::metrics::{Metrics, RequestOutcome};
use vmcp_gateway::session::SessionManager;
use vmcp_gateway::session::manager::SessionSettings;
use vmcp_gateway::session::memory::MemoryStore;
use vmcp_gateway::session::redis::RedisStore;
use vmcp_gateway::session::store::SessionStore;
use vmcp_types::config::{
    GatewayConfig, IncomingAuthType, LogFormat, SessionStorageProvider, load_file,
};

#[derive(Parser, Debug)]
#[command(name = "vmcp-gateway", version, about = "Virtual MCP Server gateway")]
struct Cli {
    /// The gateway configuration file (YAML or JSON; see docs/config.md).
    #[arg(long, short, env = "VMCP_CONFIG", required = false)]
    config: Option<PathBuf>,
    /// Validate the configuration, print every problem, and exit (non-zero when invalid).
    #[arg(long)]
    check_config: bool,
    /// Log format (overrides telemetry.logFormat).
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Serve Streamable HTTP at /mcp for a stdio MCP server: `bridge --port 8080 -- CMD ARGS`
    /// (one child process per MCP session).
    Bridge {
        /// Port to listen on.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        host: String,
        /// End a session (kill its child) after this long without a request or an open GET
        /// stream; the gateway re-initializes it on next use.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        idle_timeout: Duration,
        /// Sessions (child processes) at once; `initialize` beyond it gets 503.
        #[arg(long, default_value_t = 256)]
        max_sessions: usize,
        /// The stdio server command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Copy this executable to DIR/vmcp-gateway (what the operator's init container runs to hand
    /// the bridge to a stdio MCP server's container; needs no shell or `cp` in the image).
    InstallBridge {
        /// Target folder (an emptyDir shared with the server container).
        dir: PathBuf,
    },
}

async fn run_bridge(
    host: String,
    port: u16,
    limits: vmcp_gateway::bridge::BridgeLimits,
    mut command: Vec<String>,
) -> anyhow::Result<()> {
    let program = command.remove(0);
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| format!("listening on {host}:{port}"))?;
    tracing::info!(addr = %listener.local_addr()?, program, "stdio bridge listening; MCP endpoint at /mcp");
    let router = vmcp_gateway::bridge::router(
        vmcp_gateway::bridge::BridgeCommand { program, args: command },
        limits,
    );
    axum::serve(no_delay(listener), router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")
}

/// Logs (the audit line of every request included) go to stderr through a background writer
/// thread, so a request never waits for a write to stderr; the returned guard flushes it at
/// exit. Nothing is dropped: a full buffer makes callers wait instead.
fn init_tracing(
    cfg: &GatewayConfig,
    format: Option<&str>,
) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.telemetry.log_level));
    let json = match format {
        Some(f) => f == "json",
        None => cfg.telemetry.log_format == LogFormat::Json,
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("vmcp-log")
        .finish(std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    guard
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::InstallBridge { dir }) = &cli.command {
        let installed = vmcp_gateway::bridge_install::install_self(dir)?;
        println!("installed {}", installed.display());
        return Ok(());
    }
    if let Some(Command::Bridge { port, host, idle_timeout, max_sessions, command }) = cli.command {
        let limits = vmcp_gateway::bridge::BridgeLimits { idle_timeout, max_sessions };
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .init();
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run_bridge(host, port, limits, command));
    }
    let Some(config_path) = cli.config.clone() else {
        eprintln!("vmcp-gateway: --config FILE is required (or use the `bridge` subcommand)");
        std::process::exit(2);
    };
    let cfg = match load_file(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", config_path.display());
            std::process::exit(2);
        }
    };
    if cli.check_config {
        println!(
            "{}: configuration is valid ({} backends)",
            config_path.display(),
            cfg.backends.len()
        );
        return Ok(());
    }
    let _flush_logs = init_tracing(&cfg, cli.log_format.as_deref());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(config_path, cfg))
}

async fn run(config_path: PathBuf, cfg: GatewayConfig) -> anyhow::Result<()> {
    // Every client connection and backend socket is a descriptor: use all the process may.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let extra_cas = vmcp_gateway::outbound::read_ca_files(&cfg.outbound.ca_files)?;
    let http = vmcp_gateway::outbound::http_client_trusting(&extra_cas)
        .context("building the HTTP client")?;
    let metrics = Arc::new(Metrics::new());
    let idp_metrics = metrics.clone();
    let exchange = Arc::new(TokenExchangeFactory::new(http.clone()).with_observer(Arc::new(
        move |backend: &str, took: Duration, ok: bool| {
            let labels = RequestOutcome {
                backend: backend.to_owned(),
                outcome: if ok { "ok" } else { "error" }.into(),
            };
            idp_metrics.idp_seconds.get_or_create(&labels).observe(took.as_secs_f64());
        },
    )));
    let factory: Arc<dyn CredentialFactory> = exchange.clone();
    let backends = build_backends(&cfg, factory.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    spawn_exchange_metrics(exchange, metrics.clone());
    let (store, redis): (Arc<dyn SessionStore>, Option<Arc<RedisStore>>) =
        match (cfg.session_storage.provider, cfg.session_storage.redis.as_ref()) {
            (SessionStorageProvider::Redis, Some(r)) => {
                let s = Arc::new(
                    RedisStore::connect(r)
                        .await
                        .map_err(|e| anyhow::anyhow!("sessionStorage.redis: {e}"))?,
                );
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
        vmcp_gateway::session::termination::follow(&manager, r);
    }
    spawn_reloader(
        config_path.clone(),
        cfg.clone(),
        manager.clone(),
        factory,
        Duration::from_secs(1),
    );
    let store_ready: Option<vmcp_gateway::health::ReadyCheck> = redis.as_ref().map(|r| {
        let r = r.clone();
        Arc::new(move || r.is_connected()) as vmcp_gateway::health::ReadyCheck
    });
    let health = vmcp_gateway::health::Monitor::spawn(manager.clone(), store_ready);
    let draining = manager.clone();
    let state = AppState {
        health,
        manager,
        auth: Arc::new(authenticator(&cfg, &http).await?),
        http: Arc::new(HttpSettings {
            allowed_origins: cfg.http.allowed_origins.clone(),
            resource_url: cfg.resource_url.as_deref().and_then(|u| url::Url::parse(u).ok()),
            max_body_bytes: cfg.http.max_body_bytes,
            metrics_on_main: cfg.telemetry.metrics_listen.is_none(),
        }),
    };
    if let Some(addr) = &cfg.telemetry.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} (telemetry.metricsListen)"))?;
        tracing::info!(addr = %listener.local_addr()?, "metrics at /metrics");
        let metrics = vmcp_gateway::http::metrics_router(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, metrics).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, backends = cfg.backends.len(), "vmcp gateway listening; MCP endpoint at /mcp");
    let grace = cfg.http.shutdown_grace;
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(no_delay(listener), router(state)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        // Open GET streams would hold the drain for the whole grace period: end them (clients
        // reopen them on the next replica; the sessions stay stored).
        draining.end_client_streams();
        tracing::info!(grace = ?grace, "shutting down: draining in-flight requests; stored sessions are kept");
        let _ = drained_tx.send(());
    });
    tokio::select! {
        r = server => r.context("serving")?,
        () = async { let _ = drained_rx.await; tokio::time::sleep(grace).await; } => {
            tracing::warn!("drain deadline reached; exiting with requests still in flight");
        }
    }
    Ok(())
}

/// Builds incoming authentication; OIDC discovery is warmed up in the background (a provider
/// that is down at start-up is retried on the first request).
async fn authenticator(
    cfg: &GatewayConfig,
    http: &reqwest::Client,
) -> anyhow::Result<Authenticator> {
    let Some(oidc) = cfg
        .incoming_auth
        .oidc
        .as_ref()
        .filter(|_| cfg.incoming_auth.auth_type == IncomingAuthType::Oidc)
    else {
        return Ok(Authenticator::Anonymous);
    };
    let validator = OidcValidator::from_config(oidc, cfg.resource_url.as_deref(), http.clone())
        .map_err(|e| anyhow::anyhow!("incomingAuth.oidc: {e}"))?;
    let warm = validator.clone();
    tokio::spawn(async move {
        if let Err(e) = warm.warm_up().await {
            tracing::warn!(error = %e, "OIDC discovery/JWKS not loaded yet; will retry on the first request");
        }
    });
    let resource_url =
        cfg.resource_url.clone().or_else(|| oidc.audience.clone()).unwrap_or_default();
    let metadata_url =
        resource_metadata_url(&resource_url).map_err(|e| anyhow::anyhow!("resourceUrl: {e}"))?;
    Ok(Authenticator::Oidc { validator, resource_url, metadata_url })
}

/// Copies the token-exchange cache counters into Prometheus counters.
fn spawn_exchange_metrics(exchange: Arc<TokenExchangeFactory>, metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        let (mut hits, mut misses) = (0, 0);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            let (h, m) = exchange.cache_stats();
            metrics.token_cache_hits.inc_by(h.saturating_sub(hits));
            metrics.token_cache_misses.inc_by(m.saturating_sub(misses));
            (hits, misses) = (h, m);
        }
    });
}

/// Every accepted connection gets `TCP_NODELAY`: an answer often leaves as two small writes
/// (SSE headers, then the event), and Nagle's algorithm would hold the second until the
/// client's delayed ACK, about 40 ms later.
fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
