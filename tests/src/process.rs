//! Child processes that are stopped when their handle is dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a peer process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be spawned.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The program exited before it became ready.
    #[error("{program} exited before it was ready ({status}); its output:\n{output}")]
    Exited {
        /// The program.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The tail of its log.
        output: String,
    },
    /// The program did not become ready in time.
    #[error("{program} was not ready after {waited:?}; its output:\n{output}")]
    Timeout {
        /// The program.
        program: String,
        /// How long we waited.
        waited: Duration,
        /// The tail of its log.
        output: String,
    },
}

/// A running child whose stdout and stderr go to a log file; killed on drop.
#[derive(Debug)]
pub struct Peer {
    name: String,
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Peer {
    /// Spawns `cmd` with its output appended to `log`.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: std::path::PathBuf,
    ) -> Result<Self, ProcessError> {
        let spawn_err = |source| ProcessError::Spawn { program: name.to_owned(), source };
        let out =
            std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().map_err(spawn_err)?;
        Ok(Self { name: name.to_owned(), child: Some(child), log })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of the peer's log (for error messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// Waits until `ready` returns true, failing early if the process exits.
    pub async fn wait_ready<F, Fut>(
        &mut self,
        timeout: Duration,
        mut ready: F,
    ) -> Result<(), ProcessError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(ProcessError::Exited {
                    program: self.name.clone(),
                    status,
                    output: self.log_tail(),
                });
            }
            if ready().await {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(ProcessError::Timeout {
                    program: self.name.clone(),
                    waited: timeout,
                    output: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most 20 s) until `GET http://127.0.0.1:{port}/healthz` answers 2xx.
    pub async fn wait_healthz(&mut self, port: u16) -> Result<(), ProcessError> {
        self.wait_ready(Duration::from_secs(20), || async move {
            reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
    }

    /// Sends a signal (e.g. "STOP", "CONT") without waiting for anything.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        }
    }

    /// Sends a signal (e.g. "TERM", "KILL") and waits for the process to exit.
    pub fn signal_and_wait(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            let _ =
                Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
