//! `vmcp-gateway install-bridge DIR`: copies this very executable to `DIR/vmcp-gateway`.
//!
//! The operator runs this in the init container of a stdio `MCPServer` pod (with the gateway
//! image) to hand the bridge to the server container through an emptyDir. The gateway image
//! needs no shell and no `cp` for that, and because release images ship a statically linked
//! binary, the copy runs in any server image, whatever its libc (docs/images.md).

use std::path::{Path, PathBuf};

/// Name of the installed binary inside `DIR`.
pub const INSTALLED_NAME: &str = "vmcp-gateway";

/// Why the bridge binary could not be installed. Every variant names the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The running executable could not be located (`/proc/self/exe`).
    #[error("cannot locate the running vmcp-gateway executable: {0}")]
    CurrentExe(std::io::Error),
    /// The target folder does not exist or is not a folder.
    #[error("install-bridge: {0} is not a folder (mount an emptyDir there)")]
    NotADir(PathBuf),
    /// Copying or renaming failed.
    #[error("install-bridge: cannot write {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Copies the running executable to `dir/vmcp-gateway` and returns that path.
pub fn install_self(dir: &Path) -> Result<PathBuf, InstallError> {
    let exe = std::env::current_exe().map_err(InstallError::CurrentExe)?;
    install_from(&exe, dir)
}

/// Copies `exe` to `dir/vmcp-gateway`, executable by every user (the server container may run
/// under another UID than the init container). Writes a temporary file first and renames it,
/// so a restarted init container never leaves a half-written binary behind.
pub fn install_from(exe: &Path, dir: &Path) -> Result<PathBuf, InstallError> {
    if !dir.is_dir() {
        return Err(InstallError::NotADir(dir.to_owned()));
    }
    let target = dir.join(INSTALLED_NAME);
    let partial = dir.join(format!(".{INSTALLED_NAME}.partial"));
    let write = |path: &Path| {
        let path = path.to_owned();
        move |source| InstallError::Write { path, source }
    };
    std::fs::copy(exe, &partial).map_err(write(&partial))?;
    set_executable(&partial).map_err(write(&partial))?;
    std::fs::rename(&partial, &target).map_err(write(&target))?;
    Ok(target)
}

#[cfg(unix)]
fn set_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn copies_byte_for_byte_and_executable_by_all() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src-binary");
        std::fs::write(&src, b"\x7fELF pretend").unwrap();
        let out = tempfile::tempdir().unwrap();
        let installed = install_from(&src, out.path()).unwrap();
        assert_eq!(installed, out.path().join("vmcp-gateway"));
        assert_eq!(std::fs::read(&installed).unwrap(), b"\x7fELF pretend");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755);
        }
        // Installing again (a restarted init container) replaces the file and leaves no temp.
        install_from(&src, out.path()).unwrap();
        let names: Vec<_> =
            std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["vmcp-gateway"]);
    }

    #[test]
    fn missing_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = install_from(Path::new("/bin/sh"), &missing).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
