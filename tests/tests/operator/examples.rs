//! The shipped examples: their children and status, a missing group, and the rendered
//! configuration run by the real gateway binary against official-SDK backends.

use crate::support::*;
use sha2::Digest;

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
