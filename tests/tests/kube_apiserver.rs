//! The CRDs and examples against a real kube-apiserver (one per test process, one namespace
//! per test): CRD installation, CEL validation messages, printer columns, the status
//! subresource with server-side apply, and RBAC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use vmcp_e2e::k8s::ApiServer;
use vmcp_e2e::repo_root;
use vmcp_types::crd::{
    ExternalAuthType, IncomingAuthType, MCPExternalAuthConfig, MCPGroup, MCPServer, McpTransport,
    VirtualMCPServer, VirtualMCPServerPhase,
};

/// The shared server with the CRDs installed, a client for this test and a fresh namespace.
async fn setup(test: &str) -> (&'static ApiServer, kube::Client, String) {
    let t0 = Instant::now();
    let api = ApiServer::shared().await;
    let t_shared = t0.elapsed();
    api.apply_crds().await.expect("apply config/crd/ and wait until the CRDs are ready");
    eprintln!(
        "[timing] {test}: ApiServer::shared() {t_shared:.2?} + apply_crds() {:.2?} = {:.2?} \
         (server startup took {:.2?})",
        t0.elapsed() - t_shared,
        t0.elapsed(),
        api.startup_time()
    );
    let ns = api.create_namespace(test).await.expect("create a namespace");
    (api, api.client(), ns)
}

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = repo_root().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());
    files
}

fn yaml_docs(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("parse {}: {e}", file.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Every field given in `expected` is present in `actual` with the same value (the server may
/// add defaults, but must not prune or change anything).
fn assert_subset(expected: &Value, actual: &Value, at: &str) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let got = a.get(k).unwrap_or_else(|| panic!("{at}.{k} was dropped by the server"));
                assert_subset(v, got, &format!("{at}.{k}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{at}: list length differs");
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                assert_subset(e, a, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(expected, actual, "{at} differs"),
    }
}

/// Reads `doc` back from the server typed as `K`; its spec must equal the file's spec read as
/// `K`, and the raw stored object must contain every field of the file.
async fn read_back<K>(client: &kube::Client, ns: &str, doc: &Value) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + k8s_openapi::serde::Serialize
        + Clone
        + std::fmt::Debug,
{
    let name = doc["metadata"]["name"].as_str().unwrap();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let stored = api.get(name).await.unwrap_or_else(|e| panic!("get {} {name}: {e}", K::kind(&())));
    let stored_json = serde_json::to_value(&stored).unwrap();
    assert_subset(&doc["spec"], &stored_json["spec"], &format!("{}/{name}.spec", K::kind(&())));
    let from_file: K = serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!("the example {} {name} does not parse as the Rust type: {e}", K::kind(&()))
    });
    assert_eq!(
        serde_json::to_value(&from_file).unwrap()["spec"],
        stored_json["spec"],
        "{} {name}: typed spec from the file differs from the stored one",
        K::kind(&())
    );
    stored
}

/// `kubectl get vmcp -n <ns>` as rows of whitespace-separated cells (header first).
async fn get_vmcp_table(api: &ApiServer, ns: &str) -> Vec<Vec<String>> {
    let out = api.run_kubectl(&["get", "vmcp", "-n", ns]).await.unwrap();
    out.lines().map(|l| l.split_whitespace().map(str::to_owned).collect()).collect()
}

#[tokio::test]
async fn crds_apply_and_become_established() {
    let (api, client, _ns) = setup("crds").await;
    // apply_crds() already ran `kubectl apply -f config/crd/`; applying again is a no-op.
    let dir = repo_root().join("config/crd");
    let out = api.run_kubectl(&["apply", "-f", dir.to_str().unwrap()]).await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let mut names = Vec::new();
    for crd in vmcp_types::crd::all_crds() {
        let name = crd.metadata.name.clone().unwrap();
        assert!(
            out.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{name} unchanged"
            )),
            "re-applying {name} should be a no-op: {out}"
        );
        let stored = crds.get(&name).await.unwrap();
        let conditions = stored.status.unwrap().conditions.unwrap_or_default();
        for wanted in ["Established", "NamesAccepted"] {
            assert!(
                conditions.iter().any(|c| c.type_ == wanted && c.status == "True"),
                "{name}: {wanted} is not True: {conditions:?}"
            );
        }
        assert_eq!(stored.spec.names.kind, crd.spec.names.kind);
        assert!(stored.spec.versions.iter().any(|v| v.name == "v1alpha1" && v.served && v.storage));
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "mcpexternalauthconfigs.vmcp.dev",
            "mcpgroups.vmcp.dev",
            "mcpserverentries.vmcp.dev",
            "mcpservers.vmcp.dev",
            "virtualmcpservers.vmcp.dev"
        ]
    );
    // The short names work through discovery.
    let resources =
        api.run_kubectl(&["api-resources", "--api-group=vmcp.dev", "-o", "name"]).await.unwrap();
    assert_eq!(resources.lines().count(), names.len(), "{resources}");
}

#[tokio::test]
async fn examples_are_accepted_and_read_back_typed() {
    let (api, client, ns) = setup("examples").await;
    let mut kinds = Vec::new();
    for file in files("examples/k8s") {
        let out = api
            .run_kubectl(&["apply", "-n", &ns, "-f", file.to_str().unwrap()])
            .await
            .unwrap_or_else(|e| panic!("{} was rejected: {e}", file.display()));
        for doc in yaml_docs(&file) {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
            assert!(out.contains(&format!("/{name} created")), "{kind} {name} not created: {out}");
            match kind.as_str() {
                "Secret" => {
                    let secret =
                        Api::<Secret>::namespaced(client.clone(), &ns).get(&name).await.unwrap();
                    let data = secret.data.unwrap_or_default();
                    for (key, value) in doc["stringData"].as_object().unwrap() {
                        assert_eq!(data[key].0, value.as_str().unwrap().as_bytes(), "{name}/{key}");
                    }
                }
                "MCPGroup" => {
                    let g: MCPGroup = read_back(&client, &ns, &doc).await;
                    assert_eq!(
                        g.spec.description.as_deref(),
                        Some("MCP servers for the engineering team")
                    );
                }
                "MCPExternalAuthConfig" => {
                    let a: MCPExternalAuthConfig = read_back(&client, &ns, &doc).await;
                    assert_eq!(a.spec.auth_type, ExternalAuthType::HeaderInjection);
                    let h = a.spec.header_injection.unwrap();
                    assert_eq!(h.header_name, "X-API-Key");
                    assert_eq!(h.value_secret_ref.name, "weather-api-key");
                }
                "MCPServer" => {
                    let s: MCPServer = read_back(&client, &ns, &doc).await;
                    assert_eq!(s.spec.group_ref.as_ref().unwrap().name, "engineering");
                    assert_eq!(s.spec.port, Some(8080));
                    assert!(
                        s.spec.image.starts_with("ghcr.io/vmcp-dev/vmcp-example-backend:"),
                        "{}",
                        s.spec.image
                    );
                    match name.as_str() {
                        "weather" => {
                            assert_eq!(s.spec.transport, McpTransport::StreamableHttp);
                            assert_eq!(
                                s.spec.external_auth_config_ref.unwrap().name,
                                "weather-api-key"
                            );
                        }
                        "notes" => {
                            assert_eq!(s.spec.transport, McpTransport::Stdio);
                            assert_eq!(s.spec.command, ["/usr/local/bin/vmcp-example-backend"]);
                        }
                        other => panic!("unexpected MCPServer {other}"),
                    }
                }
                "VirtualMCPServer" => {
                    let v: VirtualMCPServer = read_back(&client, &ns, &doc).await;
                    assert_eq!(v.spec.group_ref.name, "engineering");
                    assert_eq!(v.spec.replicas, Some(2));
                    assert_eq!(v.spec.allowed_origins, ["https://chat.example.com"]);
                    assert_eq!(v.spec.backend_timeout.as_deref(), Some("45s"));
                    let auth = v.spec.incoming_auth.unwrap();
                    assert_eq!(auth.auth_type, IncomingAuthType::Anonymous);
                    let storage = v.spec.session_storage.unwrap();
                    assert_eq!(storage.address.as_deref(), Some("vmcp-redis:6379"));
                    assert_eq!(storage.ttl.as_deref(), Some("30m"));
                    let tools = &v.spec.aggregation.unwrap().tools[0];
                    assert_eq!(tools.workload, "weather");
                    assert_eq!(
                        tools.overrides["forecast"].description.as_deref(),
                        Some("Multi-day weather forecast for a city (example data)")
                    );
                    assert!(v.status.is_none(), "nothing sets status on create: {:?}", v.status);
                }
                // The example's own Redis (built-in kinds: the server adds defaults, so the
                // file's spec is a subset of the stored one).
                "Deployment" => {
                    let d = Api::<Deployment>::namespaced(client.clone(), &ns).get(&name).await;
                    let d = serde_json::to_value(d.unwrap()).unwrap();
                    assert_subset(&doc["spec"], &d["spec"], &format!("Deployment/{name}.spec"));
                }
                "Service" => {
                    let svc = Api::<Service>::namespaced(client.clone(), &ns).get(&name).await;
                    let svc = serde_json::to_value(svc.unwrap()).unwrap();
                    assert_subset(&doc["spec"], &svc["spec"], &format!("Service/{name}.spec"));
                }
                other => panic!("{}: unexpected kind {other}", file.display()),
            }
            kinds.push(kind);
        }
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "MCPExternalAuthConfig",
            "MCPGroup",
            "MCPServer",
            "Secret",
            "Service",
            "VirtualMCPServer"
        ]
    );
}

#[tokio::test]
async fn invalid_examples_are_rejected_with_their_cel_message() {
    let (api, _client, ns) = setup("invalid").await;
    let invalid = files("examples/k8s/invalid");
    assert!(invalid.len() >= 5, "{invalid:?}");
    for file in invalid {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| {
                panic!("{}: first line must be `# expect: <message>`", file.display())
            })
            .trim()
            .to_owned();
        let out = api
            .kubectl()
            .args(["apply", "-n", &ns, "-f", file.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{} was accepted: {}",
            file.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains("is invalid"),
            "{}: not a validation error: {stderr}",
            file.display()
        );
        assert!(stderr.contains(&expect), "{}: expected {expect:?} in: {stderr}", file.display());
        // And nothing was stored.
        let doc = &yaml_docs(&file)[0];
        let kind = doc["kind"].as_str().unwrap().to_lowercase();
        let name = doc["metadata"]["name"].as_str().unwrap();
        let get = api.kubectl().args(["get", &kind, name, "-n", &ns]).output().unwrap();
        assert!(!get.status.success() && String::from_utf8_lossy(&get.stderr).contains("NotFound"));
    }
}

#[tokio::test]
async fn kubectl_get_vmcp_prints_printer_columns() {
    let (api, _client, ns) = setup("columns").await;
    let file = repo_root().join("examples/k8s/40-virtualmcpserver.yaml");
    api.run_kubectl(&["apply", "-n", &ns, "-f", file.to_str().unwrap()]).await.unwrap();
    let table = get_vmcp_table(api, &ns).await;
    assert_eq!(table[0], ["NAME", "PHASE", "URL", "BACKENDS", "READY", "AGE"], "{table:?}");
    assert_eq!(table.len(), 2, "{table:?}");
    assert_eq!(table[1][0], "engineering-gateway", "{table:?}");
}

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

#[tokio::test]
async fn rbac_forbids_a_user_without_bindings() {
    let (api, _client, ns) = setup("rbac").await;
    let file = repo_root().join("examples/k8s/10-group.yaml");
    api.run_kubectl(&["apply", "-n", &ns, "-f", file.to_str().unwrap()]).await.unwrap();
    // The admin (system:masters) may.
    api.run_kubectl(&["get", "vmcp", "-n", &ns]).await.unwrap();

    let forbidden = |out: std::process::Output, who: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "{who} was allowed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.contains("(Forbidden)"), "{who}: {stderr}");
        assert!(
            stderr.contains(
                r#"User "nobody" cannot list resource "virtualmcpservers" in API group "vmcp.dev""#
            ),
            "{who}: {stderr}"
        );
    };
    // Impersonation of a user without bindings.
    let out = api.kubectl().args(["--as=nobody", "get", "vmcp", "-n", &ns]).output().unwrap();
    forbidden(out, "--as=nobody");
    // The same user authenticated by its own client certificate.
    let kubeconfig = api.write_user_kubeconfig("nobody", &[]).unwrap();
    let out = api
        .kubectl()
        .env("KUBECONFIG", &kubeconfig)
        .args(["get", "vmcp", "-n", &ns])
        .output()
        .unwrap();
    forbidden(out, "client certificate CN=nobody");
    let whoami = api
        .kubectl()
        .env("KUBECONFIG", &kubeconfig)
        .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&whoami.stdout), "nobody");

    // RBAC is really evaluated: a Role + RoleBinding in this namespace lets nobody list there
    // (RBAC reads bindings from a cache, so allow it a moment), and nowhere else.
    api.run_kubectl(&[
        "create",
        "role",
        "vmcp-reader",
        "-n",
        &ns,
        "--verb=get,list",
        "--resource=virtualmcpservers.vmcp.dev",
    ])
    .await
    .unwrap();
    api.run_kubectl(&[
        "create",
        "rolebinding",
        "nobody-reads",
        "-n",
        &ns,
        "--role=vmcp-reader",
        "--user=nobody",
    ])
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = api
            .kubectl()
            .env("KUBECONFIG", &kubeconfig)
            .args(["get", "vmcp", "-n", &ns])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the RoleBinding never took effect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = api.kubectl().args(["--as=nobody", "get", "vmcp", "-n", "default"]).output().unwrap();
    assert!(!out.status.success(), "the binding must not reach other namespaces");
    let out = api.kubectl().args(["--as=nobody", "get", "mcpgroups", "-n", &ns]).output().unwrap();
    assert!(!out.status.success(), "the role grants virtualmcpservers only");
}
