//! The official MCP conformance suite (`tests/peers/conformance`, installed by
//! `scripts/conformance-install.sh`): its reference test server ("everything server") as a
//! backend, and its CLI run against a URL.

// Test harness: a failed setup step panics with its reason, which is the test's failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::Peer;
use crate::repo_root;

/// The install folder (`.cache/conformance/<key>`), installed once per test process.
pub fn install_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/conformance-install.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/conformance-install.sh");
        assert!(out.status.success(), "scripts/conformance-install.sh failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// The suite's reference server on a free port; killed on drop.
#[derive(Debug)]
pub struct EverythingServer {
    /// Its port.
    pub port: u16,
    _peer: Peer,
    _dir: tempfile::TempDir,
}

impl EverythingServer {
    /// Starts the server and waits until it accepts connections.
    pub async fn start() -> EverythingServer {
        let install = install_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::ports::free_port().expect("port");
        let mut cmd = Command::new(install.join("node"));
        // tsx as an import hook: one process, which the drop kills.
        cmd.arg("--import")
            .arg(format!(
                "file://{}",
                install.join("node_modules/tsx/dist/esm/index.mjs").display()
            ))
            .arg(install.join("everything-server.ts"))
            .env("PORT", port.to_string());
        let mut peer = Peer::spawn("everything-server", cmd, dir.path().join("server.log"))
            .expect("spawn the everything server");
        peer.wait_ready(Duration::from_secs(60), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await
        .expect("everything server ready");
        EverythingServer { port, _peer: peer, _dir: dir }
    }

    /// Its MCP endpoint (host `localhost`: the SDK's DNS-rebinding check accepts it).
    pub fn url(&self) -> String {
        format!("http://localhost:{}/mcp", self.port)
    }
}

/// One scenario's outcome in the CLI's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioResult {
    /// Scenario name, e.g. `tools-call-sampling`.
    pub name: String,
    /// Every check of the scenario passed.
    pub passed: bool,
}

/// The server scenarios the CLI knows (`list --server`).
pub fn server_scenarios() -> Vec<String> {
    let install = install_dir();
    let out = Command::new(install.join("node"))
        .arg(install.join("cli.js"))
        .args(["list", "--server"])
        .output()
        .expect("conformance list --server");
    assert!(out.status.success(), "conformance list --server failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Runs `conformance server --url URL --suite all` and returns each scenario's outcome (from
/// the summary) and the whole output (for failure messages).
pub async fn run_server_suite(url: &str) -> (Vec<ScenarioResult>, String) {
    let install = install_dir();
    let results = tempfile::tempdir().expect("tempdir");
    let out = tokio::process::Command::new(install.join("node"))
        .arg(install.join("cli.js"))
        .args(["server", "--url", url, "--suite", "all", "-o"])
        .arg(results.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .expect("the conformance suite did not finish in 10 min")
        .expect("run the conformance CLI");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (parse_summary(&text), text)
}

/// Parses the CLI's summary lines: `✓ name: 1 passed, 0 failed` / `✗ name: 0 passed, 1 failed`.
pub fn parse_summary(text: &str) -> Vec<ScenarioResult> {
    let summary = text.split("=== SUMMARY ===").nth(1).unwrap_or_default();
    summary
        .lines()
        .filter_map(|l| {
            let (passed, rest) = if let Some(r) = l.strip_prefix("✓ ") {
                (true, r)
            } else {
                (false, l.strip_prefix("✗ ")?)
            };
            let name = rest.split(':').next()?.trim().to_owned();
            Some(ScenarioResult { name, passed })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_gives_each_scenario_and_its_outcome() {
        let text = "=== Running scenario: ping ===\n✗ not-a-summary-line\n\n=== SUMMARY ===\n\
            ✓ ping: 1 passed, 0 failed\n✗ tools-call-sampling: 0 passed, 1 failed\n\nTotal: 1 passed, 1 failed\n";
        assert_eq!(
            parse_summary(text),
            [
                ScenarioResult { name: "ping".into(), passed: true },
                ScenarioResult { name: "tools-call-sampling".into(), passed: false },
            ]
        );
    }
}
