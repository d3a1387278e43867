//! `VirtualMCPServer` -> the gateway's ConfigMap, Deployment, Service, ServiceAccount and
//! (for more than one replica) PodDisruptionBudget.
//!
//! The gateway never talks to the Kubernetes API: its pods run under their own ServiceAccount
//! with no token mounted. A pod template annotation ([`rollout_checksum`]) rolls the pods when
//! something changes that the gateway cannot apply in place: configuration outside `backends`
//! and `aggregation`, or the content of a Secret it reads only at start (Redis password, CA
//! bundle). Membership changes only change the ConfigMap, and backend credentials only their
//! Secrets' files, which the running gateway re-reads without dropping sessions.

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

use super::bridge_token::gateway_bridge_tokens_volume;
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
///   new pods. A new or dropped mount changes the pod's volumes anyway. A Secret that holds
///   only backend credentials (`SecretMount::reread`) adds its name only: the running gateway
///   re-reads those files, so its rotation reaches the pods (after the kubelet's sync, up to
///   about a minute) without a restart.
///
/// The gateway's bridge tokens Secret is not among `mounts`: it is always mounted, and the
/// gateway re-reads its files, so neither its keys nor its version roll the pods.
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
        let version = if m.reread { "reread" } else { m.version.as_deref().unwrap_or("") };
        text.push_str(&format!("\n# {kind} {} {version}", m.secret));
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
    // Always there, whatever the members: a stdio member joining or leaving changes only the
    // Secret's keys, which the running gateway re-reads.
    let (tokens_volume, tokens_mount) = gateway_bridge_tokens_volume(v);
    volumes.push(tokens_volume);
    volume_mounts.push(tokens_mount);
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
mod tests;
