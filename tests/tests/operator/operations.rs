//! Running the operator: leader election, a namespace list, and NetworkPolicies for MCP
//! servers.

use crate::support::*;
use std::time::Instant;

/// Leader election against the real API server: acquire (Lease created), renew (a candidate
/// never takes a live Lease), release on shutdown (a standby takes over at once), failover after
/// a holder dies without releasing (not before the lease duration), and a holder that sees
/// another holder gives up.
#[tokio::test(flavor = "multi_thread")]
async fn leader_election_acquire_renew_release_failover() {
    use k8s_openapi::api::coordination::v1::Lease;
    use vmcp_operator::leader::{Attempt, LeaderElector, LeaderError, LeaseConfig};
    let (_api, client, ns) = setup("op-leader").await;
    let lease_duration = Duration::from_secs(2);
    let config = |id: &str| LeaseConfig {
        lease_duration,
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
        ..LeaseConfig::new("vmcp-operator-leader", ns.as_str(), id)
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let spec = || async { leases.get("vmcp-operator-leader").await.unwrap().spec.unwrap() };
    let never = std::future::pending::<()>;

    // Acquire: the first candidate creates the Lease.
    let mut a = LeaderElector::new(client.clone(), config("a"));
    let mut b = LeaderElector::new(client.clone(), config("b"));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Held);
    let s = spec().await;
    assert_eq!(s.holder_identity.as_deref(), Some("a"));
    assert_eq!(s.lease_duration_seconds, Some(2));
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Attempt::HeldBy("a".into()));

    // Renew: while `a` renews, `b` does not get the Lease in three lease durations.
    let first_renew = s.renew_time.clone().unwrap();
    let (stop_a, stopped) = tokio::sync::oneshot::channel::<()>();
    let hold_a = tokio::spawn(a.hold(async move {
        let _ = stopped.await;
    }));
    let waited = tokio::time::timeout(lease_duration * 3, b.acquire(never())).await;
    assert!(waited.is_err(), "b acquired a Lease that a kept renewing");
    let s = spec().await;
    assert_eq!(s.holder_identity.as_deref(), Some("a"));
    assert!(s.renew_time.unwrap().0 > first_renew.0, "a did not renew");

    // Release: a graceful stop clears the holder and `b` takes over well within a lease
    // duration.
    stop_a.send(()).unwrap();
    hold_a.await.unwrap().unwrap();
    let t = Instant::now();
    assert!(b.acquire(never()).await);
    assert!(t.elapsed() < lease_duration, "took {:?} after a release", t.elapsed());
    let s = spec().await;
    assert_eq!(s.holder_identity.as_deref(), Some("b"));
    assert_eq!(s.lease_transitions, Some(1));

    // Failover: `b` dies without releasing; `c` waits for the lease to expire, then takes it.
    let hold_b = tokio::spawn(b.hold(never()));
    let mut c = LeaderElector::new(client.clone(), config("c"));
    assert_eq!(c.try_acquire_or_renew().await.unwrap(), Attempt::HeldBy("b".into()));
    hold_b.abort();
    let _ = hold_b.await;
    let t = Instant::now();
    assert!(c.acquire(never()).await);
    let took = t.elapsed();
    assert!(
        took >= lease_duration - Duration::from_millis(300),
        "took a live lease after {took:?}"
    );
    assert!(took < lease_duration * 5, "failover took {took:?}");
    let s = spec().await;
    assert_eq!(s.holder_identity.as_deref(), Some("c"));
    assert_eq!(s.lease_transitions, Some(2));

    // Lost: another holder writes the Lease; the holder notices and gives up.
    let hold_c = tokio::spawn(c.hold(never()));
    let mut lease = leases.get("vmcp-operator-leader").await.unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("intruder".into());
    leases.replace("vmcp-operator-leader", &PostParams::default(), &lease).await.unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(10), hold_c).await.unwrap().unwrap();
    match lost {
        Err(LeaderError::Lost { reason, .. }) => assert!(reason.contains("intruder"), "{reason}"),
        other => panic!("expected Lost, got {other:?}"),
    }
}

/// `watchNamespaces` with two namespaces: each listed namespace is reconciled, an unlisted one
/// is not.
#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_list_reconciles_exactly_those_namespaces() {
    use vmcp_types::crd::MCPGroup;
    let (api, client, a) = setup("op-list-a").await;
    let b = api.create_namespace("op-list-b").await.unwrap();
    let outside = api.create_namespace("op-list-c").await.unwrap();
    for ns in [&a, &b, &outside] {
        apply_text(
            api,
            ns,
            "apiVersion: vmcp.dev/v1alpha1\nkind: MCPGroup\nmetadata:\n  name: g\nspec: {}\n",
        )
        .await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let settings = vmcp_operator::Settings {
        namespaces: vec![a.clone(), b.clone()],
        resync: Duration::from_secs(300),
        ..vmcp_operator::Settings::default()
    };
    tokio::spawn(vmcp_operator::run_controllers(client.clone(), settings, async move {
        let _ = rx.await;
    }));
    for ns in [&a, &b] {
        let groups: Api<MCPGroup> = Api::namespaced(client.clone(), ns);
        eventually(&format!("group status in {ns}"), Duration::from_secs(30), || async {
            groups.get("g").await.unwrap().status.filter(|s| s.observed_generation.is_some())
        })
        .await;
    }
    // By now the unlisted namespace would have been reconciled too.
    let groups: Api<MCPGroup> = Api::namespaced(client.clone(), &outside);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(groups.get("g").await.unwrap().status.is_none(), "{outside} is not watched");
    drop(tx);
}

/// `workloads.mcpServer.networkPolicy`: every MCPServer gets a NetworkPolicy (accepted by the API
/// server) that selects its pods and admits only pods carrying the labels its group's gateway
/// pods carry; turned off, the operator deletes them again.
#[tokio::test(flavor = "multi_thread")]
async fn network_policies_admit_only_the_groups_gateways() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let (api, client, ns) = setup("op-netpol").await;
    kubectl_apply(api, &ns, "examples/k8s/").await;
    let run = |enabled: bool| {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut settings = vmcp_operator::Settings {
            namespaces: vec![ns.clone()],
            resync: Duration::from_secs(300),
            ..vmcp_operator::Settings::default()
        };
        settings.workloads.server_network_policy = enabled;
        tokio::spawn(vmcp_operator::run_controllers(client.clone(), settings, async move {
            let _ = rx.await;
        }));
        tx
    };
    let stop = run(true);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let gateway = eventually("the gateway Deployment", Duration::from_secs(60), || async {
        deps.get_opt("engineering-gateway-vmcp").await.unwrap()
    })
    .await;
    let gateway_pod_labels = gateway.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    for server in ["weather", "notes"] {
        let p = eventually(&format!("NetworkPolicy {server}"), Duration::from_secs(60), || async {
            policies.get_opt(server).await.unwrap()
        })
        .await;
        let spec = p.spec.unwrap();
        let from = spec.ingress.unwrap()[0].from.as_ref().unwrap()[0]
            .pod_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap();
        assert!(
            from.iter().all(|(k, v)| gateway_pod_labels.get(k) == Some(v)),
            "the gateway pods {gateway_pod_labels:?} match {from:?}"
        );
        let server_pods = deps
            .get(server)
            .await
            .unwrap()
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap();
        let selected = spec.pod_selector.unwrap().match_labels.unwrap();
        assert!(selected.iter().all(|(k, v)| server_pods.get(k) == Some(v)));
        assert!(!from.iter().all(|(k, v)| server_pods.get(k) == Some(v)), "not the servers");
    }
    drop(stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _stop = run(false);
    eventually("the policies deleted", Duration::from_secs(60), || async {
        policies.list(&ListParams::default()).await.unwrap().items.is_empty().then_some(())
    })
    .await;
}
