//! What a wake-up costs on this machine: a one-byte ping-pong over pipes between this process
//! and a child echo process pinned to a core, both blocking in `read` between bytes.
//!
//! A call through a gateway on its own core crosses cores four or five times (client →
//! gateway → backend → gateway, often twice as the backend's answer comes in two writes →
//! client), while a direct call (client and backend on core 1) crosses none. Where an idle
//! virtual CPU halts at once (a guest with halt polling off), each crossing costs tens of
//! microseconds that no gateway code can save, so the 1-client figures are read next to this.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

/// Round trips measured per pair of cores, after [`WARMUP`] unmeasured ones.
const ROUNDS: usize = 2000;
const WARMUP: usize = 200;

/// The hidden flag that turns `vmcp-bench` into the echo side of the probe.
pub const ECHO_FLAG: &str = "--wake-echo";

/// Wake-up costs and the idle policy of the machine.
#[derive(Debug, Clone, Serialize, Default)]
pub struct WakeCost {
    /// Median round trip, µs, between this process (core 1) and an echo on core 0.
    pub cross_core_rtt_us: Option<f64>,
    /// Median round trip, µs, with the echo on core 1 as well.
    pub same_core_rtt_us: Option<f64>,
    /// `cpuidle` driver (e.g. `haltpoll` in a KVM guest).
    pub cpuidle_driver: Option<String>,
    /// `guest_halt_poll_ns` of the `haltpoll` driver: how long an idle guest CPU polls
    /// before it halts (0: it halts at once, and every wake-up is a VM exit).
    pub guest_halt_poll_ns: Option<u64>,
    /// Why a round trip could not be measured.
    pub error: Option<String>,
}

/// The echo side: copies stdin to stdout one byte at a time until EOF.
pub fn echo() -> std::io::Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut b = [0u8; 1];
    while stdin.read(&mut b)? == 1 {
        stdout.write_all(&b)?;
        stdout.flush()?;
    }
    Ok(())
}

/// Median round trip, µs, to an echo child pinned to `core`.
fn round_trip(core: u32) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new("taskset")
        .args(["-c", &core.to_string()])
        .arg(&exe)
        .arg(ECHO_FLAG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let result = (|| -> anyhow::Result<f64> {
        let mut to = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let mut from = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut b = [7u8; 1];
        let mut times = Vec::with_capacity(ROUNDS);
        for i in 0..WARMUP + ROUNDS {
            let t = Instant::now();
            to.write_all(&b)?;
            from.read_exact(&mut b)?;
            if i >= WARMUP {
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok(crate::stats::median(&times))
    })();
    // Closing stdin ends the echo; kill it anyway if the loop failed half way.
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Measures the machine. `pinned`: this process runs on core 1 (the bench's layout), so the
/// cross-core round trip goes to core 0, where the gateway under test runs; unpinned (smoke)
/// only the idle policy is read.
pub fn measure(pinned: bool) -> WakeCost {
    let mut w = WakeCost {
        cpuidle_driver: read_trimmed("/sys/devices/system/cpu/cpuidle/current_driver"),
        guest_halt_poll_ns: read_trimmed("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
            .and_then(|s| s.parse().ok()),
        ..WakeCost::default()
    };
    if !pinned {
        w.error = Some("processes are not pinned (smoke)".into());
        return w;
    }
    match round_trip(0).and_then(|c| Ok((c, round_trip(1)?))) {
        Ok((c, s)) => {
            w.cross_core_rtt_us = Some(c);
            w.same_core_rtt_us = Some(s);
        }
        Err(e) => w.error = Some(format!("{e:#}")),
    }
    w
}

/// One line for the report header.
pub fn describe(w: &WakeCost) -> String {
    let mut s = match (w.cross_core_rtt_us, w.same_core_rtt_us) {
        (Some(c), Some(s)) => format!(
            "Wake-up cost: a one-byte pipe round trip between core 1 and core 0 takes {c:.1} µs (both on core 1: {s:.1} µs)"
        ),
        _ => format!("Wake-up cost: not measured ({})", w.error.as_deref().unwrap_or("unknown")),
    };
    if let Some(d) = &w.cpuidle_driver {
        s.push_str(&format!("; cpuidle driver {d}"));
    }
    if let Some(ns) = w.guest_halt_poll_ns {
        s.push_str(&format!(", guest_halt_poll_ns {ns}"));
    }
    s.push('.');
    if let (Some(c), Some(same)) = (w.cross_core_rtt_us, w.same_core_rtt_us)
        && c > 20.0
        && c > 4.0 * same
    {
        s.push_str(&format!(
            " Each crossing of cores costs about {:.0} µs here: a call through a gateway on core 0 crosses 4 or 5 times, a direct call none, so at 1 client the added latency of both gateways includes at least {:.2} to {:.2} ms that is the machine's, not the gateway's (an idle virtual CPU halts at once; see README, Performance).",
            c / 2.0,
            4.0 * c / 2.0 / 1000.0,
            5.0 * c / 2.0 / 1000.0
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_with_costly_wake_ups_is_flagged_and_a_normal_one_is_not() {
        let costly = WakeCost {
            cross_core_rtt_us: Some(90.0),
            same_core_rtt_us: Some(4.0),
            cpuidle_driver: Some("haltpoll".into()),
            guest_halt_poll_ns: Some(0),
            error: None,
        };
        let d = describe(&costly);
        assert!(d.contains("90.0 µs"), "{d}");
        assert!(d.contains("guest_halt_poll_ns 0"), "{d}");
        assert!(d.contains("about 45 µs"), "{d}");
        assert!(d.contains("0.18 to 0.23 ms"), "{d}");
        let normal = WakeCost { cross_core_rtt_us: Some(6.0), ..costly };
        assert!(!describe(&normal).contains("crossing"), "{}", describe(&normal));
    }
}
