//! The examples against the API server: every valid one is accepted and reads back as the
//! typed object, every invalid one is rejected with its CEL message.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::Resource;
use kube::api::Api;
use serde_json::Value;
use vmcp_types::crd::{
    ExternalAuthType, IncomingAuthType, MCPExternalAuthConfig, MCPGroup, MCPServer, McpTransport,
    VirtualMCPServer,
};

use super::{files, setup, yaml_docs};

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
