//! Building ToolHive's `vmcp` (the reference Go gateway) pinned from its Go module, cached under
//! `.cache/bench/toolhive-<version>/` (gitignored). Nothing of it is committed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Go module path of the binary.
pub const MODULE: &str = "github.com/stacklok/toolhive";
/// The version issue 10 compared against.
pub const PREFERRED: &str = "v0.44.0";

/// Why ToolHive could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `go` is missing or could not run.
    #[error("cannot run `go`: {0}")]
    NoGo(std::io::Error),
    /// Every version tried failed; the last error output.
    #[error("go install {MODULE}/cmd/vmcp failed for {tried:?}: {output}")]
    Failed {
        /// Versions tried.
        tried: Vec<String>,
        /// The last `go` output (tail).
        output: String,
    },
}

/// The newest version the module proxy lists (`go list -m -versions`).
fn newest(go_env: &[(&str, &str)]) -> Option<String> {
    let mut cmd = Command::new("go");
    cmd.args(["list", "-m", "-versions", MODULE]).envs(go_env.iter().copied());
    let out = cmd.output().ok()?;
    newest_of(&String::from_utf8_lossy(&out.stdout))
}

/// The last version in a `go list -m -versions` line.
pub fn newest_of(line: &str) -> Option<String> {
    line.split_whitespace().skip(1).last().map(str::to_owned)
}

fn install(cache: &Path, version: &str, go_env: &[(&str, &str)]) -> Result<PathBuf, String> {
    let bin_dir = cache.join(format!("toolhive-{version}"));
    let bin = bin_dir.join("vmcp");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!(
        "[bench] building ToolHive vmcp {version} from the Go module proxy (cached in {})…",
        bin_dir.display()
    );
    let out = Command::new("go")
        .args(["install", &format!("{MODULE}/cmd/vmcp@{version}")])
        .env("GOBIN", &bin_dir)
        .env("GOFLAGS", "-buildvcs=false")
        .envs(go_env.iter().copied())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() && bin.is_file() {
        return Ok(bin);
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().collect();
    Err(lines[lines.len().saturating_sub(15)..].join("\n"))
}

/// Builds (or finds cached) ToolHive `vmcp`: `version` (default v0.44.0), else the newest
/// served version; each on the machine's Go, then with `GOTOOLCHAIN=go1.27.3` (the approved
/// newer toolchain) when the module needs a newer Go. Returns the binary and its version.
pub fn ensure(cache: &Path, version: Option<&str>) -> Result<(PathBuf, String), BuildError> {
    Command::new("go").arg("version").output().map_err(BuildError::NoGo)?;
    let mut candidates = vec![version.unwrap_or(PREFERRED).to_owned()];
    if version.is_none()
        && let Some(n) = newest(&[])
        && n != PREFERRED
    {
        candidates.push(n);
    }
    let mut tried = Vec::new();
    let mut last = String::new();
    for v in candidates {
        for go_env in [&[][..], &[("GOTOOLCHAIN", "go1.27.3")][..]] {
            tried.push(format!("{v}{}", if go_env.is_empty() { "" } else { " (go1.27.3)" }));
            match install(cache, &v, go_env) {
                Ok(bin) => return Ok((bin, v)),
                Err(e) => last = e,
            }
            if !last.contains("requires go") && !last.contains("toolchain") {
                break;
            }
        }
    }
    Err(BuildError::Failed { tried, output: last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_is_the_last_listed_version() {
        assert_eq!(newest_of("github.com/stacklok/toolhive v0.47.0 v0.63.0\n").unwrap(), "v0.63.0");
        assert_eq!(newest_of("github.com/stacklok/toolhive"), None);
    }
}
