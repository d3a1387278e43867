//! What every operator test uses: the shared API server, one namespace per test, the
//! controllers run in-process for that namespace, and small readers of what they wrote.

pub use std::time::Duration;

pub use k8s_openapi::api::apps::v1::Deployment;
pub use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
pub use k8s_openapi::api::events::v1::Event;
pub use k8s_openapi::api::policy::v1::PodDisruptionBudget;
pub use kube::api::{Api, DeleteParams, ListParams, PostParams};
pub use serde_json::json;
pub use vmcp_e2e::k8s::ApiServer;
pub use vmcp_e2e::repo_root;
pub use vmcp_e2e::wait::eventually;
pub use vmcp_types::crd::{VirtualMCPServer, VirtualMCPServerPhase};

/// Group `g` with the HTTP server `a` and the anonymous gateway `gw`: the start of the
/// membership tests.
pub const GROUP_G_WITH_SERVER_A: &str = r#"apiVersion: vmcp.dev/v1alpha1
kind: MCPGroup
metadata: {name: g}
spec: {}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {name: a}
spec: {image: example/a:1, groupRef: {name: g}}
---
apiVersion: vmcp.dev/v1alpha1
kind: VirtualMCPServer
metadata: {name: gw}
spec: {groupRef: {name: g}, incomingAuth: {type: anonymous}}
"#;

pub async fn setup(test: &str) -> (&'static ApiServer, kube::Client, String) {
    let api = ApiServer::shared().await;
    api.apply_crds().await.expect("CRDs");
    let ns = api.create_namespace(test).await.expect("namespace");
    (api, api.client(), ns)
}

/// Runs the controllers for one namespace until the returned sender is dropped.
pub fn run_operator(client: kube::Client, ns: &str) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let settings = vmcp_operator::Settings {
        namespaces: vec![ns.to_owned()],
        gateway_image: "ghcr.io/vmcp-dev/vmcp-gateway:test".into(),
        resync: Duration::from_secs(300),
        ..vmcp_operator::Settings::default()
    };
    tokio::spawn(vmcp_operator::run_controllers(client, settings, async move {
        let _ = rx.await;
    }));
    tx
}

pub async fn kubectl_apply(api: &ApiServer, ns: &str, path: &str) {
    let p = repo_root().join(path);
    api.run_kubectl(&["apply", "-n", ns, "-f", p.to_str().unwrap()]).await.expect("kubectl apply");
}

/// `kubectl apply` of `manifests` (YAML text) in `ns`.
pub async fn apply_text(api: &ApiServer, ns: &str, manifests: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, manifests).unwrap();
    api.run_kubectl(&["apply", "-n", ns, "-f", file.to_str().unwrap()]).await.unwrap();
}

/// The pod template's rollout annotation of Deployment `name`.
pub async fn rollout_annotation(deps: &Api<Deployment>, name: &str) -> Option<String> {
    let d = deps.get_opt(name).await.unwrap()?;
    d.spec?.template.metadata?.annotations?.get("vmcp.dev/config-checksum").cloned()
}

/// The `Ready` condition of `obj` when its reason is `reason`.
pub fn ready_with_reason(
    conditions: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>,
    reason: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions?.into_iter().find(|c| c.type_ == "Ready" && c.reason == reason)
}

/// A Warning Event with `reason` on the object named `name`.
pub async fn warning_event(client: &kube::Client, ns: &str, name: &str, reason: &str) -> Event {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(&format!("a Warning {reason} event on {name}"), Duration::from_secs(30), || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items.into_iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some(reason)
        })
    })
    .await
}
