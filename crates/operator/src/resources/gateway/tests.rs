use super::super::{fixtures, gateway_config};
use super::*;
use serde_json::json;

const IMAGE: &str = "ghcr.io/vmcp-dev/vmcp-gateway:0.1.0";

fn example() -> GatewayChildren {
    let v = fixtures::vmcp();
    let (config, mounts, _) =
        gateway_config(&v, &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    gateway_children(&v, &config, &mounts, IMAGE, &WorkloadDefaults::default()).unwrap()
}

#[test]
fn example_children_snapshot() {
    let c = example();
    insta::assert_yaml_snapshot!("gateway_configmap", c.config_map);
    insta::assert_yaml_snapshot!("gateway_deployment", c.deployment);
    insta::assert_yaml_snapshot!("gateway_service", c.service);
    insta::assert_yaml_snapshot!("gateway_serviceaccount", c.service_account);
    insta::assert_yaml_snapshot!("gateway_pdb", c.pdb);
}

#[test]
fn names_labels_and_owner() {
    let c = example();
    assert_eq!(c.config_map.metadata.name.as_deref(), Some("engineering-gateway-vmcp-config"));
    assert_eq!(c.deployment.metadata.name.as_deref(), Some("engineering-gateway-vmcp"));
    for meta in [
        &c.config_map.metadata,
        &c.service_account.metadata,
        &c.service.metadata,
        &c.deployment.metadata,
        &c.pdb.as_ref().unwrap().metadata,
    ] {
        let l = meta.labels.as_ref().unwrap();
        assert_eq!(l["app.kubernetes.io/managed-by"], "vmcp-operator");
        assert_eq!(l["app.kubernetes.io/instance"], "engineering-gateway");
        assert_eq!(l["app.kubernetes.io/name"], "vmcp-gateway");
        assert_eq!(l["app.kubernetes.io/component"], "gateway");
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].name, "engineering-gateway");
    }
}

#[test]
fn deployment_is_hardened_and_checksummed() {
    let c = example();
    let yaml = &c.config_map.data.as_ref().unwrap()["config.yaml"];
    let spec = c.deployment.spec.unwrap();
    let annotations = spec.template.metadata.unwrap().annotations.unwrap();
    assert!(yaml.contains("backends:"), "{yaml}");
    let (config, mounts, _) =
        gateway_config(&fixtures::vmcp(), &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    assert_eq!(
        annotations[CONFIG_CHECKSUM_ANNOTATION],
        rollout_checksum(&config, &mounts).unwrap()
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    let g = &pod.containers[0];
    assert_eq!(g.args.as_deref().unwrap(), ["--config", "/etc/vmcp/config.yaml"]);
    let sc = g.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref().unwrap(), ["ALL"]);
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let mounts: Vec<_> =
        g.volume_mounts.as_ref().unwrap().iter().map(|m| m.mount_path.as_str()).collect();
    assert!(mounts.contains(&"/var/run/secrets/vmcp/vmcp-redis"), "{mounts:?}");
    assert!(mounts.contains(&"/var/run/secrets/vmcp/vmcp-gateway-oidc-client"));
    assert_eq!(spec.replicas, Some(2));
}

fn checksum(v: &VirtualMCPServer, servers: &[vmcp_types::crd::MCPServer]) -> String {
    let (config, mounts, _) = gateway_config(v, servers, &fixtures::auth_configs()).unwrap();
    rollout_checksum(&config, &mounts).unwrap()
}

#[test]
fn membership_and_aggregation_do_not_roll_the_pods() {
    let v = fixtures::vmcp();
    // Members whose credentials need no Secret of their own. A stdio member's bridge
    // token is a key of the gateway's bridge tokens Secret, always mounted and re-read: its
    // arrival or departure does not roll the pods either.
    let mut all = fixtures::servers();
    all[1].spec.transport = vmcp_types::crd::McpTransport::StreamableHttp;
    let base = checksum(&v, &all);
    assert_eq!(checksum(&v, &fixtures::servers()), base, "a stdio member's token is re-read");
    // A member leaves the group, or a member's port changes: the ConfigMap changes, the
    // pods reload it in place.
    assert_eq!(checksum(&v, &all[..1]), base);
    let mut moved = all.clone();
    moved[1].spec.port = Some(9090);
    assert_eq!(checksum(&v, &moved), base);
    let mut agg = v.clone();
    agg.spec.aggregation.as_mut().unwrap().prefix_format = Some("{backend}.".into());
    assert_eq!(checksum(&agg, &all), base);
    // What only a restart applies does roll them.
    let mut ttl = v.clone();
    ttl.spec.session_storage.as_mut().unwrap().ttl = Some("1h".into());
    assert_ne!(checksum(&ttl, &all), base);
    let mut issuer = v.clone();
    issuer.spec.incoming_auth.as_mut().unwrap().oidc.as_mut().unwrap().issuer =
        Some("https://other.example.com/realms/vmcp".into());
    assert_ne!(checksum(&issuer, &all), base);
}

/// Issue 16: stdio members joining or leaving (0, 1, 2 of them) leave the whole pod template
/// as it is; only the ConfigMap changes, which the gateway reloads in place.
#[test]
fn stdio_members_do_not_change_the_pod_template() {
    let v = fixtures::vmcp();
    let stdio = |name: &str| {
        let mut s = fixtures::server("time");
        s.metadata.name = Some(name.into());
        s
    };
    let http = fixtures::server("github-tools");
    let template = |servers: &[vmcp_types::crd::MCPServer]| {
        let (config, mounts, _) = gateway_config(&v, servers, &fixtures::auth_configs()).unwrap();
        let c =
            gateway_children(&v, &config, &mounts, IMAGE, &WorkloadDefaults::default()).unwrap();
        let yaml = c.config_map.data.unwrap().remove("config.yaml").unwrap();
        (c.deployment.spec.unwrap().template, yaml)
    };
    let (none, none_yaml) = template(std::slice::from_ref(&http));
    let (one, one_yaml) = template(&[http.clone(), stdio("s1")]);
    let (two, two_yaml) = template(&[http.clone(), stdio("s1"), stdio("s2")]);
    assert_eq!(one, none);
    assert_eq!(two, none);
    assert!(!none_yaml.contains("vmcp-bridge-tokens/"), "{none_yaml}");
    assert!(one_yaml.contains("/var/run/secrets/vmcp-bridge-tokens/s1"), "{one_yaml}");
    assert!(two_yaml.contains("/var/run/secrets/vmcp-bridge-tokens/s2"), "{two_yaml}");
    // The bridge tokens Secret is mounted even with no stdio member.
    let pod = none.spec.unwrap();
    let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "vmcp-bridge-tokens").unwrap();
    assert_eq!(
        volume.secret.unwrap().secret_name.as_deref(),
        Some("engineering-gateway-vmcp-bridge-tokens")
    );
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    let mount = mounts.iter().find(|m| m.name == "vmcp-bridge-tokens").unwrap();
    assert_eq!(mount.mount_path, "/var/run/secrets/vmcp-bridge-tokens");
    assert_eq!(mount.read_only, Some(true));
}

/// A rotated Secret the gateway reads only at start (here the Redis password) rolls the pods;
/// one that holds only backend credentials (here the token-exchange client secret) does not:
/// the running gateway re-reads those files (issue 16).
#[test]
fn a_rotated_secret_rolls_the_pods_unless_the_gateway_rereads_it() {
    let v = fixtures::vmcp();
    let (config, mut mounts, _) =
        gateway_config(&v, &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    for (i, m) in mounts.iter_mut().enumerate() {
        m.version = Some(format!("{}", 100 + i));
    }
    let names: Vec<_> = mounts.iter().map(|m| (m.secret.as_str(), m.reread)).collect();
    assert_eq!(names, [("vmcp-gateway-oidc-client", true), ("vmcp-redis", false)]);
    let before =
        gateway_children(&v, &config, &mounts, IMAGE, &WorkloadDefaults::default()).unwrap();
    let mut backend_rotated = mounts.clone();
    backend_rotated[0].version = Some("998".into());
    let same = gateway_children(&v, &config, &backend_rotated, IMAGE, &WorkloadDefaults::default())
        .unwrap();
    assert_eq!(same, before, "a rotated backend credential changes nothing");
    // A Secret also read at start (the same Secret as Redis password) is not re-read.
    let mut shared = mounts.clone();
    shared[0].reread = false;
    let shared_before =
        gateway_children(&v, &config, &shared, IMAGE, &WorkloadDefaults::default()).unwrap();
    shared[0].version = Some("998".into());
    let shared_after =
        gateway_children(&v, &config, &shared, IMAGE, &WorkloadDefaults::default()).unwrap();
    assert_ne!(shared_after.deployment, shared_before.deployment);
    mounts[1].version = Some("999".into());
    let after =
        gateway_children(&v, &config, &mounts, IMAGE, &WorkloadDefaults::default()).unwrap();
    assert_eq!(before.config_map, after.config_map, "the ConfigMap does not change");
    let ann = |c: &GatewayChildren| {
        c.deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_CHECKSUM_ANNOTATION]
            .clone()
    };
    assert_ne!(ann(&before), ann(&after));
    let mut d = after.deployment.clone();
    d.spec.as_mut().unwrap().template.metadata.as_mut().unwrap().annotations = before
        .deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone();
    assert_eq!(d, before.deployment, "only the annotation differs");
}

#[test]
fn names_that_make_invalid_services_are_render_errors() {
    let mut v = fixtures::vmcp();
    v.metadata.name = Some("my.gateway".into());
    let (config, mounts, _) =
        gateway_config(&v, &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    let e =
        gateway_children(&v, &config, &mounts, IMAGE, &WorkloadDefaults::default()).unwrap_err();
    assert!(matches!(e, RenderError::InvalidChildName { .. }), "{e}");
    assert!(e.to_string().contains("'my.gateway-vmcp'"), "{e}");
}

#[test]
fn pdb_only_for_more_than_one_replica() {
    let mut v = fixtures::vmcp();
    v.spec.replicas = Some(1);
    assert!(pod_disruption_budget(&v).unwrap().is_none());
    v.spec.replicas = None;
    assert!(pod_disruption_budget(&v).unwrap().is_none());
    v.spec.replicas = Some(3);
    let pdb = pod_disruption_budget(&v).unwrap().unwrap();
    assert_eq!(pdb.spec.unwrap().min_available, Some(IntOrString::Int(1)));
}

#[test]
fn overlay_merges_over_generated_template() {
    let mut v = fixtures::vmcp();
    v.spec.pod_template_spec = Some(json!({
        "metadata": {"annotations": {"team": "a", CONFIG_CHECKSUM_ANNOTATION: null}},
        "spec": {
            "nodeSelector": {"pool": "mcp"},
            "containers": [{"name": "gateway", "env": [{"name": "RUST_LOG", "value": "debug"}]}]
        }
    }));
    v.spec.service_type = Some(ServiceType::LoadBalancer);
    let (config, mounts, _) =
        gateway_config(&v, &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    let c = gateway_children(&v, &config, &mounts, IMAGE, &WorkloadDefaults::default()).unwrap();
    insta::assert_yaml_snapshot!("gateway_deployment_with_overlay", c.deployment);
    let t = c.deployment.spec.unwrap().template;
    let ann = t.metadata.unwrap().annotations.unwrap();
    assert_eq!(ann["team"], "a");
    assert!(ann.contains_key(CONFIG_CHECKSUM_ANNOTATION));
    let pod = t.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["pool"], "mcp");
    assert_eq!(pod.containers.len(), 1);
    assert_eq!(pod.containers[0].image.as_deref(), Some(IMAGE));
    assert_eq!(pod.containers[0].env.as_ref().unwrap()[0].name, "RUST_LOG");
    assert_eq!(c.service.spec.unwrap().type_.as_deref(), Some("LoadBalancer"));
}

#[test]
fn installation_pod_settings_apply_below_the_overlay() {
    use k8s_openapi::api::core::v1::PodSecurityContext;
    let mut v = fixtures::vmcp();
    let (config, mounts, _) =
        gateway_config(&v, &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    let workload = WorkloadDefaults {
        gateway: super::super::PodDefaults {
            pod_security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                ..Default::default()
            }),
            container_security_context: None,
        },
        image_pull_secrets: vec!["regcred".into()],
        ..Default::default()
    };
    let pod = |v: &VirtualMCPServer| {
        gateway_children(v, &config, &mounts, IMAGE, &workload)
            .unwrap()
            .deployment
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
    };
    let p = pod(&v);
    let sc = p.security_context.unwrap();
    assert_eq!((sc.run_as_non_root, sc.run_as_user, sc.fs_group), (Some(true), None, None));
    assert_eq!(p.image_pull_secrets.unwrap()[0].name, "regcred");
    assert!(p.containers[0].security_context.as_ref().unwrap().read_only_root_filesystem.is_some());
    // The object's own overlay still wins.
    v.spec.pod_template_spec = Some(json!({"spec": {"securityContext": {"runAsUser": 1000}}}));
    assert_eq!(pod(&v).security_context.unwrap().run_as_user, Some(1000));
}

#[test]
fn url() {
    assert_eq!(
        gateway_url(&fixtures::vmcp(), "team-a"),
        "http://engineering-gateway-vmcp.team-a.svc.cluster.local:4483/mcp"
    );
}
