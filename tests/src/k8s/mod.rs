//! A real Kubernetes API server (etcd + kube-apiserver, nothing else) on loopback.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vmcp_e2e::k8s::K8sError> {
//! use vmcp_e2e::k8s::ApiServer;
//! let api = ApiServer::shared().await; // one per test process
//! api.apply_crds().await?; // config/crd/, once per process
//! let ns = api.create_namespace("my-test").await?; // unique per test
//! let client = api.client(); // a new kube::Client bound to *this* test's runtime
//! let out = api.kubectl().args(["get", "vmcp", "-n", &ns]).output();
//! # let _ = (client, out); Ok(()) }
//! ```
//!
//! # What runs
//! The binaries come from `scripts/k8s-bin.sh` (pinned versions in `scripts/k8s-versions.env`;
//! it honours `KUBEBUILDER_ASSETS`), run once per process with its progress written straight to
//! stderr (so a first build, which takes minutes, is visible even while libtest captures
//! output). The setup is the one documented in `scripts/dev-cluster.sh` and
//! `scripts/lib/k8s-test-env.sh`: a client CA and an admin client certificate
//! (`CN=admin, O=system:masters`) and a service-account key pair made with `openssl`, etcd with
//! a temp data dir, kube-apiserver with `--cert-dir` (self-signed serving cert whose CA the
//! kubeconfig trusts), `--authorization-mode=RBAC` and the `ServiceAccount` admission plugin
//! off. There is no scheduler, controller manager or kubelet: objects are stored and validated,
//! nothing reconciles them (Deployments get no pods, there is no `default` ServiceAccount,
//! deleted namespaces stay `Terminating` forever, owner references are never garbage-collected).
//!
//! # Lifetime and the watchdog
//! [`ApiServer::start`] returns an owned instance: dropping it kills kube-apiserver and etcd and
//! removes its temp folder. [`ApiServer::shared`] keeps one instance in a `static`, and Rust
//! never drops statics, so each instance (owned or shared) also gets a **watchdog**: a small
//! `sh` process, started before etcd, in its own process group (so a terminal Ctrl-C does not
//! reach it) and ignoring SIGINT/SIGHUP. Its stdin is a pipe whose only write end stays in the
//! test process (Rust creates pipes close-on-exec, so kubectl, helm or an operator started by a
//! test never inherit it). The harness writes the pid of etcd and kube-apiserver into the pipe
//! as it starts them. When the test process ends in *any* way (normal exit, panic, abort,
//! SIGKILL), the kernel closes the write end, the watchdog reads EOF, SIGKILLs those pids that
//! still belong to this instance (their `/proc/<pid>/cmdline` must contain the instance's temp
//! path, which guards against pid reuse), waits until they are gone and `rm -rf`s the temp
//! folder (data, certificates, kubeconfig, logs, kubectl/helm caches). A parent-death signal
//! (`PR_SET_PDEATHSIG`) would not work here: it fires when the spawning *thread* exits, and
//! libtest runs every test on its own thread.
//!
//! # Things to know when writing tests
//! * [`ApiServer::client`] builds a new client each call. A `kube::Client` spawns its worker
//!   on the Tokio runtime that built it, and every `#[tokio::test]` has its own runtime, so never
//!   keep a client in a `static` or share one between tests.
//! * Namespaces from [`ApiServer::create_namespace`] are never deleted (without a namespace
//!   controller a deleted namespace stays `Terminating`); they vanish with the server.
//! * [`ApiServer::apply_crds`] waits until every CRD is `Established` and its list endpoint
//!   answers (right after `Established` the server may answer 429 with `Retry-After: 1`). The
//!   first create of a custom object within ~2 s of `Established` still sleeps ~2 s server-side.
//! * The serving certificate covers `127.0.0.1`, not `localhost`: use [`ApiServer::url`].
//!
//! # Layout
//! `launch.rs` starts the processes (and the watchdog), `kubeconfig.rs` makes certificates and
//! kubeconfigs with `openssl`, `crds.rs` installs the CRDs and waits until they are served.

mod crds;
mod kubeconfig;
mod launch;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::kube_tools::{self, CommandError, KubeTools, KubeconfigError};
use crate::process::{Peer, ProcessError};
pub use crds::wait_crds_ready;
use kubeconfig::gen_pki;
pub use launch::bin_dir;
use launch::{Watchdog, launch};

/// How long kube-apiserver may take from start to `/readyz` = ok.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long CRDs may take to become `Established` and listable.
const CRD_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the API server (or one of its helpers) failed.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// `scripts/k8s-bin.sh` failed or printed no usable folder.
    #[error("scripts/k8s-bin.sh failed: {0}")]
    Binaries(String),
    /// An `openssl` step failed.
    #[error("openssl ({step}) failed: {output}")]
    Openssl {
        /// What was being generated.
        step: String,
        /// Its output.
        output: String,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// etcd or kube-apiserver exited or did not become ready.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The kubeconfig could not be loaded.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// A request to the API server failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client error.
        source: kube::Error,
    },
    /// A command (kubectl, helm) could not run or exited unsuccessfully.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Waiting for a condition timed out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A once-per-process step failed earlier in this process (the original error).
    #[error("{0}")]
    Earlier(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> K8sError {
    let what = what.into();
    move |source| K8sError::Io { what, source }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> K8sError {
    let what = what.into();
    move |source| K8sError::Kube { what, source }
}

/// A running etcd + kube-apiserver pair with an admin kubeconfig.
///
/// Fields drop in declaration order: kube-apiserver, etcd (both SIGKILLed and reaped by
/// [`Peer`]'s drop), the watchdog (disarmed), then the temp folder.
#[derive(Debug)]
pub struct ApiServer {
    apiserver: Peer,
    etcd: Peer,
    url: String,
    bin_dir: PathBuf,
    kubeconfig: PathBuf,
    config: kube::Config,
    crds: tokio::sync::OnceCell<Result<(), String>>,
    startup: Duration,
    _watchdog: Watchdog,
    dir: tempfile::TempDir,
}

static SHARED: tokio::sync::OnceCell<Result<ApiServer, String>> =
    tokio::sync::OnceCell::const_new();

impl ApiServer {
    /// The API server shared by every test of this process, started on first use.
    ///
    /// It is never dropped; the watchdog (see the module docs) kills it and removes its data
    /// when the process exits. Panics with the startup error (for example the output of a
    /// failed `scripts/k8s-bin.sh`); later callers panic with the same message at once.
    pub async fn shared() -> &'static ApiServer {
        match Self::try_shared().await {
            Ok(api) => api,
            Err(e) => panic!("the shared kube-apiserver could not be started: {e}"),
        }
    }

    /// Like [`ApiServer::shared`], returning the startup error instead of panicking.
    pub async fn try_shared() -> Result<&'static ApiServer, K8sError> {
        let started =
            SHARED.get_or_init(|| async { Self::start().await.map_err(|e| e.to_string()) }).await;
        started.as_ref().map_err(|e| K8sError::Earlier(e.clone()))
    }

    /// Starts a new etcd + kube-apiserver pair owned by the caller (stopped, and its data
    /// removed, on drop) and waits until `/readyz` answers ok.
    pub async fn start() -> Result<Self, K8sError> {
        let t0 = Instant::now();
        let bin_dir = bin_dir()?;
        let t_bins = t0.elapsed();
        let dir = tempfile::Builder::new()
            .prefix("vmcp-k8s-")
            .tempdir()
            .map_err(io_err("create a temp dir for kube-apiserver"))?;
        let mut watchdog = Watchdog::spawn(dir.path())?;
        let pki = dir.path().join("pki");
        gen_pki(&pki)?;
        let t_pki = t0.elapsed();
        let mut attempt = 1;
        let (apiserver, etcd, url, kubeconfig, config) = loop {
            match launch(&bin_dir, dir.path(), attempt, &mut watchdog).await {
                Ok(started) => break started,
                // A free port taken by someone else between our check and the bind.
                Err(K8sError::Process(ProcessError::Exited { output, .. }))
                    if attempt < 3 && output.contains("address already in use") =>
                {
                    eprintln!("[k8s] port collision, retrying: {output}");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let startup = t0.elapsed();
        eprintln!(
            "[k8s] kube-apiserver ready at {url} in {startup:.2?} (binaries {t_bins:.2?}, \
             pki {:.2?}, processes -> /readyz {:.2?}); data in {}",
            t_pki - t_bins,
            startup - t_pki,
            dir.path().display()
        );
        Ok(Self {
            apiserver,
            etcd,
            url,
            bin_dir,
            kubeconfig,
            config,
            crds: tokio::sync::OnceCell::new(),
            startup,
            _watchdog: watchdog,
            dir,
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How long [`ApiServer::start`] took (binaries, certificates, processes, `/readyz`).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The folder with `etcd`, `kube-apiserver`, `kubectl` and `helm`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The admin kubeconfig (user `admin` in group `system:masters`; certificates embedded).
    /// Pass it to other programs as `KUBECONFIG`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The instance's temp folder (removed with the server).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Log files of kube-apiserver and etcd (for failure messages).
    pub fn log_paths(&self) -> (&Path, &Path) {
        (self.apiserver.log_path(), self.etcd.log_path())
    }

    /// The client configuration from the admin kubeconfig.
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// A new admin client. Must be called inside a Tokio runtime, and the client must only be
    /// used on that runtime (one per test; see the module docs).
    pub fn client(&self) -> kube::Client {
        match kube::Client::try_from(self.config.clone()) {
            Ok(client) => client,
            // The same configuration already built the client that saw /readyz.
            Err(e) => panic!("cannot build a kube client for {}: {e}", self.url),
        }
    }

    /// `kubectl` and `helm` from [`ApiServer::bin_dir`] with `KUBECONFIG` set and their caches
    /// and homes inside the instance's temp folder.
    pub fn tools(&self) -> KubeTools<'_> {
        KubeTools { bin_dir: &self.bin_dir, kubeconfig: &self.kubeconfig, home: self.dir.path() }
    }

    /// `kubectl` ([`ApiServer::tools`]).
    pub fn kubectl(&self) -> Command {
        self.tools().kubectl()
    }

    /// `helm` ([`ApiServer::tools`]).
    pub fn helm(&self) -> Command {
        self.tools().helm()
    }

    /// Runs `kubectl <args>` and returns its stdout, or an error with both outputs.
    pub async fn run_kubectl(&self, args: &[&str]) -> Result<String, K8sError> {
        let mut cmd = self.kubectl();
        cmd.args(args);
        run(cmd, &format!("kubectl {}", args.join(" "))).await
    }

    /// Creates a namespace named `<prefix>-<random>` (unique per call) and returns its name.
    /// Namespaces are never deleted (see the module docs).
    pub async fn create_namespace(&self, prefix: &str) -> Result<String, K8sError> {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("app.kubernetes.io/part-of".into(), "vmcp-e2e".into())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(kube_err(format!("create namespace {name}")))?;
        Ok(name)
    }
}

/// Runs a command, returning stdout on success.
async fn run(cmd: Command, display: &str) -> Result<String, K8sError> {
    Ok(kube_tools::run(cmd, display).await?)
}

fn sanitize(s: &str, max: usize) -> String {
    let s: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(max)
        .collect();
    let s = s.trim_matches('-');
    if s.is_empty() { "test".to_owned() } else { s.to_owned() }
}

fn unique_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// Six random lowercase base-36 characters.
fn unique_suffix() -> String {
    let mut v = unique_u64();
    (0..6)
        .map(|_| {
            let c = char::from_digit((v % 36) as u32, 36).unwrap_or('x');
            v /= 36;
            c
        })
        .collect()
}

fn unique_serial() -> String {
    format!("0x{:x}", unique_u64() >> 1)
}

/// `<prefix>-<random>`, a valid namespace name (DNS label).
fn unique_name(prefix: &str) -> String {
    format!("{}-{}", sanitize(prefix, 50), unique_suffix())
}
