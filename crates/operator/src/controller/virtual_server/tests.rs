use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::reflector::ObjectRef;
use vmcp_types::crd::{DiscoveredBackend, VirtualMCPServerPhase};

use super::super::RefIndex;
use super::*;
use crate::resources::{Problem, ProblemKind, fixtures};
use k8s_openapi::jiff::Timestamp;
use vmcp_types::crd::LocalRef;

fn t(s: i64) -> Time {
    Time(Timestamp::from_second(s).unwrap())
}

fn observation(outcome: Outcome) -> Observation {
    Observation {
        generation: Some(1),
        namespace: "team-a".into(),
        group: "engineering".into(),
        replicas: 2,
        redis: true,
        url: "http://engineering-gateway-vmcp.team-a.svc.cluster.local:4483/mcp".into(),
        outcome,
    }
}

fn applied(problems: Vec<Problem>, available: i32) -> Outcome {
    Outcome::Applied {
        backends: vec![
            DiscoveredBackend {
                name: "github-tools".into(),
                status: Some("ready".into()),
                ..Default::default()
            },
            DiscoveredBackend {
                name: "time".into(),
                status: Some("pending".into()),
                ..Default::default()
            },
        ],
        backend_count: 2,
        problems,
        available_replicas: available,
        pod_problem: None,
    }
}

#[test]
fn crash_looping_gateway_pods_are_failed_with_the_reason() {
    let problem = crate::pod_health::PodProblem {
        reason: "CrashLoopBackOff".into(),
        message: "pod gw-1 container gateway: CrashLoopBackOff (last exit code 1, Error)".into(),
    };
    let Outcome::Applied { backends, backend_count, problems, .. } = applied(vec![], 0) else {
        unreachable!()
    };
    let o = observation(Outcome::Applied {
        backends,
        backend_count,
        problems,
        available_replicas: 0,
        pod_problem: Some(problem.clone()),
    });
    let s = desired_status(None, &o, &t(1));
    assert_eq!(s.phase, Some(VirtualMCPServerPhase::Failed));
    let ready = cond(&s, READY);
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "CrashLoopBackOff"));
    assert_eq!(ready.message, format!("0 of 2 gateway pods available; {}", problem.message));
}

fn cond<'a>(
    s: &'a VirtualMCPServerStatus,
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status::find(&s.conditions, t).unwrap()
}

#[test]
fn missing_group_fails_naming_it() {
    let s = desired_status(None, &observation(Outcome::GroupNotFound), &t(1));
    assert_eq!(s.phase, Some(VirtualMCPServerPhase::Failed));
    let c = cond(&s, GROUP_REF_VALIDATED);
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "GroupNotFound"));
    assert!(c.message.contains("'engineering'"), "{}", c.message);
    assert_eq!(cond(&s, READY).status, "False");
    assert_eq!(s.backend_count, 0);
    insta::assert_yaml_snapshot!("status_group_not_found", s);
}

#[test]
fn ready_when_pods_available() {
    let s = desired_status(None, &observation(applied(vec![], 2)), &t(1));
    assert_eq!(s.phase, Some(VirtualMCPServerPhase::Ready));
    assert_eq!(cond(&s, READY).status, "True");
    assert_eq!(cond(&s, GROUP_REF_VALIDATED).status, "True");
    assert_eq!(cond(&s, AUTH_CONFIGURED).status, "True");
    assert_eq!(cond(&s, BACKENDS_DISCOVERED).status, "True");
    assert_eq!(cond(&s, SESSION_STORAGE_WARNING).status, "False");
    assert_eq!(s.backend_count, 2);
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(
        s.url.as_deref(),
        Some("http://engineering-gateway-vmcp.team-a.svc.cluster.local:4483/mcp")
    );
    insta::assert_yaml_snapshot!("status_ready", s);
}

#[test]
fn pending_until_a_pod_is_available() {
    let s = desired_status(None, &observation(applied(vec![], 0)), &t(1));
    assert_eq!(s.phase, Some(VirtualMCPServerPhase::Pending));
    assert_eq!(cond(&s, READY).reason, "DeploymentNotAvailable");
}

#[test]
fn auth_problem_degrades_and_names_the_object() {
    let p = Problem {
        kind: ProblemKind::Auth,
        message: "MCPExternalAuthConfig 'x' (used by backend 'github-tools') not found".into(),
    };
    let s = desired_status(None, &observation(applied(vec![p], 2)), &t(1));
    assert_eq!(s.phase, Some(VirtualMCPServerPhase::Degraded));
    let c = cond(&s, AUTH_CONFIGURED);
    assert_eq!(c.status, "False");
    assert!(c.message.contains("'x'"));
    assert_eq!(cond(&s, READY).status, "False");
}

#[test]
fn session_storage_warning_logic() {
    for (replicas, redis, warn) in
        [(1, false, false), (2, false, true), (3, true, false), (1, true, false), (0, false, false)]
    {
        let mut o = observation(applied(vec![], 1));
        o.replicas = replicas;
        o.redis = redis;
        let s = desired_status(None, &o, &t(1));
        let c = cond(&s, SESSION_STORAGE_WARNING);
        assert_eq!(c.status == "True", warn, "replicas {replicas} redis {redis}");
        if warn {
            assert_eq!(c.reason, "MultipleReplicasWithoutRedis");
        }
    }
}

#[test]
fn unchanged_observation_changes_nothing() {
    let o = observation(applied(vec![], 2));
    let first = desired_status(None, &o, &t(1));
    let second = desired_status(Some(&first), &o, &t(100));
    assert_eq!(first, second, "a second reconcile with no changes must write nothing");
}

#[test]
fn transition_times_move_only_on_status_change() {
    let first = desired_status(None, &observation(applied(vec![], 0)), &t(1));
    let second = desired_status(Some(&first), &observation(applied(vec![], 2)), &t(50));
    assert_eq!(cond(&second, READY).last_transition_time, t(50));
    assert_eq!(cond(&second, GROUP_REF_VALIDATED).last_transition_time, t(1));
    let mut o = observation(applied(vec![], 2));
    o.generation = Some(2);
    let third = desired_status(Some(&second), &o, &t(90));
    assert_eq!(cond(&third, READY).last_transition_time, t(50));
    assert_eq!(cond(&third, READY).observed_generation, Some(2));
    assert_eq!(third.observed_generation, Some(2));
}

#[test]
fn render_failure_is_failed_with_message() {
    let s = desired_status(
        None,
        &observation(Outcome::RenderFailed("spec.sessionStorage.ttl: bad".into())),
        &t(1),
    );
    assert_eq!(s.phase, Some(VirtualMCPServerPhase::Failed));
    assert_eq!(cond(&s, READY).reason, "InvalidSpec");
    assert!(cond(&s, READY).message.contains("ttl"));
}

#[test]
fn name_conflict_fails_and_says_why() {
    let msg = "Service 'engineering-gateway-vmcp' already exists and is controlled by \
               MCPServer 'engineering-gateway-vmcp'";
    let s = desired_status(None, &observation(Outcome::NameConflict(msg.into())), &t(1));
    assert_eq!(s.phase, Some(VirtualMCPServerPhase::Failed));
    let ready = cond(&s, READY);
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", NAME_CONFLICT));
    assert_eq!(ready.message, msg);
    assert_eq!(cond(&s, GROUP_REF_VALIDATED).status, "True");
}

#[test]
fn no_members_means_no_backends() {
    let o = observation(Outcome::Applied {
        backends: vec![],
        backend_count: 0,
        problems: vec![],
        available_replicas: 1,
        pod_problem: None,
    });
    let s = desired_status(None, &o, &t(1));
    assert_eq!(cond(&s, BACKENDS_DISCOVERED).reason, "NoBackends");
}

#[test]
fn watch_mappings() {
    let vmcp = Arc::new(fixtures::vmcp());
    let mut other = fixtures::vmcp();
    other.metadata.name = Some("other-gw".into());
    other.spec.group_ref = LocalRef { name: "other".into() };
    let gateways = vec![vmcp, Arc::new(other)];
    let index = RefIndex::default();
    index.set(
        fixtures::NS,
        "other-gw",
        BTreeSet::from([(RefKind::Server, "time".into()), (RefKind::Secret, "s".into())]),
    );
    let names = |refs: Vec<ObjectRef<VirtualMCPServer>>| {
        refs.into_iter().map(|r| r.name).collect::<Vec<_>>()
    };
    // A member of `engineering` that `other-gw` used before (it moved groups).
    assert_eq!(
        names(gateways_for_server(&gateways, &index, &fixtures::server("time"))),
        ["engineering-gateway", "other-gw"]
    );
    assert_eq!(names(gateways_for_group(&gateways, &fixtures::group())), ["engineering-gateway"]);
    let refs = gateways_for_auth_config(&gateways, &index, &fixtures::auth_config());
    assert!(refs.is_empty(), "discovered refs come from the index only");
    let mut secret = PartialObjectMeta::<Secret>::default();
    secret.metadata.name = Some("s".into());
    secret.metadata.namespace = Some(fixtures::NS.into());
    assert_eq!(names(referrers(&index, RefKind::Secret, &secret)), ["other-gw"]);
    let r = &gateways_for_group(&gateways, &fixtures::group())[0];
    assert_eq!(r.namespace.as_deref(), Some(fixtures::NS));
}
