//! The `vmcp-gateway` binary.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use vmcp_gateway::app::App;
use vmcp_types::config::{GatewayConfig, LogFormat, load_file};

/// mimalloc instead of the system allocator (see docs/dependencies.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Admit only requests to /mcp with `Authorization: Bearer <token in this file>`
        /// (401 otherwise; /healthz stays open). The operator sets it for every stdio
        /// MCPServer. Without it the bridge admits any caller.
        #[arg(long, env = "VMCP_BRIDGE_AUTH_TOKEN_FILE")]
        auth_token_file: Option<PathBuf>,
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
    token: Option<vmcp_gateway::bridge_auth::BridgeToken>,
    mut command: Vec<String>,
) -> anyhow::Result<()> {
    let program = command.remove(0);
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| format!("listening on {host}:{port}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, program, authenticated = token.is_some(), "stdio bridge listening; MCP endpoint at /mcp");
    if token.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the bridge admits any caller that reaches it; pass --auth-token-file");
    }
    let router = vmcp_gateway::bridge::router(
        vmcp_gateway::bridge::BridgeCommand { program, args: command },
        limits,
        token,
    );
    axum::serve(vmcp_gateway::app::no_delay(listener), router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")
}

/// Logs (the audit line of every request included) go to stderr in batches written by a
/// background thread ([`vmcp_gateway::log_writer`]), so a request never waits for a write to
/// stderr; the returned guard writes what is left at exit.
fn init_tracing(level: &str, json: bool) -> anyhow::Result<vmcp_gateway::log_writer::FlushGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) =
        vmcp_gateway::log_writer::BatchedWriter::stderr().context("starting the log writer")?;
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    Ok(guard)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::InstallBridge { dir }) = &cli.command {
        let installed = vmcp_gateway::bridge_install::install_self(dir)?;
        println!("installed {}", installed.display());
        return Ok(());
    }
    if let Some(Command::Bridge {
        port,
        host,
        idle_timeout,
        max_sessions,
        auth_token_file,
        command,
    }) = cli.command
    {
        let limits = vmcp_gateway::bridge::BridgeLimits { idle_timeout, max_sessions };
        let token = auth_token_file
            .as_deref()
            .map(vmcp_gateway::bridge_auth::BridgeToken::from_file)
            .transpose()?;
        let _flush_logs = init_tracing("info", cli.log_format.as_deref() == Some("json"))?;
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run_bridge(host, port, limits, token, command));
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
    let json = match cli.log_format.as_deref() {
        Some(f) => f == "json",
        None => cfg.telemetry.log_format == LogFormat::Json,
    };
    let _flush_logs = init_tracing(&cfg.telemetry.log_level, json)?;
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
    let listen = cfg.listen.clone();
    let backends = cfg.backends.len();
    let app = App::build(config_path, cfg).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, backends, "vmcp gateway listening; MCP endpoint at /mcp");
    app.serve(listener, shutdown_signal()).await?;
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
