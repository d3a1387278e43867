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
    // The stdio member `notes` joins once its bridge token Secret exists.
    let cm =
        eventually("the gateway ConfigMap with both members", Duration::from_secs(60), || async {
            let cm = cms.get_opt("engineering-gateway-vmcp-config").await.unwrap()?;
            cm.data.as_ref()?.get("config.yaml")?.contains("name: notes").then_some(cm)
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
    assert_eq!(cfg.http.allowed_origins, ["https://chat.example.com"]);
    assert_eq!(cfg.backends[1].timeout, Duration::from_secs(45));

    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    // The ConfigMap is applied first; the Deployment follows in the same reconcile.
    let dep = eventually("the gateway Deployment", Duration::from_secs(30), || async {
        deps.get_opt("engineering-gateway-vmcp").await.unwrap()
    })
    .await;
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
    // The rollout checksum covers what the gateway cannot reload (not the whole config.yaml).
    assert!(
        checksum.len() == 64 && checksum.chars().all(|c| c.is_ascii_hexdigit()),
        "checksum {checksum}"
    );
    assert_ne!(checksum, hex::encode(sha2::Sha256::digest(text.as_bytes())));
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
        "metadata": {"name": "orphan"},
        "spec": {"groupRef": {"name": "nowhere"}, "incomingAuth": {"type": "anonymous"}}
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
    let all = vmcp_types::crd::all_crds().len();
    assert_eq!(crds.lines().filter(|l| l.contains("vmcp.dev")).count(), all, "{crds}");
    let out =
        api.helm().args(["uninstall", "vmcp", "--namespace", "vmcp-system"]).output().unwrap();
    assert!(out.status.success(), "helm uninstall: {}", String::from_utf8_lossy(&out.stderr));
    let crds = api.run_kubectl(&["get", "crd", "-o", "name"]).await.unwrap();
    assert_eq!(
        crds.lines().filter(|l| l.contains("vmcp.dev")).count(),
        all,
        "CRDs are kept on uninstall: {crds}"
    );
    assert!(deps.list(&ListParams::default()).await.unwrap().items.is_empty(), "operator removed");

    // A reinstall under another release name and namespace (or a second release next to the
    // first) leaves the kept CRDs alone instead of failing on their ownership annotations.
    let out = api
        .helm()
        .args(["install", "vmcp2", "--namespace", "ops", "--create-namespace"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install under another release: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let owner = api
        .run_kubectl(&[
            "get",
            "crd",
            "mcpgroups.vmcp.dev",
            "-o",
            "jsonpath={.metadata.annotations.meta\\.helm\\.sh/release-name}",
        ])
        .await
        .unwrap();
    assert_eq!(owner.trim(), "vmcp", "the CRDs were not adopted or replaced");
    let ops: Api<Deployment> = Api::namespaced(client.clone(), "ops");
    assert_eq!(ops.list(&ListParams::default()).await.unwrap().items.len(), 1);
    // The release that created them still renders (and so upgrades) them.
    let out = api
        .helm()
        .args(["template", "vmcp", "--namespace", "vmcp-system", "--dry-run=server"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let own = String::from_utf8_lossy(&out.stdout);
    assert_eq!(own.matches("kind: CustomResourceDefinition").count(), all);
    let out = api
        .helm()
        .args(["template", "other", "--namespace", "ops", "--dry-run=server"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("kind: CustomResourceDefinition"));
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
spec: {groupRef: {name: g}, incomingAuth: {type: anonymous}}
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
    let metrics_port = vmcp_e2e::ports::free_port().unwrap();
    let localize = |text: &str| {
        text.lines()
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
            .replace("/var/run/secrets/vmcp", secrets.to_str().unwrap())
            .replace("0.0.0.0:9090", &format!("127.0.0.1:{metrics_port}"))
    };
    let local = localize(&text);
    assert!(local.contains("127.0.0.1") && local.contains(secrets.to_str().unwrap()), "{local}");
    let gw = vmcp_e2e::gateway::Gateway::start(&format!("{local}\n")).await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let r =
        c.ok(json!({"op": "call_tool", "name": "a_echo", "arguments": {"text": "from-k8s"}})).await;
    assert_eq!(r["text"], "a:echo:from-k8s");
    let r = c.ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": "x"}})).await;
    assert_eq!(r["text"], "h:echo:x");
    // Metrics on their own port (the container's `metrics` port), not on the MCP port.
    let m = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await.unwrap();
    assert!(m.text().await.unwrap().contains("vmcp_requests_total"));
    let on_mcp = reqwest::get(format!("http://127.0.0.1:{}/metrics", gw.port)).await.unwrap();
    assert_eq!(on_mcp.status(), reqwest::StatusCode::NOT_FOUND);
    assert!(
        h.requests().iter().any(|r| r["headers"]["x-api-key"] == "k-9"),
        "the mounted secret reached h"
    );

    // A member leaves the group: the operator changes the ConfigMap and not the pod template,
    // and the running gateway applies the new file in place (as the kubelet's ConfigMap
    // update would deliver it), keeping the client's session.
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let annotation = rollout_annotation(&deps, "gw-vmcp").await.unwrap();
    let sid = c.ok(json!({"op": "session_id"})).await;
    let servers: Api<vmcp_types::crd::MCPServer> = Api::namespaced(client.clone(), &ns);
    servers.delete("a", &DeleteParams::default()).await.unwrap();
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client.clone(), &ns);
    eventually("status with backend h only", Duration::from_secs(30), || async {
        let s = vmcps.get("gw").await.unwrap().status?;
        let names: Vec<_> = s.discovered_backends.iter().map(|b| b.name.as_str()).collect();
        (names == ["h"]).then_some(())
    })
    .await;
    assert_eq!(rollout_annotation(&deps, "gw-vmcp").await.unwrap(), annotation);
    let text = cms.get("gw-vmcp-config").await.unwrap().data.unwrap()["config.yaml"].clone();
    assert!(!text.contains("name: a"), "{text}");
    gw.rewrite_config(&format!("{}\n", localize(&text)));
    c.ok(json!({"op": "wait_notification", "method": "notifications/tools/list_changed", "timeout_ms": 15000})).await;
    let tools = c.ok(json!({"op": "list_tools"})).await;
    let names: Vec<&str> =
        tools.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(!names.contains(&"a_echo") && names.contains(&"h_echo"), "{names:?}");
    let r = c.ok(json!({"op": "call_tool", "name": "h_echo", "arguments": {"text": "y"}})).await;
    assert_eq!(r["text"], "h:echo:y");
    assert_eq!(c.ok(json!({"op": "session_id"})).await, sid, "same session throughout");
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
spec: {groupRef: {name: g}, incomingAuth: {type: anonymous}}
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

/// `kubectl apply` of `manifests` (YAML text) in `ns`.
async fn apply_text(api: &ApiServer, ns: &str, manifests: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, manifests).unwrap();
    api.run_kubectl(&["apply", "-n", ns, "-f", file.to_str().unwrap()]).await.unwrap();
}

/// The pod template's rollout annotation of Deployment `name`.
async fn rollout_annotation(deps: &Api<Deployment>, name: &str) -> Option<String> {
    let d = deps.get_opt(name).await.unwrap()?;
    d.spec?.template.metadata?.annotations?.get("vmcp.dev/config-checksum").cloned()
}

/// The `Ready` condition of `obj` when its reason is `reason`.
fn ready_with_reason(
    conditions: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>,
    reason: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions?.into_iter().find(|c| c.type_ == "Ready" && c.reason == reason)
}

/// A Warning Event with `reason` on the object named `name`.
async fn warning_event(client: &kube::Client, ns: &str, name: &str, reason: &str) -> Event {
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

/// A Service and a Deployment someone else created under an `MCPServer`'s name are never taken
/// over by the operator's forced apply: they stay exactly as they were, and the `MCPServer`
/// says `NameConflict` in its status and in a Warning Event.
#[tokio::test(flavor = "multi_thread")]
async fn foreign_objects_are_never_taken_over() {
    let (api, client, ns) = setup("op-foreign").await;
    apply_text(
        api,
        &ns,
        r#"apiVersion: v1
kind: Service
metadata: {name: redis}
spec:
  selector: {app: redis}
  ports: [{port: 6379}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: redis}
spec:
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec: {containers: [{name: redis, image: "redis:7"}]}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPGroup
metadata: {name: g}
spec: {}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {name: redis}
spec: {image: example/a:1, groupRef: {name: g}}
---
apiVersion: vmcp.dev/v1alpha1
kind: VirtualMCPServer
metadata: {name: gw}
spec: {groupRef: {name: g}, incomingAuth: {type: anonymous}}
"#,
    )
    .await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let (svc_before, dep_before) =
        (svcs.get("redis").await.unwrap(), deps.get("redis").await.unwrap());
    let _stop = run_operator(client.clone(), &ns);

    let servers: Api<vmcp_types::crd::MCPServer> = Api::namespaced(client.clone(), &ns);
    let cond =
        eventually("MCPServer Ready=False/NameConflict", Duration::from_secs(30), || async {
            ready_with_reason(
                servers.get("redis").await.unwrap().status.map(|s| s.conditions),
                "NameConflict",
            )
        })
        .await;
    assert_eq!(cond.status, "False");
    for part in ["Service 'redis'", "Deployment 'redis'", "not managed by the vmcp operator"] {
        assert!(cond.message.contains(part), "{part} missing: {}", cond.message);
    }
    let s = servers.get("redis").await.unwrap().status.unwrap();
    assert_eq!(s.phase, Some(vmcp_types::crd::MCPServerPhase::Failed));
    let ev = warning_event(&client, &ns, "redis", "NameConflict").await;
    assert!(ev.note.unwrap_or_default().contains("Service 'redis'"));

    // A gateway never sends traffic (or backend credentials) to the Service someone else owns:
    // the member is reported and left out of the config.
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client.clone(), &ns);
    let st =
        eventually("the gateway reporting redis as an error", Duration::from_secs(30), || async {
            let s = vmcps.get("gw").await.unwrap().status?;
            s.discovered_backends
                .iter()
                .any(|b| b.name == "redis" && b.status.as_deref() == Some("error"))
                .then_some(s)
        })
        .await;
    assert_eq!(st.backend_count, 0);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let text = cms.get("gw-vmcp-config").await.unwrap().data.unwrap()["config.yaml"].clone();
    assert!(!text.contains("redis"), "{text}");

    // Give a takeover every chance: the objects are untouched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (svc, dep) = (svcs.get("redis").await.unwrap(), deps.get("redis").await.unwrap());
    assert_eq!(svc.metadata.resource_version, svc_before.metadata.resource_version);
    assert_eq!(dep.metadata.resource_version, dep_before.metadata.resource_version);
    assert!(svc.metadata.owner_references.is_none(), "{:?}", svc.metadata.owner_references);
    assert_eq!(svc.spec.unwrap().selector.unwrap()["app"], "redis");
}

/// `VirtualMCPServer foo` and `MCPServer foo-vmcp` both want a Deployment and Service named
/// `foo-vmcp`. Whichever came first keeps them; the other reports `NameConflict` naming the
/// holder, in both orders, and the children are not rewritten.
#[tokio::test(flavor = "multi_thread")]
async fn two_objects_never_compete_for_one_child() {
    let (api, client, ns) = setup("op-compete").await;
    apply_text(
        api,
        &ns,
        r#"apiVersion: vmcp.dev/v1alpha1
kind: MCPGroup
metadata: {name: g}
spec: {}
---
apiVersion: vmcp.dev/v1alpha1
kind: VirtualMCPServer
metadata: {name: foo}
spec: {groupRef: {name: g}, incomingAuth: {type: anonymous}}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {name: bar-vmcp}
spec: {image: example/bar:1}
"#,
    )
    .await;
    let _stop = run_operator(client.clone(), &ns);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let controller = |m: &kube::api::ObjectMeta| {
        m.owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| format!("{}/{}", o.kind, o.name))
    };
    for (name, owner) in [("foo-vmcp", "VirtualMCPServer/foo"), ("bar-vmcp", "MCPServer/bar-vmcp")]
    {
        eventually(&format!("{name} owned by {owner}"), Duration::from_secs(30), || async {
            let d = deps.get_opt(name).await.unwrap()?;
            let s = svcs.get_opt(name).await.unwrap()?;
            (controller(&d.metadata).as_deref() == Some(owner)
                && controller(&s.metadata).as_deref() == Some(owner))
            .then_some(())
        })
        .await;
    }
    let versions = || async {
        let mut v = Vec::new();
        for name in ["foo-vmcp", "bar-vmcp"] {
            v.push(deps.get(name).await.unwrap().metadata.resource_version);
            v.push(svcs.get(name).await.unwrap().metadata.resource_version);
        }
        v
    };
    let before = versions().await;

    // The latecomers: an MCPServer named like an existing gateway's children, and a gateway
    // whose children's name an MCPServer already has.
    apply_text(
        api,
        &ns,
        r#"apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {name: foo-vmcp}
spec: {image: example/foo:1}
---
apiVersion: vmcp.dev/v1alpha1
kind: VirtualMCPServer
metadata: {name: bar}
spec: {groupRef: {name: g}, incomingAuth: {type: anonymous}}
"#,
    )
    .await;
    let servers: Api<vmcp_types::crd::MCPServer> = Api::namespaced(client.clone(), &ns);
    let cond = eventually("MCPServer foo-vmcp NameConflict", Duration::from_secs(30), || async {
        ready_with_reason(
            servers.get("foo-vmcp").await.unwrap().status.map(|s| s.conditions),
            "NameConflict",
        )
    })
    .await;
    assert!(cond.message.contains("controlled by VirtualMCPServer 'foo'"), "{}", cond.message);
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client.clone(), &ns);
    let cond = eventually("VirtualMCPServer bar NameConflict", Duration::from_secs(30), || async {
        ready_with_reason(
            vmcps.get("bar").await.unwrap().status.map(|s| s.conditions),
            "NameConflict",
        )
    })
    .await;
    assert!(cond.message.contains("controlled by MCPServer 'bar-vmcp'"), "{}", cond.message);
    let st = vmcps.get("bar").await.unwrap().status.unwrap();
    assert_eq!(st.phase, Some(VirtualMCPServerPhase::Failed));
    warning_event(&client, &ns, "bar", "NameConflict").await;
    warning_event(&client, &ns, "foo-vmcp", "NameConflict").await;
    // bar's other child (its ConfigMap) is not created either: nothing is applied.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(cms.get_opt("bar-vmcp-config").await.unwrap().is_none());

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(versions().await, before, "the children were rewritten");
}

/// A rotated Secret reaches the gateway: rotating a token-exchange client secret changes the
/// Deployment's rollout annotation (so the pods restart and read the new file), and nothing
/// else: not the ConfigMap, not the rest of the Deployment.
#[tokio::test(flavor = "multi_thread")]
async fn rotated_secret_rolls_the_gateway_and_nothing_else() {
    let (api, client, ns) = setup("op-rotate").await;
    apply_text(
        api,
        &ns,
        r#"apiVersion: v1
kind: Secret
metadata: {name: te-client}
stringData: {secret: first-secret}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPGroup
metadata: {name: g}
spec: {}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPExternalAuthConfig
metadata: {name: te}
spec:
  type: tokenExchange
  tokenExchange:
    tokenUrl: https://idp.example.com/token
    clientId: gw
    clientSecretRef: {name: te-client, key: secret}
    audience: backend-a
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {name: a}
spec: {image: example/a:1, groupRef: {name: g}, externalAuthConfigRef: {name: te}}
---
apiVersion: vmcp.dev/v1alpha1
kind: VirtualMCPServer
metadata: {name: gw}
spec:
  groupRef: {name: g}
  incomingAuth:
    type: oidc
    oidc: {issuer: "https://idp.example.com", audience: gw}
"#,
    )
    .await;
    let _stop = run_operator(client.clone(), &ns);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client.clone(), &ns);
    eventually("AuthConfigured=True with 1 backend", Duration::from_secs(60), || async {
        let s = vmcps.get("gw").await.unwrap().status?;
        (s.backend_count == 1
            && s.conditions.iter().any(|c| c.type_ == "AuthConfigured" && c.status == "True"))
        .then_some(())
    })
    .await;
    let before = rollout_annotation(&deps, "gw-vmcp").await.unwrap();
    let dep_before = deps.get("gw-vmcp").await.unwrap();
    let cm_before = cms.get("gw-vmcp-config").await.unwrap();
    let server_dep_before = deps.get("a").await.unwrap().metadata.resource_version;

    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .patch(
            "te-client",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"stringData": {"secret": "rotated-secret"}})),
        )
        .await
        .unwrap();
    let after = eventually("a new rollout annotation", Duration::from_secs(30), || async {
        rollout_annotation(&deps, "gw-vmcp").await.filter(|a| *a != before)
    })
    .await;
    assert_ne!(after, before);
    let cm = cms.get("gw-vmcp-config").await.unwrap();
    assert_eq!(cm.metadata.resource_version, cm_before.metadata.resource_version);
    assert!(!cm.data.unwrap()["config.yaml"].contains("rotated-secret"));
    let mut dep = deps.get("gw-vmcp").await.unwrap();
    let template = &mut dep.spec.as_mut().unwrap().template;
    template
        .metadata
        .as_mut()
        .unwrap()
        .annotations
        .as_mut()
        .unwrap()
        .insert("vmcp.dev/config-checksum".into(), before.clone());
    assert_eq!(dep.spec, dep_before.spec, "only the rollout annotation changed");
    assert_eq!(deps.get("a").await.unwrap().metadata.resource_version, server_dep_before);
}

/// Adding or removing a group member changes the ConfigMap (which the running gateway reloads
/// in place) and not the pod template: no gateway pod restarts, no session is lost.
#[tokio::test(flavor = "multi_thread")]
async fn membership_change_keeps_the_pod_template() {
    let (api, client, ns) = setup("op-members").await;
    apply_text(
        api,
        &ns,
        r#"apiVersion: vmcp.dev/v1alpha1
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
"#,
    )
    .await;
    let _stop = run_operator(client.clone(), &ns);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let config = || async {
        cms.get_opt("gw-vmcp-config").await.unwrap().and_then(|c| c.data?.remove("config.yaml"))
    };
    eventually("a config with backend a", Duration::from_secs(60), || async {
        config().await.filter(|t| t.contains("name: a"))
    })
    .await;
    let annotation = rollout_annotation(&deps, "gw-vmcp").await.unwrap();
    let template = deps.get("gw-vmcp").await.unwrap().spec.unwrap().template;

    apply_text(
        api,
        &ns,
        r#"apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {name: b}
spec: {image: example/b:1, port: 9000, groupRef: {name: g}}
"#,
    )
    .await;
    eventually("a config with backends a and b", Duration::from_secs(30), || async {
        config().await.filter(|t| t.contains("name: a") && t.contains("name: b"))
    })
    .await;
    let servers: Api<vmcp_types::crd::MCPServer> = Api::namespaced(client.clone(), &ns);
    servers.delete("a", &DeleteParams::default()).await.unwrap();
    let text = eventually("a config with backend b only", Duration::from_secs(30), || async {
        config().await.filter(|t| !t.contains("name: a") && t.contains("name: b"))
    })
    .await;
    assert!(text.contains(":9000/mcp"), "{text}");
    // Status is written after every child of that reconcile was applied.
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client.clone(), &ns);
    eventually("status listing backend b only", Duration::from_secs(30), || async {
        let s = vmcps.get("gw").await.unwrap().status?;
        let names: Vec<_> = s.discovered_backends.iter().map(|b| b.name.as_str()).collect();
        (names == ["b"]).then_some(())
    })
    .await;
    assert_eq!(rollout_annotation(&deps, "gw-vmcp").await.unwrap(), annotation);
    assert_eq!(deps.get("gw-vmcp").await.unwrap().spec.unwrap().template, template);
}

/// Drift correction: a deleted child (Deployment, ConfigMap) is recreated, and a missing
/// Secret created after the fact clears `AuthConfigured=False` and brings the backend back.
#[tokio::test(flavor = "multi_thread")]
async fn deleted_children_are_recreated_and_a_late_secret_clears_the_condition() {
    let (api, client, ns) = setup("op-drift").await;
    apply_text(
        api,
        &ns,
        r#"apiVersion: vmcp.dev/v1alpha1
kind: MCPGroup
metadata: {name: g}
spec: {}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPExternalAuthConfig
metadata: {name: needs-secret}
spec:
  type: headerInjection
  headerInjection: {headerName: X-Api-Key, valueSecretRef: {name: late-secret, key: value}}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {name: a}
spec: {image: example/a:1, groupRef: {name: g}, externalAuthConfigRef: {name: needs-secret}}
---
apiVersion: vmcp.dev/v1alpha1
kind: VirtualMCPServer
metadata: {name: gw}
spec: {groupRef: {name: g}, incomingAuth: {type: anonymous}}
"#,
    )
    .await;
    let _stop = run_operator(client.clone(), &ns);
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client.clone(), &ns);
    let auth = |status: &'static str| {
        let vmcps = vmcps.clone();
        async move {
            let s = vmcps.get("gw").await.unwrap().status?;
            s.conditions.into_iter().find(|c| c.type_ == "AuthConfigured" && c.status == status)
        }
    };
    let c = eventually("AuthConfigured=False", Duration::from_secs(30), || auth("False")).await;
    assert!(c.message.contains("late-secret"), "{c:?}");

    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for _ in 0..2 {
        let uid = deps.get("gw-vmcp").await.unwrap().metadata.uid;
        deps.delete("gw-vmcp", &DeleteParams::default()).await.unwrap();
        eventually("the gateway Deployment recreated", Duration::from_secs(30), || async {
            let d = deps.get_opt("gw-vmcp").await.unwrap()?;
            (d.metadata.uid != uid).then_some(())
        })
        .await;
        let uid = cms.get("gw-vmcp-config").await.unwrap().metadata.uid;
        cms.delete("gw-vmcp-config", &DeleteParams::default()).await.unwrap();
        eventually("the gateway ConfigMap recreated", Duration::from_secs(30), || async {
            let c = cms.get_opt("gw-vmcp-config").await.unwrap()?;
            (c.metadata.uid != uid && c.data.is_some()).then_some(())
        })
        .await;
    }
    // Drift in a field the operator owns is reverted too.
    deps.patch(
        "gw-vmcp",
        &kube::api::PatchParams::apply("someone-else").force(),
        &kube::api::Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "spec": {"replicas": 7}
        })),
    )
    .await
    .unwrap();
    eventually("replicas back at 1", Duration::from_secs(30), || async {
        let d = deps.get("gw-vmcp").await.unwrap();
        (d.spec?.replicas == Some(1)).then_some(())
    })
    .await;

    apply_text(
        api,
        &ns,
        r#"apiVersion: v1
kind: Secret
metadata: {name: late-secret}
stringData: {value: k-1}
"#,
    )
    .await;
    eventually("AuthConfigured=True", Duration::from_secs(30), || auth("True")).await;
    let v = vmcps.get("gw").await.unwrap().status.unwrap();
    assert_eq!(v.backend_count, 1);
    let text = cms.get("gw-vmcp-config").await.unwrap().data.unwrap()["config.yaml"].clone();
    assert!(text.contains("late-secret/value"), "{text}");
}

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

/// The operator under the chart's own RBAC: the chart's Role and RoleBinding for one watched
/// namespace (and nothing cluster-wide) and its leader-election Role, rendered by real helm, bound to the chart's
/// ServiceAccount, which the controllers impersonate. Every call the controllers make is
/// allowed: the examples reconcile to children and status on all four kinds, and the Lease can
/// be taken. The impersonated client really is restricted (it cannot list ReplicaSets).
#[tokio::test(flavor = "multi_thread")]
async fn operator_runs_under_the_charts_rbac() {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Secret;
    let (api, admin, ns) = setup("op-rbac").await;
    let chart = repo_root().join("charts/vmcp-operator");
    let out = api
        .helm()
        .args(["template", "vmcp", "--namespace", &ns, "--set", &format!("watchNamespace={ns}")])
        .args(["--show-only", "templates/rbac.yaml"])
        .args(["--show-only", "templates/leader-election-rbac.yaml"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let rbac = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&rbac).unwrap();
    assert!(
        !docs.iter().any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding"),
        "a namespace-scoped install grants nothing cluster-wide:\n{rbac}"
    );
    let binding = docs
        .iter()
        .find(|d| {
            d["kind"] == "RoleBinding"
                && d["roleRef"]["kind"] == "Role"
                && d["metadata"]["namespace"] == ns.as_str()
                && !d["roleRef"]["name"].as_str().unwrap().ends_with("leader-election")
        })
        .unwrap_or_else(|| panic!("no RoleBinding of the operator's Role in {ns}:\n{rbac}"));
    let subject = &binding["subjects"][0];
    assert_eq!(subject["kind"], "ServiceAccount");
    let user = format!(
        "system:serviceaccount:{}:{}",
        subject["namespace"].as_str().unwrap(),
        subject["name"].as_str().unwrap()
    );
    apply_text(api, &ns, &rbac).await;
    kubectl_apply(api, &ns, "examples/k8s/").await;

    let mut config = api.config().clone();
    config.auth_info.impersonate = Some(user.clone());
    let client = kube::Client::try_from(config).unwrap();
    // RBAC reads bindings from a cache: wait until they apply to the impersonated user.
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client.clone(), &ns);
    eventually("the RoleBinding in effect", Duration::from_secs(10), || async {
        vmcps.list(&ListParams::default()).await.ok().map(|_| ())
    })
    .await;
    let sets =
        Api::<ReplicaSet>::namespaced(client.clone(), &ns).list(&ListParams::default()).await;
    assert!(
        matches!(&sets, Err(kube::Error::Api(s)) if s.code == 403),
        "{user} may list ReplicaSets: {sets:?}"
    );
    // Secrets are visible in the watched namespace only.
    let here =
        Api::<Secret>::namespaced(client.clone(), &ns).list_metadata(&ListParams::default()).await;
    assert!(here.is_ok(), "{user} cannot list Secrets in {ns}: {here:?}");
    let elsewhere = Api::<Secret>::namespaced(client.clone(), "kube-system")
        .list_metadata(&ListParams::default())
        .await;
    assert!(
        matches!(&elsewhere, Err(kube::Error::Api(s)) if s.code == 403),
        "{user} may list Secrets in kube-system: {elsewhere:?}"
    );

    let _stop = run_operator(client.clone(), &ns);
    let v = eventually("gateway status with 2 backends", Duration::from_secs(60), || async {
        let v = vmcps.get("engineering-gateway").await.unwrap();
        v.status.clone().filter(|s| s.backend_count == 2).map(|_| v)
    })
    .await;
    let st = v.status.unwrap();
    for t in ["GroupRefValidated", "AuthConfigured", "BackendsDiscovered"] {
        let c = st.conditions.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(c.status, "True", "{t}: {c:?}");
    }
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    for name in ["engineering-gateway-vmcp", "weather", "notes"] {
        eventually(&format!("Deployment {name}"), Duration::from_secs(30), || async {
            deps.get_opt(name).await.unwrap().map(|_| ())
        })
        .await;
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), &ns);
    assert!(pdbs.get_opt("engineering-gateway-vmcp").await.unwrap().is_some());
    let servers: Api<vmcp_types::crd::MCPServer> = Api::namespaced(admin.clone(), &ns);
    let groups: Api<vmcp_types::crd::MCPGroup> = Api::namespaced(admin.clone(), &ns);
    let auths: Api<vmcp_types::crd::MCPExternalAuthConfig> = Api::namespaced(admin.clone(), &ns);
    eventually("status on every kind", Duration::from_secs(30), || async {
        let s = servers.get("notes").await.unwrap().status?;
        let g = groups.get("engineering").await.unwrap().status?;
        let a = auths.get("weather-api-key").await.unwrap().status?;
        (s.observed_generation.is_some()
            && g.server_count == 2
            && a.conditions.iter().any(|c| c.type_ == "Valid" && c.status == "True"))
        .then_some(())
    })
    .await;
    // No call was refused: no ReconcileFailed Event anywhere in the namespace.
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    let failed: Vec<_> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ReconcileFailed"))
        .map(|e| e.note.unwrap_or_default())
        .collect();
    assert!(failed.is_empty(), "{failed:?}");

    // Leader election under the chart's leader-election Role (in the release namespace).
    let mut elector = vmcp_operator::leader::LeaderElector::new(
        client.clone(),
        vmcp_operator::leader::LeaseConfig::new("vmcp-operator-leader", ns.as_str(), "rbac-test"),
    );
    let attempt = elector.try_acquire_or_renew().await.unwrap();
    assert_eq!(attempt, vmcp_operator::leader::Attempt::Held);
    assert_eq!(elector.try_acquire_or_renew().await.unwrap(), vmcp_operator::leader::Attempt::Held);
    let lease = Api::<Lease>::namespaced(admin, &ns).get("vmcp-operator-leader").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("rbac-test"));
}

/// `helm template` of `args` (each `--set` etc.) as JSON documents.
fn helm_template(
    api: &ApiServer,
    chart: &std::path::Path,
    args: &[&str],
) -> Vec<serde_json::Value> {
    let out = api
        .helm()
        .args(["template", "t", "--namespace", "ops"])
        .args(args)
        .arg(chart)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_saphyr::from_multiple::<serde_json::Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn operator_env(docs: &[serde_json::Value]) -> Vec<(String, String)> {
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    dep["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
        .collect()
}

/// The chart's values render what they say: usable as a subchart (Helm's `global`), a global
/// registry, namespace-list scope with per-namespace Roles and no cluster-wide grant, and
/// workload settings the operator itself parses back (the chart and the operator agree on the
/// environment variables and their JSON).
#[tokio::test(flavor = "multi_thread")]
async fn chart_values_render_as_documented() {
    let api = ApiServer::shared().await;
    let chart = repo_root().join("charts/vmcp-operator");
    let out = api.helm().args(["lint", "--strict"]).arg(&chart).output().unwrap();
    assert!(out.status.success(), "helm lint: {}", String::from_utf8_lossy(&out.stdout));

    // As a dependency of a parent chart, with a global registry and pull secret.
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(
        parent.path().join("Chart.yaml"),
        "apiVersion: v2\nname: platform\nversion: 1.0.0\ndependencies:\n  - name: vmcp-operator\n    version: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(
        parent.path().join("values.yaml"),
        "global:\n  imageRegistry: registry.internal:5000\n  imagePullSecrets: [{name: mirror}]\n  team: platform\n",
    )
    .unwrap();
    let sub = parent.path().join("charts");
    std::fs::create_dir_all(&sub).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&chart)
        .arg(sub.join("vmcp-operator"))
        .status()
        .unwrap();
    assert!(status.success());
    let docs = helm_template(api, parent.path(), &[]);
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.internal:5000/vmcp-dev/vmcp-operator:0.1.0"
    );
    assert_eq!(pod["imagePullSecrets"][0]["name"], "mirror");
    let env = operator_env(&docs);
    assert!(env.contains(&(
        "VMCP_GATEWAY_IMAGE".into(),
        "registry.internal:5000/vmcp-dev/vmcp-gateway:0.1.0".into()
    )));

    // Every namespace: one ClusterRole; listed namespaces: a Role + RoleBinding in each, with
    // Secret access there only, and nothing cluster-wide.
    let docs = helm_template(api, &chart, &[]);
    assert!(docs.iter().any(|d| d["kind"] == "ClusterRole"));
    let docs = helm_template(
        api,
        &chart,
        &["--set", "watchNamespaces={team-a,team-b}", "--set", "watchNamespace=team-c"],
    );
    let kinds: Vec<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["namespace"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(!kinds.iter().any(|k| k.starts_with("Cluster")), "{kinds:?}");
    for ns in ["team-a", "team-b", "team-c"] {
        let role = docs
            .iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no Role in {ns}: {kinds:?}"));
        assert!(role["rules"].as_array().unwrap().iter().any(|r| r["resources"][0] == "secrets"));
        assert!(kinds.contains(&format!("RoleBinding/{ns}")), "{kinds:?}");
    }

    // Workload settings, log level, extra env, Redis password: parsed by the operator itself.
    let docs = helm_template(
        api,
        &chart,
        &[
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "workloads.imagePullSecrets={regcred}",
            "--set",
            "workloads.gateway.podSecurityContext.runAsNonRoot=true",
            "--set",
            "workloads.mcpServer.containerSecurityContext.allowPrivilegeEscalation=false",
            "--set",
            "defaultRedis.address=redis:6379",
            "--set",
            "defaultRedis.existingSecret=redis-auth",
            "--set",
            "logLevel=debug",
            "--set",
            "extraEnv[0].name=HTTPS_PROXY",
            "--set",
            "extraEnv[0].value=http://proxy:3128",
            "--set",
            "podSecurityContext.runAsUser=null",
        ],
    );
    let env = operator_env(&docs);
    assert!(env.contains(&("RUST_LOG".into(), "debug".into())), "{env:?}");
    assert!(env.contains(&("HTTPS_PROXY".into(), "http://proxy:3128".into())), "{env:?}");
    let settings = vmcp_operator::Settings::from_lookup(|k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    assert_eq!(settings.namespaces, ["team-a", "team-b"]);
    assert_eq!(settings.workloads.image_pull_secrets, ["regcred"]);
    let g = settings.workloads.gateway.pod_security_context.unwrap();
    assert_eq!((g.run_as_non_root, g.run_as_user), (Some(true), None));
    let c = settings.workloads.mcp_server.container_security_context.unwrap();
    assert_eq!(c.allow_privilege_escalation, Some(false));
    let redis = settings.defaults.redis.unwrap();
    assert_eq!(redis.password.unwrap().name, "redis-auth");
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let psc = &dep["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert!(psc.get("runAsUser").is_none(), "null removes the fixed UID: {psc}");

    // Monitoring: a PodMonitor on the gateways' metrics port, the operator's Service and
    // ServiceMonitor, and the dashboard, whose every metric is one the binaries export.
    let docs = helm_template(
        api,
        &chart,
        &[
            "--set",
            "monitoring.podMonitor.enabled=true",
            "--set",
            "monitoring.serviceMonitor.enabled=true",
            "--set",
            "monitoring.dashboard.enabled=true",
            "--set",
            "workloads.mcpServer.networkPolicy=true",
        ],
    );
    let pm = docs.iter().find(|d| d["kind"] == "PodMonitor").unwrap();
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    assert_eq!(pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], "vmcp-gateway");
    assert!(docs.iter().any(|d| d["kind"] == "ServiceMonitor"));
    let env = operator_env(&docs);
    let settings = vmcp_operator::Settings::from_lookup(|k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    assert!(settings.workloads.server_network_policy);
    let role = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    assert!(
        role["rules"].as_array().unwrap().iter().any(|r| r["resources"][0] == "networkpolicies"),
        "{role}"
    );
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(cm["data"]["vmcp.json"].as_str().unwrap()).unwrap();
    // What the registries register (families without samples are not in the exposition).
    let mut exported = Vec::new();
    for (file, prefix) in [
        ("crates/gateway/src/metrics.rs", "vmcp_"),
        ("crates/operator/src/metrics.rs", "vmcp_operator_"),
    ] {
        let src = std::fs::read_to_string(repo_root().join(file)).unwrap();
        for part in src.split("registry.register(").skip(1) {
            let name = part.trim_start().trim_start_matches('"').split('"').next().unwrap();
            exported.push(format!("{prefix}{name}"));
        }
    }
    assert!(exported.len() >= 15, "{exported:?}");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("vmcp_"))
            {
                let base = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                assert!(
                    exported.iter().any(|e| e == base),
                    "panel {} queries {name}, which nothing exports: {exported:?}",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 15, "{queried}");
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

/// A remote server (`MCPServerEntry`) in the group: the gateway's rendered configuration gets a
/// backend at the entry's URL with the credential of its auth config, the gateway's status
/// lists it as `remote`, nothing is created for it, and deleting it removes the backend.
#[tokio::test(flavor = "multi_thread")]
async fn remote_entry_is_a_backend_in_config_and_status() {
    use vmcp_types::crd::MCPServerEntry;
    let (api, client, ns) = setup("op-remote").await;
    kubectl_apply(api, &ns, "examples/k8s/").await;
    apply_text(
        api,
        &ns,
        "apiVersion: vmcp.dev/v1alpha1\nkind: MCPServerEntry\nmetadata:\n  name: hosted\nspec:\n  \
         url: https://mcp.example.com/mcp\n  groupRef:\n    name: engineering\n  \
         externalAuthConfigRef:\n    name: weather-api-key\n",
    )
    .await;
    let _stop = run_operator(client.clone(), &ns);
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client.clone(), &ns);
    let st = eventually("3 backends", Duration::from_secs(60), || async {
        vmcps.get("engineering-gateway").await.unwrap().status.filter(|s| s.backend_count == 3)
    })
    .await;
    let hosted = st.discovered_backends.iter().find(|b| b.name == "hosted").unwrap();
    assert_eq!(hosted.status.as_deref(), Some("remote"));
    assert_eq!(hosted.url.as_deref(), Some("https://mcp.example.com/mcp"));
    assert_eq!(hosted.auth_type.as_deref(), Some("headerInjection"));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let text =
        cms.get("engineering-gateway-vmcp-config").await.unwrap().data.unwrap()["config.yaml"]
            .clone();
    let config = vmcp_types::config::from_yaml_str(&text).unwrap();
    let b = config.backends.iter().find(|b| b.name == "hosted").unwrap();
    assert_eq!(b.url, "https://mcp.example.com/mcp");
    let h = b.auth.header_injection.as_ref().unwrap();
    assert!(h.value.file.as_ref().unwrap().starts_with("/var/run/secrets/vmcp/"));
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(deps.get_opt("hosted").await.unwrap().is_none(), "nothing runs for a remote entry");

    let entries: Api<MCPServerEntry> = Api::namespaced(client.clone(), &ns);
    entries.delete("hosted", &DeleteParams::default()).await.unwrap();
    eventually("the entry's backend removed", Duration::from_secs(60), || async {
        let st = vmcps.get("engineering-gateway").await.unwrap().status?;
        (st.backend_count == 2 && st.discovered_backends.iter().all(|b| b.name != "hosted"))
            .then_some(())
    })
    .await;
}

/// A private CA end to end: `spec.caBundleRef` is mounted into the gateway pod and rendered as
/// `outbound.caFiles`; the rendered configuration, run by the gateway binary, reaches a remote
/// `MCPServerEntry` served over https with a certificate only that CA vouches for.
#[tokio::test(flavor = "multi_thread")]
async fn ca_bundle_lets_the_gateway_reach_a_private_pki_backend() {
    use base64::Engine;
    use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};
    let (api, client, ns) = setup("op-ca").await;
    let ca = vmcp_e2e::tls::PrivateCa::new();
    let backend = Backend::start(Sdk::Python, "secure", BackendOptions::default()).await;
    let relay = vmcp_e2e::tls::TlsRelay::start(&ca, backend.port).await;
    let pem = std::fs::read(ca.ca_pem()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pem);
    apply_text(
        api,
        &ns,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: corp-ca\ndata:\n  ca.crt: {b64}\n---\n\
             apiVersion: vmcp.dev/v1alpha1\nkind: MCPGroup\nmetadata:\n  name: g\nspec: {{}}\n---\n\
             apiVersion: vmcp.dev/v1alpha1\nkind: MCPServerEntry\nmetadata:\n  name: secure\nspec:\n  \
             url: https://localhost:{}/mcp\n  groupRef:\n    name: g\n---\n\
             apiVersion: vmcp.dev/v1alpha1\nkind: VirtualMCPServer\nmetadata:\n  name: gw\nspec:\n  \
             groupRef:\n    name: g\n  incomingAuth:\n    type: anonymous\n  caBundleRef:\n    \
             name: corp-ca\n    key: ca.crt\n",
            relay.port
        ),
    )
    .await;
    let _stop = run_operator(client.clone(), &ns);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let dep = eventually("the gateway Deployment", Duration::from_secs(60), || async {
        deps.get_opt("gw-vmcp").await.unwrap()
    })
    .await;
    let pod = dep.spec.unwrap().template.spec.unwrap();
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    assert!(mounts.iter().any(|m| m.mount_path == "/var/run/secrets/vmcp/corp-ca"), "{mounts:?}");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let text = cms.get("gw-vmcp-config").await.unwrap().data.unwrap()["config.yaml"].clone();
    assert!(text.contains("/var/run/secrets/vmcp/corp-ca/ca.crt"), "{text}");

    // Run it as the pod would: the Secret as a file, loopback ports.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("corp-ca")).unwrap();
    std::fs::write(dir.path().join("corp-ca/ca.crt"), &pem).unwrap();
    let metrics_port = vmcp_e2e::ports::free_port().unwrap();
    let local = text
        .lines()
        .filter(|l| !l.starts_with("listen:"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("/var/run/secrets/vmcp", dir.path().to_str().unwrap())
        .replace("0.0.0.0:9090", &format!("127.0.0.1:{metrics_port}"));
    let gw = vmcp_e2e::gateway::Gateway::start(&format!("{local}\n")).await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let r =
        c.ok(json!({"op": "call_tool", "name": "secure_echo", "arguments": {"text": "pki"}})).await;
    assert_eq!(r["text"], "secure:echo:pki");
}

/// M8: a stdio `MCPServer` gets one random bridge token Secret, owned by it and created once
/// (a reconcile that changes the Deployment leaves it alone). The bridge container reads it
/// with `--auth-token-file`, and the gateway mounts it and sends it as the backend's
/// `bearerToken`. Both rendered halves run for real: the bridge command from the Deployment
/// and the gateway config from the ConfigMap, with the Secret's value in the mounted files.
#[tokio::test(flavor = "multi_thread")]
async fn stdio_server_shares_one_bridge_token_with_the_gateway() {
    use k8s_openapi::api::core::v1::Secret;
    use vmcp_e2e::peers::{Client, Sdk, ensure_installed};
    use vmcp_e2e::process::Peer;
    let (api, client, ns) = setup("op-bridge-token").await;
    apply_text(
        api,
        &ns,
        r#"apiVersion: vmcp.dev/v1alpha1
kind: MCPGroup
metadata: {name: g}
spec: {}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {name: s}
spec: {image: example/s:1, transport: stdio, command: [stdio-server], groupRef: {name: g}}
---
apiVersion: vmcp.dev/v1alpha1
kind: VirtualMCPServer
metadata: {name: gw}
spec: {groupRef: {name: g}, incomingAuth: {type: anonymous}}
"#,
    )
    .await;
    let _stop = run_operator(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = eventually("the bridge token Secret", Duration::from_secs(60), || async {
        secrets.get_opt("s-bridge-token").await.unwrap()
    })
    .await;
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("MCPServer", "s", Some(true))
    );
    let token = String::from_utf8(secret.data.as_ref().unwrap()["token"].0.clone()).unwrap();
    assert!(token.len() >= 64 && token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");

    // The bridge reads it from the Secret's read-only volume.
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pod_of = |d: Deployment| d.spec.unwrap().template.spec.unwrap();
    let pod = pod_of(
        eventually("the server Deployment", Duration::from_secs(30), || async {
            deps.get_opt("s").await.unwrap()
        })
        .await,
    );
    let args = pod.containers[0].args.clone().unwrap();
    let server_dep = deps.get("s").await.unwrap();
    let annotations = server_dep.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
    assert_eq!(
        annotations.get("vmcp.dev/bridge-token-uid"),
        secret.metadata.uid.as_ref(),
        "a re-created Secret rolls the bridge pods"
    );
    let at = args.iter().position(|a| a == "--auth-token-file").expect("--auth-token-file");
    assert_eq!(args[at + 1], "/var/run/secrets/vmcp-bridge/token");
    assert!(
        pod.volumes.iter().flatten().any(|v| v
            .secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some("s-bridge-token"))),
        "{:?}",
        pod.volumes
    );

    // The gateway sends it as the backend's bearer token, from the same Secret.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let text = eventually("a rendered config with s", Duration::from_secs(60), || async {
        let t = cms.get_opt("gw-vmcp-config").await.unwrap()?.data?.get("config.yaml")?.clone();
        t.contains("name: s").then_some(t)
    })
    .await;
    let cfg = vmcp_types::config::from_yaml_str(&text).unwrap();
    let auth = &cfg.backends[0].auth;
    assert_eq!(auth.auth_type, vmcp_types::config::OutgoingAuthType::BearerToken, "{text}");
    let file = auth.bearer_token.as_ref().unwrap().token.file.clone().unwrap();
    assert_eq!(file.to_str().unwrap(), "/var/run/secrets/vmcp/s-bridge-token/token");
    // The ConfigMap is applied first; the Deployment mounting the token follows.
    eventually("the gateway pod mounting the token", Duration::from_secs(30), || async {
        let gw_pod = pod_of(deps.get_opt("gw-vmcp").await.unwrap()?);
        gw_pod
            .volumes
            .iter()
            .flatten()
            .any(|v| {
                v.secret
                    .as_ref()
                    .is_some_and(|s| s.secret_name.as_deref() == Some("s-bridge-token"))
            })
            .then_some(())
    })
    .await;

    // A reconcile that changes the server's Deployment keeps the token.
    let rv = secret.metadata.resource_version.clone();
    let servers: Api<vmcp_types::crd::MCPServer> = Api::namespaced(client.clone(), &ns);
    servers
        .patch(
            "s",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"args": ["--changed"]}})),
        )
        .await
        .unwrap();
    eventually("the Deployment with the new args", Duration::from_secs(30), || async {
        let args = pod_of(deps.get("s").await.unwrap()).containers[0].args.clone().unwrap();
        args.contains(&"--changed".to_owned()).then_some(())
    })
    .await;
    let again = secrets.get("s-bridge-token").await.unwrap();
    assert_eq!(again.metadata.resource_version, rv, "the Secret was rewritten");
    assert_eq!(again.data.unwrap()["token"].0, token.as_bytes(), "the token was rotated");

    // Both halves for real: the Deployment's bridge command and the ConfigMap's gateway
    // config, with the Secret's value where the kubelet would mount it.
    ensure_installed();
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    let mounted = dir.path().join("secrets");
    std::fs::create_dir_all(mounted.join("s-bridge-token")).unwrap();
    std::fs::write(mounted.join("s-bridge-token/token"), &token).unwrap();
    let port = vmcp_e2e::ports::free_port().unwrap();
    let dashes = args.iter().position(|a| a == "--").unwrap();
    let mut cmd = std::process::Command::new(vmcp_e2e::gateway::gateway_binary());
    for a in &args[..dashes] {
        cmd.arg(match a.as_str() {
            "8080" => port.to_string(),
            "/var/run/secrets/vmcp-bridge/token" => {
                mounted.join("s-bridge-token/token").to_str().unwrap().to_owned()
            }
            other => other.to_owned(),
        });
    }
    cmd.args(["--host", "127.0.0.1", "--"])
        .arg(root.join(".cache/peers/venv/bin/python"))
        .arg(root.join("tests/peers/python/backend.py"))
        .args(["--name", "s", "--transport", "stdio"]);
    let mut bridge = Peer::spawn("bridge", cmd, dir.path().join("bridge.log")).unwrap();
    bridge
        .wait_ready(Duration::from_secs(20), || async move {
            reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
        .unwrap();
    let unauthenticated = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/mcp"))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let local = text
        .lines()
        .filter(|l| !l.starts_with("listen:"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            &format!("http://s.{ns}.svc.cluster.local:8080"),
            &format!("http://127.0.0.1:{port}"),
        )
        .replace("/var/run/secrets/vmcp", mounted.to_str().unwrap())
        .replace("0.0.0.0:9090", &format!("127.0.0.1:{}", vmcp_e2e::ports::free_port().unwrap()));
    let gw = vmcp_e2e::gateway::Gateway::start(&format!("{local}\n")).await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let r = c.ok(json!({"op": "call_tool", "name": "s_echo", "arguments": {"text": "t"}})).await;
    assert_eq!(r["text"], "s:echo:t");
    c.exit().await;
}
