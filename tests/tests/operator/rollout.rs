//! What rolls the gateway pods and what does not: a rotated Secret the gateway reads only at
//! start does; a rotated backend credential (re-read by the running gateway) and a membership
//! change (reloaded in place) do not.

use crate::support::*;

/// A rotated Secret reaches the gateway. Rotating the Redis password (read only at start)
/// changes the Deployment's rollout annotation (the pods restart and read the new file), and
/// nothing else: not the ConfigMap, not the rest of the Deployment. Rotating a token-exchange
/// client secret changes nothing at all: the running gateway re-reads that file (issue 16;
/// `gateway_auth::a_changed_client_secret_file_is_used_without_a_restart` proves it uses it).
#[tokio::test(flavor = "multi_thread")]
async fn rotated_secret_rolls_the_gateway_only_when_it_is_read_at_start() {
    let (api, client, ns) = setup("op-rotate").await;
    apply_text(
        api,
        &ns,
        r#"apiVersion: v1
kind: Secret
metadata: {name: te-client}
stringData: {secret: first-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: redis-pw}
stringData: {password: first-password}
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
  sessionStorage:
    provider: redis
    address: redis.example.svc:6379
    passwordRef: {name: redis-pw, key: password}
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
    let rotate = |name: &'static str, key: &'static str, value: &'static str| {
        let secrets = secrets.clone();
        async move {
            secrets
                .patch(
                    name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"stringData": {key: value}})),
                )
                .await
                .unwrap();
        }
    };
    // The backend credential: the operator reconciles within milliseconds (the Secret is
    // watched); on main this rolled the pods at once.
    rotate("te-client", "secret", "rotated-secret").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let dep = deps.get("gw-vmcp").await.unwrap();
    assert_eq!(dep.spec, dep_before.spec, "a rotated backend credential rolls nothing");
    assert_eq!(dep.metadata.generation, dep_before.metadata.generation);

    rotate("redis-pw", "password", "rotated-password").await;
    let after = eventually("a new rollout annotation", Duration::from_secs(30), || async {
        rollout_annotation(&deps, "gw-vmcp").await.filter(|a| *a != before)
    })
    .await;
    assert_ne!(after, before);
    let cm = cms.get("gw-vmcp-config").await.unwrap();
    assert_eq!(cm.metadata.resource_version, cm_before.metadata.resource_version);
    let text = &cm.data.unwrap()["config.yaml"];
    assert!(!text.contains("rotated-secret") && !text.contains("rotated-password"));
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
    apply_text(api, &ns, GROUP_G_WITH_SERVER_A).await;
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
    // The ConfigMap is applied first; the Deployment follows in the same reconcile.
    let annotation = eventually("the gateway Deployment", Duration::from_secs(30), || async {
        rollout_annotation(&deps, "gw-vmcp").await
    })
    .await;
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
