//! The `vmcp-operator` binary: `run` (the default) starts the controllers; `crds` prints the
//! CRDs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::{oneshot, watch};
use vmcp_operator::leader::{LeaderElector, LeaseConfig, default_identity};
use vmcp_operator::settings::{ENV_GATEWAY_IMAGE, ENV_WATCH_NAMESPACE};
use vmcp_operator::{Metrics, Settings, metrics, run_controllers_with};

#[derive(Parser, Debug)]
#[command(name = "vmcp-operator", version, about = "Kubernetes operator for vmcp")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print every CRD as YAML (or write one file per CRD with --out-dir).
    Crds {
        /// Write `<group>_<plural>.yaml` files into this folder instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run the controllers (the default).
    Run(RunArgs),
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "VMCP_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Run the controllers only while holding a coordination.k8s.io Lease (for replicas > 1).
    #[arg(long, env = "VMCP_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "VMCP_LEADER_ELECTION_ID", default_value = "vmcp-operator-leader")]
    leader_election_id: String,
    /// Namespace of the leader Lease (default: `$POD_NAMESPACE`, else the client's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Gateway image (also the stdio bridge image); wins over `$VMCP_GATEWAY_IMAGE`.
    #[arg(long)]
    gateway_image: Option<String>,
    /// Watch only these namespaces, comma-separated (default: every namespace); wins over
    /// `$VMCP_WATCH_NAMESPACE`.
    #[arg(long)]
    namespace: Option<String>,
    /// Log format.
    #[arg(long, env = "VMCP_LOG_FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds { out_dir: Some(dir) }) => {
            let written = vmcp_operator::crdgen::write_all(&dir)
                .with_context(|| format!("writing CRDs into {}", dir.display()))?;
            for p in written {
                eprintln!("wrote {}", p.display());
            }
        }
        Some(Command::Crds { out_dir: None }) => {
            print!("{}", vmcp_operator::crdgen::render_stream()?);
        }
        Some(Command::Run(args)) => run_blocking(args)?,
        None => run_blocking(RunArgs::parse_defaults())?,
    }
    Ok(())
}

impl RunArgs {
    /// The flags that set a [`Settings`] field, under their environment variable's name.
    fn settings_flags(&self) -> [(&'static str, Option<String>); 2] {
        [
            (ENV_GATEWAY_IMAGE, self.gateway_image.clone()),
            (ENV_WATCH_NAMESPACE, self.namespace.clone()),
        ]
    }

    /// The `run` arguments from the environment and defaults (for a bare `vmcp-operator`).
    fn parse_defaults() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: RunArgs,
        }
        Only::parse_from(["vmcp-operator"]).args
    }
}

fn run_blocking(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?
        .block_on(run(args))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves when SIGTERM or Ctrl-C arrives (once set, stays set).
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = Settings::from_env_and_flags(&args.settings_flags())
        .context("reading the operator settings")?;
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let metrics = Arc::new(Metrics::new());
    let stop = shutdown_signal();

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("listening on {} (--metrics-addr)", args.metrics_addr))?;
    let server = tokio::spawn(metrics::serve(listener, metrics.clone(), wait(stop.clone())));

    let result = if args.leader_elect {
        run_elected(client, settings, metrics.clone(), &args, stop).await
    } else {
        metrics.leader.set(1);
        metrics.set_ready(true);
        run_controllers_with(client, settings, metrics.clone(), wait(stop)).await;
        Ok(())
    };
    metrics.set_ready(false);
    server.abort();
    result
}

/// Waits for the Lease, runs the controllers while holding it, releases it after they stop.
async fn run_elected(
    client: kube::Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    args: &RunArgs,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let namespace = args
        .leader_election_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let name = args.leader_election_id.clone();
    let mut elector =
        LeaderElector::new(client.clone(), LeaseConfig::new(name, namespace, default_identity()));
    // A standby replica is healthy and ready: it serves its endpoints and waits.
    metrics.set_ready(true);
    if !elector.acquire(wait(stop.clone())).await {
        return Ok(());
    }
    metrics.leader.set(1);
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (lost_tx, lost_rx) = oneshot::channel::<()>();
    let holder = tokio::spawn(async move {
        let held = elector
            .hold(async move {
                let _ = release_rx.await;
            })
            .await;
        if held.is_err() {
            let _ = lost_tx.send(());
        }
        held
    });
    let controllers_stop = async move {
        tokio::select! {
            () = wait(stop) => {}
            _ = lost_rx => tracing::error!("leadership lost: stopping the controllers"),
        }
    };
    run_controllers_with(client, settings, metrics.clone(), controllers_stop).await;
    metrics.leader.set(0);
    let _ = release_tx.send(());
    holder.await.context("the lease task panicked")?.context("leader election")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_flags_are_named_by_their_variables() {
        let Cli { command: Some(Command::Run(args)), .. } = Cli::try_parse_from([
            "vmcp-operator",
            "run",
            "--gateway-image",
            "img:9",
            "--namespace",
            "a,b",
        ])
        .unwrap() else {
            panic!("not a run command")
        };
        let flags = args.settings_flags();
        let s = Settings::from_lookup(vmcp_operator::settings::layered(&flags, |_| None)).unwrap();
        assert_eq!(s.gateway_image, "img:9");
        assert_eq!(s.namespaces, ["a", "b"]);
    }
}
