//! Outgoing auth: which `MCPExternalAuthConfig` a backend uses, its checks, and the gateway's
//! outgoing auth section (secrets as mounted files).

use std::collections::BTreeSet;

use vmcp_types::config::{
    self as cfg, BearerTokenAuth, HeaderInjectionAuth, OutgoingAuthConfig, OutgoingAuthType,
    TokenExchangeAuth,
};
use vmcp_types::crd::{
    BackendAuth, ExternalAuthType, LocalRef, MCPExternalAuthConfigSpec, MCPServer, MCPServerEntry,
    OutgoingAuthSource, SecretKeyRef, TokenClientAuthMethod, VirtualMCPServer,
};

use super::super::bridge_token::gateway_bridge_token_file;
use super::{Mounts, Problem, ProblemKind, RenderInput};

/// Names of the `MCPExternalAuthConfig`s `vmcp` may use with these members (the outgoing
/// default, the inline map, and with `discovered` each member's reference).
pub fn referenced_auth_configs(
    vmcp: &VirtualMCPServer,
    members: &[MCPServer],
    entries: &[MCPServerEntry],
) -> BTreeSet<String> {
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
                    .chain(entries.iter().filter_map(|e| e.spec.external_auth_config_ref.as_ref()))
                    .map(|r| r.name.clone()),
            );
        }
    }
    out
}

pub(super) fn outgoing_type_name(t: OutgoingAuthType) -> &'static str {
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

/// The outgoing auth of backend `name`, whose own `externalAuthConfigRef` (used with
/// `outgoingAuth.source: discovered`) is `own_ref`.
pub(super) fn resolve_auth(
    input: &RenderInput<'_>,
    own_ref: Option<&LocalRef>,
    name: &str,
    mounts: &mut Mounts,
) -> Result<OutgoingAuthConfig, Problem> {
    let outgoing = input.vmcp.spec.outgoing_auth.clone().unwrap_or_default();
    // (expected type, config reference). With `discovered`, a server's own reference carries
    // no type: the referenced config decides.
    let own = match outgoing.source {
        OutgoingAuthSource::Discovered => own_ref.cloned().map(|r| (None, Some(r))),
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

/// The credential of `stdio` member `server`: its bridge token (the bridge admits nothing
/// else, and passes no header on to the stdio process, so no other outgoing auth applies to
/// it), read from the gateway's bridge tokens Secret, which is always mounted: no mount of its
/// own. The kubelet may sync that Secret after the configuration, so the gateway waits for the
/// file.
pub(super) fn bridge_auth(server: &str) -> Result<OutgoingAuthConfig, Problem> {
    Ok(OutgoingAuthConfig {
        auth_type: OutgoingAuthType::BearerToken,
        bearer_token: Some(BearerTokenAuth {
            token: cfg::SecretSource {
                env: None,
                file: Some(gateway_bridge_token_file(server).into()),
            },
            wait_for_file: true,
        }),
        ..OutgoingAuthConfig::default()
    })
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
                        .map(|r| mounts.backend_file(r))
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
                    value: mounts.backend_file(&h.value_secret_ref),
                });
            }
        }
        ExternalAuthType::BearerToken => {
            if let Some(b) = &spec.bearer_token {
                out.auth_type = OutgoingAuthType::BearerToken;
                out.bearer_token = Some(BearerTokenAuth {
                    token: mounts.backend_file(&b.token_secret_ref),
                    wait_for_file: false,
                });
            }
        }
    }
    out
}
