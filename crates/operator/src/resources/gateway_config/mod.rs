//! `VirtualMCPServer` + group members + auth configs -> the gateway's [`GatewayConfig`].
//!
//! Secret values are never read or copied: every credential becomes a [`SecretSource`] with a
//! `file` under `/var/run/secrets/vmcp/<secret>/<key>`, and the Secret is listed in the
//! returned [`SecretMount`]s so the Deployment mounts it there (a CA bundle ConfigMap likewise,
//! under `/var/run/vmcp/configmaps/<name>/<key>`). The one exception is a stdio member's
//! bridge token: the controller copies it into the gateway's own bridge tokens Secret, which
//! the Deployment always mounts (see [`super::bridge_token`]), and the configuration names the
//! member's file there.
//!
//! A backend whose credential cannot be resolved (auth config missing or invalid, Secret known
//! to be missing, name unusable) is left out of the configuration and reported as a
//! [`Problem`] and as a `DiscoveredBackend` with status `error`: the gateway keeps serving the
//! other backends, and never talks to a backend without the credential it was configured with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use vmcp_types::config::{
    self as cfg, BackendConfig, BackendTransport, GatewayConfig, LogFormat, SecretSource,
};
use vmcp_types::crd::{
    ConfigMapKeyRef, DiscoveredBackend, MCPExternalAuthConfig, MCPServer, MCPServerEntry,
    MCPServerPhase, SecretKeyRef, SessionStorageProvider, VirtualMCPServer,
};

use super::bridge_token::bridge_token_ref;
use super::mcp_server::{server_transport_is_sse, server_url};
use super::{
    GATEWAY_METRICS_PORT, MountSource, RenderError, SecretMount, config_map_file, namespace_of,
    secret_file,
};

mod defaults;
mod outgoing;
mod remote;
mod sections;
#[cfg(test)]
mod tests;

pub use defaults::{DefaultRedis, Defaults};
pub use outgoing::{auth_secrets, external_type_name, referenced_auth_configs, validate_auth_spec};
use outgoing::{bridge_auth, outgoing_type_name, resolve_auth};
pub use sections::parse_duration;
use sections::{aggregation, duration, incoming, session_storage};

/// What kind of problem a [`Problem`] is; the controller maps kinds to conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ProblemKind {
    /// A credential could not be resolved: missing or invalid `MCPExternalAuthConfig`, or a
    /// missing Secret (condition `AuthConfigured`).
    Auth,
    /// A member cannot be a backend (condition `BackendsDiscovered`).
    Backend,
    /// An aggregation setting names a backend that is not configured; it was ignored.
    Aggregation,
}

/// A problem found while rendering that did not stop the rendering.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Which condition it affects.
    pub kind: ProblemKind,
    /// Human-readable, naming the object or field to fix.
    pub message: String,
}

/// Everything [`render_gateway_config`] reads.
#[derive(Clone, Copy, Debug)]
pub struct RenderInput<'a> {
    /// The gateway (with [`Defaults`] already applied).
    pub vmcp: &'a VirtualMCPServer,
    /// `MCPServer`s of the namespace; those whose `groupRef` names the group become backends.
    pub members: &'a [MCPServer],
    /// `MCPServerEntry`s (remote servers) of the namespace; those whose `groupRef` names the
    /// group become backends too.
    pub entries: &'a [MCPServerEntry],
    /// `MCPExternalAuthConfig`s of the namespace by name (at least the referenced ones).
    pub auth_configs: &'a BTreeMap<String, MCPExternalAuthConfig>,
    /// Secrets known not to exist; backends that need one are left out. For a stdio
    /// member's bridge token (`<server>-bridge-token`): its token is not in the gateway's
    /// bridge tokens Secret (the member stays `pending`).
    pub missing_secrets: &'a BTreeSet<String>,
}

/// The result of [`render_gateway_config`].
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// The gateway configuration.
    pub config: GatewayConfig,
    /// Secrets the gateway pod must mount, sorted by name.
    pub secret_mounts: Vec<SecretMount>,
    /// Every member, rendered or not, sorted by name.
    pub backends: Vec<DiscoveredBackend>,
    /// Problems that left a backend or a setting out.
    pub problems: Vec<Problem>,
}

/// The gateway configuration of `vmcp`: backends are the `group_members` whose `groupRef`
/// names `vmcp`'s group, sorted by name.
pub fn gateway_config(
    vmcp: &VirtualMCPServer,
    group_members: &[MCPServer],
    auth_configs: &BTreeMap<String, MCPExternalAuthConfig>,
) -> Result<(GatewayConfig, Vec<SecretMount>, Vec<DiscoveredBackend>), RenderError> {
    let none = BTreeSet::new();
    let r = render_gateway_config(&RenderInput {
        vmcp,
        members: group_members,
        entries: &[],
        auth_configs,
        missing_secrets: &none,
    })?;
    Ok((r.config, r.secret_mounts, r.backends))
}

/// Collects Secret (and ConfigMap) mounts while rendering: the keys of each, and whether any
/// of them is read only at the gateway's start.
#[derive(Default)]
struct Mounts(BTreeMap<(MountSource, String), (BTreeSet<String>, bool)>);

impl Mounts {
    fn add(&mut self, source: MountSource, name: &str, key: &str, read_at_start: bool) {
        let (keys, at_start) = self.0.entry((source, name.to_owned())).or_default();
        keys.insert(key.to_owned());
        *at_start |= read_at_start;
    }

    /// A secret file the gateway reads only at start (Redis password, CA bundle).
    fn file(&mut self, r: &SecretKeyRef) -> SecretSource {
        self.add(MountSource::Secret, &r.name, &r.key, true);
        SecretSource { env: None, file: Some(PathBuf::from(secret_file(&r.name, &r.key))) }
    }

    /// A backend credential's secret file, which the running gateway re-reads.
    fn backend_file(&mut self, r: &SecretKeyRef) -> SecretSource {
        self.add(MountSource::Secret, &r.name, &r.key, false);
        SecretSource { env: None, file: Some(PathBuf::from(secret_file(&r.name, &r.key))) }
    }

    fn config_map_file(&mut self, r: &ConfigMapKeyRef) -> PathBuf {
        self.add(MountSource::ConfigMap, &r.name, &r.key, true);
        PathBuf::from(config_map_file(&r.name, &r.key))
    }

    fn into_vec(self) -> Vec<SecretMount> {
        self.0
            .into_iter()
            .map(|((source, secret), (keys, at_start))| SecretMount {
                source,
                secret,
                keys,
                version: None,
                reread: !at_start,
            })
            .collect()
    }
}

/// Renders the configuration; see the module documentation for how problems are handled.
pub fn render_gateway_config(input: &RenderInput<'_>) -> Result<Rendered, RenderError> {
    let vmcp = input.vmcp;
    let ns = namespace_of(vmcp, "VirtualMCPServer")?;
    let spec = &vmcp.spec;
    let mut mounts = Mounts::default();
    let mut problems = Vec::new();

    let mut members: Vec<&MCPServer> = input
        .members
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter(|s| s.metadata.namespace.as_deref().is_none_or(|n| n == ns))
        .filter(|s| s.spec.group_ref.as_ref().is_some_and(|g| g.name == spec.group_ref.name))
        .collect();
    members.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    let backend_timeout = match &spec.backend_timeout {
        None => Duration::from_secs(30),
        Some(t) => duration("spec.backendTimeout", t)?,
    };
    let mut backends = Vec::new();
    let mut discovered = Vec::new();
    for server in members {
        let name = server.metadata.name.clone().unwrap_or_default();
        let url = server_url(server, &ns);
        let phase = server.status.as_ref().and_then(|s| s.phase);
        let mut entry = DiscoveredBackend {
            name: name.clone(),
            url: Some(url.clone()),
            status: Some(
                if phase == Some(MCPServerPhase::Running) { "ready" } else { "pending" }.into(),
            ),
            auth_type: None,
            message: None,
        };
        let name_conflict = server
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == crate::status::READY))
            .filter(|c| c.reason == "NameConflict");
        let outcome = if let Some(c) = name_conflict {
            // Its Service name belongs to another object: never send traffic (and backend
            // credentials) there.
            Err(Problem {
                kind: ProblemKind::Backend,
                message: format!("MCPServer '{name}' left out: {}", c.message),
            })
        } else if let Some(token) =
            bridge_token_ref(server).filter(|t| input.missing_secrets.contains(&t.name))
        {
            // Not an error: the server's own reconcile creates it (moments after the server).
            entry.status = Some("pending".into());
            entry.message = Some(format!(
                "waiting for the bridge token Secret '{}' of stdio MCPServer '{name}'",
                token.name
            ));
            discovered.push(entry);
            continue;
        } else if is_valid_backend_name(&name) {
            match bridge_token_ref(server) {
                Some(_) => bridge_auth(&name),
                None => resolve_auth(
                    input,
                    server.spec.external_auth_config_ref.as_ref(),
                    &name,
                    &mut mounts,
                ),
            }
        } else {
            Err(Problem {
                kind: ProblemKind::Backend,
                message: format!(
                    "MCPServer '{name}': the name cannot be a backend name (use 1-63 letters, \
                     digits, '-' or '_')"
                ),
            })
        };
        match outcome {
            Ok(auth) => {
                entry.auth_type = Some(outgoing_type_name(auth.auth_type).into());
                if phase == Some(MCPServerPhase::Failed) {
                    // Still configured (its Service may serve an older version), but reported.
                    let why = server
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == crate::status::READY))
                        .map(|c| c.message.clone())
                        .unwrap_or_default();
                    let message = format!("MCPServer '{name}' failed: {why}");
                    entry.status = Some("error".into());
                    entry.message = Some(message.clone());
                    problems.push(Problem { kind: ProblemKind::Backend, message });
                }
                backends.push(BackendConfig {
                    name,
                    url,
                    transport: if server_transport_is_sse(server) {
                        BackendTransport::Sse
                    } else {
                        BackendTransport::StreamableHttp
                    },
                    timeout: backend_timeout,
                    auth,
                });
            }
            Err(p) => {
                entry.status = Some("error".into());
                entry.message = Some(p.message.clone());
                problems.push(p);
            }
        }
        discovered.push(entry);
    }

    let (remote, remote_discovered) =
        remote::remote_backends(input, &ns, backend_timeout, &mut mounts, &mut problems);
    backends.extend(remote);
    discovered.extend(remote_discovered);
    backends.sort_by(|a, b| a.name.cmp(&b.name));
    discovered.sort_by(|a, b| a.name.cmp(&b.name));

    let names: BTreeSet<&str> = backends.iter().map(|b| b.name.as_str()).collect();
    let aggregation = aggregation(vmcp, &names, &mut problems)?;
    let (incoming_auth, resource_url) = incoming(vmcp)?;
    let session_storage = session_storage(spec.session_storage.as_ref(), &mut mounts)?;
    let redis_secret = spec
        .session_storage
        .as_ref()
        .filter(|s| s.provider == SessionStorageProvider::Redis)
        .and_then(|s| s.password_ref.as_ref());
    let mut ca_files: Vec<PathBuf> =
        spec.ca_bundle_ref.iter().filter_map(|r| mounts.file(r).file).collect();
    ca_files.extend(spec.ca_bundle_config_map_ref.iter().map(|r| mounts.config_map_file(r)));
    let referenced = [
        (redis_secret, "spec.sessionStorage.passwordRef"),
        (spec.ca_bundle_ref.as_ref(), "spec.caBundleRef"),
    ];
    for (r, field) in referenced {
        if let Some(r) = r.filter(|r| input.missing_secrets.contains(&r.name)) {
            problems.push(Problem {
                kind: ProblemKind::Auth,
                message: format!(
                    "Secret '{}' (key '{}') referenced by {field} not found",
                    r.name, r.key
                ),
            });
        }
    }

    let mut config = GatewayConfig {
        listen: cfg::DEFAULT_LISTEN.to_owned(),
        resource_url,
        incoming_auth,
        backends,
        aggregation,
        session_storage,
        telemetry: cfg::TelemetryConfig {
            log_format: LogFormat::Json,
            // Its own port, which the Service does not expose.
            metrics_listen: Some(format!("0.0.0.0:{GATEWAY_METRICS_PORT}")),
            ..Default::default()
        },
        ..GatewayConfig::default()
    };
    config.http.allowed_origins.clone_from(&spec.allowed_origins);
    config.outbound.allowed_token_urls.clone_from(&spec.allowed_token_urls);
    config.outbound.ca_files = ca_files;
    let errors = config.validate();
    if !errors.is_empty() {
        return Err(RenderError::InvalidConfig(errors));
    }
    Ok(Rendered { config, secret_mounts: mounts.into_vec(), backends: discovered, problems })
}

/// Is `name` usable as a gateway backend name (letters, digits, `-`, `_`; 1-63)?
pub fn is_valid_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
