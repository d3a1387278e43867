//! A real `redis-server` on a free loopback port, one per test.
//!
//! The binary comes from `PATH` (or `/usr/bin`); when it is missing the harness installs the
//! Debian package `redis-server` once (as root, or through `sudo -n`) and fails with a clear
//! message when it cannot. Persistence is off (`--save ""`, no AOF) and the working directory
//! is a temporary folder removed on drop, so nothing is left behind.

use parking_lot::Mutex;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ports::free_port;
use crate::process::{Peer, ProcessError};

/// Why Redis could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// No binary, and installing the OS package failed.
    #[error(
        "redis-server is not installed and could not be installed ({0}); install it with `apt-get install redis-server` and run the tests again"
    )]
    NotInstalled(String),
    /// The temp folder could not be created.
    #[error("cannot create a temp dir for redis: {0}")]
    TempDir(std::io::Error),
    /// The process failed to start or become ready.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// No free port.
    #[error("no free port: {0}")]
    Port(std::io::Error),
    /// A Cluster or Sentinel deployment did not come together (the message says which step).
    #[error("redis {0}")]
    Topology(String),
}

static INSTALL: Mutex<()> = Mutex::new(());

/// Finds `redis-server`, installing the OS package when it is missing.
pub fn redis_server_binary() -> Result<PathBuf, RedisError> {
    let find = || {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    let _guard = INSTALL.lock();
    if let Some(p) = find() {
        return Ok(p);
    }
    eprintln!("[harness] redis-server not found; installing the Debian package redis-server…");
    let is_root =
        Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let run = |args: &[&str]| -> Result<(), String> {
        let (prog, rest) = if is_root { (args[0], &args[1..]) } else { ("sudo", args) };
        let mut cmd = Command::new(prog);
        if !is_root {
            cmd.arg("-n");
        }
        let status = cmd.args(rest).env("DEBIAN_FRONTEND", "noninteractive").status();
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("`{}` exited with {s}", args.join(" "))),
            Err(e) => Err(format!("`{}`: {e}", args.join(" "))),
        }
    };
    if run(&["apt-get", "install", "-y", "-q", "redis-server"]).is_err() {
        run(&["apt-get", "update", "-q"]).map_err(RedisError::NotInstalled)?;
        run(&["apt-get", "install", "-y", "-q", "redis-server"])
            .map_err(RedisError::NotInstalled)?;
    }
    find().ok_or_else(|| {
        RedisError::NotInstalled("the package installed no redis-server binary".into())
    })
}

/// A running Redis; stopped and its folder removed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    peer: Peer,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts Redis on a free port and waits until it answers PING.
    pub async fn start() -> Result<Self, RedisError> {
        Self::start_with(&[]).await
    }

    /// Starts Redis with extra arguments (e.g. `["--requirepass", "pw"]`).
    pub async fn start_with(extra: &[&str]) -> Result<Self, RedisError> {
        let bin = redis_server_binary()?;
        let dir = tempfile::tempdir().map_err(RedisError::TempDir)?;
        let port = free_port().map_err(RedisError::Port)?;
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .args(extra);
        let mut peer = Peer::spawn("redis-server", cmd, dir.path().join("redis.log"))?;
        let password = extra.windows(2).find(|w| w[0] == "--requirepass").map(|w| w[1].to_owned());
        peer.wait_ready(Duration::from_secs(10), || ping(port, password.clone())).await?;
        Ok(Self { port, peer, _dir: dir })
    }

    /// The port Redis listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops Redis now (to test what happens while it is down).
    pub fn stop(&mut self) {
        self.peer.signal_and_wait("KILL");
    }

    /// Starts Redis again on the same port (empty: persistence is off).
    pub async fn restart(&mut self) -> Result<(), RedisError> {
        self.peer.signal_and_wait("KILL");
        let bin = redis_server_binary()?;
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(self._dir.path());
        let mut peer =
            Peer::spawn("redis-server", cmd, self._dir.path().join("redis-restarted.log"))?;
        let port = self.port;
        peer.wait_ready(Duration::from_secs(10), || ping(port, None)).await?;
        self.peer = peer;
        Ok(())
    }
}

/// True when Redis on `port` answers PONG (raw RESP, no client library needed).
pub(crate) async fn ping(port: u16, password: Option<String>) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    let cmd = match password {
        Some(p) => format!("AUTH {p}\r\nPING\r\n"),
        None => "PING\r\n".to_owned(),
    };
    if s.write_all(cmd.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(1), async {
        while !got.windows(5).any(|w| w == b"+PONG") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.is_ok() && got.windows(5).any(|w| w == b"+PONG")
}

/// `redis-cli` next to `redis-server`, else from `PATH`.
pub(crate) fn redis_cli_binary() -> Result<PathBuf, RedisError> {
    let cli = redis_server_binary()?.with_file_name("redis-cli");
    Ok(if cli.is_file() { cli } else { PathBuf::from("redis-cli") })
}

/// Runs `redis-cli -p <port> <args…>` (installed with `redis-server`) and returns its output;
/// for the administrative commands of the Cluster and Sentinel harnesses.
pub(crate) fn redis_cli(port: u16, args: &[&str]) -> Result<String, RedisError> {
    let out = Command::new(redis_cli_binary()?)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map_err(|e| RedisError::Topology(format!("redis-cli {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(RedisError::Topology(format!(
            "redis-cli {} exited with {}: {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
