//! The container images (`make images`, docs/images.md) run with podman.
//!
//! [`images`] builds them once per test process with `scripts/images-build.sh --test-bases`
//! (cached: a no-op when nothing changed) and returns their names, or `None` after printing why
//! when podman cannot run containers on this machine at all. [`Container`] is one
//! `podman run`, removed (by its unique name) on drop.

// Test harness: a failed setup step panics with its reason, which is the test's failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::repo_root;

/// The images `make images` builds, plus the glibc test base.
#[derive(Debug, Clone)]
pub struct Images {
    /// `…/vmcp-gateway:<appVersion>`.
    pub gateway: String,
    /// `…/vmcp-operator:<appVersion>`.
    pub operator: String,
    /// `…/vmcp-example-backend:<appVersion>`.
    pub example_backend: String,
    /// A Debian bookworm image (glibc, coreutils) for a glibc-based stdio server.
    pub debian: String,
    /// The chart's appVersion (the images' tag).
    pub version: String,
}

/// Builds the images once; `None` when podman cannot run at all, after writing
/// `SKIPPED: <why>` straight to the process's stderr (not to the test's captured output, so
/// the skip shows in every `cargo test` run).
pub fn images() -> Option<&'static Images> {
    static IMAGES: OnceLock<Result<Images, String>> = OnceLock::new();
    match IMAGES.get_or_init(build) {
        Ok(images) => Some(images),
        Err(why) => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the image tests need podman, and podman cannot run containers here: \
                 {why}"
            );
            None
        }
    }
}

fn build() -> Result<Images, String> {
    let out = Command::new(repo_root().join("scripts/images-build.sh"))
        .arg("--test-bases")
        .current_dir(repo_root())
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/images-build.sh");
    if !out.status.success() {
        if let Some(why) = podman_unusable() {
            return Err(why);
        }
        panic!("scripts/images-build.sh failed (podman itself works; see the log above)");
    }
    let names: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    let find = |part: &str| {
        names
            .iter()
            .find(|n| n.contains(part))
            .unwrap_or_else(|| panic!("images-build.sh printed no {part} image: {names:?}"))
            .clone()
    };
    let gateway = find("/vmcp-gateway:");
    let version = gateway.rsplit(':').next().unwrap().to_owned();
    Ok(Images {
        operator: find("/vmcp-operator:"),
        example_backend: find("/vmcp-example-backend:"),
        debian: find("vmcp-test-debian"),
        gateway,
        version,
    })
}

/// Why podman cannot run containers, or `None` when it can.
fn podman_unusable() -> Option<String> {
    match Command::new("podman").args(["info", "--format", "{{.Host.OCIRuntime.Name}}"]).output() {
        Err(e) => Some(format!("`podman` cannot be started ({e}) and could not be installed")),
        Ok(o) if !o.status.success() => {
            Some(format!("`podman info` failed: {}", String::from_utf8_lossy(&o.stderr).trim()))
        }
        Ok(_) => None,
    }
}

/// `podman` with the options every run here needs: the `runc` runtime when installed (`crun`
/// fails on hybrid cgroup-v1 hosts).
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    if which("runc") {
        c.args(["--runtime", "runc"]);
    }
    c
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Arguments of `podman run` shared by every container here: host network (the tests reach
/// the containers on loopback) and rlimits below this host's hard limits.
pub const RUN_ARGS: [&str; 7] =
    ["run", "--network", "host", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];

/// `podman run --rm <args>` to completion.
pub fn run_to_end(args: &[&str]) -> Output {
    podman().args(RUN_ARGS).arg("--rm").args(args).output().expect("run podman")
}

/// A detached container, removed on drop.
#[derive(Debug)]
pub struct Container {
    /// Its unique name.
    pub name: String,
}

impl Container {
    /// `podman run -d --name <unique> <args>`.
    pub fn start(args: &[&str]) -> Container {
        static N: AtomicU32 = AtomicU32::new(0);
        let name =
            format!("vmcp-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let out = podman()
            .args(RUN_ARGS)
            .args(["-d", "--name", &name])
            .args(args)
            .output()
            .expect("run podman");
        assert!(
            out.status.success(),
            "podman run {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Container { name }
    }

    /// The container's output so far (stdout and stderr).
    pub fn logs(&self) -> String {
        let o = Command::new("podman").args(["logs", &self.name]).output().expect("podman logs");
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    }

    /// `podman inspect --format <format>` of this container.
    pub fn inspect(&self, format: &str) -> String {
        let o = Command::new("podman")
            .args(["inspect", "--format", format, &self.name])
            .output()
            .expect("podman inspect");
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }

    /// Real UID of the container's main process, read from the host's /proc.
    pub fn process_uid(&self) -> u32 {
        let pid = self.inspect("{{.State.Pid}}");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/status of {}: {e}", self.name));
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Waits until `GET http://127.0.0.1:<port><path>` gets any HTTP answer (panics with the
    /// container's log on timeout or when the container stopped).
    pub async fn wait_http(&self, port: u16, path: &str, timeout: Duration) {
        let start = Instant::now();
        let url = format!("http://127.0.0.1:{port}{path}");
        loop {
            if reqwest::get(&url).await.is_ok() {
                return;
            }
            let running = self.inspect("{{.State.Running}}");
            assert!(
                running == "true" && start.elapsed() < timeout,
                "{} not serving {url} (running: {running}); log:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "2", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `Image.Config` of an image as JSON.
pub fn image_config(image: &str) -> serde_json::Value {
    let o = Command::new("podman")
        .args(["image", "inspect", "--format", "{{json .Config}}", image])
        .output()
        .expect("podman image inspect");
    assert!(o.status.success(), "inspect {image}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A host folder shared between containers like an emptyDir (mode 0777).
pub fn empty_dir(parent: &Path, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = parent.join(name);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    p
}
