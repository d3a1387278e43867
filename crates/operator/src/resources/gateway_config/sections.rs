//! The sections besides backends: aggregation, incoming auth, session storage; and the
//! duration fields of the spec.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use vmcp_types::config::{
    self as cfg, AggregationConfig, BackendToolsConfig, IncomingAuthConfig, RedisConfig,
    SessionStorageConfig, ToolOverrideConfig,
};
use vmcp_types::crd::{IncomingAuthType, SessionStorage, SessionStorageProvider, VirtualMCPServer};

use super::super::RenderError;
use super::{Mounts, Problem, ProblemKind};

pub(super) fn aggregation(
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

pub(super) fn incoming(
    vmcp: &VirtualMCPServer,
) -> Result<(IncomingAuthConfig, Option<String>), RenderError> {
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
            let resource_url = o.resource_url.or_else(|| {
                oidc.audience.is_some().then(|| super::super::gateway::gateway_url(vmcp, ns))
            });
            Ok((
                IncomingAuthConfig { auth_type: cfg::IncomingAuthType::Oidc, oidc: Some(oidc) },
                resource_url,
            ))
        }
    }
}

pub(super) fn session_storage(
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
            db,
            password: s.password_ref.as_ref().map(|r| mounts.file(r)),
            key_prefix: s.key_prefix.clone().unwrap_or_else(|| cfg::DEFAULT_KEY_PREFIX.to_owned()),
            ..RedisConfig::new(url)
        });
    }
    Ok(out)
}

/// `text` (a duration field of the spec) parsed, or an error naming `field`.
pub(super) fn duration(field: &'static str, text: &str) -> Result<Duration, RenderError> {
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
