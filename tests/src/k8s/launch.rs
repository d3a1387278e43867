//! Starting etcd and kube-apiserver (binaries from `scripts/k8s-bin.sh`) and the watchdog that
//! kills them and removes their data when the test process ends (see the module docs).

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::kubeconfig::{last_certificate, write_kubeconfig};
use super::{K8sError, READY_TIMEOUT, io_err, kube_err};
use crate::kube_tools;
use crate::ports::free_port;
use crate::process::Peer;
use crate::repo_root;

/// Starts etcd and kube-apiserver on fresh ports and waits for `/readyz`.
pub(super) async fn launch(
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
pub(super) struct Watchdog {
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
    pub(super) fn spawn(dir: &Path) -> Result<Self, K8sError> {
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
