//! The status subresource with server-side apply: status written through it reads back (also
//! in kubectl's printer columns), a spec update leaves it alone, status sent to the main
//! resource is ignored, and a status write cannot change spec.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use vmcp_types::crd::{VirtualMCPServer, VirtualMCPServerPhase};

use super::{get_vmcp_table, setup};

#[tokio::test]
async fn status_subresource_round_trips_with_server_side_apply() {
    let (api, client, ns) = setup("status").await;
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client, &ns);
    let created: VirtualMCPServer = serde_json::from_value(json!({
        "apiVersion": "vmcp.dev/v1alpha1",
        "kind": "VirtualMCPServer",
        "metadata": {"name": "gw"},
        "spec": {"groupRef": {"name": "engineering"}, "incomingAuth": {"type": "anonymous"}},
    }))
    .unwrap();
    let created = vmcps.create(&PostParams::default(), &created).await.unwrap();
    let generation = created.metadata.generation.unwrap();
    assert_eq!(generation, 1);

    let url = format!("http://gw.{ns}.svc.cluster.local:4483/mcp");
    let status = json!({
        "apiVersion": "vmcp.dev/v1alpha1",
        "kind": "VirtualMCPServer",
        "status": {
            "observedGeneration": generation,
            "phase": "Ready",
            "url": url,
            "backendCount": 2,
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "Reconciled",
                "message": "all backends ready",
                "observedGeneration": generation,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        },
    });
    let pp = PatchParams::apply("vmcp-e2e-status").force();
    let patched = vmcps.patch_status("gw", &pp, &Patch::Apply(&status)).await.unwrap();
    let s = patched.status.clone().unwrap();
    assert_eq!(s.phase, Some(VirtualMCPServerPhase::Ready));
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(s.backend_count, 2);
    assert_eq!(s.url.as_deref(), Some(url.as_str()));
    assert_eq!(s.conditions.len(), 1);
    assert_eq!(
        (s.conditions[0].type_.as_str(), s.conditions[0].status.as_str()),
        ("Ready", "True")
    );
    assert_eq!(patched.metadata.generation, Some(1), "a status write does not bump generation");
    let managers: Vec<(String, Option<String>)> = patched
        .managed_fields()
        .iter()
        .map(|m| (m.manager.clone().unwrap_or_default(), m.subresource.clone()))
        .collect();
    assert!(
        managers.contains(&("vmcp-e2e-status".to_owned(), Some("status".to_owned()))),
        "the field manager owns the status subresource: {managers:?}"
    );
    // Round trip through a fresh GET.
    assert_eq!(vmcps.get("gw").await.unwrap().status, patched.status);

    // kubectl shows the status through the printer columns.
    let table = get_vmcp_table(api, &ns).await;
    assert_eq!(table[0], ["NAME", "PHASE", "URL", "BACKENDS", "READY", "AGE"], "{table:?}");
    assert_eq!(table[1][..5], ["gw", "Ready", url.as_str(), "2", "True"], "{table:?}");

    // A spec-only update bumps generation and leaves status alone.
    let updated = vmcps
        .patch("gw", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}})))
        .await
        .unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    assert_eq!(updated.spec.replicas, Some(3));
    assert_eq!(updated.status, patched.status, "spec update must not touch status");

    // Status sent to the main resource is ignored (status is a subresource).
    let ignored = vmcps
        .patch("gw", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Failed"}})))
        .await
        .unwrap();
    assert_eq!(ignored.status, patched.status);
    assert_eq!(ignored.metadata.generation, Some(2));

    // And a status write cannot change spec.
    let status_with_spec = json!({
        "apiVersion": "vmcp.dev/v1alpha1",
        "kind": "VirtualMCPServer",
        "spec": {"groupRef": {"name": "other"}, "incomingAuth": {"type": "anonymous"}},
        "status": {"observedGeneration": 2, "phase": "Degraded"},
    });
    let after = vmcps.patch_status("gw", &pp, &Patch::Apply(&status_with_spec)).await.unwrap();
    assert_eq!(after.spec.group_ref.name, "engineering");
    assert_eq!(after.status.as_ref().unwrap().phase, Some(VirtualMCPServerPhase::Degraded));
    assert_eq!(after.status.unwrap().observed_generation, Some(2));
}
