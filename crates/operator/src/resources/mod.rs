//! Pure builders: custom resource spec in, desired Kubernetes objects out.
//!
//! Nothing here talks to the API server or reads a clock, so every builder is unit-tested and
//! snapshot-tested (`snapshots/`). The controllers (`crate::controller`) fetch the inputs, call
//! these builders and apply the results with server-side apply.
//!
//! - [`gateway_config`]: `VirtualMCPServer` + group members + auth configs -> [`GatewayConfig`]
//!   (secrets referenced by mounted file path, never copied) and the Secret mounts it needs.
//! - [`gateway`]: the gateway's ConfigMap, Deployment, Service, ServiceAccount and
//!   PodDisruptionBudget.
//! - [`mcp_server`]: an `MCPServer`'s Deployment and Service.
//! - [`bridge_token`]: the token Secret a `stdio` server's bridge and the gateway share.
//! - [`merge`]: the `podTemplateSpec` overlay merge.
//! - [`workload`]: installation-wide pod settings (security contexts, pull secrets).
//!
//! [`GatewayConfig`]: vmcp_types::config::GatewayConfig

pub mod bridge_token;
pub mod gateway;
pub mod gateway_config;
pub mod mcp_server;
pub mod merge;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Capabilities, SeccompProfile};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use sha2::{Digest, Sha256};

pub use gateway_config::{
    DefaultRedis, Defaults, Problem, ProblemKind, RenderInput, Rendered, gateway_config,
    render_gateway_config,
};
pub use workload::{PodDefaults, WorkloadDefaults};

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "vmcp-operator";
/// Port the gateway listens on (container and Service).
pub const GATEWAY_PORT: i32 = 4483;
/// Port of the gateway's `/metrics` (container only: the Service does not expose it).
pub const GATEWAY_METRICS_PORT: i32 = 9090;
/// Pod label naming the group a gateway serves (what an MCP server's NetworkPolicy admits).
pub const GROUP_LABEL: &str = "vmcp.dev/group";
/// Default port of an `MCPServer`'s Service.
pub const DEFAULT_SERVER_PORT: i32 = 8080;
/// Key of the rendered gateway configuration in its ConfigMap.
pub const CONFIG_KEY: &str = "config.yaml";
/// Folder the gateway's ConfigMap is mounted at.
pub const CONFIG_DIR: &str = "/etc/vmcp";
/// Folder under which each referenced Secret is mounted (`<dir>/<secret>/<key>`).
pub const SECRETS_DIR: &str = "/var/run/secrets/vmcp";
/// Where referenced ConfigMaps (a CA bundle) are mounted in the gateway pod.
pub const CONFIG_MAPS_DIR: &str = "/var/run/vmcp/configmaps";
/// Pod template annotation whose change rolls the gateway pods (see
/// [`gateway::rollout_checksum`]).
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "vmcp.dev/config-checksum";
/// Path of the gateway binary inside the gateway image.
pub const GATEWAY_BINARY: &str = "/usr/local/bin/vmcp-gateway";
/// Folder (an emptyDir) the bridge binary is copied into for stdio servers.
pub const BRIDGE_DIR: &str = "/vmcp-bin";
/// Value of `app.kubernetes.io/managed-by` on every object the operator creates.
pub const MANAGED_BY: &str = "vmcp-operator";

/// Why desired objects could not be built from a spec. Every variant names the field to fix.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The object lacks metadata the API server always sets (name, namespace, uid).
    #[error("{kind} has no metadata.{field}")]
    MissingMetadata {
        /// Kind of the object.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// `incomingAuth.type` is `oidc` but no issuer is given.
    #[error("spec.incomingAuth.oidc.issuer is required when incomingAuth.type is 'oidc'")]
    OidcIssuerMissing,
    /// `sessionStorage.provider` is `redis` but no address is given.
    #[error("spec.sessionStorage.address is required when provider is 'redis'")]
    RedisAddressMissing,
    /// `sessionStorage.ttl` is not a duration.
    #[error("spec.sessionStorage.ttl: '{0}' is not a duration like 30m or 1h30m")]
    InvalidTtl(String),
    /// A duration field is malformed or zero.
    #[error("{field}: '{value}' is not a duration like 30s, 2m or 1h30m")]
    InvalidDuration {
        /// The field, e.g. `spec.backendTimeout`.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// `sessionStorage.db` is out of range.
    #[error("spec.sessionStorage.db: {0} is out of range (0-255)")]
    InvalidDb(i32),
    /// A tool override's `annotations` is not an object.
    #[error("spec.aggregation.tools[{index}].overrides.{tool}.annotations must be an object")]
    AnnotationsNotObject {
        /// Index in `aggregation.tools`.
        index: usize,
        /// The overridden tool.
        tool: String,
    },
    /// The rendered configuration does not pass the gateway's own validation.
    #[error("the rendered gateway configuration is invalid: {}", list(.0))]
    InvalidConfig(Vec<vmcp_types::config::FieldError>),
    /// The configuration could not be serialized.
    #[error("cannot render the gateway configuration as YAML: {0}")]
    Yaml(#[from] serde_saphyr::ser_error::Error),
    /// `podTemplateSpec` does not merge into a valid pod template.
    #[error("spec.podTemplateSpec does not give a valid pod template after merging: {0}")]
    PodTemplate(String),
    /// A stdio `MCPServer` has no command for the bridge to run.
    #[error("spec.command is required for transport 'stdio' (the bridge runs it)")]
    StdioWithoutCommand,
    /// The object's name yields a child name the API server would reject.
    #[error(
        "metadata.name '{owner}' cannot be used: the {kind}'s Service would be named '{child}', \
         which {reason}; rename the {kind}"
    )]
    InvalidChildName {
        /// Kind of the object.
        kind: &'static str,
        /// Its name.
        owner: String,
        /// The Service name it implies.
        child: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Checks that `child` (derived from the name of `kind` `owner`) is a valid Service name: a
/// DNS-1035 label (at most 63 characters; lower-case letters, digits and `-`; starting with a
/// letter, ending with a letter or digit). Admission rejects such object names already; this
/// covers objects stored before those rules existed.
pub fn check_service_name(kind: &'static str, owner: &str, child: &str) -> Result<(), RenderError> {
    let reason = if child.is_empty() {
        Some("is empty")
    } else if child.len() > 63 {
        Some("is longer than 63 characters")
    } else if !child.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        Some("may contain only lower-case letters, digits and '-'")
    } else if !child.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("must start with a letter")
    } else if child.ends_with('-') {
        Some("must end with a letter or digit")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(RenderError::InvalidChildName {
            kind,
            owner: owner.to_owned(),
            child: child.to_owned(),
            reason,
        }),
    }
}

fn list(errors: &[vmcp_types::config::FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// What a [`SecretMount`] mounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum MountSource {
    /// A Secret, at `/var/run/secrets/vmcp/<name>/`.
    #[default]
    Secret,
    /// A ConfigMap (data that is not secret: a CA bundle), at `/var/run/vmcp/configmaps/<name>/`.
    ConfigMap,
}

impl MountSource {
    fn is_secret(&self) -> bool {
        *self == Self::Secret
    }
}

/// A Secret (or, with `source`, a ConfigMap) the gateway pod mounts at
/// `/var/run/secrets/vmcp/<secret>/`, projecting only the keys the configuration references.
/// The operator never reads the values.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct SecretMount {
    /// What is mounted (sorts Secrets first).
    #[serde(skip_serializing_if = "MountSource::is_secret")]
    pub source: MountSource,
    /// Name of the Secret (or ConfigMap; same namespace).
    pub secret: String,
    /// Keys referenced by the configuration.
    pub keys: BTreeSet<String>,
    /// The object's `resourceVersion`, when the controller has read it: part of the rollout
    /// checksum (unless `reread`), so that a rotated Secret rolls the gateway pods when the
    /// gateway reads its files only at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Only backend credentials are read from this mount, and the running gateway re-reads
    /// those files (a changed one rebuilds its backend in place): a new version needs no new
    /// pods, so it stays out of the rollout checksum (the name stays in).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reread: bool,
}

impl SecretMount {
    /// Folder the Secret (or ConfigMap) is mounted at.
    pub fn dir(&self) -> String {
        match self.source {
            MountSource::Secret => secret_dir(&self.secret),
            MountSource::ConfigMap => format!("{CONFIG_MAPS_DIR}/{}", self.secret),
        }
    }

    /// Name of the pod volume: `secret-<name>` (`configmap-<name>`), or a hash when the name is
    /// not a valid volume name (too long or containing dots).
    pub fn volume_name(&self) -> String {
        let prefix = match self.source {
            MountSource::Secret => "secret",
            MountSource::ConfigMap => "configmap",
        };
        let plain = format!("{prefix}-{}", self.secret);
        if plain.len() <= 63 && !plain.contains('.') {
            plain
        } else {
            format!("{prefix}-{}", &sha256_hex(self.secret.as_bytes())[..16])
        }
    }
}

/// Path of one ConfigMap key in the gateway pod.
pub fn config_map_file(config_map: &str, key: &str) -> String {
    format!("{CONFIG_MAPS_DIR}/{config_map}/{key}")
}

/// Folder a Secret is mounted at in the gateway pod.
pub fn secret_dir(secret: &str) -> String {
    format!("{SECRETS_DIR}/{secret}")
}

/// Path of one Secret key in the gateway pod.
pub fn secret_file(secret: &str, key: &str) -> String {
    format!("{SECRETS_DIR}/{secret}/{key}")
}

/// Lower-case hex sha256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The standard labels of a child object.
pub fn labels(app: &str, instance: &str, component: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(app, instance);
    l.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    l.insert("app.kubernetes.io/component".into(), component.into());
    l
}

/// The labels pods are selected by (a stable subset of [`labels`]: selectors are immutable).
pub fn selector_labels(app: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), app.into()),
        ("app.kubernetes.io/instance".into(), instance.into()),
    ])
}

/// The namespace of `obj`, which every vmcp resource has.
pub fn namespace_of<K: Resource>(obj: &K, kind: &'static str) -> Result<String, RenderError> {
    obj.meta().namespace.clone().ok_or(RenderError::MissingMetadata { kind, field: "namespace" })
}

/// A controller owner reference (`controller: true`, `blockOwnerDeletion: true`) to `owner`.
pub fn owner_reference<K: Resource<DynamicType = ()>>(
    owner: &K,
    kind: &'static str,
) -> Result<OwnerReference, RenderError> {
    if owner.meta().name.is_none() {
        return Err(RenderError::MissingMetadata { kind, field: "name" });
    }
    let mut r = owner
        .controller_owner_ref(&())
        .ok_or(RenderError::MissingMetadata { kind, field: "uid" })?;
    r.block_owner_deletion = Some(true);
    Ok(r)
}

/// Metadata of a child: name, namespace, labels and the owner reference.
pub fn child_meta<K: Resource<DynamicType = ()>>(
    owner: &K,
    kind: &'static str,
    name: String,
    labels: BTreeMap<String, String>,
) -> Result<ObjectMeta, RenderError> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(namespace_of(owner, kind)?),
        labels: Some(labels),
        owner_references: Some(vec![owner_reference(owner, kind)?]),
        ..ObjectMeta::default()
    })
}

/// `RuntimeDefault` seccomp profile.
pub(crate) fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }
}

/// Capabilities with everything dropped.
pub(crate) fn drop_all_capabilities() -> Capabilities {
    Capabilities { add: None, drop: Some(vec!["ALL".into()]) }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! The reference manifests (`tests/fixtures/k8s/`: OIDC, token exchange, Redis; the examples of
    //! an earlier release) as typed objects, with the metadata the API server adds.

    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::Secret;
    use serde::de::DeserializeOwned;
    use vmcp_types::crd::{
        MCPExternalAuthConfig, MCPGroup, MCPServer, MCPServerPhase, MCPServerStatus,
        VirtualMCPServer,
    };

    pub const NS: &str = "team-a";

    const SECRETS: &str = include_str!("../../tests/fixtures/k8s/00-secrets.yaml");
    const GROUP: &str = include_str!("../../tests/fixtures/k8s/10-group.yaml");
    const AUTH: &str = include_str!("../../tests/fixtures/k8s/20-auth-config.yaml");
    const SERVERS: &str = include_str!("../../tests/fixtures/k8s/30-mcpservers.yaml");
    const VMCP: &str = include_str!("../../tests/fixtures/k8s/40-virtualmcpserver.yaml");

    fn docs<K: DeserializeOwned + kube::Resource>(text: &str) -> Vec<K> {
        let mut out: Vec<K> = serde_saphyr::from_multiple(text).unwrap();
        for (i, o) in out.iter_mut().enumerate() {
            let m = o.meta_mut();
            m.namespace = Some(NS.into());
            let name = m.name.clone().unwrap();
            m.uid = Some(format!("00000000-0000-0000-0000-{:012}", name.len() * 100 + i));
            m.generation = Some(1);
        }
        out
    }

    pub fn secrets() -> Vec<Secret> {
        docs(SECRETS)
    }
    pub fn group() -> MCPGroup {
        docs(GROUP).remove(0)
    }
    pub fn auth_config() -> MCPExternalAuthConfig {
        docs(AUTH).remove(0)
    }
    /// The example servers; `github-tools` is running, `time` is still pending.
    pub fn servers() -> Vec<MCPServer> {
        let mut s: Vec<MCPServer> = docs(SERVERS);
        for srv in &mut s {
            if srv.metadata.name.as_deref() == Some("github-tools") {
                srv.status = Some(MCPServerStatus {
                    phase: Some(MCPServerPhase::Running),
                    ..Default::default()
                });
            }
        }
        s
    }
    pub fn server(name: &str) -> MCPServer {
        servers().into_iter().find(|s| s.metadata.name.as_deref() == Some(name)).unwrap()
    }
    pub fn vmcp() -> VirtualMCPServer {
        docs(VMCP).remove(0)
    }
    pub fn auth_configs() -> BTreeMap<String, MCPExternalAuthConfig> {
        let a = auth_config();
        BTreeMap::from([(a.metadata.name.clone().unwrap(), a)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_volume_names_are_valid_and_stable() {
        let short = SecretMount { secret: "vmcp-redis".into(), ..SecretMount::default() };
        assert_eq!(short.volume_name(), "secret-vmcp-redis");
        assert_eq!(short.dir(), "/var/run/secrets/vmcp/vmcp-redis");
        let dotted = SecretMount { secret: "tls.example.com".into(), ..SecretMount::default() };
        let v = dotted.volume_name();
        assert!(v.starts_with("secret-") && !v.contains('.') && v.len() <= 63, "{v}");
        assert_eq!(v, dotted.volume_name());
        let long = SecretMount { secret: "x".repeat(100), ..SecretMount::default() };
        assert!(long.volume_name().len() <= 63);
    }

    #[test]
    fn service_names_are_dns_1035_labels() {
        for ok in ["a", "time", "github-tools", "a1-b2", &"x".repeat(63)] {
            assert!(check_service_name("MCPServer", ok, ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("my.server", "only lower-case"),
            ("Time", "only lower-case"),
            ("1time", "start with a letter"),
            ("time-", "end with a letter"),
            ("", "empty"),
            (&"x".repeat(64), "longer than 63"),
        ] {
            let e = check_service_name("MCPServer", bad, bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("rename the MCPServer"), "{bad}: {e}");
        }
        let long = "g".repeat(59);
        let e = check_service_name("VirtualMCPServer", &long, &format!("{long}-vmcp"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("'{long}-vmcp'")), "{e}");
    }

    #[test]
    fn owner_reference_is_controller_and_needs_uid() {
        let vmcp = fixtures::vmcp();
        let r = owner_reference(&vmcp, "VirtualMCPServer").unwrap();
        assert_eq!(r.controller, Some(true));
        assert_eq!(r.kind, "VirtualMCPServer");
        assert_eq!(r.api_version, "vmcp.dev/v1alpha1");
        let mut no_uid = vmcp;
        no_uid.metadata.uid = None;
        assert!(matches!(
            owner_reference(&no_uid, "VirtualMCPServer"),
            Err(RenderError::MissingMetadata { field: "uid", .. })
        ));
    }
}
