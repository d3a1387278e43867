//! `vmcp-bench --smoke` end to end: real backends, a real vmcp-gateway, a real OpenID provider
//! and a real Redis, a few seconds. It checks that every section of the benchmark still runs
//! and produces numbers, so `make bench` cannot rot between runs. Not a timed assertion.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

#[test]
fn smoke_run_measures_every_section_without_errors() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .args(["build", "-q", "-p", "vmcp-gateway", "-p", "vmcp-example-backends"])
        .current_dir(&root)
        .status()
        .expect("cargo build");
    assert!(built.success());
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_vmcp-bench"))
        .arg("--smoke")
        .arg("--out")
        .arg(out.path())
        .current_dir(&root)
        .output()
        .expect("run vmcp-bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "vmcp-bench --smoke failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("| base | tools/call | 1 | vmcp-gateway |"), "{stdout}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("smoke.json")).unwrap())
            .unwrap();

    let load = report["load"].as_array().unwrap();
    // base: 2 methods x 2 client counts x 2 targets; oidc and redis: vmcp-gateway only.
    assert_eq!(load.len(), 8 + 4 + 4, "{report:#}");
    for row in load {
        let m = &row["median"];
        assert!(m["requests"].as_u64().unwrap() > 0, "no requests in {row}");
        assert_eq!(m["errors"], 0, "{row}");
        assert!(m["p50_ms"].as_f64().unwrap() > 0.0, "{row}");
        if row["target"] == "vmcp-gateway" {
            assert!(m["cpu_ms_per_req"].as_f64().is_some(), "{row}");
            assert!(row["added_p50_ms"].as_f64().is_some(), "{row}");
        }
    }

    let restore = &report["restore"][0];
    assert_eq!(restore["target"], "vmcp-gateway");
    assert_eq!(restore["errors"], 0, "{restore}");
    assert_eq!(restore["sessions"], 3, "{restore}");

    let redis = &report["redis"][0];
    assert!(redis["error"].is_null(), "{redis}");
    assert!(redis["memory_usage_median"].as_i64().unwrap() > 0, "{redis}");

    let cluster = &report["cluster"];
    assert_eq!(cluster["created"], 60, "{cluster}");
    assert_eq!(cluster["failures"], 0, "{cluster}");
    assert!(cluster["masters_bytes_per_session"].as_f64().unwrap() > 0.0, "{cluster}");
    assert!(cluster["memory_usage_median"].as_i64().unwrap() > 0, "{cluster}");
    assert_eq!(cluster["replica_kib_per_session"].as_array().unwrap().len(), 3, "{cluster}");
    assert_eq!(cluster["restored"], 6, "{cluster}");
    assert_eq!(cluster["restore_errors"], 0, "{cluster}");

    let idle = &report["idle"][0];
    assert_eq!(idle["created"], 200, "{idle}");
    assert_eq!(idle["oldest_session_call"], "ok", "{idle}");
    assert!(idle["gateway_sockets"].as_u64().unwrap() > 0, "{idle}");
    assert!(out.path().join("smoke.md").is_file());
}
