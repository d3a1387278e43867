//! What a process costs, read from `/proc/PID`: CPU time, resident memory, open sockets.

use std::sync::OnceLock;

/// Why a `/proc` read failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (the process is gone?).
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file did not have the expected shape.
    #[error("cannot parse {0}")]
    Parse(String),
}

fn read(path: String) -> Result<String, ProcError> {
    std::fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
fn clock_ticks() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `utime + stime` in clock ticks from the text of `/proc/PID/stat`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ... utime is field 14, stime 15 (1-based over the whole line).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time (user + system) the process has used so far, in milliseconds.
pub fn cpu_ms(pid: u32) -> Result<f64, ProcError> {
    let path = format!("/proc/{pid}/stat");
    let text = read(path.clone())?;
    let ticks = parse_cpu_ticks(&text).ok_or(ProcError::Parse(path))?;
    Ok(ticks as f64 * 1000.0 / clock_ticks())
}

/// `VmRSS` in KiB from the text of `/proc/PID/status`.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok())
}

/// Resident memory of the process in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/status");
    let text = read(path.clone())?;
    parse_rss_kib(&text).ok_or(ProcError::Parse(path))
}

/// Open sockets of the process (links in `/proc/PID/fd` that point at `socket:[…]`).
pub fn sockets(pid: u32) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/fd");
    let dir = std::fs::read_dir(&path).map_err(|source| ProcError::Read { path, source })?;
    Ok(dir
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.to_string_lossy().starts_with("socket:"))
        .count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces_and_parens() {
        let stat = "1234 (vmcp (gw) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_line_in_kib() {
        let status = "Name:\tvmcp\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(12345));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(cpu_ms(pid).unwrap() >= 0.0);
        assert!(rss_kib(pid).unwrap() > 0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(sockets(pid).unwrap() >= 1);
        drop(listener);
    }
}
