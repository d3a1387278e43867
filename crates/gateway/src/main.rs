//! The `vmcp-gateway` binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use vmcp_gateway::auth::outgoing::{CredentialFactory, CredentialSource, OutgoingAuthError};
use vmcp_gateway::config::{build_backends, spawn_reloader};
use vmcp_gateway::http::{AppState, Authenticator, HttpSettings, router};
use vmcp_gateway::metrics::Metrics;
use vmcp_gateway::session::SessionManager;
use vmcp_gateway::session::manager::SessionSettings;
use vmcp_gateway::session::memory::MemoryStore;
use vmcp_types::config::{GatewayConfig, LogFormat, load_file};

#[derive(Parser, Debug)]
#[command(name = "vmcp-gateway", version, about = "Virtual MCP Server gateway")]
struct Cli {
    /// The gateway configuration file (YAML or JSON; see docs/config.md).
    #[arg(long, short, env = "VMCP_CONFIG")]
    config: PathBuf,
    /// Validate the configuration, print every problem, and exit (non-zero when invalid).
    #[arg(long)]
    check_config: bool,
    /// Log format (overrides telemetry.logFormat).
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
}

/// Token exchange is wired by the identity module.
struct NoTokenExchange;

impl CredentialFactory for NoTokenExchange {
    fn token_exchange(
        &self,
        _: &str,
        _: &vmcp_types::config::TokenExchangeAuth,
    ) -> Result<Arc<dyn CredentialSource>, OutgoingAuthError> {
        Err(OutgoingAuthError::Exchange {
            error: "unsupported".into(),
            description: Some("token exchange is not built in".into()),
        })
    }
}

fn init_tracing(cfg: &GatewayConfig, format: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.telemetry.log_level));
    let json = match format {
        Some(f) => f == "json",
        None => cfg.telemetry.log_format == LogFormat::Json,
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = match load_file(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", cli.config.display());
            std::process::exit(2);
        }
    };
    if cli.check_config {
        println!(
            "{}: configuration is valid ({} backends)",
            cli.config.display(),
            cfg.backends.len()
        );
        return Ok(());
    }
    init_tracing(&cfg, cli.log_format.as_deref());
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(cli, cfg))
}

async fn run(cli: Cli, cfg: GatewayConfig) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let factory: Arc<dyn CredentialFactory> = Arc::new(NoTokenExchange);
    let backends = build_backends(&cfg, factory.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(MemoryStore::new());
    let settings = SessionSettings {
        ttl: cfg.session_storage.ttl,
        idle_timeout: cfg.session_storage.idle_timeout,
        init_timeout: cfg.http.init_timeout,
    };
    let manager = SessionManager::new(store, backends, settings, http, metrics);
    manager.spawn_idle_sweeper();
    spawn_reloader(
        cli.config.clone(),
        cfg.clone(),
        manager.clone(),
        factory,
        Duration::from_secs(1),
    );
    let state = AppState {
        manager,
        auth: Arc::new(Authenticator::Anonymous),
        http: Arc::new(HttpSettings {
            allowed_origins: cfg.http.allowed_origins.clone(),
            resource_url: cfg.resource_url.as_deref().and_then(|u| url::Url::parse(u).ok()),
            max_body_bytes: cfg.http.max_body_bytes,
        }),
    };
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, backends = cfg.backends.len(), "vmcp gateway listening; MCP endpoint at /mcp");
    let grace = cfg.http.shutdown_grace;
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        shutdown_signal().await;
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
