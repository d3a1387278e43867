//! A real single-node Kubernetes cluster (`make cluster`, `scripts/cluster.sh`): etcd,
//! kube-apiserver, controller-manager, scheduler, kubelet, kube-proxy, CoreDNS, containerd +
//! runc and CNI bridge networking on this machine. Pods run for real.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vmcp_e2e::cluster::ClusterError> {
//! let cluster = vmcp_e2e::cluster::Cluster::shared().await?; // one per test process
//! let out = cluster.run_kubectl(&["get", "nodes"]).await?;
//! # let _ = out; Ok(()) }
//! ```
//!
//! # Lifetime
//! [`Cluster::shared`] starts `scripts/cluster.sh` once per test process with
//! `CLUSTER_STOP_ON_EOF=1` and a pipe as its stdin whose write end only this process holds
//! (Rust pipes are close-on-exec). When the test process ends in any way, the kernel closes
//! that pipe, the script sees EOF and runs `scripts/cluster-clean.sh`: every pod, process,
//! mount, iptables chain, network namespace and the state folder go. The script's stdout and
//! stderr go to a file (never to a pipe of this process: a cleanup that writes to a closed
//! pipe would die half-way); its progress is copied to this process's stderr while starting.
//!
//! The first start builds the node binaries (`scripts/k8s-bin.sh --node`, minutes on 2 cores,
//! then cached) and the images (`make images`, cached by content). The cluster needs root; one
//! cluster runs per machine (a second waits for the first).

use parking_lot::Mutex;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::kube_tools::{self, CommandError, KubeTools, KubeconfigError};
use crate::repo_root;

/// How long the first start may take (it may build Kubernetes, CoreDNS and the images).
const START_TIMEOUT: Duration = Duration::from_secs(45 * 60);

/// Why the cluster could not be started or a command against it failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `scripts/cluster.sh` could not run or exited before `ready`.
    #[error("scripts/cluster.sh: {0}")]
    Start(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kubeconfig could not be loaded.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// A command (kubectl, helm, ctr) could not run or exited unsuccessfully.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A once-per-process start failed earlier in this process (the original error).
    #[error("{0}")]
    Earlier(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// The running cluster (see the module docs).
#[derive(Debug)]
pub struct Cluster {
    kubeconfig: PathBuf,
    bin_dir: PathBuf,
    node_ip: String,
    state_dir: PathBuf,
    containerd_address: String,
    log: PathBuf,
    home: tempfile::TempDir,
    config: kube::Config,
    _script: Mutex<Child>,
    _stdin: Mutex<ChildStdin>,
}

static SHARED: tokio::sync::OnceCell<Result<Cluster, String>> = tokio::sync::OnceCell::const_new();

impl Cluster {
    /// The cluster of this test process, started on first use (and stopped when the process
    /// ends).
    pub async fn shared() -> Result<&'static Cluster, ClusterError> {
        let started = SHARED
            .get_or_init(|| async {
                tokio::task::spawn_blocking(Self::start)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            })
            .await;
        started.as_ref().map_err(|e| ClusterError::Earlier(e.clone()))
    }

    fn start() -> Result<Self, ClusterError> {
        let t0 = Instant::now();
        let log_dir = repo_root().join("target/cluster");
        std::fs::create_dir_all(&log_dir).map_err(io_err("create target/cluster"))?;
        let log = log_dir.join(format!("cluster-{}.log", std::process::id()));
        let out =
            std::fs::File::create(&log).map_err(io_err(format!("create {}", log.display())))?;
        let err = out.try_clone().map_err(io_err("dup the log file"))?;
        let script = repo_root().join("scripts/cluster.sh");
        let mut child = Command::new(&script)
            .current_dir(repo_root())
            .env("CLUSTER_STOP_ON_EOF", "1")
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| ClusterError::Start(format!("cannot run {}: {e}", script.display())))?;
        let stdin = child.stdin.take().ok_or_else(|| ClusterError::Start("no stdin".into()))?;
        eprintln!("[cluster] starting scripts/cluster.sh (log {})", log.display());
        let mut shown = 0;
        let env = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // Progress to the real stderr (libtest does not capture other threads' raw writes).
            for line in text.lines().skip(shown) {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            shown = text.lines().count();
            if text.lines().any(|l| l == "ready") {
                break text;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ClusterError::Start(format!(
                    "exited with {status} before `ready`; last lines:\n{}",
                    tail(&text, 40)
                )));
            }
            if t0.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                return Err(ClusterError::Start(format!(
                    "not ready after {START_TIMEOUT:?}; last lines:\n{}",
                    tail(&text, 40)
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(str::to_owned)
                .ok_or_else(|| ClusterError::Start(format!("no `export {name}=` line printed")))
        };
        let kubeconfig = PathBuf::from(var("KUBECONFIG")?);
        let bin_dir = PathBuf::from(var("PATH")?.trim_end_matches(":$PATH"));
        let node_ip = var("VMCP_CLUSTER_NODE_IP")?;
        let state_dir = PathBuf::from(var("VMCP_CLUSTER_DIR")?);
        let containerd_address = var("CONTAINERD_ADDRESS")?;
        // Async only for exec plugins; this kubeconfig has none.
        let config = futures::executor::block_on(kube_tools::load_config(&kubeconfig))?;
        let home = tempfile::Builder::new()
            .prefix("vmcp-cluster-client-")
            .tempdir()
            .map_err(io_err("create a temp dir for kubectl/helm caches"))?;
        eprintln!("[cluster] ready in {:.1?}: node {node_ip}", t0.elapsed());
        Ok(Self {
            kubeconfig,
            bin_dir,
            node_ip,
            state_dir,
            containerd_address,
            log,
            home,
            config,
            _script: Mutex::new(child),
            _stdin: Mutex::new(stdin),
        })
    }

    /// The node's IP (also where CoreDNS answers, and where pods reach host processes).
    pub fn node_ip(&self) -> &str {
        &self.node_ip
    }

    /// The admin kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster's state folder (logs of every component in `logs/`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The log of `scripts/cluster.sh` itself.
    pub fn script_log(&self) -> &Path {
        &self.log
    }

    /// A new admin client, bound to the calling Tokio runtime.
    pub fn client(&self) -> Result<kube::Client, ClusterError> {
        kube::Client::try_from(self.config.clone()).map_err(|e| {
            ClusterError::Start(format!("cannot build a kube client from the kubeconfig: {e}"))
        })
    }

    /// `kubectl` and `helm` with the admin `KUBECONFIG` and their caches and homes in a temp
    /// folder.
    pub fn tools(&self) -> KubeTools<'_> {
        KubeTools { bin_dir: &self.bin_dir, kubeconfig: &self.kubeconfig, home: self.home.path() }
    }

    /// `kubectl` ([`Cluster::tools`]).
    pub fn kubectl(&self) -> Command {
        self.tools().kubectl()
    }

    /// `helm` ([`Cluster::tools`]).
    pub fn helm(&self) -> Command {
        self.tools().helm()
    }

    /// Runs `kubectl <args>`; returns stdout, or an error with both outputs.
    pub async fn run_kubectl(&self, args: &[&str]) -> Result<String, ClusterError> {
        let mut cmd = self.kubectl();
        cmd.args(args);
        run(cmd, &format!("kubectl {}", args.join(" "))).await
    }

    /// Runs `helm <args>`.
    pub async fn run_helm(&self, args: &[&str]) -> Result<String, ClusterError> {
        let mut cmd = self.helm();
        cmd.args(args);
        run(cmd, &format!("helm {}", args.join(" "))).await
    }

    /// `kubectl apply -f -` of `manifests` in namespace `ns`.
    pub async fn apply(&self, ns: &str, manifests: &str) -> Result<String, ClusterError> {
        let file = self.home.path().join(format!("apply-{}.yaml", unique()));
        std::fs::write(&file, manifests).map_err(io_err(format!("write {}", file.display())))?;
        let path = file.to_string_lossy().into_owned();
        let out = self.run_kubectl(&["apply", "-n", ns, "-f", &path]).await;
        let _ = std::fs::remove_file(&file);
        out
    }

    /// Imports podman images into the cluster's containerd (`scripts/cluster-images.sh load`).
    pub async fn load_images(&self, images: &[&str]) -> Result<(), ClusterError> {
        let mut cmd = Command::new(repo_root().join("scripts/cluster-images.sh"));
        cmd.arg("load").args(images).env("CONTAINERD_ADDRESS", &self.containerd_address);
        run(cmd, &format!("cluster-images.sh load {}", images.join(" "))).await.map(|_| ())
    }

    /// The last `lines` lines of a component's log (`kubelet`, `containerd`, ...).
    pub fn component_log(&self, name: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.state_dir.join(format!("logs/{name}.log")))
            .unwrap_or_default();
        tail(&text, lines)
    }
}

/// Builds the Redis image for pods (`scripts/cluster-images.sh redis`) and returns its name.
pub async fn redis_image() -> Result<String, ClusterError> {
    let mut cmd = Command::new(repo_root().join("scripts/cluster-images.sh"));
    cmd.arg("redis");
    let out = run(cmd, "cluster-images.sh redis").await?;
    Ok(out.trim().to_owned())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn unique() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

async fn run(cmd: Command, display: &str) -> Result<String, ClusterError> {
    Ok(kube_tools::run(cmd, display).await?)
}
