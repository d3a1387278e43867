//! `VirtualMCPServer` -> the gateway's ConfigMap, Deployment, Service, ServiceAccount and
//! (for more than one replica) PodDisruptionBudget.
//!
//! The gateway never talks to the Kubernetes API: its pods run under their own ServiceAccount
//! with no token mounted. A pod template annotation ([`rollout_checksum`]) rolls the pods when
//! something changes that the gateway cannot apply in place: configuration outside `backends`
//! and `aggregation`, or the content of a mounted Secret. Membership changes only change the
//! ConfigMap, which the running gateway reloads without dropping sessions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SecretVolumeSource, SecurityContext, Service, ServiceAccount,
    ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use vmcp_types::config::{AggregationConfig, GatewayConfig};
use vmcp_types::crd::{ServiceType, VirtualMCPServer};

use super::merge::overlay_pod_template;
use super::workload::WorkloadDefaults;
use super::{
    CONFIG_CHECKSUM_ANNOTATION, CONFIG_DIR, CONFIG_KEY, GATEWAY_METRICS_PORT, GATEWAY_PORT,
    GROUP_LABEL, MountSource, RenderError, SecretMount, check_service_name, child_meta,
    drop_all_capabilities, labels, namespace_of, runtime_default_seccomp, selector_labels,
    sha256_hex,
};

/// `app.kubernetes.io/name` of gateway objects.
pub const GATEWAY_APP: &str = "vmcp-gateway";
/// `app.kubernetes.io/component` of gateway objects.
pub const GATEWAY_COMPONENT: &str = "gateway";
/// The non-root user, group and fsGroup of the gateway pod.
pub const GATEWAY_UID: i64 = 65532;
const KIND: &str = "VirtualMCPServer";
/// Seconds a terminating gateway pod keeps accepting connections (preStop sleep) before it
/// gets SIGTERM; with the gateway's 20 s default drain this stays inside the default 30 s
/// termination grace period.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;

fn instance(v: &VirtualMCPServer) -> String {
    v.metadata.name.clone().unwrap_or_default()
}

/// Name of the Deployment, Service, ServiceAccount and PDB: `<name>-vmcp`.
pub fn gateway_name(v: &VirtualMCPServer) -> String {
    format!("{}-vmcp", instance(v))
}

/// Name of the ConfigMap: `<name>-vmcp-config`.
pub fn config_map_name(v: &VirtualMCPServer) -> String {
    format!("{}-vmcp-config", instance(v))
}

/// In-cluster URL of the gateway's MCP endpoint.
pub fn gateway_url(v: &VirtualMCPServer, namespace: &str) -> String {
    format!("http://{}.{namespace}.svc.cluster.local:{GATEWAY_PORT}/mcp", gateway_name(v))
}

/// Gateway pods (default 1).
pub fn replicas(v: &VirtualMCPServer) -> i32 {
    v.spec.replicas.unwrap_or(1)
}

/// The configuration file as YAML.
pub fn render_config_yaml(config: &GatewayConfig) -> Result<String, RenderError> {
    Ok(serde_saphyr::to_string(config)?)
}

fn gateway_labels(v: &VirtualMCPServer) -> BTreeMap<String, String> {
    labels(GATEWAY_APP, &instance(v), GATEWAY_COMPONENT)
}

/// Every child of a gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayChildren {
    /// `<name>-vmcp-config` with `config.yaml`.
    pub config_map: ConfigMap,
    /// `<name>-vmcp`, no token automount.
    pub service_account: ServiceAccount,
    /// `<name>-vmcp` on port 4483.
    pub service: Service,
    /// `<name>-vmcp`.
    pub deployment: Deployment,
    /// `<name>-vmcp` with `minAvailable: 1`, only for more than one replica.
    pub pdb: Option<PodDisruptionBudget>,
}

/// The value of the rollout annotation: the sha256 of what the gateway cannot apply without a
/// restart.
///
/// - The configuration without `backends` and `aggregation`: the gateway reloads those from the
///   mounted ConfigMap in place, keeping sessions (`crates/gateway/src/config.rs`, `reload`);
///   any other change applies only after a restart.
/// - Each mounted Secret's (or CA bundle ConfigMap's) name and `resourceVersion`
///   (`SecretMount::version`): the gateway reads those files once, so a rotated Secret needs
///   new pods. A new or dropped mount changes the pod's volumes anyway.
pub fn rollout_checksum(
    config: &GatewayConfig,
    mounts: &[SecretMount],
) -> Result<String, RenderError> {
    let restart_only = GatewayConfig {
        backends: Vec::new(),
        aggregation: AggregationConfig::default(),
        ..config.clone()
    };
    let mut text = render_config_yaml(&restart_only)?;
    for m in mounts {
        let kind = match m.source {
            MountSource::Secret => "secret",
            MountSource::ConfigMap => "configmap",
        };
        text.push_str(&format!("\n# {kind} {} {}", m.secret, m.version.as_deref().unwrap_or("")));
    }
    Ok(sha256_hex(text.as_bytes()))
}

/// Builds every child from the rendered configuration.
pub fn gateway_children(
    v: &VirtualMCPServer,
    config: &GatewayConfig,
    mounts: &[SecretMount],
    gateway_image: &str,
    workload: &WorkloadDefaults,
) -> Result<GatewayChildren, RenderError> {
    check_service_name(KIND, &instance(v), &gateway_name(v))?;
    let yaml = render_config_yaml(config)?;
    Ok(GatewayChildren {
        config_map: config_map(v, &yaml)?,
        service_account: service_account(v)?,
        service: service(v)?,
        deployment: deployment(
            v,
            &rollout_checksum(config, mounts)?,
            mounts,
            gateway_image,
            workload,
        )?,
        pdb: pod_disruption_budget(v)?,
    })
}

/// The ConfigMap holding `config.yaml`.
pub fn config_map(v: &VirtualMCPServer, config_yaml: &str) -> Result<ConfigMap, RenderError> {
    Ok(ConfigMap {
        metadata: child_meta(v, KIND, config_map_name(v), gateway_labels(v))?,
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), config_yaml.to_owned())])),
        ..ConfigMap::default()
    })
}

/// The gateway pods' ServiceAccount (no token: the gateway never calls the Kubernetes API).
pub fn service_account(v: &VirtualMCPServer) -> Result<ServiceAccount, RenderError> {
    Ok(ServiceAccount {
        metadata: child_meta(v, KIND, gateway_name(v), gateway_labels(v))?,
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })
}

/// The gateway Service: port 4483 (`http`), type from `spec.serviceType`.
pub fn service(v: &VirtualMCPServer) -> Result<Service, RenderError> {
    let type_ = match v.spec.service_type.unwrap_or_default() {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    Ok(Service {
        metadata: child_meta(v, KIND, gateway_name(v), gateway_labels(v))?,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(selector_labels(GATEWAY_APP, &instance(v))),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: GATEWAY_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

/// The gateway Deployment. `config_checksum` is the [`rollout_checksum`].
pub fn deployment(
    v: &VirtualMCPServer,
    config_checksum: &str,
    mounts: &[SecretMount],
    gateway_image: &str,
    workload: &WorkloadDefaults,
) -> Result<Deployment, RenderError> {
    namespace_of(v, KIND)?;
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(v),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut volume_mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
    ];
    for m in mounts {
        let items = Some(
            m.keys
                .iter()
                .map(|k| KeyToPath { key: k.clone(), path: k.clone(), mode: None })
                .collect(),
        );
        volumes.push(match m.source {
            MountSource::Secret => Volume {
                name: m.volume_name(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(m.secret.clone()),
                    items,
                    default_mode: Some(0o440),
                    optional: None,
                }),
                ..Volume::default()
            },
            MountSource::ConfigMap => Volume {
                name: m.volume_name(),
                config_map: Some(ConfigMapVolumeSource {
                    name: m.secret.clone(),
                    items,
                    default_mode: Some(0o444),
                    optional: None,
                }),
                ..Volume::default()
            },
        });
        volume_mounts.push(VolumeMount {
            name: m.volume_name(),
            mount_path: m.dir(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let container = Container {
        name: "gateway".into(),
        image: Some(gateway_image.to_owned()),
        args: Some(vec!["--config".into(), format!("{CONFIG_DIR}/{CONFIG_KEY}")]),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: GATEWAY_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: GATEWAY_METRICS_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        liveness_probe: Some(http_probe("/healthz", 10)),
        readiness_probe: Some(http_probe("/readyz", 5)),
        // The endpoints and kube-proxy learn of a terminating pod only after it got SIGTERM;
        // the gateway closes its listener at SIGTERM. Waiting first (the kubelet's own sleep:
        // no shell in the image) lets new connections go elsewhere before it stops accepting.
        // Seen on a real node: calls failed with "connection refused" during a rollout.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: PRE_STOP_SLEEP_SECONDS }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: v.spec.resources.clone(),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(drop_all_capabilities()),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };
    let name = instance(v);
    let selector = selector_labels(GATEWAY_APP, &name);
    let mut pod_labels = gateway_labels(v);
    pod_labels.insert(GROUP_LABEL.to_owned(), v.spec.group_ref.name.clone());
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(BTreeMap::from([(
                CONFIG_CHECKSUM_ANNOTATION.to_owned(),
                config_checksum.to_owned(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(gateway_name(v)),
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(GATEWAY_UID),
                run_as_group: Some(GATEWAY_UID),
                fs_group: Some(GATEWAY_UID),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..PodSecurityContext::default()
            }),
            containers: vec![container],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    };
    if let Some(spec) = template.spec.as_mut() {
        workload.apply(&workload.gateway, spec);
    }
    let mut template =
        overlay_pod_template(template, v.spec.pod_template_spec.as_ref(), &selector)?;
    // The checksum is what rolls the pods on a config change: an overlay cannot remove it.
    template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default)
        .insert(CONFIG_CHECKSUM_ANNOTATION.to_owned(), config_checksum.to_owned());
    Ok(Deployment {
        metadata: child_meta(v, KIND, gateway_name(v), gateway_labels(v))?,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas(v)),
            selector: LabelSelector { match_labels: Some(selector), match_expressions: None },
            template,
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

/// `minAvailable: 1` when there is more than one replica, else `None`.
pub fn pod_disruption_budget(
    v: &VirtualMCPServer,
) -> Result<Option<PodDisruptionBudget>, RenderError> {
    if replicas(v) <= 1 {
        return Ok(None);
    }
    Ok(Some(PodDisruptionBudget {
        metadata: child_meta(v, KIND, gateway_name(v), gateway_labels(v))?,
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(GATEWAY_APP, &instance(v))),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }))
}

#[cfg(test)]
mod tests {
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
            gateway_config(&fixtures::vmcp(), &fixtures::servers(), &fixtures::auth_configs())
                .unwrap();
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
        // token is mounted, so its arrival or departure does roll the pods (like a member
        // whose auth config names a Secret).
        let mut all = fixtures::servers();
        all[1].spec.transport = vmcp_types::crd::McpTransport::StreamableHttp;
        let base = checksum(&v, &all);
        assert_ne!(checksum(&v, &fixtures::servers()), base, "a stdio member's token is mounted");
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

    #[test]
    fn a_rotated_secret_rolls_the_pods() {
        let v = fixtures::vmcp();
        let (config, mut mounts, _) =
            gateway_config(&v, &fixtures::servers(), &fixtures::auth_configs()).unwrap();
        for (i, m) in mounts.iter_mut().enumerate() {
            m.version = Some(format!("{}", 100 + i));
        }
        let before =
            gateway_children(&v, &config, &mounts, IMAGE, &WorkloadDefaults::default()).unwrap();
        mounts[0].version = Some("999".into());
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
        let e = gateway_children(&v, &config, &mounts, IMAGE, &WorkloadDefaults::default())
            .unwrap_err();
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
        let c =
            gateway_children(&v, &config, &mounts, IMAGE, &WorkloadDefaults::default()).unwrap();
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
        assert!(
            p.containers[0].security_context.as_ref().unwrap().read_only_root_filesystem.is_some()
        );
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
}
