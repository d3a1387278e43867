//! The official MCP conformance suite through the gateway (issue 15): every server scenario of
//! the pinned `@modelcontextprotocol/conformance` CLI (`--suite all`, also the pending ones) runs
//! against a gateway whose only backend is the suite's reference test server, and must pass
//! like it does directly (`make conformance` runs both and prints the numbers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vmcp_e2e::conformance::{self, EverythingServer};
use vmcp_e2e::gateway::Gateway;

/// Scenarios allowed to fail through the gateway, each with the reason. Empty: all 32 pass.
/// An entry is `("scenario-name", "why the gateway cannot pass it yet")`; remove it once it
/// passes.
const EXPECTED_FAILURES: &[(&str, &str)] = &[];

#[tokio::test]
async fn every_server_scenario_of_the_conformance_suite_passes_through_the_gateway() {
    let server = EverythingServer::start().await;
    // One backend, exposed under its own names (the suite calls `test_simple_text`, not a
    // prefixed name). The timeout is short so that a lost server-to-client request fails
    // its scenario in 10 s instead of 30.
    let gw = Gateway::start(&format!(
        "backends:\n  - name: everything\n    url: {}\n    timeout: 10s\n\
         aggregation:\n  conflictResolution: priority\n  priorityOrder: [everything]\n",
        server.url()
    ))
    .await;

    let (results, output) = conformance::run_server_suite(&gw.url()).await;

    // The suite ran every server scenario it knows (a run that did nothing cannot pass).
    let mut ran: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
    ran.sort_unstable();
    let mut known = conformance::server_scenarios();
    known.sort_unstable();
    assert!(known.len() >= 30, "the CLI lists only {known:?}");
    assert_eq!(ran, known, "scenarios run vs `list --server`:\n{output}");

    let unexpected: Vec<&str> = results
        .iter()
        .filter(|r| !r.passed && !EXPECTED_FAILURES.iter().any(|(name, _)| *name == r.name))
        .map(|r| r.name.as_str())
        .collect();
    let passed = results.iter().filter(|r| r.passed).count();
    assert!(
        unexpected.is_empty(),
        "{passed} of {} scenarios passed through the gateway; unexpected failures: \
         {unexpected:?}\n{output}\ngateway log:\n{}",
        results.len(),
        gw.log()
    );
}
