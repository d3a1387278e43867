//! Remote entries (`MCPServerEntry`) and private CA bundles.

use super::*;

#[test]
fn remote_entries_are_backends_with_their_url_and_auth() {
    let vmcp = fixtures::vmcp();
    let entries = [
        entry("hosted", "https://mcp.example.com/mcp", Some("github-tools-token-exchange")),
        entry("plain", "http://other-team.tools.svc:9000/mcp", None),
        // Named like an MCPServer of the group: left out, reported.
        entry("time", "https://time.example.com/mcp", None),
        // Another group's: not a member.
        {
            let mut e = entry("elsewhere", "https://x.example.com/mcp", None);
            e.spec.group_ref.name = "other".into();
            e
        },
    ];
    let servers = fixtures::servers();
    let auth = fixtures::auth_configs();
    let r = render_gateway_config(&RenderInput {
        vmcp: &vmcp,
        members: &servers,
        entries: &entries,
        auth_configs: &auth,
        missing_secrets: &BTreeSet::new(),
    })
    .unwrap();
    let names: Vec<_> = r.config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["github-tools", "hosted", "plain", "time"]);
    let hosted = &r.config.backends[1];
    assert_eq!(hosted.url, "https://mcp.example.com/mcp");
    assert_eq!(hosted.auth.auth_type, OutgoingAuthType::TokenExchange);
    assert_eq!(r.config.backends[2].auth, OutgoingAuthConfig::default());
    assert_eq!(r.config.backends[3].url, "http://time.team-a.svc.cluster.local:8080/mcp");
    let d: Vec<_> =
        r.backends.iter().map(|b| (b.name.as_str(), b.status.as_deref().unwrap())).collect();
    assert_eq!(
        d,
        [
            ("github-tools", "ready"),
            ("hosted", "remote"),
            ("plain", "remote"),
            ("time", "pending"),
            ("time", "error")
        ]
    );
    let p = r.problems.iter().find(|p| p.kind == ProblemKind::Backend).unwrap();
    assert!(p.message.contains("MCPServerEntry 'time' left out"), "{}", p.message);
    // The entry's auth config is one the controller must fetch (discovered source).
    let wanted = referenced_auth_configs(&vmcp, &[], &entries);
    assert!(wanted.contains("github-tools-token-exchange"));
    // A missing auth config leaves only that entry out.
    let r = render_gateway_config(&RenderInput {
        vmcp: &vmcp,
        members: &[],
        entries: &entries[..2],
        auth_configs: &BTreeMap::new(),
        missing_secrets: &BTreeSet::new(),
    })
    .unwrap();
    let names: Vec<_> = r.config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["plain"]);
    assert!(
        r.problems.iter().any(|p| p.kind == ProblemKind::Auth && p.message.contains("'hosted'"))
    );
}

#[test]
fn ca_bundle_is_mounted_and_trusted() {
    let mut vmcp = fixtures::vmcp();
    vmcp.spec.ca_bundle_ref = Some(SecretKeyRef { name: "corp-ca".into(), key: "ca.crt".into() });
    let (config, mounts, _) =
        gateway_config(&vmcp, &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    assert_eq!(
        config.outbound.ca_files,
        [std::path::PathBuf::from("/var/run/secrets/vmcp/corp-ca/ca.crt")]
    );
    let m = mounts.iter().find(|m| m.secret == "corp-ca").unwrap();
    assert!(m.keys.contains("ca.crt"));
    let r = render_gateway_config(&RenderInput {
        vmcp: &vmcp,
        members: &[],
        entries: &[],
        auth_configs: &BTreeMap::new(),
        missing_secrets: &BTreeSet::from(["corp-ca".to_owned()]),
    })
    .unwrap();
    assert!(
        r.problems.iter().any(|p| p.kind == ProblemKind::Auth
            && p.message.contains("Secret 'corp-ca'")
            && p.message.contains("spec.caBundleRef")),
        "{:?}",
        r.problems
    );
    // Without it, nothing extra is trusted.
    let (config, _, _) =
        gateway_config(&fixtures::vmcp(), &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    assert!(config.outbound.ca_files.is_empty());
}

#[test]
fn ca_bundle_from_a_config_map_is_mounted_and_trusted() {
    use crate::resources::gateway::gateway_children;
    use crate::resources::{MountSource, WorkloadDefaults};
    use vmcp_types::crd::ConfigMapKeyRef;
    let mut vmcp = fixtures::vmcp();
    vmcp.spec.ca_bundle_config_map_ref =
        Some(ConfigMapKeyRef { name: "corp-ca".into(), key: "ca.crt".into() });
    let (config, mut mounts, _) =
        gateway_config(&vmcp, &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    assert_eq!(
        config.outbound.ca_files,
        [std::path::PathBuf::from("/var/run/vmcp/configmaps/corp-ca/ca.crt")]
    );
    let m = mounts.iter().find(|m| m.secret == "corp-ca").unwrap();
    assert_eq!(m.source, MountSource::ConfigMap);
    // Secrets first, then the ConfigMap; a Secret of the same name stays a Secret.
    assert_eq!(mounts.last(), Some(m));
    assert!(mounts[..mounts.len() - 1].iter().all(|m| m.source == MountSource::Secret));

    let pod = |mounts: &[SecretMount]| {
        let c =
            gateway_children(&vmcp, &config, mounts, "img", &WorkloadDefaults::default()).unwrap();
        c.deployment.spec.unwrap().template
    };
    let template = pod(&mounts);
    let spec = template.spec.clone().unwrap();
    let volume = spec.volumes.unwrap().into_iter().find(|v| v.name == "configmap-corp-ca").unwrap();
    let paths: Vec<_> = spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.name == "configmap-corp-ca")
        .map(|m| m.mount_path.clone())
        .collect();
    assert_eq!(paths, ["/var/run/vmcp/configmaps/corp-ca"]);
    insta::assert_yaml_snapshot!("ca_bundle_config_map_volume", volume);

    // A changed bundle (new resourceVersion) rolls the pods.
    let checksum = |t: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        t.metadata.as_ref().unwrap().annotations.as_ref().unwrap()["vmcp.dev/config-checksum"]
            .clone()
    };
    let before = checksum(&template);
    mounts.last_mut().unwrap().version = Some("42".into());
    assert_ne!(checksum(&pod(&mounts)), before);
}
