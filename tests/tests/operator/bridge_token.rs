//! The stdio bridge's token (M8): one Secret per stdio server, read by its bridge; the gateway
//! reads a copy from its own bridge tokens Secret (issue 16: one per gateway, always mounted,
//! so stdio members joining or leaving never roll the gateway pods).

use crate::support::*;

/// M8: a stdio `MCPServer` gets one random bridge token Secret, owned by it and created once
/// (a reconcile that changes the Deployment leaves it alone). The bridge container reads it
/// with `--auth-token-file`; the gateway's bridge tokens Secret holds a copy under the
/// server's name, and the gateway sends it as the backend's `bearerToken`. Both rendered
/// halves run for real: the bridge command from the Deployment and the gateway config from the
/// ConfigMap, with the Secrets' values where the kubelet would mount them.
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

    // The gateway sends it as the backend's bearer token, from its own bridge tokens Secret.
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
    assert_eq!(file.to_str().unwrap(), "/var/run/secrets/vmcp-bridge-tokens/s");
    // Applied before the ConfigMap, owned by the gateway, one key per stdio member.
    let combined = secrets.get("gw-vmcp-bridge-tokens").await.unwrap();
    let owner = &combined.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("VirtualMCPServer", "gw", Some(true))
    );
    let data = combined.data.unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["s"]);
    assert_eq!(data["s"].0, token.as_bytes());
    // The ConfigMap is applied first; the Deployment mounting the gateway's Secret follows.
    eventually("the gateway pod mounting its bridge tokens", Duration::from_secs(30), || async {
        let gw_pod = pod_of(deps.get_opt("gw-vmcp").await.unwrap()?);
        let volumes = gw_pod.volumes.unwrap_or_default();
        let names: Vec<_> =
            volumes.iter().filter_map(|v| v.secret.as_ref()?.secret_name.clone()).collect();
        assert!(!names.contains(&"s-bridge-token".to_owned()), "{names:?}");
        names.contains(&"gw-vmcp-bridge-tokens".to_owned()).then_some(())
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
    // config, with each Secret's value where the kubelet would mount it: the server's own for
    // the bridge, the gateway's copy for the gateway.
    ensure_installed();
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    let mounted = dir.path().join("secrets");
    std::fs::create_dir_all(mounted.join("s-bridge-token")).unwrap();
    std::fs::write(mounted.join("s-bridge-token/token"), &token).unwrap();
    let gateway_mount = dir.path().join("gateway-bridge-tokens");
    std::fs::create_dir_all(&gateway_mount).unwrap();
    let copy = secrets.get("gw-vmcp-bridge-tokens").await.unwrap().data.unwrap();
    for (key, value) in copy {
        std::fs::write(gateway_mount.join(key), value.0).unwrap();
    }
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
    bridge.wait_healthz(port).await.unwrap();
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
        .replace("/var/run/secrets/vmcp-bridge-tokens", gateway_mount.to_str().unwrap())
        .replace("0.0.0.0:9090", &format!("127.0.0.1:{}", vmcp_e2e::ports::free_port().unwrap()));
    let gw = vmcp_e2e::gateway::Gateway::start(&format!("{local}\n")).await;
    let mut c = Client::start(Sdk::Python, &gw.url(), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let r = c.ok(json!({"op": "call_tool", "name": "s_echo", "arguments": {"text": "t"}})).await;
    assert_eq!(r["text"], "s:echo:t");
    c.exit().await;
}

/// Issue 16: a stdio member joining and then leaving the group changes the gateway's bridge
/// tokens Secret (a key with the member's token appears, then goes) and the ConfigMap (which
/// the gateway reloads in place), never the gateway's pod template or its rollout annotation:
/// no gateway pod restarts, no session is lost.
#[tokio::test(flavor = "multi_thread")]
async fn stdio_member_joining_and_leaving_keeps_the_gateway_pod_template() {
    use k8s_openapi::api::core::v1::Secret;
    let (api, client, ns) = setup("op-bridge-members").await;
    apply_text(api, &ns, GROUP_G_WITH_SERVER_A).await;
    let _stop = run_operator(client.clone(), &ns);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let config = || async {
        cms.get_opt("gw-vmcp-config").await.unwrap().and_then(|c| c.data?.remove("config.yaml"))
    };
    let keys = || async {
        let s = secrets.get_opt("gw-vmcp-bridge-tokens").await.unwrap()?;
        Some(s.data.unwrap_or_default())
    };
    eventually("a config with backend a", Duration::from_secs(60), || async {
        config().await.filter(|t| t.contains("name: a"))
    })
    .await;
    let annotation = eventually("the gateway Deployment", Duration::from_secs(30), || async {
        rollout_annotation(&deps, "gw-vmcp").await
    })
    .await;
    let template = deps.get("gw-vmcp").await.unwrap().spec.unwrap().template;
    // No stdio member yet: the Secret exists (the pods mount it) and is empty.
    assert_eq!(keys().await.map(|k| k.len()), Some(0));

    apply_text(
        api,
        &ns,
        r#"apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {name: s}
spec: {image: example/s:1, transport: stdio, command: [stdio-server], groupRef: {name: g}}
"#,
    )
    .await;
    let text = eventually("a config with stdio member s", Duration::from_secs(60), || async {
        config().await.filter(|t| t.contains("name: s"))
    })
    .await;
    assert!(text.contains("file: /var/run/secrets/vmcp-bridge-tokens/s"), "{text}");
    let own = secrets.get("s-bridge-token").await.unwrap().data.unwrap().remove("token").unwrap();
    let copied = keys().await.unwrap();
    assert_eq!(copied.keys().collect::<Vec<_>>(), ["s"]);
    assert_eq!(copied["s"], own, "the member's own token");
    assert_eq!(rollout_annotation(&deps, "gw-vmcp").await.unwrap(), annotation);
    assert_eq!(deps.get("gw-vmcp").await.unwrap().spec.unwrap().template, template);

    let servers: Api<vmcp_types::crd::MCPServer> = Api::namespaced(client.clone(), &ns);
    servers.delete("s", &DeleteParams::default()).await.unwrap();
    eventually("a config without s", Duration::from_secs(30), || async {
        config().await.filter(|t| !t.contains("name: s") && t.contains("name: a"))
    })
    .await;
    eventually("the bridge tokens Secret without s", Duration::from_secs(30), || async {
        keys().await.filter(|k| k.is_empty())
    })
    .await;
    assert_eq!(rollout_annotation(&deps, "gw-vmcp").await.unwrap(), annotation);
    assert_eq!(deps.get("gw-vmcp").await.unwrap().spec.unwrap().template, template);
}

/// The gateway's bridge tokens Secret is never taken over: a Secret of that name the gateway
/// does not control is a name conflict (nothing applied) and keeps its data.
#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_secret_named_like_the_bridge_tokens_is_a_name_conflict() {
    use k8s_openapi::api::core::v1::Secret;
    let (api, client, ns) = setup("op-bridge-foreign").await;
    apply_text(
        api,
        &ns,
        r#"apiVersion: v1
kind: Secret
metadata: {name: gw-vmcp-bridge-tokens}
stringData: {mine: user-data}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPGroup
metadata: {name: g}
spec: {}
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
    let cond = eventually("Ready=False/NameConflict", Duration::from_secs(30), || async {
        ready_with_reason(
            vmcps.get("gw").await.unwrap().status.map(|s| s.conditions),
            "NameConflict",
        )
    })
    .await;
    assert!(cond.message.contains("Secret 'gw-vmcp-bridge-tokens'"), "{}", cond.message);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let s = secrets.get("gw-vmcp-bridge-tokens").await.unwrap();
    assert!(s.metadata.owner_references.unwrap_or_default().is_empty());
    assert_eq!(s.data.unwrap()["mine"].0, b"user-data");
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(deps.get_opt("gw-vmcp").await.unwrap().is_none(), "nothing applied");
}
