//! What the two Kubernetes harnesses share ([`crate::k8s`]: an API server alone;
//! [`crate::cluster`]: a whole node): `kubectl` and `helm` against one kubeconfig with their
//! caches in a temp folder, running a command, and loading the kubeconfig.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// A command that could not run or exited unsuccessfully.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started.
    #[error("run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error("`{command}` failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stdout.
        stdout: String,
        /// Its stderr.
        stderr: String,
    },
}

/// A kubeconfig that cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[error("kubeconfig {path}: {source}")]
pub struct KubeconfigError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: kube::config::KubeconfigError,
}

/// `kubectl` and `helm` from `bin_dir` with `KUBECONFIG` set and their caches and homes under
/// `home`.
#[derive(Clone, Copy, Debug)]
pub struct KubeTools<'a> {
    /// Folder holding `kubectl` and `helm`.
    pub bin_dir: &'a Path,
    /// The kubeconfig they use.
    pub kubeconfig: &'a Path,
    /// Folder for kubectl's discovery cache (`KUBECACHEDIR`) and helm's homes.
    pub home: &'a Path,
}

impl KubeTools<'_> {
    /// `kubectl` with `KUBECONFIG` and `KUBECACHEDIR` set, stdin closed.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.env("KUBECONFIG", self.kubeconfig)
            .env("KUBECACHEDIR", self.home.join("kubectl-cache"))
            .stdin(Stdio::null());
        cmd
    }

    /// `helm` with `KUBECONFIG`, `HELM_CACHE_HOME`, `HELM_CONFIG_HOME` and `HELM_DATA_HOME`
    /// set, stdin closed.
    pub fn helm(&self) -> Command {
        let home = self.home.join("helm");
        let mut cmd = Command::new(self.bin_dir.join("helm"));
        cmd.env("KUBECONFIG", self.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .stdin(Stdio::null());
        cmd
    }
}

/// Runs `cmd` (shown as `display` in errors) and returns its stdout, or an error with both
/// outputs.
pub async fn run(cmd: Command, display: &str) -> Result<String, CommandError> {
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .map_err(|source| CommandError::Spawn { command: display.to_owned(), source })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(CommandError::Failed {
            command: display.to_owned(),
            status: out.status.to_string(),
            stdout,
            stderr,
        })
    }
}

/// The client configuration of the kubeconfig at `path`.
pub async fn load_config(path: &Path) -> Result<kube::Config, KubeconfigError> {
    let error = |source| KubeconfigError { path: path.to_path_buf(), source };
    let kc = Kubeconfig::read_from(path).map_err(error)?;
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.map_err(error)
}
