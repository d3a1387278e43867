//! Operator settings: what the controllers need besides a client.
//!
//! One reader: [`Settings::from_lookup`] reads every setting from one lookup by environment
//! variable name. The binary's flags that set a setting (`--gateway-image`, `--namespace`) are
//! a layer over the environment under the same names ([`Settings::from_env_and_flags`]), so a
//! flag wins over its variable and nothing is parsed twice.

use std::time::Duration;

use serde::de::DeserializeOwned;
use vmcp_types::crd::SecretKeyRef;

use crate::resources::{DefaultRedis, Defaults, WorkloadDefaults};

/// Environment variable naming the gateway image.
pub const ENV_GATEWAY_IMAGE: &str = "VMCP_GATEWAY_IMAGE";
/// Environment variable of the default Redis address (`host:port` or URL).
pub const ENV_DEFAULT_REDIS_ADDRESS: &str = "VMCP_DEFAULT_REDIS_ADDRESS";
/// Environment variable of the default Redis key prefix (default `vmcp:`).
pub const ENV_DEFAULT_REDIS_KEY_PREFIX: &str = "VMCP_DEFAULT_REDIS_KEY_PREFIX";
/// Environment variable naming the Secret with the default Redis password.
pub const ENV_DEFAULT_REDIS_PASSWORD_SECRET: &str = "VMCP_DEFAULT_REDIS_PASSWORD_SECRET";
/// Environment variable of the password's key in that Secret (default `password`).
pub const ENV_DEFAULT_REDIS_PASSWORD_KEY: &str = "VMCP_DEFAULT_REDIS_PASSWORD_KEY";
/// Environment variable limiting the operator to some namespaces (comma-separated).
pub const ENV_WATCH_NAMESPACE: &str = "VMCP_WATCH_NAMESPACE";
/// Environment variable: comma-separated `imagePullSecrets` of every created pod.
pub const ENV_WORKLOAD_IMAGE_PULL_SECRETS: &str = "VMCP_WORKLOAD_IMAGE_PULL_SECRETS";
/// Environment variable: the gateway pods' `securityContext` (JSON), replacing the built-in.
pub const ENV_GATEWAY_POD_SECURITY_CONTEXT: &str = "VMCP_GATEWAY_POD_SECURITY_CONTEXT";
/// Environment variable: the gateway container's `securityContext` (JSON).
pub const ENV_GATEWAY_CONTAINER_SECURITY_CONTEXT: &str = "VMCP_GATEWAY_CONTAINER_SECURITY_CONTEXT";
/// Environment variable: the MCP server pods' `securityContext` (JSON).
pub const ENV_SERVER_POD_SECURITY_CONTEXT: &str = "VMCP_SERVER_POD_SECURITY_CONTEXT";
/// Environment variable: the MCP server containers' `securityContext` (JSON).
pub const ENV_SERVER_CONTAINER_SECURITY_CONTEXT: &str = "VMCP_SERVER_CONTAINER_SECURITY_CONTEXT";

/// Environment variable: `true` gives every `MCPServer` a NetworkPolicy admitting only the
/// gateway pods of its group.
pub const ENV_SERVER_NETWORK_POLICY: &str = "VMCP_SERVER_NETWORK_POLICY";
/// Environment variable: how many objects each controller reconciles at once (default 8).
pub const ENV_RECONCILE_CONCURRENCY: &str = "VMCP_RECONCILE_CONCURRENCY";
/// Environment variable: how long a controller waits after a trigger for more changes of the
/// same object before reconciling it, e.g. `500ms` (the default).
pub const ENV_RECONCILE_DEBOUNCE: &str = "VMCP_RECONCILE_DEBOUNCE";

/// The default gateway image: `ghcr.io/vmcp-dev/vmcp-gateway:<this operator's version>`.
pub fn default_gateway_image() -> String {
    format!("ghcr.io/vmcp-dev/vmcp-gateway:{}", env!("CARGO_PKG_VERSION"))
}

/// A setting from the environment that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A JSON-valued variable does not hold the expected object.
    #[error("{var} is not a valid {what} as JSON: {source}")]
    Json {
        /// The environment variable.
        var: &'static str,
        /// What it should hold.
        what: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A number or duration variable cannot be parsed.
    #[error("{var} is not a valid {what}: '{value}'")]
    Value {
        /// The environment variable.
        var: &'static str,
        /// What it should hold.
        what: &'static str,
        /// The value given.
        value: String,
    },
}

/// How the controllers behave.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Image of the gateway (and of the stdio bridge).
    pub gateway_image: String,
    /// Watch only these namespaces; empty watches every namespace.
    pub namespaces: Vec<String>,
    /// Defaults applied to every `VirtualMCPServer` (e.g. a shared Redis).
    pub defaults: Defaults,
    /// What every created pod gets (security contexts, pull secrets).
    pub workloads: WorkloadDefaults,
    /// `reportingInstance` of Events (the pod name); defaults to the host name.
    pub instance: Option<String>,
    /// Re-reconcile every object this often even without changes.
    pub resync: Duration,
    /// First retry delay after a failed reconcile (doubles per failure, with jitter).
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How many objects each controller reconciles at once (0: unbounded).
    pub concurrency: u16,
    /// How long a controller waits after a trigger for more changes of the same object.
    pub debounce: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            gateway_image: default_gateway_image(),
            namespaces: Vec::new(),
            defaults: Defaults::default(),
            workloads: WorkloadDefaults::default(),
            instance: None,
            resync: Duration::from_secs(600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            concurrency: 8,
            debounce: Duration::from_millis(500),
        }
    }
}

/// Splits a comma-separated list, dropping empty items.
pub fn split_list(text: &str) -> Vec<String> {
    let mut out: Vec<String> =
        text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    out.dedup();
    out
}

impl Settings {
    /// Defaults overridden by the environment (the `ENV_*` variables of this module and
    /// `POD_NAME`).
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`Settings::from_env`], with `flags` (environment variable name, flag value) in
    /// front of the environment: a flag given wins over its variable.
    pub fn from_env_and_flags(flags: &[(&str, Option<String>)]) -> Result<Self, SettingsError> {
        Self::from_lookup(layered(flags, |k| std::env::var(k).ok()))
    }

    /// Like [`Settings::from_env`] with `lookup` as the environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let mut s = Self::default();
        if let Some(image) = get(ENV_GATEWAY_IMAGE) {
            s.gateway_image = image;
        }
        s.namespaces = get(ENV_WATCH_NAMESPACE).as_deref().map(split_list).unwrap_or_default();
        s.instance = get("POD_NAME");
        if let Some(address) = get(ENV_DEFAULT_REDIS_ADDRESS) {
            s.defaults.redis = Some(DefaultRedis {
                address,
                key_prefix: get(ENV_DEFAULT_REDIS_KEY_PREFIX).unwrap_or_else(|| "vmcp:".into()),
                password: get(ENV_DEFAULT_REDIS_PASSWORD_SECRET).map(|name| SecretKeyRef {
                    name,
                    key: get(ENV_DEFAULT_REDIS_PASSWORD_KEY).unwrap_or_else(|| "password".into()),
                }),
            });
        }
        let w = &mut s.workloads;
        w.image_pull_secrets =
            get(ENV_WORKLOAD_IMAGE_PULL_SECRETS).as_deref().map(split_list).unwrap_or_default();
        w.server_network_policy =
            get(ENV_SERVER_NETWORK_POLICY).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        w.gateway.pod_security_context = parse_json(
            ENV_GATEWAY_POD_SECURITY_CONTEXT,
            "PodSecurityContext",
            get(ENV_GATEWAY_POD_SECURITY_CONTEXT),
        )?;
        w.gateway.container_security_context = parse_json(
            ENV_GATEWAY_CONTAINER_SECURITY_CONTEXT,
            "SecurityContext",
            get(ENV_GATEWAY_CONTAINER_SECURITY_CONTEXT),
        )?;
        w.mcp_server.pod_security_context = parse_json(
            ENV_SERVER_POD_SECURITY_CONTEXT,
            "PodSecurityContext",
            get(ENV_SERVER_POD_SECURITY_CONTEXT),
        )?;
        w.mcp_server.container_security_context = parse_json(
            ENV_SERVER_CONTAINER_SECURITY_CONTEXT,
            "SecurityContext",
            get(ENV_SERVER_CONTAINER_SECURITY_CONTEXT),
        )?;
        if let Some(v) = get(ENV_RECONCILE_CONCURRENCY) {
            s.concurrency = v.trim().parse().map_err(|_| SettingsError::Value {
                var: ENV_RECONCILE_CONCURRENCY,
                what: "number (0 to 65535)",
                value: v.clone(),
            })?;
        }
        if let Some(v) = get(ENV_RECONCILE_DEBOUNCE) {
            s.debounce =
                crate::resources::gateway_config::parse_duration(v.trim()).ok_or_else(|| {
                    SettingsError::Value {
                        var: ENV_RECONCILE_DEBOUNCE,
                        what: "duration (e.g. 500ms or 1s)",
                        value: v.clone(),
                    }
                })?;
        }
        Ok(s)
    }
}

/// `flags` (variable name, value given on the command line) in front of `env`.
pub fn layered<'a>(
    flags: &'a [(&'a str, Option<String>)],
    env: impl Fn(&str) -> Option<String> + 'a,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| {
        flags
            .iter()
            .find(|(name, value)| *name == k && value.is_some())
            .and_then(|(_, v)| v.clone())
            .or_else(|| env(k))
    }
}

/// `text` (the value of `var`, if set) parsed as JSON.
fn parse_json<T: DeserializeOwned>(
    var: &'static str,
    what: &'static str,
    text: Option<String>,
) -> Result<Option<T>, SettingsError> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|source| SettingsError::Json { var, what, source })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_environment() {
        let s = Settings::from_lookup(|_| None).unwrap();
        assert_eq!(
            s.gateway_image,
            format!("ghcr.io/vmcp-dev/vmcp-gateway:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(s.defaults.redis, None);
        assert_eq!(s.workloads, WorkloadDefaults::default());
        let s = Settings::from_lookup(|k| match k {
            ENV_GATEWAY_IMAGE => Some("img:1".into()),
            ENV_DEFAULT_REDIS_ADDRESS => Some("redis:6379".into()),
            ENV_WATCH_NAMESPACE => Some(" ".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.gateway_image, "img:1");
        assert!(s.namespaces.is_empty());
        let r = s.defaults.redis.unwrap();
        assert_eq!((r.address.as_str(), r.key_prefix.as_str()), ("redis:6379", "vmcp:"));
        assert_eq!(r.password, None);
    }

    #[test]
    fn namespaces_workloads_and_redis_password() {
        let s = Settings::from_lookup(|k| match k {
            ENV_WATCH_NAMESPACE => Some("team-a, team-b,,".into()),
            ENV_DEFAULT_REDIS_ADDRESS => Some("redis:6379".into()),
            ENV_DEFAULT_REDIS_PASSWORD_SECRET => Some("redis-auth".into()),
            ENV_WORKLOAD_IMAGE_PULL_SECRETS => Some("regcred,mirror".into()),
            ENV_GATEWAY_POD_SECURITY_CONTEXT => Some(r#"{"runAsNonRoot":true}"#.into()),
            ENV_SERVER_NETWORK_POLICY => Some("true".into()),
            ENV_SERVER_CONTAINER_SECURITY_CONTEXT => {
                Some(r#"{"allowPrivilegeEscalation":false}"#.into())
            }
            _ => None,
        })
        .unwrap();
        assert_eq!(s.namespaces, ["team-a", "team-b"]);
        let p = s.defaults.redis.unwrap().password.unwrap();
        assert_eq!((p.name.as_str(), p.key.as_str()), ("redis-auth", "password"));
        assert_eq!(s.workloads.image_pull_secrets, ["regcred", "mirror"]);
        assert!(s.workloads.server_network_policy);
        let g = s.workloads.gateway.pod_security_context.unwrap();
        assert_eq!((g.run_as_non_root, g.run_as_user), (Some(true), None));
        assert!(s.workloads.gateway.container_security_context.is_none());
        let c = s.workloads.mcp_server.container_security_context.unwrap();
        assert_eq!(c.allow_privilege_escalation, Some(false));
    }

    #[test]
    fn flags_win_over_their_variables() {
        let env = |k: &str| match k {
            ENV_GATEWAY_IMAGE => Some("env-image:1".to_owned()),
            ENV_WATCH_NAMESPACE => Some("from-env".to_owned()),
            ENV_DEFAULT_REDIS_ADDRESS => Some("redis:6379".to_owned()),
            _ => None,
        };
        let flags =
            [(ENV_GATEWAY_IMAGE, Some("flag-image:2".to_owned())), (ENV_WATCH_NAMESPACE, None)];
        let s = Settings::from_lookup(layered(&flags, env)).unwrap();
        assert_eq!(s.gateway_image, "flag-image:2");
        // No flag given: the variable counts.
        assert_eq!(s.namespaces, ["from-env"]);
        assert!(s.defaults.redis.is_some());
        let flags = [(ENV_WATCH_NAMESPACE, Some("a,b".to_owned()))];
        let s = Settings::from_lookup(layered(&flags, env)).unwrap();
        assert_eq!(
            (s.gateway_image.as_str(), s.namespaces.clone()),
            ("env-image:1", vec!["a".to_owned(), "b".to_owned()])
        );
    }

    #[test]
    fn controller_tuning() {
        let d = Settings::default();
        assert_eq!((d.concurrency, d.debounce), (8, Duration::from_millis(500)));
        let s = Settings::from_lookup(|k| match k {
            ENV_RECONCILE_CONCURRENCY => Some("2".into()),
            ENV_RECONCILE_DEBOUNCE => Some("1s".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!((s.concurrency, s.debounce), (2, Duration::from_secs(1)));
        for (var, value) in [(ENV_RECONCILE_CONCURRENCY, "-1"), (ENV_RECONCILE_DEBOUNCE, "soon")] {
            let e = Settings::from_lookup(|k| (k == var).then(|| value.to_owned()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(var) && e.contains(value), "{e}");
        }
    }

    #[test]
    fn malformed_json_names_the_variable() {
        let e = Settings::from_lookup(|k| {
            (k == ENV_SERVER_POD_SECURITY_CONTEXT).then(|| r#"{"runAsUser":"root"}"#.to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(ENV_SERVER_POD_SECURITY_CONTEXT) && e.contains("PodSecurityContext"),
            "{e}"
        );
    }
}
