//! Remote servers (`MCPServerEntry`) and private CA trust.

use crate::support::*;

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
    private_pki_backend_reached(CaSource::Secret).await;
}

/// The same with the bundle in a ConfigMap (`spec.caBundleConfigMapRef`): a `configMap` volume
/// at `/var/run/vmcp/configmaps/<name>`, rendered into `outbound.caFiles`, and a gateway that
/// runs that configuration trusts it.
#[tokio::test(flavor = "multi_thread")]
async fn ca_bundle_from_a_config_map_lets_the_gateway_reach_a_private_pki_backend() {
    private_pki_backend_reached(CaSource::ConfigMap).await;
}

#[derive(Clone, Copy, PartialEq)]
enum CaSource {
    Secret,
    ConfigMap,
}

async fn private_pki_backend_reached(source: CaSource) {
    use base64::Engine;
    use vmcp_e2e::peers::{Backend, BackendOptions, Client, Sdk};
    let (api, client, ns) = setup("op-ca").await;
    let ca = vmcp_e2e::tls::PrivateCa::new();
    let backend = Backend::start(Sdk::Python, "secure", BackendOptions::default()).await;
    let relay = vmcp_e2e::tls::TlsRelay::start(&ca, backend.port).await;
    let pem = std::fs::read(ca.ca_pem()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pem);
    let (bundle, field, dir) = match source {
        CaSource::Secret => (
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: corp-ca\ndata:\n  ca.crt: {b64}\n"
            ),
            "caBundleRef",
            "/var/run/secrets/vmcp",
        ),
        CaSource::ConfigMap => (
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: corp-ca\ndata:\n  ca.crt: |\n{}",
                String::from_utf8_lossy(&pem)
                    .lines()
                    .map(|l| format!("    {l}\n"))
                    .collect::<String>()
            ),
            "caBundleConfigMapRef",
            "/var/run/vmcp/configmaps",
        ),
    };
    let gateway = |field: &str| {
        format!(
            "apiVersion: vmcp.dev/v1alpha1\nkind: MCPGroup\nmetadata:\n  name: g\nspec: {{}}\n---\n\
             apiVersion: vmcp.dev/v1alpha1\nkind: MCPServerEntry\nmetadata:\n  name: secure\nspec:\n  \
             url: https://localhost:{}/mcp\n  groupRef:\n    name: g\n---\n\
             apiVersion: vmcp.dev/v1alpha1\nkind: VirtualMCPServer\nmetadata:\n  name: gw\nspec:\n  \
             groupRef:\n    name: g\n  incomingAuth:\n    type: anonymous\n  {field}:\n    \
             name: corp-ca\n    key: ca.crt\n",
            relay.port
        )
    };
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client.clone(), &ns);
    let _stop = run_operator(client.clone(), &ns);
    if source == CaSource::ConfigMap {
        // Before the bundle exists: the gateway says which ConfigMap it waits for.
        apply_text(api, &ns, &gateway(field)).await;
        eventually(
            "AuthConfigured=False naming the ConfigMap",
            Duration::from_secs(60),
            || async {
                let st = vmcps.get("gw").await.unwrap().status?;
                st.conditions.into_iter().find(|c| {
                    c.type_ == "AuthConfigured"
                        && c.status == "False"
                        && c.message.contains("ConfigMap 'corp-ca' (key 'ca.crt')")
                })
            },
        )
        .await;
    }
    apply_text(api, &ns, &format!("{bundle}---\n{}", gateway(field))).await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let dep = eventually("the gateway Deployment", Duration::from_secs(60), || async {
        deps.get_opt("gw-vmcp").await.unwrap()
    })
    .await;
    let pod = dep.spec.unwrap().template.spec.unwrap();
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    let mount = mounts.iter().find(|m| m.mount_path == format!("{dir}/corp-ca"));
    let volume = pod.volumes.unwrap().into_iter().find(|v| Some(&v.name) == mount.map(|m| &m.name));
    let volume = volume.unwrap_or_else(|| panic!("no volume mounted at {dir}/corp-ca: {mounts:?}"));
    match source {
        CaSource::Secret => {
            assert_eq!(volume.secret.unwrap().secret_name.as_deref(), Some("corp-ca"))
        }
        CaSource::ConfigMap => assert_eq!(volume.config_map.unwrap().name, "corp-ca"),
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let text =
        eventually("the CA trusted in the configuration", Duration::from_secs(60), || async {
            let text =
                cms.get("gw-vmcp-config").await.unwrap().data.unwrap()["config.yaml"].clone();
            text.contains(&format!("{dir}/corp-ca/ca.crt")).then_some(text)
        })
        .await;
    if source == CaSource::ConfigMap {
        eventually("AuthConfigured=True", Duration::from_secs(60), || async {
            let st = vmcps.get("gw").await.unwrap().status?;
            st.conditions
                .iter()
                .any(|c| c.type_ == "AuthConfigured" && c.status == "True")
                .then_some(())
        })
        .await;
    }

    // Run it as the pod would: the bundle as a file, loopback ports.
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("corp-ca")).unwrap();
    std::fs::write(files.path().join("corp-ca/ca.crt"), &pem).unwrap();
    let metrics_port = vmcp_e2e::ports::free_port().unwrap();
    let local = text
        .lines()
        .filter(|l| !l.starts_with("listen:"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(dir, files.path().to_str().unwrap())
        .replace("0.0.0.0:9090", &format!("127.0.0.1:{metrics_port}"));
    let gw = vmcp_e2e::gateway::Gateway::start(&format!("{local}\n")).await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let r =
        c.ok(json!({"op": "call_tool", "name": "secure_echo", "arguments": {"text": "pki"}})).await;
    assert_eq!(r["text"], "secure:echo:pki");
}
