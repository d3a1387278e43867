//! The operator against a real kube-apiserver (in-process controllers, one namespace per
//! test), the Helm chart installed with real helm, and the rendered gateway config run by the
//! real gateway binary against official-SDK backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use sha2::Digest;
use vmcp_e2e::k8s::ApiServer;
use vmcp_e2e::repo_root;
use vmcp_types::crd::{VirtualMCPServer, VirtualMCPServerPhase};

async fn setup(test: &str) -> (&'static ApiServer, kube::Client, String) {
    let api = ApiServer::shared().await;
    api.apply_crds().await.expect("CRDs");
    let ns = api.create_namespace(test).await.expect("namespace");
    (api, api.client(), ns)
}

/// Runs the controllers for one namespace until the returned sender is dropped.
fn run_operator(client: kube::Client, ns: &str) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let settings = vmcp_operator::Settings {
        namespace: Some(ns.to_owned()),
        gateway_image: "ghcr.io/vmcp-dev/vmcp-gateway:test".into(),
        resync: Duration::from_secs(300),
        ..vmcp_operator::Settings::default()
    };
    tokio::spawn(vmcp_operator::run_controllers(client, settings, async move {
        let _ = rx.await;
    }));
    tx
}

async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn kubectl_apply(api: &ApiServer, ns: &str, path: &str) {
    let p = repo_root().join(path);
    api.run_kubectl(&["apply", "-n", ns, "-f", p.to_str().unwrap()]).await.expect("kubectl apply");
}

#[tokio::test(flavor = "multi_thread")]
async fn examples_yield_the_expected_children_and_status() {
    let (api, client, ns) = setup("op-examples").await;
    kubectl_apply(api, &ns, "examples/k8s/").await;
    let _stop = run_operator(client.clone(), &ns);

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = eventually("the gateway ConfigMap", Duration::from_secs(60), || async {
        cms.get_opt("engineering-gateway-vmcp-config").await.unwrap()
    })
    .await;
    let owner = &cm.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("VirtualMCPServer", "engineering-gateway", Some(true))
    );
    let labels = cm.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "vmcp-operator");
    let text = cm.data.as_ref().unwrap()["config.yaml"].clone();
    for secret in ["change-me", "example-api-key"] {
        assert!(!text.contains(secret), "secret value copied into the ConfigMap:\n{text}");
    }
    let cfg = vmcp_types::config::from_yaml_str(&text)
        .unwrap_or_else(|e| panic!("rendered config invalid: {e}\n{text}"));
    let names: Vec<_> = cfg.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["notes", "weather"]);
    let header = cfg.backends[1].auth.header_injection.as_ref().unwrap();
    assert_eq!(header.header_name, "X-API-Key");
    assert!(header.value.file.as_ref().unwrap().to_str().unwrap().contains("weather-api-key"));

    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let dep = deps.get("engineering-gateway-vmcp").await.unwrap();
    let checksum = dep
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()["vmcp.dev/config-checksum"]
        .clone();
    assert!(
        checksum.contains(&hex::encode(sha2::Sha256::digest(text.as_bytes()))),
        "checksum {checksum}"
    );
    let pod = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    let c = &pod.containers[0];
    assert_eq!(c.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
    assert!(
        c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref()
            == Some("/readyz")
    );
    let svc: Api<Service> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        svc.get("engineering-gateway-vmcp").await.unwrap().spec.unwrap().ports.unwrap()[0].port,
        4483
    );
    let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    assert!(sa.get_opt("engineering-gateway-vmcp").await.unwrap().is_some());
    let pdb: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    assert!(pdb.get_opt("engineering-gateway-vmcp").await.unwrap().is_some(), "replicas 2 → PDB");

    // Status and the kubectl columns.
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client.clone(), &ns);
    let v = eventually("status with 2 backends", Duration::from_secs(30), || async {
        let v = vmcps.get("engineering-gateway").await.unwrap();
        v.status.clone().filter(|s| s.backend_count == 2).map(|_| v)
    })
    .await;
    let st = v.status.unwrap();
    assert_eq!(st.observed_generation, v.metadata.generation);
    assert_eq!(
        st.url.as_deref(),
        Some(format!("http://engineering-gateway-vmcp.{ns}.svc.cluster.local:4483/mcp").as_str())
    );
    assert_eq!(
        st.phase,
        Some(VirtualMCPServerPhase::Pending),
        "no kubelet: the Deployment never becomes available"
    );
    for t in ["GroupRefValidated", "AuthConfigured", "BackendsDiscovered"] {
        let c =
            st.conditions.iter().find(|c| c.type_ == t).unwrap_or_else(|| panic!("{t} missing"));
        assert_eq!(c.status, "True", "{t}: {c:?}");
    }
    let out = api.run_kubectl(&["get", "vmcp", "-n", &ns]).await.unwrap();
    assert!(
        out.contains("engineering-gateway")
            && out.contains("svc.cluster.local:4483/mcp")
            && out.contains(" 2 "),
        "{out}"
    );

    // A second apply changes nothing: no update storm.
    let rv = |d: Deployment| d.metadata.resource_version.unwrap();
    let (d1, c1) = (
        rv(deps.get("engineering-gateway-vmcp").await.unwrap()),
        cms.get("engineering-gateway-vmcp-config").await.unwrap().metadata.resource_version,
    );
    let s1 = vmcps.get("engineering-gateway").await.unwrap().metadata.resource_version;
    kubectl_apply(api, &ns, "examples/k8s/").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(rv(deps.get("engineering-gateway-vmcp").await.unwrap()), d1);
    assert_eq!(
        cms.get("engineering-gateway-vmcp-config").await.unwrap().metadata.resource_version,
        c1
    );
    assert_eq!(vmcps.get("engineering-gateway").await.unwrap().metadata.resource_version, s1);

    // Deleting a member re-renders the ConfigMap and updates backendCount.
    let servers: Api<vmcp_types::crd::MCPServer> = Api::namespaced(client.clone(), &ns);
    servers.delete("notes", &DeleteParams::default()).await.unwrap();
    eventually("backendCount 1", Duration::from_secs(30), || async {
        let v = vmcps.get("engineering-gateway").await.unwrap();
        v.status.filter(|s| s.backend_count == 1).map(|_| ())
    })
    .await;
    let text =
        cms.get("engineering-gateway-vmcp-config").await.unwrap().data.unwrap()["config.yaml"]
            .clone();
    assert!(!text.contains("name: notes"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_group_is_a_condition_and_an_event() {
    let (_api, client, ns) = setup("op-missing-group").await;
    let _stop = run_operator(client.clone(), &ns);
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client.clone(), &ns);
    let v: VirtualMCPServer = serde_json::from_value(json!({
        "apiVersion": "vmcp.dev/v1alpha1", "kind": "VirtualMCPServer",
        "metadata": {"name": "orphan"}, "spec": {"groupRef": {"name": "nowhere"}}
    }))
    .unwrap();
    vmcps.create(&PostParams::default(), &v).await.unwrap();
    let cond = eventually("GroupRefValidated=False", Duration::from_secs(30), || async {
        let v = vmcps.get("orphan").await.unwrap();
        v.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "GroupRefValidated" && c.status == "False")
    })
    .await;
    assert!(cond.message.contains("nowhere"), "{cond:?}");
    assert!(!cond.reason.is_empty());
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let ev = eventually("a Warning event", Duration::from_secs(30), || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items.into_iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("orphan")
                && e.type_.as_deref() == Some("Warning")
        })
    })
    .await;
    assert!(ev.note.unwrap_or_default().contains("nowhere"));
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_creates_the_operator_and_uninstall_keeps_crds() {
    let api = ApiServer::start().await.expect("a fresh API server for helm");
    let chart = repo_root().join("charts/vmcp-operator");
    let out = api.helm().args(["lint"]).arg(&chart).output().unwrap();
    assert!(out.status.success(), "helm lint: {}", String::from_utf8_lossy(&out.stdout));
    let out = api.helm().args(["template", "t"]).arg(&chart).output().unwrap();
    assert!(out.status.success());
    let rendered = String::from_utf8_lossy(&out.stdout);
    assert!(
        rendered.contains("kind: CustomResourceDefinition")
            && rendered.contains("kind: ClusterRole")
    );
    let out = api
        .helm()
        .args(["install", "vmcp", "--namespace", "vmcp-system", "--create-namespace"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let client = api.client();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "vmcp-system");
    assert_eq!(
        deps.list(&ListParams::default()).await.unwrap().items.len(),
        1,
        "operator Deployment"
    );
    let crds = api.run_kubectl(&["get", "crd", "-o", "name"]).await.unwrap();
    assert_eq!(crds.lines().filter(|l| l.contains("vmcp.dev")).count(), 4, "{crds}");
    let out =
        api.helm().args(["uninstall", "vmcp", "--namespace", "vmcp-system"]).output().unwrap();
    assert!(out.status.success(), "helm uninstall: {}", String::from_utf8_lossy(&out.stderr));
    let crds = api.run_kubectl(&["get", "crd", "-o", "name"]).await.unwrap();
    assert_eq!(
        crds.lines().filter(|l| l.contains("vmcp.dev")).count(),
        4,
        "CRDs are kept on uninstall: {crds}"
    );
    assert!(deps.list(&ListParams::default()).await.unwrap().items.is_empty(), "operator removed");
}

/// End to end across both crates: the ConfigMap the operator rendered runs in the gateway
/// binary (secrets supplied as files, as the Deployment mounts them; in-cluster host names
/// pointed at the local SDK backends) and a tool call goes through.
#[tokio::test(flavor = "multi_thread")]
async fn rendered_config_runs_in_the_gateway() {
    use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};
    let (api, client, ns) = setup("op-e2e").await;
    let manifests = r#"apiVersion: v1
kind: Secret
metadata: {name: h-key}
stringData: {value: k-9}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPGroup
metadata: {name: g}
spec: {}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPExternalAuthConfig
metadata: {name: h-header}
spec:
  type: headerInjection
  headerInjection: {headerName: X-Api-Key, valueSecretRef: {name: h-key, key: value}}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {name: a}
spec: {image: example/a:1, port: 8080, groupRef: {name: g}}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {name: h}
spec: {image: example/h:1, port: 8080, groupRef: {name: g}, externalAuthConfigRef: {name: h-header}}
---
apiVersion: vmcp.dev/v1alpha1
kind: VirtualMCPServer
metadata: {name: gw}
spec: {groupRef: {name: g}}
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, manifests).unwrap();
    api.run_kubectl(&["apply", "-n", &ns, "-f", file.to_str().unwrap()]).await.unwrap();
    let _stop = run_operator(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let text =
        eventually("a rendered config with both backends", Duration::from_secs(60), || async {
            let cm = cms.get_opt("gw-vmcp-config").await.unwrap()?;
            let t = cm.data?.get("config.yaml")?.clone();
            (t.contains("name: a") && t.contains("name: h")).then_some(t)
        })
        .await;

    let a = Backend::start(Sdk::Python, "a", BackendOptions::default()).await;
    let h = Backend::start(Sdk::TypeScript, "h", BackendOptions::default()).await;
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(secrets.join("h-key")).unwrap();
    std::fs::write(secrets.join("h-key/value"), "k-9\n").unwrap();
    let local = text
        .lines()
        .filter(|l| !l.starts_with("listen:"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            &format!("http://a.{ns}.svc.cluster.local:8080"),
            &format!("http://127.0.0.1:{}", a.port),
        )
        .replace(
            &format!("http://h.{ns}.svc.cluster.local:8080"),
            &format!("http://127.0.0.1:{}", h.port),
        )
        .replace("/var/run/secrets/vmcp", secrets.to_str().unwrap());
    assert!(local.contains("127.0.0.1") && local.contains(secrets.to_str().unwrap()), "{local}");
    let gw = vmcp_e2e::gateway::Gateway::start(&format!("{local}\n")).await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let r =
        c.ok(json!({"op": "call_tool", "name": "a_echo", "arguments": {"text": "from-k8s"}})).await;
    assert_eq!(r["text"], "a:echo:from-k8s");
    let r = c.ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": "x"}})).await;
    assert_eq!(r["text"], "h:echo:x");
    assert!(
        h.requests().iter().any(|r| r["headers"]["x-api-key"] == "k-9"),
        "the mounted secret reached h"
    );
    c.exit().await;
}

/// A missing Secret behind an auth reference shows as `AuthConfigured=False` naming it, and as
/// a Warning Event, never only in the operator's log.
#[tokio::test(flavor = "multi_thread")]
async fn missing_secret_is_a_condition_and_an_event() {
    let (api, client, ns) = setup("op-missing-secret").await;
    let manifests = r#"apiVersion: vmcp.dev/v1alpha1
kind: MCPGroup
metadata: {name: g}
spec: {}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPExternalAuthConfig
metadata: {name: needs-secret}
spec:
  type: headerInjection
  headerInjection: {headerName: X-Api-Key, valueSecretRef: {name: absent-secret, key: value}}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {name: a}
spec: {image: example/a:1, groupRef: {name: g}, externalAuthConfigRef: {name: needs-secret}}
---
apiVersion: vmcp.dev/v1alpha1
kind: VirtualMCPServer
metadata: {name: gw}
spec: {groupRef: {name: g}}
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, manifests).unwrap();
    api.run_kubectl(&["apply", "-n", &ns, "-f", file.to_str().unwrap()]).await.unwrap();
    let _stop = run_operator(client.clone(), &ns);
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client.clone(), &ns);
    let cond = eventually("AuthConfigured=False", Duration::from_secs(30), || async {
        let v = vmcps.get("gw").await.unwrap();
        v.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "AuthConfigured" && c.status == "False")
    })
    .await;
    assert!(cond.message.contains("absent-secret"), "{cond:?}");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    eventually("a Warning event naming the Secret", Duration::from_secs(30), || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items.into_iter().find(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.note.as_deref().unwrap_or_default().contains("absent-secret")
        })
    })
    .await;
    let described = api.run_kubectl(&["describe", "vmcp", "gw", "-n", &ns]).await.unwrap();
    assert!(
        described.contains("AuthConfigured") && described.contains("absent-secret"),
        "{described}"
    );
}
