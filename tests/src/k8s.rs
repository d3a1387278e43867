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

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, ObjectMeta, PostParams};

use crate::kube_tools::{self, CommandError, KubeTools, KubeconfigError};
use crate::ports::free_port;
use crate::process::{Peer, ProcessError};
use crate::repo_root;

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

    /// `kubectl apply -f config/crd/` once per instance, then waits until every vmcp CRD is
    /// `Established` and its list endpoint answers (retrying 429s). Later calls return the
    /// first call's result.
    pub async fn apply_crds(&self) -> Result<(), K8sError> {
        let result = self
            .crds
            .get_or_init(|| async {
                let dir = repo_root().join("config/crd");
                let dir = dir.to_string_lossy();
                self.run_kubectl(&["apply", "-f", &dir]).await.map_err(|e| e.to_string())?;
                let names: Vec<String> = vmcp_types::crd::all_crds()
                    .into_iter()
                    .filter_map(|crd| crd.metadata.name)
                    .collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                wait_crds_ready(&self.client(), &names, CRD_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        result.clone().map_err(K8sError::Earlier)
    }

    /// Writes a kubeconfig for `user` in `groups`, authenticated by a client certificate
    /// (`CN=<user>`, one `O=` per group) signed by the server's client CA, and returns its
    /// path. Without RBAC bindings such a user is forbidden everything. A service account's
    /// identity is `system:serviceaccount:<ns>:<name>` in groups `system:serviceaccounts` and
    /// `system:serviceaccounts:<ns>` (no token controller runs, so use this instead of tokens).
    pub fn write_user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf, K8sError> {
        let pki = self.dir.path().join("pki");
        let users = self.dir.path().join("users");
        std::fs::create_dir_all(&users).map_err(io_err("create the users folder"))?;
        let file = sanitize(user, 60);
        let file = format!("{file}-{}", unique_suffix());
        let key = users.join(format!("{file}.key"));
        let crt = users.join(format!("{file}.crt"));
        let csr = users.join(format!("{file}.csr"));
        let escape = |s: &str| s.replace('\\', "\\\\").replace('/', "\\/");
        let mut subject = String::new();
        for g in groups {
            subject.push_str(&format!("/O={}", escape(g)));
        }
        subject.push_str(&format!("/CN={}", escape(user)));
        let step = format!("client certificate for {user}");
        let vars = [("key", path(&key)), ("csr", path(&csr)), ("subject", subject)];
        openssl(&step, "req -new -nodes {EC} -keyout {key} -out {csr} -subj {subject}", &vars)?;
        sign_client_cert(&pki, &csr, &crt, &step)?;
        let _ = std::fs::remove_file(&csr);
        let out = users.join(format!("{file}.kubeconfig"));
        write_kubeconfig(&out, &self.url, &serving_ca_pem(self.dir.path())?, &crt, &key, user)?;
        Ok(out)
    }
}

/// Waits until each named CRD is `Established` (and its names accepted) and a list of its
/// objects succeeds; 404, 429 and 503 answers are retried. Use after installing CRDs by other
/// means (e.g. a Helm chart).
pub async fn wait_crds_ready(
    client: &kube::Client,
    names: &[&str],
    timeout: Duration,
) -> Result<(), K8sError> {
    let deadline = Instant::now() + timeout;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in names {
        let crd = loop {
            let crd = crds.get(name).await.map_err(kube_err(format!("get CRD {name}")))?;
            let conditions = crd.status.as_ref().and_then(|s| s.conditions.clone());
            let is_true =
                |t: &str| conditions.iter().flatten().any(|c| c.type_ == t && c.status == "True");
            if is_true("Established") && is_true("NamesAccepted") {
                break crd;
            }
            if Instant::now() > deadline {
                return Err(K8sError::Timeout(format!(
                    "CRD {name} not Established after {timeout:?}; conditions: {conditions:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let version =
            crd.spec.versions.iter().find(|v| v.served).map(|v| v.name.clone()).unwrap_or_default();
        let resource = ApiResource {
            group: crd.spec.group.clone(),
            version: version.clone(),
            api_version: format!("{}/{version}", crd.spec.group),
            kind: crd.spec.names.kind.clone(),
            plural: crd.spec.names.plural.clone(),
        };
        let objects: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        loop {
            match objects.list(&ListParams::default().limit(1)).await {
                Ok(_) => break,
                Err(kube::Error::Api(status))
                    if [404, 429, 503].contains(&status.code) && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(kube_err(format!("list {}", resource.plural))(e)),
            }
        }
    }
    Ok(())
}

/// Runs a command, returning stdout on success.
async fn run(cmd: Command, display: &str) -> Result<String, K8sError> {
    Ok(kube_tools::run(cmd, display).await?)
}

/// Starts etcd and kube-apiserver on fresh ports and waits for `/readyz`.
async fn launch(
    bin: &Path,
    dir: &Path,
    attempt: u32,
    watchdog: &mut Watchdog,
) -> Result<(Peer, Peer, String, PathBuf, kube::Config), K8sError> {
    let port = || free_port().map_err(io_err("find a free port"));
    let (etcd_port, peer_port, api_port) = (port()?, port()?, port()?);
    let etcd_data = dir.join(format!("etcd-{attempt}"));
    let cert_dir = dir.join(format!("serving-{attempt}"));
    let pki = dir.join("pki");
    let p = |p: &Path| p.display().to_string();

    let mut etcd = Command::new(bin.join("etcd"));
    etcd.args([
        "--name=kte".to_owned(),
        format!("--data-dir={}", p(&etcd_data)),
        format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
        format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
        format!("--initial-cluster=kte=http://127.0.0.1:{peer_port}"),
        "--unsafe-no-fsync=true".to_owned(),
        "--log-level=warn".to_owned(),
    ]);
    let mut etcd = Peer::spawn("etcd", etcd, dir.join(format!("etcd-{attempt}.log")))?;
    watchdog.watch(etcd.pid())?;

    let mut api = Command::new(bin.join("kube-apiserver"));
    api.args([
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        "--bind-address=127.0.0.1".to_owned(),
        "--advertise-address=127.0.0.1".to_owned(),
        format!("--secure-port={api_port}"),
        format!("--cert-dir={}", p(&cert_dir)),
        format!("--client-ca-file={}", p(&pki.join("ca.crt"))),
        format!("--service-account-key-file={}", p(&pki.join("sa.pub"))),
        format!("--service-account-signing-key-file={}", p(&pki.join("sa.key"))),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
        "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
        "--authorization-mode=RBAC".to_owned(),
        "--disable-admission-plugins=ServiceAccount".to_owned(),
    ]);
    let mut apiserver =
        Peer::spawn("kube-apiserver", api, dir.join(format!("kube-apiserver-{attempt}.log")))?;
    watchdog.watch(apiserver.pid())?;

    // etcd listening (it is fast; this mainly catches a port collision early).
    etcd.wait_ready(Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", etcd_port)).await.is_ok()
    })
    .await?;

    // The serving certificate (leaf + self-signed CA) appears early; take the CA once the
    // file has stopped changing.
    let etcd_pid = etcd.pid();
    let mut etcd_died = false;
    let mut last = None;
    let t0 = Instant::now();
    apiserver
        .wait_ready(READY_TIMEOUT, || {
            let dead = !pid_alive(etcd_pid);
            etcd_died |= dead;
            let now = std::fs::read_to_string(cert_dir.join("apiserver.crt")).ok();
            let stable = now.as_ref().is_some_and(|s| {
                s.trim_end().ends_with("-----END CERTIFICATE-----") && last.as_ref() == Some(s)
            });
            last = now;
            async move { dead || stable }
        })
        .await?;
    if etcd_died {
        etcd.wait_ready(Duration::from_secs(5), || async { false }).await?;
    }
    let url = format!("https://127.0.0.1:{api_port}");
    let kubeconfig = dir.join("kubeconfig");
    let ca = last_certificate(&last.unwrap_or_default());
    write_kubeconfig(
        &kubeconfig,
        &url,
        &ca,
        &pki.join("admin.crt"),
        &pki.join("admin.key"),
        "admin",
    )?;
    let config = kube_tools::load_config(&kubeconfig).await?;
    let client = kube::Client::try_from(config.clone())
        .map_err(kube_err(format!("build a client from {}", kubeconfig.display())))?;

    let remaining = READY_TIMEOUT.saturating_sub(t0.elapsed());
    let mut etcd_died = false;
    let ready = apiserver
        .wait_ready(remaining, || {
            let dead = !pid_alive(etcd_pid);
            etcd_died |= dead;
            let client = client.clone();
            async move { dead || readyz(&client).await }
        })
        .await;
    if etcd_died {
        etcd.wait_ready(Duration::from_secs(5), || async { false }).await?;
    }
    if let Err(e) = ready {
        let verbose = verbose_readyz(&client).await;
        return Err(K8sError::Timeout(format!(
            "{e}\n/readyz?verbose: {verbose}\netcd log:\n{}",
            etcd.log_tail()
        )));
    }
    Ok((apiserver, etcd, url, kubeconfig, config))
}

async fn readyz(client: &kube::Client) -> bool {
    let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else { return false };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.request_text(request)).await,
        Ok(Ok(body)) if body.trim() == "ok"
    )
}

async fn verbose_readyz(client: &kube::Client) -> String {
    let Ok(request) = http::Request::get("/readyz?verbose").body(Vec::new()) else {
        return String::new();
    };
    match tokio::time::timeout(Duration::from_secs(2), client.request_text(request)).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer in 2s".to_owned(),
    }
}

/// True while `pid` runs (false once it exited, even if not yet reaped).
fn pid_alive(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return false };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "<pid> (<comm>) <state> ..."; Z = zombie, X = dead.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// The last PEM certificate in `pem` (kube-apiserver writes "leaf + CA" into apiserver.crt).
fn last_certificate(pem: &str) -> String {
    match pem.rfind("-----BEGIN CERTIFICATE-----") {
        Some(i) => pem[i..].trim_end().to_owned() + "\n",
        None => pem.to_owned(),
    }
}

fn serving_ca_pem(dir: &Path) -> Result<String, K8sError> {
    // The newest serving-<attempt> folder is the running server's.
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(format!("read {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("serving-")))
        .collect();
    dirs.sort();
    let file = dirs.last().map(|d| d.join("apiserver.crt")).unwrap_or_default();
    let pem = std::fs::read_to_string(&file).map_err(io_err(format!("read {}", file.display())))?;
    Ok(last_certificate(&pem))
}

fn write_kubeconfig(
    out: &Path,
    server: &str,
    ca_pem: &str,
    crt: &Path,
    key: &Path,
    user: &str,
) -> Result<(), K8sError> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let read = |p: &Path| std::fs::read(p).map_err(io_err(format!("read {}", p.display())));
    let user = user.replace('"', "");
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: vmcp-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: \"{user}\"
  user:
    client-certificate-data: {crt}
    client-key-data: {key}
contexts:
- name: vmcp-test
  context:
    cluster: vmcp-test
    user: \"{user}\"
    namespace: default
current-context: vmcp-test
preferences: {{}}
",
        ca = b64(ca_pem.as_bytes()),
        crt = b64(&read(crt)?),
        key = b64(&read(key)?),
    );
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io_err(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, out).map_err(io_err(format!("write {}", out.display())))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// An ECDSA P-256 key, as `openssl req` arguments.
const EC: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1";

/// Runs `openssl <template>`: the template is split on spaces, `{EC}` expands to [`EC`] and a
/// `{name}` word is replaced by the value of `name` in `vars` (one argument, spaces and all).
fn openssl(step: &str, template: &str, vars: &[(&str, String)]) -> Result<(), K8sError> {
    let template = template.replace("{EC}", EC);
    let args: Vec<&str> = template
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| match w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
            Some(name) => vars.iter().find(|(n, _)| *n == name).map_or(w, |(_, v)| v.as_str()),
            None => w,
        })
        .collect();
    let out = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("run openssl for {step} (is openssl installed?)")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(K8sError::Openssl {
        step: step.to_owned(),
        output: format!(
            "openssl {} -> {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

fn sign_client_cert(pki: &Path, csr: &Path, crt: &Path, step: &str) -> Result<(), K8sError> {
    let ext = csr.with_extension("ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth\n",
    )
    .map_err(io_err(format!("write {}", ext.display())))?;
    let vars = [
        ("csr", path(csr)),
        ("ca", path(&pki.join("ca.crt"))),
        ("cakey", path(&pki.join("ca.key"))),
        ("serial", unique_serial()),
        ("crt", path(crt)),
        ("ext", path(&ext)),
    ];
    let result = openssl(
        step,
        "x509 -req -in {csr} -CA {ca} -CAkey {cakey} -set_serial {serial} -out {crt} -days 365 \
         -extfile {ext}",
        &vars,
    );
    let _ = std::fs::remove_file(&ext);
    result
}

/// Client CA, admin client certificate and service-account key pair (as
/// `kte_gen_pki` in `scripts/lib/k8s-test-env.sh`).
fn gen_pki(d: &Path) -> Result<(), K8sError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(d).map_err(io_err(format!("create {}", d.display())))?;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("chmod {}", d.display())))?;
    let vars: Vec<(&str, String)> =
        ["ca.key", "ca.crt", "admin.key", "admin.csr", "sa.key", "sa.pub"]
            .into_iter()
            .map(|name| (name, path(&d.join(name))))
            .collect();
    openssl(
        "client CA",
        "req -x509 -new -nodes {EC} -keyout {ca.key} -out {ca.crt} -days 3650 \
         -subj /CN=vmcp-test-client-ca -addext basicConstraints=critical,CA:TRUE \
         -addext keyUsage=critical,keyCertSign,cRLSign",
        &vars,
    )?;
    openssl(
        "admin key",
        "req -new -nodes {EC} -keyout {admin.key} -out {admin.csr} -subj /O=system:masters/CN=admin",
        &vars,
    )?;
    sign_client_cert(d, &d.join("admin.csr"), &d.join("admin.crt"), "admin certificate")?;
    let _ = std::fs::remove_file(d.join("admin.csr"));
    openssl(
        "service-account key",
        "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {sa.key}",
        &vars,
    )?;
    openssl("service-account public key", "pkey -in {sa.key} -pubout -out {sa.pub}", &vars)
}

/// The bin folder printed by `scripts/k8s-bin.sh`, run once per process.
pub fn bin_dir() -> Result<PathBuf, K8sError> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(run_k8s_bin).clone().map_err(K8sError::Binaries)
}

fn run_k8s_bin() -> Result<PathBuf, String> {
    let script = repo_root().join("scripts/k8s-bin.sh");
    let mut child = Command::new(&script)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    // Forward progress to the real stderr (not libtest's capture) as it comes, and keep it
    // for the error message.
    let stderr = child.stderr.take();
    let forward = std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(stderr) = stderr {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(std::io::stderr(), "{line}");
                kept.push(line);
            }
        }
        kept
    });
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut out, &mut stdout);
    }
    let status = child.wait().map_err(|e| format!("waiting for {}: {e}", script.display()))?;
    let progress = forward.join().unwrap_or_default();
    let tail = progress[progress.len().saturating_sub(40)..].join("\n");
    if !status.success() {
        return Err(format!("{} exited with {status}:\n{tail}", script.display()));
    }
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    for b in ["etcd", "kube-apiserver", "kubectl", "helm"] {
        if !dir.join(b).is_file() {
            return Err(format!(
                "{} printed {dir:?}, which has no {b}; stdout:\n{stdout}\nstderr:\n{tail}",
                script.display()
            ));
        }
    }
    Ok(dir)
}

/// The cleanup process described in the module docs.
#[derive(Debug)]
struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// `$1` = the instance's temp folder; stdin = one pid per line, EOF when the test process
/// ends (or the instance is dropped).
const WATCHDOG_SCRIPT: &str = r#"
trap '' INT HUP
dir=$1
pids=
while read -r pid; do pids="$pids $pid"; done
ours() { grep -qF -- "$dir" "/proc/$1/cmdline" 2>/dev/null; }
for pid in $pids; do ours "$pid" && kill -KILL "$pid" 2>/dev/null; done
i=0
while [ "$i" -lt 100 ]; do
  busy=
  for pid in $pids; do ours "$pid" && busy=1; done
  [ -z "$busy" ] && break
  sleep 0.1
  i=$((i + 1))
done
rm -rf -- "$dir"
"#;

impl Watchdog {
    fn spawn(dir: &Path) -> Result<Self, K8sError> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("vmcp-k8s-watchdog")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io_err("start the kube-apiserver watchdog (sh)"))?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    fn watch(&mut self, pid: Option<u32>) -> Result<(), K8sError> {
        if let (Some(stdin), Some(pid)) = (self.stdin.as_mut(), pid) {
            writeln!(stdin, "{pid}").map_err(io_err("tell the watchdog a pid"))?;
        }
        Ok(())
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // EOF: the watchdog kills what is left (nothing, after the peers' drops), removes the
        // folder and exits.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
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
