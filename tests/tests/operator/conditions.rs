//! What the status and Events say when something is wrong, and that the operator never takes
//! over or fights over an object: missing Secrets, foreign objects, competing owners, drift.

use crate::support::*;

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
