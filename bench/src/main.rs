//! `vmcp-bench`: the direct backend, vmcp-gateway and ToolHive's `vmcp` side by side, in one
//! run, on the same backends and the same load generator. `make bench` runs it in full;
//! `--smoke` is a seconds-long pass (direct + vmcp-gateway only) that the test suite runs so the
//! benchmark cannot rot. Results: a markdown table on stdout, JSON + markdown under `--out`.

mod cluster;
mod configs;
mod idle;
mod load;
mod mcp;
mod procfs;
mod procs;
mod report;
mod resp;
mod restore;
mod run;
mod stats;
mod storage;
mod toolhive;
mod wake;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

/// Benchmark vmcp-gateway against the direct backend and ToolHive's vmcp.
#[derive(Debug, Parser)]
#[command(name = "vmcp-bench")]
struct Cli {
    /// A few seconds: direct + vmcp-gateway only, tiny sizes, no pinning, no ToolHive.
    #[arg(long)]
    smoke: bool,
    /// Output folder for bench.json / bench.md (smoke.json / smoke.md in smoke mode).
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Folder with vmcp-gateway and vmcp-example-backend (default: target/release, or
    /// target/debug with --smoke).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Scenarios (comma-separated): base, oidc, redis, restore, cluster, idle.
    #[arg(long, value_delimiter = ',', default_value = "base,oidc,redis,restore,cluster,idle")]
    scenarios: Vec<String>,
    /// Rounds per cell (the median is reported).
    #[arg(long)]
    rounds: Option<usize>,
    /// Client counts (comma-separated).
    #[arg(long, value_delimiter = ',')]
    clients: Option<Vec<usize>>,
    /// Measured milliseconds per cell (after the warm-up).
    #[arg(long)]
    measure_ms: Option<u64>,
    /// Skip ToolHive.
    #[arg(long)]
    no_toolhive: bool,
    /// ToolHive version to build (default v0.44.0, else the newest served).
    #[arg(long)]
    toolhive_version: Option<String>,
    /// Idle-session steps for vmcp-gateway (comma-separated, cumulative).
    #[arg(long, value_delimiter = ',')]
    idle: Option<Vec<usize>>,
    /// Sessions of the Redis Cluster scale-out (default 100000; 60 with --smoke).
    #[arg(long)]
    cluster_sessions: Option<usize>,
    /// Idle-session steps for ToolHive.
    #[arg(long, value_delimiter = ',')]
    toolhive_idle: Option<Vec<usize>>,
}

fn hard_nofile() -> u64 {
    std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(1024)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some(wake::ECHO_FLAG) {
        // The echo side of the wake-up probe (see wake.rs), started by this program itself.
        return Ok(wake::echo()?);
    }
    let cli = Cli::parse();
    let root = vmcp_e2e::repo_root();
    let smoke = cli.smoke;
    let bin_dir = cli.bin_dir.clone().unwrap_or_else(|| {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        target.join(if smoke { "debug" } else { "release" })
    });
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(1);
    let pin = !smoke && cores >= 2;
    if pin {
        // The load generator (this process) and everything it starts run on core 1 unless
        // started with another core (the gateway under test: core 0).
        let status = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .context("taskset (util-linux) is needed to pin processes")?;
        anyhow::ensure!(status.success(), "taskset -p failed: {status}");
    }
    // Configs and logs of every process, kept for reading after the run.
    let dir = cli.out.join(format!("logs-{}", if smoke { "smoke" } else { "full" }));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for bin in ["vmcp-gateway", "vmcp-example-backend"] {
        anyhow::ensure!(
            bin_dir.join(bin).is_file(),
            "{} is missing: build it first (make bench does: cargo build --release -p vmcp-gateway -p vmcp-example-backends)",
            bin_dir.join(bin).display()
        );
    }
    let env = procs::Env {
        gateway: bin_dir.join("vmcp-gateway"),
        backend: bin_dir.join("vmcp-example-backend"),
        toolhive: None,
        pin,
        nofile: hard_nofile(),
        dir: std::path::absolute(&dir)?,
        te_secret: vmcp_e2e::oidc::GATEWAY_CLIENT_SECRET.into(),
    };
    let plan = run::Plan {
        mode: if smoke { "smoke" } else { "full" }.into(),
        scenarios: cli.scenarios.clone(),
        rounds: cli.rounds.unwrap_or(if smoke { 1 } else { 3 }),
        clients: cli.clients.clone().unwrap_or(if smoke { vec![1, 4] } else { vec![1, 16, 64] }),
        warmup: Duration::from_millis(if smoke { 100 } else { 300 }),
        measure: Duration::from_millis(cli.measure_ms.unwrap_or(if smoke { 300 } else { 2000 })),
        toolhive: !smoke && !cli.no_toolhive,
        toolhive_version: cli.toolhive_version.clone(),
        idle_steps: cli.idle.clone().unwrap_or(if smoke {
            vec![200]
        } else {
            vec![10_000, 100_000]
        }),
        toolhive_idle_steps: cli.toolhive_idle.clone().unwrap_or(if smoke {
            vec![]
        } else {
            vec![10_000]
        }),
        idle_step_cap: Duration::from_secs(if smoke { 60 } else { 240 }),
        restore_sessions: if smoke { 3 } else { 40 },
        redis_sessions: if smoke { 20 } else { 1000 },
        cluster_sessions: cli.cluster_sessions.unwrap_or(if smoke { 60 } else { 100_000 }),
        cluster_restores: if smoke { 6 } else { 200 },
        cache: root.join(".cache/bench"),
        env,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(run::run(plan))?;
    let md = report::markdown(&report);
    println!("{md}");
    std::fs::create_dir_all(&cli.out)?;
    let name = if smoke { "smoke" } else { "bench" };
    std::fs::write(cli.out.join(format!("{name}.json")), serde_json::to_string_pretty(&report)?)?;
    std::fs::write(cli.out.join(format!("{name}.md")), md)?;
    eprintln!("[bench] wrote {}/{name}.json and {name}.md", cli.out.display());
    Ok(())
}
