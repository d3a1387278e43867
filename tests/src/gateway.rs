//! The `vmcp-gateway` binary as a separate OS process.

// Test harness: a failed setup step panics with its reason, which is the test's failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::peers::Backend;
use crate::process::Peer;
use crate::repo_root;

/// Path of the gateway binary, built once per test process (`cargo build -p vmcp-gateway`).
/// `VMCP_E2E_GATEWAY_BIN` names another build to run instead (e.g. one of an earlier commit, to
/// check that a regression test fails there); nothing is built then.
pub fn gateway_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("VMCP_E2E_GATEWAY_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => workspace_binary("vmcp-gateway", "vmcp-gateway"),
    })
    .clone()
}

/// Builds binary `bin` of workspace package `package` (debug profile) and returns its path.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let root = repo_root();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-q", "-p", package, "--bin", bin])
        .current_dir(&root)
        .status()
        .unwrap_or_else(|e| panic!("cargo build -p {package}: {e}"));
    assert!(status.success(), "building {bin} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug").join(bin)
}

/// A running gateway; killed on drop.
#[derive(Debug)]
pub struct Gateway {
    /// Its port.
    pub port: u16,
    /// The config file.
    pub config: PathBuf,
    env: Vec<(String, String)>,
    peer: Option<Peer>,
    dir: tempfile::TempDir,
    starts: u32,
}

impl Gateway {
    /// Starts a gateway; `config` gets `listen: 127.0.0.1:<port>` prepended.
    pub async fn start(config: &str) -> Gateway {
        Self::start_with_env(config, &[]).await
    }

    /// Starts a gateway with extra environment variables (for secrets).
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::ports::free_port().expect("port");
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, format!("listen: 127.0.0.1:{port}\n{config}")).expect("write config");
        let mut g = Gateway {
            port,
            config: path,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            peer: None,
            dir,
            starts: 0,
        };
        g.launch().await;
        g
    }

    async fn launch(&mut self) {
        self.starts += 1;
        let mut cmd = Command::new(gateway_binary());
        cmd.arg("--config").arg(&self.config).env("RUST_LOG", "info,vmcp_gateway=debug");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let log = self.dir.path().join(format!("gateway-{}.log", self.starts));
        let mut peer = Peer::spawn("vmcp-gateway", cmd, log).expect("spawn gateway");
        let port = self.port;
        peer.wait_ready(Duration::from_secs(60), || async move {
            reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
        .expect("gateway ready");
        self.peer = Some(peer);
    }

    /// The gateway's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.peer.as_ref().and_then(Peer::pid)
    }

    /// Open sockets of the gateway process (client connections, backend connections,
    /// listeners), from `/proc/<pid>/fd`.
    pub fn open_sockets(&self) -> usize {
        let Some(pid) = self.pid() else { return 0 };
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .filter(|l| l.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// The gateway's TCP connections to any of `ports` on the peer side (to backends, say), in
    /// any state but listening: its socket inodes from `/proc/<pid>/fd` matched against the
    /// connection tables of its network namespace.
    pub fn connections_to(&self, ports: &[u16]) -> usize {
        let Some(pid) = self.pid() else { return 0 };
        let inodes: std::collections::HashSet<String> =
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter_map(|e| std::fs::read_link(e.path()).ok())
                        .filter_map(|l| {
                            let l = l.to_string_lossy().into_owned();
                            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
        ["tcp", "tcp6"]
            .iter()
            .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
            .flat_map(|table| {
                table
                    .lines()
                    .skip(1)
                    .filter(|row| {
                        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                        let f: Vec<&str> = row.split_whitespace().collect();
                        let remote_port = f
                            .get(2)
                            .and_then(|a| a.rsplit(':').next())
                            .and_then(|p| u16::from_str_radix(p, 16).ok());
                        f.len() > 9
                            && f[3] != "0A"
                            && inodes.contains(f[9])
                            && remote_port.is_some_and(|p| ports.contains(&p))
                    })
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .count()
    }

    /// Resident memory of the running gateway in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// The MCP endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Rewrites the config file (the gateway reloads it); `listen` is kept.
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(&self.config, format!("listen: 127.0.0.1:{}\n{config}", self.port))
            .expect("write config");
    }

    /// Stops the process with `signal` (`TERM` or `KILL`).
    pub fn stop(&mut self, signal: &str) {
        if let Some(mut p) = self.peer.take() {
            p.signal_and_wait(signal);
        }
    }

    /// Stops with `signal` and starts again on the same port with other environment variables.
    pub async fn restart_with_env(&mut self, signal: &str, env: &[(&str, &str)]) {
        self.stop(signal);
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.launch().await;
    }

    /// Stops with `signal` and starts again on the same port with the same config.
    pub async fn restart(&mut self, signal: &str) {
        self.stop(signal);
        self.launch().await;
    }

    /// The gateway's log so far (all runs). The gateway writes its log in batches
    /// (`vmcp_gateway::log_writer::BATCH_WINDOW`), so this first waits out one batch: a line
    /// logged before the call is in the result.
    pub fn log(&self) -> String {
        std::thread::sleep(vmcp_gateway::log_writer::BATCH_WINDOW * 3);
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("gateway-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        scrape_metrics(&format!("http://127.0.0.1:{}/metrics", self.port)).await
    }

    /// The sum of the samples whose series name starts with `name` (every label set).
    pub async fn metric(&self, name: &str) -> f64 {
        metric_sum(&self.metrics().await, |l| l.starts_with(name))
    }
}

/// The `backends:` section of a gateway configuration for these peers (each with its own
/// transport, a 10 s timeout, no auth).
pub fn backends_yaml(backends: &[&Backend]) -> String {
    let mut y = String::from("backends:\n");
    for b in backends {
        y.push_str(&format!(
            "  - name: {}\n    url: {}\n    transport: {}\n    timeout: 10s\n",
            b.name,
            b.url(),
            if b.sse { "sse" } else { "streamable-http" }
        ));
    }
    y
}

/// The Prometheus text served at `url`; panics when it cannot be read.
pub async fn scrape_metrics(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response.text().await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The sum of the samples in Prometheus `text` whose line (comments skipped) `matches`.
pub fn metric_sum(text: &str, matches: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && matches(l))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}
