//! Which members become backends, and how they are reported.

use super::*;

#[test]
fn backends_are_group_members_sorted_with_urls() {
    let r = render_example();
    let names: Vec<_> = r.config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["github-tools", "time"]);
    assert_eq!(r.config.backends[0].url, "http://github-tools.team-a.svc.cluster.local:8080/mcp");
    // stdio is bridged to streamable HTTP.
    assert_eq!(r.config.backends[1].url, "http://time.team-a.svc.cluster.local:8080/mcp");
    assert_eq!(r.config.backends[1].transport, BackendTransport::StreamableHttp);
    assert_eq!(r.config.listen, "0.0.0.0:4483");
}

#[test]
fn other_groups_and_sse_transport() {
    let vmcp = fixtures::vmcp();
    let mut servers = fixtures::servers();
    servers[1].spec.group_ref = Some(LocalRef { name: "other".into() });
    servers[0].spec.transport = vmcp_types::crd::McpTransport::Sse;
    servers[0].spec.port = Some(9000);
    let (config, _, discovered) =
        gateway_config(&vmcp, &servers, &fixtures::auth_configs()).unwrap();
    assert_eq!(config.backends.len(), 1);
    assert_eq!(discovered.len(), 1);
    assert_eq!(config.backends[0].url, "http://github-tools.team-a.svc.cluster.local:9000/sse");
    assert_eq!(config.backends[0].transport, BackendTransport::Sse);
}

#[test]
fn aggregation_drops_unknown_backends_with_a_problem() {
    let mut vmcp = fixtures::vmcp();
    let agg = vmcp.spec.aggregation.as_mut().unwrap();
    agg.tools[0].workload = "gone".into();
    let r = render_gateway_config(&RenderInput {
        vmcp: &vmcp,
        members: &fixtures::servers(),
        entries: &[],
        auth_configs: &fixtures::auth_configs(),
        missing_secrets: &BTreeSet::new(),
    })
    .unwrap();
    assert!(r.config.aggregation.tools.is_empty());
    assert_eq!(r.problems[0].kind, ProblemKind::Aggregation);
}

#[test]
fn a_server_whose_name_is_taken_is_left_out() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let mut servers = fixtures::servers();
    servers[0].status = Some(vmcp_types::crd::MCPServerStatus {
        phase: Some(MCPServerPhase::Failed),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "NameConflict".into(),
            message: "Service 'github-tools' already exists and is not managed by the vmcp \
                      operator"
                .into(),
            observed_generation: Some(1),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        }],
        ..Default::default()
    });
    let r = render_gateway_config(&RenderInput {
        vmcp: &fixtures::vmcp(),
        members: &servers,
        entries: &[],
        auth_configs: &fixtures::auth_configs(),
        missing_secrets: &BTreeSet::new(),
    })
    .unwrap();
    let names: Vec<_> = r.config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["time"], "no traffic to a Service someone else owns");
    let p = r.problems.iter().find(|p| p.kind == ProblemKind::Backend).unwrap();
    assert!(p.message.contains("'github-tools' left out"), "{}", p.message);
    assert_eq!(r.backends[0].status.as_deref(), Some("error"));
    // Nor its token-exchange client secret mounted.
    assert!(r.secret_mounts.iter().all(|m| m.secret != "vmcp-gateway-oidc-client"));
}

#[test]
fn failed_server_is_reported_but_kept() {
    let mut servers = fixtures::servers();
    servers[1].status = Some(vmcp_types::crd::MCPServerStatus {
        phase: Some(MCPServerPhase::Failed),
        ..Default::default()
    });
    let r = render_gateway_config(&RenderInput {
        vmcp: &fixtures::vmcp(),
        members: &servers,
        entries: &[],
        auth_configs: &fixtures::auth_configs(),
        missing_secrets: &BTreeSet::new(),
    })
    .unwrap();
    assert_eq!(r.config.backends.len(), 2);
    assert_eq!(r.backends[1].status.as_deref(), Some("error"));
    assert_eq!(r.problems[0].kind, ProblemKind::Backend);
    assert!(r.problems[0].message.contains("'time'"));
}

#[test]
fn invalid_member_name_is_a_backend_problem() {
    let mut servers = fixtures::servers();
    servers[1].metadata.name = Some("time.v2".into());
    let (config, _, discovered) =
        gateway_config(&fixtures::vmcp(), &servers, &fixtures::auth_configs()).unwrap();
    assert_eq!(config.backends.len(), 1);
    assert_eq!(discovered[1].status.as_deref(), Some("error"));
}
