//! `VirtualMCPServer` + group members + auth configs -> the gateway's [`GatewayConfig`].
//!
//! Secret values are never read or copied: every credential becomes a [`SecretSource`] with a
//! `file` under `/var/run/secrets/vmcp/<secret>/<key>`, and the Secret is listed in the
//! returned [`SecretMount`]s so the Deployment mounts it there.
//!
//! A backend whose credential cannot be resolved (auth config missing or invalid, Secret known
//! to be missing, name unusable) is left out of the configuration and reported as a
//! [`Problem`] and as a `DiscoveredBackend` with status `error`: the gateway keeps serving the
//! other backends, and never talks to a backend without the credential it was configured with.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use vmcp_types::config::{
    self as cfg, AggregationConfig, BackendConfig, BackendToolsConfig, BackendTransport,
    BearerTokenAuth, GatewayConfig, HeaderInjectionAuth, IncomingAuthConfig, LogFormat,
    OutgoingAuthConfig, OutgoingAuthType, RedisConfig, SecretSource, SessionStorageConfig,
    TokenExchangeAuth, ToolOverrideConfig,
};
use vmcp_types::crd::{
    BackendAuth, DiscoveredBackend, ExternalAuthType, IncomingAuthType, MCPExternalAuthConfig,
    MCPExternalAuthConfigSpec, MCPServer, MCPServerPhase, OutgoingAuthSource, SecretKeyRef,
    SessionStorage, SessionStorageProvider, TokenClientAuthMethod, VirtualMCPServer,
};

use super::mcp_server::{server_transport_is_sse, server_url};
use super::{RenderError, SecretMount, namespace_of, secret_file};

/// Operator-wide defaults applied to a `VirtualMCPServer` before rendering.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    /// Redis used for session storage by every `VirtualMCPServer` that does not set
    /// `spec.sessionStorage` at all (an explicit `provider: memory` is kept).
    pub redis: Option<DefaultRedis>,
}

/// The operator-wide default Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultRedis {
    /// `host:port` or a Redis URL.
    pub address: String,
    /// Key prefix; each gateway gets `<keyPrefix><namespace>:<name>:` under it.
    pub key_prefix: String,
}

impl Defaults {
    /// `vmcp` with these defaults applied (borrowed unchanged when none applies).
    pub fn apply<'a>(&self, vmcp: &'a VirtualMCPServer) -> Cow<'a, VirtualMCPServer> {
        match (&self.redis, &vmcp.spec.session_storage) {
            (Some(r), None) => {
                let mut v = vmcp.clone();
                let ns = vmcp.metadata.namespace.as_deref().unwrap_or_default();
                let name = vmcp.metadata.name.as_deref().unwrap_or_default();
                v.spec.session_storage = Some(SessionStorage {
                    provider: SessionStorageProvider::Redis,
                    address: Some(r.address.clone()),
                    key_prefix: Some(format!("{}{ns}:{name}:", r.key_prefix)),
                    ..SessionStorage::default()
                });
                Cow::Owned(v)
            }
            _ => Cow::Borrowed(vmcp),
        }
    }
}

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
    /// `MCPExternalAuthConfig`s of the namespace by name (at least the referenced ones).
    pub auth_configs: &'a BTreeMap<String, MCPExternalAuthConfig>,
    /// Secrets known not to exist; backends that need one are left out.
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
        auth_configs,
        missing_secrets: &none,
    })?;
    Ok((r.config, r.secret_mounts, r.backends))
}

/// Names of the `MCPExternalAuthConfig`s `vmcp` may use with these members (the outgoing
/// default, the inline map, and with `discovered` each member's reference).
pub fn referenced_auth_configs(vmcp: &VirtualMCPServer, members: &[MCPServer]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let outgoing = vmcp.spec.outgoing_auth.clone().unwrap_or_default();
    if let Some(r) = outgoing.default.as_ref().and_then(|d| d.external_auth_config_ref.as_ref()) {
        out.insert(r.name.clone());
    }
    match outgoing.source {
        OutgoingAuthSource::Inline => {
            out.extend(
                outgoing
                    .backends
                    .values()
                    .filter_map(|b| b.external_auth_config_ref.as_ref())
                    .map(|r| r.name.clone()),
            );
        }
        OutgoingAuthSource::Discovered => {
            out.extend(
                members
                    .iter()
                    .filter_map(|m| m.spec.external_auth_config_ref.as_ref())
                    .map(|r| r.name.clone()),
            );
        }
    }
    out
}

/// Collects Secret mounts while rendering.
#[derive(Default)]
struct Mounts(BTreeMap<String, BTreeSet<String>>);

impl Mounts {
    fn file(&mut self, r: &SecretKeyRef) -> SecretSource {
        self.0.entry(r.name.clone()).or_default().insert(r.key.clone());
        SecretSource { env: None, file: Some(PathBuf::from(secret_file(&r.name, &r.key))) }
    }

    fn into_vec(self) -> Vec<SecretMount> {
        self.0
            .into_iter()
            .map(|(secret, keys)| SecretMount { secret, keys, version: None })
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
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .filter(|c| c.reason == "NameConflict");
        let outcome = if let Some(c) = name_conflict {
            // Its Service name belongs to another object: never send traffic (and backend
            // credentials) there.
            Err(Problem {
                kind: ProblemKind::Backend,
                message: format!("MCPServer '{name}' left out: {}", c.message),
            })
        } else if is_valid_backend_name(&name) {
            resolve_auth(input, server, &name, &mut mounts)
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
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
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

    let names: BTreeSet<&str> = backends.iter().map(|b| b.name.as_str()).collect();
    let aggregation = aggregation(vmcp, &names, &mut problems)?;
    let (incoming_auth, resource_url) = incoming(vmcp)?;
    let session_storage = session_storage(spec.session_storage.as_ref(), &mut mounts)?;
    let redis_secret = spec
        .session_storage
        .as_ref()
        .filter(|s| s.provider == SessionStorageProvider::Redis)
        .and_then(|s| s.password_ref.as_ref());
    if let Some(r) = redis_secret.filter(|r| input.missing_secrets.contains(&r.name)) {
        problems.push(Problem {
            kind: ProblemKind::Auth,
            message: format!(
                "Secret '{}' (key '{}') referenced by spec.sessionStorage.passwordRef not found",
                r.name, r.key
            ),
        });
    }

    let mut config = GatewayConfig {
        listen: cfg::DEFAULT_LISTEN.to_owned(),
        resource_url,
        incoming_auth,
        backends,
        aggregation,
        session_storage,
        telemetry: cfg::TelemetryConfig { log_format: LogFormat::Json, ..Default::default() },
        ..GatewayConfig::default()
    };
    config.http.allowed_origins.clone_from(&spec.allowed_origins);
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

fn outgoing_type_name(t: OutgoingAuthType) -> &'static str {
    match t {
        OutgoingAuthType::Unauthenticated => "unauthenticated",
        OutgoingAuthType::HeaderInjection => "headerInjection",
        OutgoingAuthType::BearerToken => "bearerToken",
        OutgoingAuthType::TokenExchange => "tokenExchange",
    }
}

/// The camelCase name of an auth type, as written in manifests.
pub fn external_type_name(t: ExternalAuthType) -> &'static str {
    match t {
        ExternalAuthType::Unauthenticated => "unauthenticated",
        ExternalAuthType::HeaderInjection => "headerInjection",
        ExternalAuthType::BearerToken => "bearerToken",
        ExternalAuthType::TokenExchange => "tokenExchange",
    }
}

fn resolve_auth(
    input: &RenderInput<'_>,
    server: &MCPServer,
    name: &str,
    mounts: &mut Mounts,
) -> Result<OutgoingAuthConfig, Problem> {
    let outgoing = input.vmcp.spec.outgoing_auth.clone().unwrap_or_default();
    // (expected type, config reference). With `discovered`, a server's own reference carries
    // no type: the referenced config decides.
    let own = match outgoing.source {
        OutgoingAuthSource::Discovered => {
            server.spec.external_auth_config_ref.clone().map(|r| (None, Some(r)))
        }
        OutgoingAuthSource::Inline => outgoing
            .backends
            .get(name)
            .map(|b| (Some(b.auth_type), b.external_auth_config_ref.clone())),
    };
    let (expected, reference) = own.unwrap_or_else(|| {
        let d: BackendAuth = outgoing.default.clone().unwrap_or_default();
        (Some(d.auth_type), d.external_auth_config_ref)
    });
    if expected == Some(ExternalAuthType::Unauthenticated) {
        return Ok(OutgoingAuthConfig::default());
    }
    let Some(r) = reference else {
        return Err(auth_problem(format!(
            "backend '{name}': outgoing auth type '{}' needs externalAuthConfigRef",
            external_type_name(expected.unwrap_or_default())
        )));
    };
    let Some(ac) = input.auth_configs.get(&r.name) else {
        return Err(auth_problem(format!(
            "MCPExternalAuthConfig '{}' (used by backend '{name}') not found",
            r.name
        )));
    };
    if let Some(t) = expected
        && t != ac.spec.auth_type
    {
        return Err(auth_problem(format!(
            "backend '{name}': outgoingAuth says type '{}' but MCPExternalAuthConfig '{}' has \
             type '{}'",
            external_type_name(t),
            r.name,
            external_type_name(ac.spec.auth_type)
        )));
    }
    if let Err(why) = validate_auth_spec(&ac.spec) {
        return Err(auth_problem(format!("MCPExternalAuthConfig '{}' is invalid: {why}", r.name)));
    }
    for s in auth_secrets(&ac.spec) {
        if input.missing_secrets.contains(&s.name) {
            return Err(auth_problem(format!(
                "Secret '{}' (key '{}') referenced by MCPExternalAuthConfig '{}' not found",
                s.name, s.key, r.name
            )));
        }
    }
    Ok(outgoing_from_spec(&ac.spec, mounts))
}

fn auth_problem(message: String) -> Problem {
    Problem { kind: ProblemKind::Auth, message }
}

/// The Secret keys an auth config references.
pub fn auth_secrets(spec: &MCPExternalAuthConfigSpec) -> Vec<&SecretKeyRef> {
    match spec.auth_type {
        ExternalAuthType::Unauthenticated => vec![],
        ExternalAuthType::TokenExchange => spec
            .token_exchange
            .as_ref()
            .and_then(|t| t.client_secret_ref.as_ref())
            .into_iter()
            .collect(),
        ExternalAuthType::HeaderInjection => {
            spec.header_injection.as_ref().map(|h| &h.value_secret_ref).into_iter().collect()
        }
        ExternalAuthType::BearerToken => {
            spec.bearer_token.as_ref().map(|b| &b.token_secret_ref).into_iter().collect()
        }
    }
}

/// Checks what admission (CEL) cannot: the sub-object matches the type, required values are
/// set. The message names the field.
pub fn validate_auth_spec(spec: &MCPExternalAuthConfigSpec) -> Result<(), String> {
    let set = [
        (ExternalAuthType::TokenExchange, spec.token_exchange.is_some(), "tokenExchange"),
        (ExternalAuthType::HeaderInjection, spec.header_injection.is_some(), "headerInjection"),
        (ExternalAuthType::BearerToken, spec.bearer_token.is_some(), "bearerToken"),
    ];
    for (t, present, field) in set {
        if (spec.auth_type == t) != present {
            return Err(format!(
                "spec.{field} must be set when (and only when) spec.type is '{field}'"
            ));
        }
    }
    let secret_ok = |r: &SecretKeyRef, field: &str| {
        if r.name.is_empty() || r.key.is_empty() {
            Err(format!("{field}: name and key must not be empty"))
        } else {
            Ok(())
        }
    };
    if let Some(t) = &spec.token_exchange {
        if !(t.token_url.starts_with("https://") || t.token_url.starts_with("http://")) {
            return Err(format!(
                "spec.tokenExchange.tokenUrl: '{}' is not an http(s) URL",
                t.token_url
            ));
        }
        if t.client_id.is_empty() {
            return Err("spec.tokenExchange.clientId must not be empty".into());
        }
        match &t.client_secret_ref {
            None => return Err("spec.tokenExchange.clientSecretRef is required".into()),
            Some(r) => secret_ok(r, "spec.tokenExchange.clientSecretRef")?,
        }
    }
    if let Some(h) = &spec.header_injection {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if h.header_name.is_empty() || !h.header_name.chars().all(token) {
            return Err(format!(
                "spec.headerInjection.headerName: '{}' is not a valid HTTP header name",
                h.header_name
            ));
        }
        secret_ok(&h.value_secret_ref, "spec.headerInjection.valueSecretRef")?;
    }
    if let Some(b) = &spec.bearer_token {
        secret_ok(&b.token_secret_ref, "spec.bearerToken.tokenSecretRef")?;
    }
    Ok(())
}

/// A validated auth config spec as the gateway's outgoing auth (secrets as mounted files).
fn outgoing_from_spec(spec: &MCPExternalAuthConfigSpec, mounts: &mut Mounts) -> OutgoingAuthConfig {
    let mut out = OutgoingAuthConfig::default();
    match spec.auth_type {
        ExternalAuthType::Unauthenticated => {}
        ExternalAuthType::TokenExchange => {
            if let Some(t) = &spec.token_exchange {
                out.auth_type = OutgoingAuthType::TokenExchange;
                out.token_exchange = Some(TokenExchangeAuth {
                    token_url: t.token_url.clone(),
                    client_id: t.client_id.clone(),
                    client_secret: t
                        .client_secret_ref
                        .as_ref()
                        .map(|r| mounts.file(r))
                        .unwrap_or_default(),
                    client_auth_method: match t.client_auth_method.unwrap_or_default() {
                        TokenClientAuthMethod::ClientSecretBasic => {
                            cfg::ClientAuthMethod::ClientSecretBasic
                        }
                        TokenClientAuthMethod::ClientSecretPost => {
                            cfg::ClientAuthMethod::ClientSecretPost
                        }
                    },
                    audience: t.audience.clone(),
                    resource: t.resource.clone(),
                    scopes: t.scopes.clone(),
                    subject_token_type: t
                        .subject_token_type
                        .clone()
                        .unwrap_or_else(|| cfg::ACCESS_TOKEN_TYPE.to_owned()),
                    requested_token_type: t.requested_token_type.clone(),
                    external_token_header_name: t.external_token_header_name.clone(),
                });
            }
        }
        ExternalAuthType::HeaderInjection => {
            if let Some(h) = &spec.header_injection {
                out.auth_type = OutgoingAuthType::HeaderInjection;
                out.header_injection = Some(HeaderInjectionAuth {
                    header_name: h.header_name.clone(),
                    value: mounts.file(&h.value_secret_ref),
                });
            }
        }
        ExternalAuthType::BearerToken => {
            if let Some(b) = &spec.bearer_token {
                out.auth_type = OutgoingAuthType::BearerToken;
                out.bearer_token =
                    Some(BearerTokenAuth { token: mounts.file(&b.token_secret_ref) });
            }
        }
    }
    out
}

fn aggregation(
    vmcp: &VirtualMCPServer,
    names: &BTreeSet<&str>,
    problems: &mut Vec<Problem>,
) -> Result<AggregationConfig, RenderError> {
    let Some(a) = &vmcp.spec.aggregation else { return Ok(AggregationConfig::default()) };
    let mut out = AggregationConfig {
        conflict_resolution: match a.conflict_resolution {
            vmcp_types::crd::ConflictResolution::Prefix => cfg::ConflictResolution::Prefix,
            vmcp_types::crd::ConflictResolution::Priority => cfg::ConflictResolution::Priority,
            vmcp_types::crd::ConflictResolution::Manual => cfg::ConflictResolution::Manual,
        },
        prefix_format: a
            .prefix_format
            .clone()
            .unwrap_or_else(|| cfg::DEFAULT_PREFIX_FORMAT.to_owned()),
        priority_order: Vec::new(),
        tools: Vec::new(),
    };
    for (i, n) in a.priority_order.iter().enumerate() {
        if names.contains(n.as_str()) {
            out.priority_order.push(n.clone());
        } else {
            problems.push(Problem {
                kind: ProblemKind::Aggregation,
                message: format!(
                    "spec.aggregation.priorityOrder[{i}]: backend '{n}' is not a configured \
                     backend (ignored)"
                ),
            });
        }
    }
    for (i, t) in a.tools.iter().enumerate() {
        if !names.contains(t.workload.as_str()) {
            problems.push(Problem {
                kind: ProblemKind::Aggregation,
                message: format!(
                    "spec.aggregation.tools[{i}]: backend '{}' is not a configured backend (ignored)",
                    t.workload
                ),
            });
            continue;
        }
        let mut overrides = BTreeMap::new();
        for (tool, o) in &t.overrides {
            let annotations = match &o.annotations {
                None => None,
                Some(serde_json::Value::Object(m)) => Some(m.clone()),
                Some(_) => {
                    return Err(RenderError::AnnotationsNotObject { index: i, tool: tool.clone() });
                }
            };
            overrides.insert(
                tool.clone(),
                ToolOverrideConfig {
                    name: o.name.clone(),
                    description: o.description.clone(),
                    annotations,
                },
            );
        }
        out.tools.push(BackendToolsConfig {
            backend: t.workload.clone(),
            filter: t.filter.clone(),
            overrides,
        });
    }
    Ok(out)
}

fn incoming(vmcp: &VirtualMCPServer) -> Result<(IncomingAuthConfig, Option<String>), RenderError> {
    let Some(a) = &vmcp.spec.incoming_auth else {
        return Ok((IncomingAuthConfig::default(), None));
    };
    match a.auth_type {
        IncomingAuthType::Anonymous => Ok((IncomingAuthConfig::default(), None)),
        IncomingAuthType::Oidc => {
            let o = a.oidc.clone().unwrap_or_default();
            let issuer =
                o.issuer.filter(|i| !i.is_empty()).ok_or(RenderError::OidcIssuerMissing)?;
            // Start from the documented defaults (leeway, JWKS refresh) of the config schema.
            let defaults: cfg::OidcConfig =
                serde_json::from_value(serde_json::json!({ "issuer": issuer }))
                    .map_err(|_| RenderError::OidcIssuerMissing)?;
            let oidc = cfg::OidcConfig {
                audience: o.audience,
                jwks_url: o.jwks_url,
                client_id: o.client_id,
                scopes: o.scopes,
                algorithms: o.algorithms,
                leeway: match &o.leeway {
                    Some(l) => duration("spec.incomingAuth.oidc.leeway", l)?,
                    None => defaults.leeway,
                },
                jwks_refresh_interval: match &o.jwks_refresh_interval {
                    Some(j) => duration("spec.incomingAuth.oidc.jwksRefreshInterval", j)?,
                    None => defaults.jwks_refresh_interval,
                },
                ..defaults
            };
            // The gateway needs an absolute resource URL for its RFC 9728 metadata and
            // `WWW-Authenticate` (without one it exits at start, and its pods crash-loop):
            // with only `audience` set, it is the gateway's in-cluster URL.
            let ns = vmcp.metadata.namespace.as_deref().unwrap_or_default();
            let resource_url = o
                .resource_url
                .or_else(|| oidc.audience.is_some().then(|| super::gateway::gateway_url(vmcp, ns)));
            Ok((
                IncomingAuthConfig { auth_type: cfg::IncomingAuthType::Oidc, oidc: Some(oidc) },
                resource_url,
            ))
        }
    }
}

fn session_storage(
    s: Option<&SessionStorage>,
    mounts: &mut Mounts,
) -> Result<SessionStorageConfig, RenderError> {
    let mut out = SessionStorageConfig::default();
    let Some(s) = s else { return Ok(out) };
    if let Some(ttl) = &s.ttl {
        out.ttl = parse_duration(ttl).ok_or_else(|| RenderError::InvalidTtl(ttl.clone()))?;
    }
    if s.provider == SessionStorageProvider::Redis {
        let address =
            s.address.clone().filter(|a| !a.is_empty()).ok_or(RenderError::RedisAddressMissing)?;
        let url = if address.contains("://") { address } else { format!("redis://{address}") };
        let db = match s.db {
            None => 0,
            Some(d) => u8::try_from(d).map_err(|_| RenderError::InvalidDb(d))?,
        };
        out.provider = cfg::SessionStorageProvider::Redis;
        out.redis = Some(RedisConfig {
            url,
            db,
            password: s.password_ref.as_ref().map(|r| mounts.file(r)),
            key_prefix: s.key_prefix.clone().unwrap_or_else(|| cfg::DEFAULT_KEY_PREFIX.to_owned()),
        });
    }
    Ok(out)
}

/// `text` (a duration field of the spec) parsed, or an error naming `field`.
fn duration(field: &'static str, text: &str) -> Result<Duration, RenderError> {
    parse_duration(text)
        .ok_or_else(|| RenderError::InvalidDuration { field, value: text.to_owned() })
}

/// Parses `30m`, `1h30m`, `500ms`, `45s` (the CRD's `ttl` pattern). `None` if malformed or 0.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total = total.checked_add(unit.checked_mul(u32::try_from(n).ok()?)?)?;
    }
    (!total.is_zero()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;
    use vmcp_types::crd::{
        BearerTokenConfig, HeaderInjectionConfig, LocalRef, MCPExternalAuthConfigSpec,
        OutgoingAuth, TokenExchangeConfig,
    };

    fn render_example() -> Rendered {
        let vmcp = fixtures::vmcp();
        let servers = fixtures::servers();
        let auth = fixtures::auth_configs();
        render_gateway_config(&RenderInput {
            vmcp: &vmcp,
            members: &servers,
            auth_configs: &auth,
            missing_secrets: &BTreeSet::new(),
        })
        .unwrap()
    }

    #[test]
    fn example_config_snapshot() {
        let r = render_example();
        insta::assert_snapshot!("example_config_yaml", serde_saphyr::to_string(&r.config).unwrap());
        insta::assert_yaml_snapshot!("example_secret_mounts", r.secret_mounts);
        insta::assert_yaml_snapshot!("example_discovered_backends", r.backends);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    #[test]
    fn rendered_yaml_loads_in_the_gateway() {
        let r = render_example();
        let yaml = serde_saphyr::to_string(&r.config).unwrap();
        let loaded = vmcp_types::config::from_yaml_str(&yaml).unwrap();
        assert_eq!(loaded, r.config);
    }

    #[test]
    fn secret_values_never_appear() {
        let r = render_example();
        let yaml = serde_saphyr::to_string(&r.config).unwrap();
        for secret in fixtures::secrets() {
            for value in secret.string_data.unwrap_or_default().values() {
                assert!(!yaml.contains(value.as_str()), "secret value {value:?} in config");
            }
        }
        assert!(!yaml.contains("env:"), "secrets come from mounted files, not env");
    }

    #[test]
    fn backends_are_group_members_sorted_with_urls() {
        let r = render_example();
        let names: Vec<_> = r.config.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["github-tools", "time"]);
        assert_eq!(
            r.config.backends[0].url,
            "http://github-tools.team-a.svc.cluster.local:8080/mcp"
        );
        // stdio is bridged to streamable HTTP.
        assert_eq!(r.config.backends[1].url, "http://time.team-a.svc.cluster.local:8080/mcp");
        assert_eq!(r.config.backends[1].transport, BackendTransport::StreamableHttp);
        assert_eq!(r.config.listen, "0.0.0.0:4483");
    }

    #[test]
    fn other_groups_and_sse_transport() {
        let vmcp = fixtures::vmcp();
        let mut servers = fixtures::servers();
        servers[1].spec.group_ref = Some(LocalRef { name: "other".into() });
        servers[0].spec.transport = vmcp_types::crd::McpTransport::Sse;
        servers[0].spec.port = Some(9000);
        let (config, _, discovered) =
            gateway_config(&vmcp, &servers, &fixtures::auth_configs()).unwrap();
        assert_eq!(config.backends.len(), 1);
        assert_eq!(discovered.len(), 1);
        assert_eq!(config.backends[0].url, "http://github-tools.team-a.svc.cluster.local:9000/sse");
        assert_eq!(config.backends[0].transport, BackendTransport::Sse);
    }

    #[test]
    fn token_exchange_mapping() {
        let r = render_example();
        let te = r.config.backends[0].auth.token_exchange.as_ref().unwrap();
        assert_eq!(r.config.backends[0].auth.auth_type, OutgoingAuthType::TokenExchange);
        assert_eq!(
            te.token_url,
            "https://keycloak.example.com/realms/vmcp/protocol/openid-connect/token"
        );
        assert_eq!(te.client_id, "vmcp-gateway");
        assert_eq!(
            te.client_secret,
            SecretSource {
                env: None,
                file: Some("/var/run/secrets/vmcp/vmcp-gateway-oidc-client/client-secret".into())
            }
        );
        assert_eq!(te.audience.as_deref(), Some("backend-a"));
        assert_eq!(te.scopes, ["openid"]);
        assert_eq!(te.subject_token_type, cfg::ACCESS_TOKEN_TYPE);
        assert_eq!(te.external_token_header_name, None);
        // The server without a reference is unauthenticated.
        assert_eq!(r.config.backends[1].auth, OutgoingAuthConfig::default());
    }

    #[test]
    fn secret_mounts_and_paths() {
        let r = render_example();
        let mounts: Vec<(String, Vec<String>)> = r
            .secret_mounts
            .iter()
            .map(|m| (m.secret.clone(), m.keys.iter().cloned().collect()))
            .collect();
        assert_eq!(
            mounts,
            [
                ("vmcp-gateway-oidc-client".to_owned(), vec!["client-secret".to_owned()]),
                ("vmcp-redis".to_owned(), vec!["password".to_owned()]),
            ]
        );
        let redis = r.config.session_storage.redis.as_ref().unwrap();
        assert_eq!(redis.url, "redis://redis.vmcp-system.svc:6379");
        assert_eq!(redis.key_prefix, "vmcp:engineering:");
        assert_eq!(
            redis.password.as_ref().unwrap().file.as_deref(),
            Some(std::path::Path::new("/var/run/secrets/vmcp/vmcp-redis/password"))
        );
        assert_eq!(r.config.session_storage.ttl, Duration::from_secs(1800));
    }

    #[test]
    fn oidc_mapping() {
        let r = render_example();
        assert_eq!(r.config.resource_url.as_deref(), Some("https://mcp.example.com/mcp"));
        let o = r.config.incoming_auth.oidc.as_ref().unwrap();
        assert_eq!(o.issuer, "https://keycloak.example.com/realms/vmcp");
        assert_eq!(o.audience.as_deref(), Some("vmcp-gateway"));
        assert_eq!(o.client_id.as_deref(), Some("vmcp-gateway"));
        assert_eq!(o.leeway, Duration::from_secs(30));
    }

    fn auth_config(name: &str, spec: MCPExternalAuthConfigSpec) -> MCPExternalAuthConfig {
        let mut a = MCPExternalAuthConfig::new(name, spec);
        a.metadata.namespace = Some(fixtures::NS.into());
        a
    }

    #[test]
    fn inline_header_injection_and_bearer_token() {
        let mut vmcp = fixtures::vmcp();
        vmcp.spec.outgoing_auth = Some(OutgoingAuth {
            source: OutgoingAuthSource::Inline,
            default: Some(BackendAuth {
                auth_type: ExternalAuthType::BearerToken,
                external_auth_config_ref: Some(LocalRef { name: "bearer".into() }),
            }),
            backends: BTreeMap::from([(
                "github-tools".to_owned(),
                BackendAuth {
                    auth_type: ExternalAuthType::HeaderInjection,
                    external_auth_config_ref: Some(LocalRef { name: "header".into() }),
                },
            )]),
        });
        let configs = BTreeMap::from([
            (
                "header".to_owned(),
                auth_config(
                    "header",
                    MCPExternalAuthConfigSpec {
                        auth_type: ExternalAuthType::HeaderInjection,
                        header_injection: Some(HeaderInjectionConfig {
                            header_name: "X-API-Key".into(),
                            value_secret_ref: SecretKeyRef { name: "api".into(), key: "k".into() },
                        }),
                        ..Default::default()
                    },
                ),
            ),
            (
                "bearer".to_owned(),
                auth_config(
                    "bearer",
                    MCPExternalAuthConfigSpec {
                        auth_type: ExternalAuthType::BearerToken,
                        bearer_token: Some(BearerTokenConfig {
                            token_secret_ref: SecretKeyRef { name: "tok".into(), key: "t".into() },
                        }),
                        ..Default::default()
                    },
                ),
            ),
        ]);
        let (config, mounts, discovered) =
            gateway_config(&vmcp, &fixtures::servers(), &configs).unwrap();
        let h = config.backends[0].auth.header_injection.as_ref().unwrap();
        assert_eq!(h.header_name, "X-API-Key");
        assert_eq!(
            h.value.file.as_deref(),
            Some(std::path::Path::new("/var/run/secrets/vmcp/api/k"))
        );
        let b = config.backends[1].auth.bearer_token.as_ref().unwrap();
        assert_eq!(
            b.token.file.as_deref(),
            Some(std::path::Path::new("/var/run/secrets/vmcp/tok/t"))
        );
        let secrets: Vec<_> = mounts.iter().map(|m| m.secret.as_str()).collect();
        assert_eq!(secrets, ["api", "tok", "vmcp-redis"]);
        assert_eq!(discovered[0].auth_type.as_deref(), Some("headerInjection"));
        assert_eq!(discovered[1].auth_type.as_deref(), Some("bearerToken"));
    }

    #[test]
    fn missing_auth_config_leaves_backend_out_and_names_it() {
        let vmcp = fixtures::vmcp();
        let servers = fixtures::servers();
        let r = render_gateway_config(&RenderInput {
            vmcp: &vmcp,
            members: &servers,
            auth_configs: &BTreeMap::new(),
            missing_secrets: &BTreeSet::new(),
        })
        .unwrap();
        let names: Vec<_> = r.config.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["time"]);
        assert_eq!(r.backends[0].status.as_deref(), Some("error"));
        let auth: Vec<_> = r.problems.iter().filter(|p| p.kind == ProblemKind::Auth).collect();
        assert_eq!(auth.len(), 1, "{:?}", r.problems);
        assert!(auth[0].message.contains("'github-tools-token-exchange'"), "{:?}", r.problems);
        // Its tool filter names a backend that is no longer rendered: ignored, reported.
        assert!(r.config.aggregation.tools.is_empty());
        assert!(r.problems.iter().any(|p| p.kind == ProblemKind::Aggregation));
        // Its secret is not mounted either.
        assert!(r.secret_mounts.iter().all(|m| m.secret != "vmcp-gateway-oidc-client"));
    }

    #[test]
    fn missing_secret_leaves_backend_out_and_names_it() {
        let vmcp = fixtures::vmcp();
        let servers = fixtures::servers();
        let auth = fixtures::auth_configs();
        let missing = BTreeSet::from(["vmcp-gateway-oidc-client".to_owned(), "vmcp-redis".into()]);
        let r = render_gateway_config(&RenderInput {
            vmcp: &vmcp,
            members: &servers,
            auth_configs: &auth,
            missing_secrets: &missing,
        })
        .unwrap();
        assert_eq!(r.config.backends.len(), 1);
        let msgs: Vec<_> = r
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::Auth)
            .map(|p| p.message.as_str())
            .collect();
        assert!(msgs[0].contains("Secret 'vmcp-gateway-oidc-client'"), "{msgs:?}");
        assert!(msgs[1].contains("Secret 'vmcp-redis'"), "{msgs:?}");
    }

    #[test]
    fn invalid_auth_config_is_reported() {
        let mut bad = fixtures::auth_config();
        bad.spec.token_exchange.as_mut().unwrap().client_secret_ref = None;
        let configs = BTreeMap::from([("github-tools-token-exchange".to_owned(), bad)]);
        let (config, _, discovered) =
            gateway_config(&fixtures::vmcp(), &fixtures::servers(), &configs).unwrap();
        assert_eq!(config.backends.len(), 1);
        assert!(discovered[0].message.as_deref().unwrap().contains("clientSecretRef"));
    }

    #[test]
    fn validate_auth_spec_rules() {
        let ok = fixtures::auth_config().spec;
        assert_eq!(validate_auth_spec(&ok), Ok(()));
        let mut wrong = ok.clone();
        wrong.auth_type = ExternalAuthType::BearerToken;
        assert!(validate_auth_spec(&wrong).unwrap_err().contains("tokenExchange"));
        let mut url = ok.clone();
        url.token_exchange = Some(TokenExchangeConfig {
            token_url: "not-a-url".into(),
            ..ok.token_exchange.clone().unwrap()
        });
        assert!(validate_auth_spec(&url).unwrap_err().contains("tokenUrl"));
        let header = MCPExternalAuthConfigSpec {
            auth_type: ExternalAuthType::HeaderInjection,
            header_injection: Some(HeaderInjectionConfig {
                header_name: "Bad Header".into(),
                value_secret_ref: SecretKeyRef { name: "s".into(), key: "k".into() },
            }),
            ..Default::default()
        };
        assert!(validate_auth_spec(&header).unwrap_err().contains("headerName"));
    }

    #[test]
    fn aggregation_drops_unknown_backends_with_a_problem() {
        let mut vmcp = fixtures::vmcp();
        let agg = vmcp.spec.aggregation.as_mut().unwrap();
        agg.tools[0].workload = "gone".into();
        let r = render_gateway_config(&RenderInput {
            vmcp: &vmcp,
            members: &fixtures::servers(),
            auth_configs: &fixtures::auth_configs(),
            missing_secrets: &BTreeSet::new(),
        })
        .unwrap();
        assert!(r.config.aggregation.tools.is_empty());
        assert_eq!(r.problems[0].kind, ProblemKind::Aggregation);
    }

    #[test]
    fn gateway_settings_from_the_spec() {
        let mut vmcp = fixtures::vmcp();
        vmcp.spec.allowed_origins = vec!["https://app.example.com".into()];
        vmcp.spec.backend_timeout = Some("2m".into());
        let oidc = vmcp.spec.incoming_auth.as_mut().unwrap().oidc.as_mut().unwrap();
        oidc.algorithms = vec!["ES256".into()];
        oidc.leeway = Some("5s".into());
        oidc.jwks_refresh_interval = Some("1h".into());
        let mut auth = fixtures::auth_configs();
        let te = auth.values_mut().next().unwrap().spec.token_exchange.as_mut().unwrap();
        te.client_auth_method = Some(TokenClientAuthMethod::ClientSecretPost);
        te.resource = Some("https://github-tools.example.com/mcp".into());
        te.requested_token_type = Some("urn:ietf:params:oauth:token-type:jwt".into());
        let (config, _, _) = gateway_config(&vmcp, &fixtures::servers(), &auth).unwrap();
        assert_eq!(config.http.allowed_origins, ["https://app.example.com"]);
        assert!(config.backends.iter().all(|b| b.timeout == Duration::from_secs(120)));
        let o = config.incoming_auth.oidc.as_ref().unwrap();
        assert_eq!(o.algorithms, ["ES256"]);
        assert_eq!(o.leeway, Duration::from_secs(5));
        assert_eq!(o.jwks_refresh_interval, Duration::from_secs(3600));
        let t = config.backends[0].auth.token_exchange.as_ref().unwrap();
        assert_eq!(t.client_auth_method, cfg::ClientAuthMethod::ClientSecretPost);
        assert_eq!(t.resource.as_deref(), Some("https://github-tools.example.com/mcp"));
        assert_eq!(t.requested_token_type.as_deref(), Some("urn:ietf:params:oauth:token-type:jwt"));
        // The gateway's own validation still applies: an HMAC algorithm is refused.
        let oidc = vmcp.spec.incoming_auth.as_mut().unwrap().oidc.as_mut().unwrap();
        oidc.algorithms = vec!["HS256".into()];
        let e = gateway_config(&vmcp, &fixtures::servers(), &auth).unwrap_err().to_string();
        assert!(e.contains("HS256"), "{e}");
        // Unset, the defaults hold.
        let mut plain = fixtures::vmcp();
        plain.spec.allowed_origins.clear();
        plain.spec.backend_timeout = None;
        let (config, _, _) =
            gateway_config(&plain, &fixtures::servers(), &fixtures::auth_configs()).unwrap();
        assert!(config.http.allowed_origins.is_empty());
        assert!(config.backends.iter().all(|b| b.timeout == Duration::from_secs(30)));
    }

    #[test]
    fn a_server_whose_name_is_taken_is_left_out() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let mut servers = fixtures::servers();
        servers[0].status = Some(vmcp_types::crd::MCPServerStatus {
            phase: Some(MCPServerPhase::Failed),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "NameConflict".into(),
                message: "Service 'github-tools' already exists and is not managed by the vmcp \
                          operator"
                    .into(),
                observed_generation: Some(1),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }],
            ..Default::default()
        });
        let r = render_gateway_config(&RenderInput {
            vmcp: &fixtures::vmcp(),
            members: &servers,
            auth_configs: &fixtures::auth_configs(),
            missing_secrets: &BTreeSet::new(),
        })
        .unwrap();
        let names: Vec<_> = r.config.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["time"], "no traffic to a Service someone else owns");
        let p = r.problems.iter().find(|p| p.kind == ProblemKind::Backend).unwrap();
        assert!(p.message.contains("'github-tools' left out"), "{}", p.message);
        assert_eq!(r.backends[0].status.as_deref(), Some("error"));
        // Nor its token-exchange client secret mounted.
        assert!(r.secret_mounts.iter().all(|m| m.secret != "vmcp-gateway-oidc-client"));
    }

    #[test]
    fn malformed_durations_name_their_field() {
        let mut vmcp = fixtures::vmcp();
        vmcp.spec.backend_timeout = Some("0s".into());
        let e = gateway_config(&vmcp, &[], &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("spec.backendTimeout") && e.contains("'0s'"), "{e}");
        let mut vmcp = fixtures::vmcp();
        vmcp.spec.incoming_auth.as_mut().unwrap().oidc.as_mut().unwrap().leeway =
            Some("soon".into());
        let e = gateway_config(&vmcp, &[], &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("spec.incomingAuth.oidc.leeway"), "{e}");
    }

    #[test]
    fn hard_errors() {
        let mut vmcp = fixtures::vmcp();
        vmcp.spec.incoming_auth.as_mut().unwrap().oidc.as_mut().unwrap().issuer = None;
        assert!(matches!(
            gateway_config(&vmcp, &[], &BTreeMap::new()),
            Err(RenderError::OidcIssuerMissing)
        ));
        let mut vmcp = fixtures::vmcp();
        vmcp.spec.session_storage.as_mut().unwrap().ttl = Some("soon".into());
        assert!(matches!(
            gateway_config(&vmcp, &[], &BTreeMap::new()),
            Err(RenderError::InvalidTtl(_))
        ));
        let mut vmcp = fixtures::vmcp();
        let oidc = vmcp.spec.incoming_auth.as_mut().unwrap().oidc.as_mut().unwrap();
        oidc.audience = None;
        oidc.resource_url = None;
        let err = gateway_config(&vmcp, &[], &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("incomingAuth.oidc.audience"), "{err}");
    }

    /// Found on a real node: `audience` without `resourceUrl` rendered no `resourceUrl`, and
    /// the gateway exits at start without an absolute one ("resourceUrl: … relative URL
    /// without a base"), so its pods crash-looped.
    #[test]
    fn oidc_audience_alone_gets_the_in_cluster_resource_url() {
        let mut vmcp = fixtures::vmcp();
        let oidc = vmcp.spec.incoming_auth.as_mut().unwrap().oidc.as_mut().unwrap();
        oidc.resource_url = None;
        let audience = oidc.audience.clone().unwrap();
        let (config, _, _) = gateway_config(&vmcp, &[], &BTreeMap::new()).unwrap();
        let ns = vmcp.metadata.namespace.clone().unwrap();
        let name = vmcp.metadata.name.clone().unwrap();
        assert_eq!(
            config.resource_url.as_deref(),
            Some(format!("http://{name}-vmcp.{ns}.svc.cluster.local:4483/mcp").as_str())
        );
        assert_eq!(config.incoming_auth.oidc.unwrap().audience.as_deref(), Some(audience.as_str()));
    }

    #[test]
    fn default_redis_applies_only_without_session_storage() {
        let defaults = Defaults {
            redis: Some(DefaultRedis { address: "redis:6379".into(), key_prefix: "vmcp:".into() }),
        };
        let explicit = fixtures::vmcp();
        assert!(matches!(defaults.apply(&explicit), Cow::Borrowed(_)));
        let mut bare = fixtures::vmcp();
        bare.spec.session_storage = None;
        let applied = defaults.apply(&bare);
        let s = applied.spec.session_storage.as_ref().unwrap();
        assert_eq!(s.provider, SessionStorageProvider::Redis);
        assert_eq!(s.key_prefix.as_deref(), Some("vmcp:team-a:engineering-gateway:"));
        let (config, _, _) = gateway_config(&applied, &[], &BTreeMap::new()).unwrap();
        assert_eq!(config.session_storage.redis.unwrap().url, "redis://redis:6379");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("5d"), None);
    }

    #[test]
    fn failed_server_is_reported_but_kept() {
        let mut servers = fixtures::servers();
        servers[1].status = Some(vmcp_types::crd::MCPServerStatus {
            phase: Some(MCPServerPhase::Failed),
            ..Default::default()
        });
        let r = render_gateway_config(&RenderInput {
            vmcp: &fixtures::vmcp(),
            members: &servers,
            auth_configs: &fixtures::auth_configs(),
            missing_secrets: &BTreeSet::new(),
        })
        .unwrap();
        assert_eq!(r.config.backends.len(), 2);
        assert_eq!(r.backends[1].status.as_deref(), Some("error"));
        assert_eq!(r.problems[0].kind, ProblemKind::Backend);
        assert!(r.problems[0].message.contains("'time'"));
    }

    #[test]
    fn invalid_member_name_is_a_backend_problem() {
        let mut servers = fixtures::servers();
        servers[1].metadata.name = Some("time.v2".into());
        let (config, _, discovered) =
            gateway_config(&fixtures::vmcp(), &servers, &fixtures::auth_configs()).unwrap();
        assert_eq!(config.backends.len(), 1);
        assert_eq!(discovered[1].status.as_deref(), Some("error"));
    }
}
