//! `vmcp-example-backend`: two small example MCP servers (Streamable HTTP, stateful sessions)
//! that `make run` puts behind the vmcp gateway.
//!
//! - `--kind weather` (port 4501): fake forecasts, a `search` tool, a progress-reporting tool,
//!   a static resource, a resource template and a prompt.
//! - `--kind notes` (port 4502): an in-memory note store shared by every session, with its own
//!   `search` tool (a deliberate name conflict with the weather backend).
//!
//! The MCP endpoint is `/mcp`. Once the listener is bound the process prints `READY <port>` on
//! stdout; logs go to stderr. With `--stdio` the same server speaks MCP on stdin/stdout instead
//! (one session; what a stdio `MCPServer` runs behind the gateway's bridge).

mod notes;
mod weather;

use std::{io::IsTerminal as _, net::SocketAddr};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use rmcp::{
    ServerHandler,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use tracing_subscriber::EnvFilter;

/// Which example backend to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// Fake weather service: forecast, search, slow_report; weather:// resources; plan_trip.
    Weather,
    /// In-memory notes: add_note, list_notes, search, clear_notes; notes://all; summarize_notes.
    Notes,
}

impl Kind {
    fn default_port(self) -> u16 {
        match self {
            Kind::Weather => 4501,
            Kind::Notes => 4502,
        }
    }
}

/// An example MCP server (Streamable HTTP at /mcp) for trying the vmcp gateway locally.
#[derive(Debug, Parser)]
#[command(name = "vmcp-example-backend", version)]
struct Cli {
    /// Which backend to serve.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Port to listen on (default: 4501 for weather, 4502 for notes; 0 picks a free port).
    #[arg(long)]
    port: Option<u16>,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Extra value accepted in the `Host` header, in addition to localhost, 127.0.0.1 and ::1
    /// (rmcp rejects other hosts to prevent DNS rebinding). Repeatable; `*` accepts any host.
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// Serve one MCP session on stdin/stdout instead of HTTP (port and host are ignored).
    #[arg(long)]
    stdio: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    if cli.stdio {
        return serve_stdio(cli.kind).await;
    }
    let port = cli.port.unwrap_or_else(|| cli.kind.default_port());
    let config = http_config(&cli.allowed_hosts);
    let router = match cli.kind {
        Kind::Weather => mcp_router(weather::WeatherServer::new, config.clone()),
        Kind::Notes => {
            let store = notes::NoteStore::default();
            mcp_router(move || notes::NotesServer::new(store.clone()), config.clone())
        }
    };

    let shutdown_requested = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind((cli.host.as_str(), port))
        .await
        .with_context(|| format!("cannot listen on {}:{port} (is the port taken?)", cli.host))?;
    let addr: SocketAddr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(kind = ?cli.kind, %addr, "MCP endpoint at http://{addr}/mcp");
    // Line-buffered: `println!` flushes at the newline, so a supervisor sees it at once.
    println!("READY {}", addr.port());

    let shutdown = config.cancellation_token.clone();
    // TCP_NODELAY on every connection: a Streamable HTTP answer leaves as two small writes and
    // Nagle's algorithm would delay the second by the client's delayed ACK (~40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_requested.await;
            tracing::info!("shutting down");
            // Ends every MCP session and its open SSE streams, so graceful shutdown can finish.
            shutdown.cancel();
        })
        .await
        .context("serving HTTP")?;
    tracing::info!("stopped");
    Ok(())
}

/// Serves one MCP session over stdin/stdout until the client closes stdin.
async fn serve_stdio(kind: Kind) -> anyhow::Result<()> {
    use rmcp::ServiceExt as _;
    tracing::info!(?kind, "serving MCP on stdin/stdout");
    let transport = rmcp::transport::stdio();
    match kind {
        Kind::Weather => weather::WeatherServer::new().serve(transport).await?.waiting().await?,
        Kind::Notes => {
            notes::NotesServer::new(notes::NoteStore::default())
                .serve(transport)
                .await?
                .waiting()
                .await?
        }
    };
    Ok(())
}

fn http_config(extra_hosts: &[String]) -> StreamableHttpServerConfig {
    let config = StreamableHttpServerConfig::default();
    if extra_hosts.iter().any(|host| host == "*") {
        return config.disable_allowed_hosts();
    }
    let mut hosts = config.allowed_hosts.clone();
    hosts.extend(extra_hosts.iter().cloned());
    config.with_allowed_hosts(hosts)
}

/// An axum router serving `S` over Streamable HTTP at `/mcp`, one `S` per MCP session.
fn mcp_router<S, F>(factory: F, config: StreamableHttpServerConfig) -> axum::Router
where
    S: ServerHandler + Send + 'static,
    F: Fn() -> S + Send + Sync + 'static,
{
    let service: StreamableHttpService<S, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(factory()), Default::default(), config);
    axum::Router::new().nest_service("/mcp", service)
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is called, so
/// call it before announcing readiness: a supervisor may signal as soon as it sees `READY`.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("received SIGINT"),
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    // On other platforms the Ctrl-C handler is installed on first poll.
    Ok(async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    })
}
