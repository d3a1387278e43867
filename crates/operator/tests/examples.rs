//! The `examples/k8s/` manifests through the public builders: the rendered configuration loads
//! in the gateway, contains no secret value, and every secret file it names is mounted by the
//! gateway Deployment with that key projected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use serde::de::DeserializeOwned;
use serde_json::Value;
use vmcp_operator::resources::bridge_token::{
    GATEWAY_BRIDGE_TOKENS_DIR, gateway_bridge_tokens_name,
};
use vmcp_operator::resources::gateway::{gateway_children, render_config_yaml};
use vmcp_operator::resources::mcp_server::{server_deployment, server_service};
use vmcp_operator::resources::{SECRETS_DIR, gateway_config};
use vmcp_operator::{Settings, run_controllers};
use vmcp_types::crd::{MCPExternalAuthConfig, MCPServer, VirtualMCPServer};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/k8s")
}

/// Every document of kind `kind` in the examples, with the metadata the API server adds.
fn load<K: DeserializeOwned + kube::Resource>(kind: &str) -> Vec<K> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(examples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&std::fs::read_to_string(&f).unwrap()).unwrap();
        for d in docs.into_iter().filter(|d| d["kind"] == kind) {
            let mut k: K = serde_json::from_value(d).unwrap();
            let m = k.meta_mut();
            m.namespace = Some("examples".into());
            m.uid = Some(format!("uid-{}", m.name.clone().unwrap()));
            out.push(k);
        }
    }
    out
}

/// Every string under a `file` key.
fn files(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("file", Value::String(s)) => out.push(s.clone()),
                    _ => files(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| files(v, out)),
        _ => {}
    }
}

#[test]
fn example_gateway_is_consistent() {
    let vmcp: VirtualMCPServer = load("VirtualMCPServer").remove(0);
    let servers: Vec<MCPServer> = load("MCPServer");
    let auth: BTreeMap<String, MCPExternalAuthConfig> =
        load::<MCPExternalAuthConfig>("MCPExternalAuthConfig")
            .into_iter()
            .map(|a| (a.metadata.name.clone().unwrap(), a))
            .collect();
    let (config, mounts, discovered) = gateway_config(&vmcp, &servers, &auth).unwrap();
    assert_eq!(discovered.len(), servers.len());

    let yaml = render_config_yaml(&config).unwrap();
    assert_eq!(vmcp_types::config::from_yaml_str(&yaml).unwrap(), config);
    for secret in load::<Secret>("Secret") {
        for value in secret.string_data.unwrap_or_default().values() {
            assert!(!yaml.contains(value.as_str()), "a secret value is in the rendered config");
        }
    }

    let children = gateway_children(
        &vmcp,
        &config,
        &mounts,
        &Settings::default().gateway_image,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(children.config_map.data.as_ref().unwrap()["config.yaml"], yaml);
    let pod = children.deployment.spec.unwrap().template.spec.unwrap();
    let gateway = &pod.containers[0];
    let volumes = pod.volumes.unwrap();
    let mut paths = Vec::new();
    files(&serde_json::to_value(&config).unwrap(), &mut paths);
    assert!(!paths.is_empty());
    for path in paths {
        if let Some(server) = path.strip_prefix(&format!("{GATEWAY_BRIDGE_TOKENS_DIR}/")) {
            // A stdio member's bridge token: a key of the gateway's own token Secret, which is
            // mounted whole (every key a file) whatever the members.
            assert!(servers.iter().any(|s| s.metadata.name.as_deref() == Some(server)), "{path}");
            let mount = gateway
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.mount_path == GATEWAY_BRIDGE_TOKENS_DIR)
                .unwrap_or_else(|| panic!("{path} is not mounted"));
            let volume = volumes.iter().find(|v| v.name == mount.name).unwrap();
            let source = volume.secret.as_ref().unwrap();
            assert_eq!(source.secret_name, Some(gateway_bridge_tokens_name(&vmcp)));
            assert!(source.items.is_none(), "every key of the token Secret is a file");
            continue;
        }
        let rel = path.strip_prefix(&format!("{SECRETS_DIR}/")).expect("under the secrets dir");
        let (secret, key) = rel.split_once('/').unwrap();
        let mount = gateway
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.mount_path == format!("{SECRETS_DIR}/{secret}"))
            .unwrap_or_else(|| panic!("{path} is not mounted"));
        let volume = volumes.iter().find(|v| v.name == mount.name).unwrap();
        let source = volume.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some(secret));
        assert!(source.items.as_ref().unwrap().iter().any(|i| i.key == key && i.path == key));
    }
}

#[test]
fn example_servers_build() {
    for s in load::<MCPServer>("MCPServer") {
        server_deployment(&s, "gateway:test", &Default::default()).unwrap();
        server_service(&s).unwrap();
    }
}

/// `run_controllers` can be spawned on a multi-threaded runtime (compile-time check).
#[allow(dead_code)]
fn run_controllers_is_send(client: kube::Client) {
    fn send<T: Send + 'static>(_: T) {}
    send(run_controllers(client, Settings::default(), async {}));
}
