//! The repository's own example MCP servers (`examples/backends`, written with rmcp) as
//! separate processes: the backends `make run` starts, so a test sees what a user sees.

// Test harness: a failed setup step panics with its reason, which is the test's failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::gateway::workspace_binary;
use crate::process::Peer;

/// Path of `vmcp-example-backend`, built once per test process.
pub fn example_backend_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_binary("vmcp-example-backends", "vmcp-example-backend")).clone()
}

/// A running example backend; killed on drop.
#[derive(Debug)]
pub struct ExampleBackend {
    /// `weather` or `notes`.
    pub kind: String,
    /// Its port.
    pub port: u16,
    _peer: Peer,
    _dir: tempfile::TempDir,
}

impl ExampleBackend {
    /// Starts `vmcp-example-backend --kind <kind>` on a free port.
    pub async fn start(kind: &str) -> ExampleBackend {
        Self::start_on(kind, 0).await
    }

    /// Starts `vmcp-example-backend --kind <kind>` on `port` (0: a free one), e.g. to stand in
    /// for a backend that was stopped, at the same URL.
    pub async fn start_on(kind: &str, port: u16) -> ExampleBackend {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join(format!("{kind}.log"));
        let mut cmd = Command::new(example_backend_binary());
        cmd.args(["--kind", kind, "--port", &port.to_string()]).env("RUST_LOG", "warn");
        let mut peer = Peer::spawn(kind, cmd, log.clone()).expect("spawn example backend");
        let log_path = log.clone();
        peer.wait_ready(Duration::from_secs(60), || {
            let log_path = log_path.clone();
            async move { ready_port(&log_path).is_some() }
        })
        .await
        .expect("example backend ready");
        let port = ready_port(&log).expect("READY line");
        ExampleBackend { kind: kind.to_owned(), port, _peer: peer, _dir: dir }
    }

    /// The MCP endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

/// The gateway config's `backends:` list for `backends`, each named by its kind.
pub fn backends_config(backends: &[&ExampleBackend]) -> String {
    let mut yaml = String::from("backends:\n");
    for b in backends {
        yaml.push_str(&format!("  - name: {}\n    url: {}\n", b.kind, b.url()));
    }
    yaml
}

/// The port from the `READY <port>` line the backend prints once it listens.
fn ready_port(log: &std::path::Path) -> Option<u16> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(|l| l.strip_prefix("READY ")).and_then(|p| p.trim().parse().ok())
}
