//! Starting the processes under test, pinned to CPU cores: the gateway under test on core 0,
//! backends (and, through `make bench`, the load generator, Redis and the OpenID provider) on
//! core 1. Each process is a `vmcp_e2e::process::Peer`: killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vmcp_e2e::process::Peer;

use crate::configs::{self, Setup};

/// Where the binaries come from and how processes are pinned.
#[derive(Debug, Clone)]
pub struct Env {
    /// `vmcp-gateway`.
    pub gateway: PathBuf,
    /// `vmcp-example-backend`.
    pub backend: PathBuf,
    /// ToolHive's `vmcp`, when built.
    pub toolhive: Option<PathBuf>,
    /// Pin processes with `taskset` (off in smoke mode).
    pub pin: bool,
    /// Soft RLIMIT_NOFILE given to the gateways (`ulimit -Hn`).
    pub nofile: u64,
    /// Folder for configs and logs.
    pub dir: PathBuf,
    /// Secret of the `vmcp-gateway` client at the OpenID provider.
    pub te_secret: String,
}

/// A running process with its HTTP port.
#[derive(Debug)]
pub struct Proc {
    /// Its port.
    pub port: u16,
    peer: Peer,
}

impl Proc {
    /// The process id (taskset and the shell `exec` the program, so it is the program's).
    pub fn pid(&self) -> u32 {
        self.peer.pid().unwrap_or(0)
    }

    /// Its MCP endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// The end of its log (for error reports).
    pub fn log_tail(&self) -> String {
        self.peer.log_tail()
    }
}

/// `program args…` wrapped so it runs on `core` with RLIMIT_NOFILE `nofile`:
/// `sh -c 'ulimit -n N; exec taskset -c CORE "$@"' sh program`.
fn command(env: &Env, core: u32, program: &Path) -> Command {
    let mut cmd = Command::new("sh");
    let pin = if env.pin { format!("taskset -c {core} ") } else { String::new() };
    cmd.arg("-c")
        .arg(format!("ulimit -n {} 2>/dev/null; exec {pin}\"$@\"", env.nofile))
        .arg("sh")
        .arg(program);
    cmd
}

/// GET `path` on loopback `port`; the status code, if any answer came.
pub async fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.ok()?.ok()?;
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

async fn wait_http(peer: &mut Peer, port: u16, path: &'static str) -> anyhow::Result<()> {
    peer.wait_ready(Duration::from_secs(60), || async move {
        http_status(port, path).await.is_some_and(|s| s < 300)
    })
    .await?;
    Ok(())
}

/// Starts an example backend (`weather` or `notes`) on a free port, on core 1.
pub async fn backend(env: &Env, kind: &str) -> anyhow::Result<Proc> {
    let mut cmd = command(env, 1, &env.backend);
    cmd.args(["--kind", kind, "--port", "0"]).env("RUST_LOG", "warn");
    let log = env.dir.join(format!("backend-{kind}-{}.log", unique()));
    let mut peer = Peer::spawn(kind, cmd, log.clone())?;
    let read_port = |log: &Path| {
        std::fs::read_to_string(log)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("READY ")?.trim().parse::<u16>().ok())
    };
    let log2 = log.clone();
    peer.wait_ready(Duration::from_secs(30), move || {
        let ready = read_port(&log2).is_some();
        async move { ready }
    })
    .await?;
    let port = read_port(&log).context("backend printed no port")?;
    Ok(Proc { port, peer })
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// Starts `vmcp-gateway` for `setup` on core 0.
pub async fn vmcp_gateway(env: &Env, setup: &Setup) -> anyhow::Result<Proc> {
    let n = unique();
    let config = env.dir.join(format!("vmcp-gateway-{n}.yaml"));
    std::fs::write(&config, configs::vmcp_gateway(setup))?;
    let mut cmd = command(env, 0, &env.gateway);
    cmd.arg("--config").arg(&config).env(configs::TE_SECRET_ENV, &env.te_secret);
    let mut peer = Peer::spawn("vmcp-gateway", cmd, env.dir.join(format!("vmcp-gateway-{n}.log")))?;
    wait_http(&mut peer, setup.port, "/healthz").await.context("vmcp-gateway did not start")?;
    Ok(Proc { port: setup.port, peer })
}

/// Starts ToolHive's `vmcp serve` for `setup` on core 0 (`hmac` shared by its replicas).
pub async fn toolhive(env: &Env, setup: &Setup, hmac: &str) -> anyhow::Result<Proc> {
    let bin = env.toolhive.as_ref().context("ToolHive vmcp was not built")?;
    let n = unique();
    let config = env.dir.join(format!("toolhive-{n}.yaml"));
    std::fs::write(&config, configs::toolhive(setup))?;
    let mut cmd = command(env, 0, bin);
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &setup.port.to_string()])
        .env(configs::TE_SECRET_ENV, &env.te_secret)
        .env("VMCP_SESSION_HMAC_SECRET", hmac);
    let mut peer = Peer::spawn("toolhive-vmcp", cmd, env.dir.join(format!("toolhive-{n}.log")))?;
    wait_http(&mut peer, setup.port, "/health").await.context("ToolHive vmcp did not start")?;
    Ok(Proc { port: setup.port, peer })
}
