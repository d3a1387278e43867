//! Official-SDK MCP peers (see `tests/peers/README.md`): backends written with the Python and
//! TypeScript SDKs, and client drivers that keep one MCP session across many commands.

// Test harness: a failed setup step panics with its reason, which is the test's failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::repo_root;

/// Which SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdk {
    /// `mcp` from PyPI.
    Python,
    /// `@modelcontextprotocol/sdk` from npm.
    TypeScript,
    /// An old `mcp` 1.x release (`tests/peers/python-mcp1`): negotiates 2025-06-18 at most and
    /// answers 400 to a newer `MCP-Protocol-Version`. Backend only (no client driver).
    PythonMcp1,
    /// `@modelcontextprotocol/client` 2.x from npm (`tests/peers/ts-v2`), the TypeScript SDK
    /// that speaks MCP 2026-07-28. Client driver only (no backend).
    TypeScriptV2,
}

/// Installs the pinned SDK peers once per test process (`scripts/peers-install.sh`).
pub fn ensure_installed() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let status = std::process::Command::new(repo_root().join("scripts/peers-install.sh"))
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/peers-install.sh");
        assert!(status.success(), "scripts/peers-install.sh failed");
    });
}

fn program(sdk: Sdk, script: &str) -> Command {
    ensure_installed();
    let root = repo_root();
    match sdk {
        Sdk::Python => {
            let mut c = Command::new(root.join(".cache/peers/venv/bin/python"));
            c.arg(root.join("tests/peers/python").join(format!("{script}.py")));
            c
        }
        Sdk::TypeScript => {
            let mut c = Command::new("node");
            c.arg(root.join("tests/peers/ts").join(format!("{script}.mjs")));
            c
        }
        Sdk::PythonMcp1 => {
            assert_eq!(script, "backend", "the mcp 1.x peer is a backend only");
            let mut c = Command::new(root.join(".cache/peers/venv-mcp1/bin/python"));
            c.arg(root.join("tests/peers/python-mcp1/backend.py"));
            c
        }
        Sdk::TypeScriptV2 => {
            assert_eq!(script, "client", "the TypeScript SDK v2 peer is a client driver only");
            let mut c = Command::new("node");
            c.arg(root.join("tests/peers/ts-v2/client.mjs"));
            c
        }
    }
}

/// Options of a backend.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    /// Use the legacy HTTP+SSE transport.
    pub sse: bool,
    /// Port to use (0 = any free port).
    pub port: u16,
    /// Delay before listening.
    pub startup_delay_ms: u64,
    /// Do not wait for READY (for backends that start later than the test goes on).
    pub no_wait: bool,
    /// Python only: keep SSE events so closed streams can be resumed (`--resumable`).
    pub resumable: bool,
}

/// A running SDK backend; killed on drop.
#[derive(Debug)]
pub struct Backend {
    /// The backend's name.
    pub name: String,
    /// Its port.
    pub port: u16,
    /// Transport is legacy SSE.
    pub sse: bool,
    /// The file where it logs every request's headers.
    pub auth_log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Backend {
    /// Starts a backend and waits for its READY line.
    pub async fn start(sdk: Sdk, name: &str, opts: BackendOptions) -> Backend {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth_log = dir.path().join("auth.log");
        let port =
            if opts.port == 0 { crate::ports::free_port().expect("free port") } else { opts.port };
        let mut cmd = program(sdk, "backend");
        cmd.args([
            "--port",
            &port.to_string(),
            "--name",
            name,
            "--transport",
            if opts.sse { "sse" } else { "streamable-http" },
        ])
        .arg("--auth-log")
        .arg(&auth_log)
        .args(["--startup-delay-ms", &opts.startup_delay_ms.to_string()])
        .args(opts.resumable.then_some("--resumable"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("stderr.log")).expect("log")))
        .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn backend");
        let stdout = child.stdout.take().expect("stdout");
        let wait = async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if l.starts_with("READY") {
                    return true;
                }
            }
            false
        };
        if opts.no_wait {
            tokio::spawn(wait);
        } else {
            let ok = tokio::time::timeout(Duration::from_secs(60), wait).await.unwrap_or(false);
            let err = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            assert!(ok, "backend {name} did not start:\n{err}");
        }
        Backend { name: name.to_owned(), port, sse: opts.sse, auth_log, child, _dir: dir }
    }

    /// The backend URL the gateway should use.
    pub fn url(&self) -> String {
        if self.sse {
            format!("http://127.0.0.1:{}/sse", self.port)
        } else {
            format!("http://127.0.0.1:{}/mcp", self.port)
        }
    }

    /// Every request the backend logged (one JSON object each).
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.auth_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Stops the backend now.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// An SDK client driver holding one MCP session.
#[derive(Debug)]
pub struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    /// Which SDK.
    pub sdk: Sdk,
}

impl Client {
    /// Starts a driver for `url` with extra headers (`"Name: value"`).
    pub async fn start(sdk: Sdk, url: &str, headers: &[String]) -> Client {
        let mut cmd = program(sdk, "client");
        cmd.args(["--url", url]);
        for h in headers {
            cmd.args(["--header", h]);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn client");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Client { child, stdin, stdout, sdk }
    }

    /// Runs one command and returns its reply (`{"ok":…}`).
    pub async fn cmd(&mut self, cmd: Value) -> Value {
        let line = format!("{cmd}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("write to client driver");
        self.stdin.flush().await.expect("flush");
        let reply = tokio::time::timeout(Duration::from_secs(90), self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("client driver did not answer {cmd}"))
            .expect("read")
            .unwrap_or_else(|| panic!("client driver exited on {cmd}"));
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("bad driver output {reply}: {e}"))
    }

    /// Runs a command that must succeed; returns its `result`.
    pub async fn ok(&mut self, cmd: Value) -> Value {
        let r = self.cmd(cmd.clone()).await;
        assert_eq!(r["ok"], Value::Bool(true), "{:?} client: {cmd} failed: {r}", self.sdk);
        r["result"].clone()
    }

    /// Ends the driver.
    pub async fn exit(mut self) {
        let _ = self.cmd(serde_json::json!({"op": "exit"})).await;
        let _ = self.child.wait().await;
    }
}
