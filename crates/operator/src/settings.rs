//! Operator settings: what the controllers need besides a client.

use std::time::Duration;

use crate::resources::{DefaultRedis, Defaults};

/// Environment variable naming the gateway image.
pub const ENV_GATEWAY_IMAGE: &str = "VMCP_GATEWAY_IMAGE";
/// Environment variable of the default Redis address (`host:port` or URL).
pub const ENV_DEFAULT_REDIS_ADDRESS: &str = "VMCP_DEFAULT_REDIS_ADDRESS";
/// Environment variable of the default Redis key prefix (default `vmcp:`).
pub const ENV_DEFAULT_REDIS_KEY_PREFIX: &str = "VMCP_DEFAULT_REDIS_KEY_PREFIX";
/// Environment variable limiting the operator to one namespace.
pub const ENV_WATCH_NAMESPACE: &str = "VMCP_WATCH_NAMESPACE";

/// The default gateway image: `ghcr.io/vmcp-dev/vmcp-gateway:<this operator's version>`.
pub fn default_gateway_image() -> String {
    format!("ghcr.io/vmcp-dev/vmcp-gateway:{}", env!("CARGO_PKG_VERSION"))
}

/// How the controllers behave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Image of the gateway (and of the stdio bridge).
    pub gateway_image: String,
    /// Watch only this namespace; `None` watches every namespace.
    pub namespace: Option<String>,
    /// Defaults applied to every `VirtualMCPServer` (e.g. a shared Redis).
    pub defaults: Defaults,
    /// `reportingInstance` of Events (the pod name); defaults to the host name.
    pub instance: Option<String>,
    /// Re-reconcile every object this often even without changes.
    pub resync: Duration,
    /// First retry delay after a failed reconcile (doubles per failure, with jitter).
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            gateway_image: default_gateway_image(),
            namespace: None,
            defaults: Defaults::default(),
            instance: None,
            resync: Duration::from_secs(600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

impl Settings {
    /// Defaults overridden by the environment: `VMCP_GATEWAY_IMAGE`, `VMCP_WATCH_NAMESPACE`,
    /// `VMCP_DEFAULT_REDIS_ADDRESS`, `VMCP_DEFAULT_REDIS_KEY_PREFIX`, `POD_NAME`.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`Settings::from_env`] with `lookup` as the environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let mut s = Self::default();
        if let Some(image) = get(ENV_GATEWAY_IMAGE) {
            s.gateway_image = image;
        }
        s.namespace = get(ENV_WATCH_NAMESPACE);
        s.instance = get("POD_NAME");
        if let Some(address) = get(ENV_DEFAULT_REDIS_ADDRESS) {
            s.defaults.redis = Some(DefaultRedis {
                address,
                key_prefix: get(ENV_DEFAULT_REDIS_KEY_PREFIX).unwrap_or_else(|| "vmcp:".into()),
            });
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_environment() {
        let s = Settings::from_lookup(|_| None);
        assert_eq!(
            s.gateway_image,
            format!("ghcr.io/vmcp-dev/vmcp-gateway:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(s.defaults.redis, None);
        let s = Settings::from_lookup(|k| match k {
            ENV_GATEWAY_IMAGE => Some("img:1".into()),
            ENV_DEFAULT_REDIS_ADDRESS => Some("redis:6379".into()),
            ENV_WATCH_NAMESPACE => Some(" ".into()),
            _ => None,
        });
        assert_eq!(s.gateway_image, "img:1");
        assert_eq!(s.namespace, None);
        let r = s.defaults.redis.unwrap();
        assert_eq!((r.address.as_str(), r.key_prefix.as_str()), ("redis:6379", "vmcp:"));
    }
}
