//! Session storage settings.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::SecretSource;

/// Where sessions are stored.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SessionStorageProvider {
    /// In this process: one replica only; sessions end when it stops.
    #[default]
    Memory,
    /// In Redis: sessions survive restarts and are shared between replicas.
    Redis,
}

/// Session storage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionStorageConfig {
    /// `memory` (default) or `redis`.
    #[serde(default)]
    pub provider: SessionStorageProvider,
    /// Redis settings (required for `redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    /// Sliding session lifetime: a session unused this long ends (default `30m`).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ttl: Duration,
    /// A session idle this long on this replica drops its local backend connections (default
    /// `5m`); the next request restores it from the store. Bounds memory without a session cap.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub idle_timeout: Duration,
}

fn default_ttl() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

impl Default for SessionStorageConfig {
    fn default() -> Self {
        Self {
            provider: SessionStorageProvider::Memory,
            redis: None,
            ttl: default_ttl(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

/// Default Redis key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "vmcp:";

/// Redis connection settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`, `rediss://…` (TLS), `redis-sentinel://host:port/…?…` or
    /// `redis-cluster://host:port?node=…`; a bare `host:port` means `redis://host:port`.
    pub url: String,
    /// Redis database number (standalone and Sentinel only; default 0).
    #[serde(default)]
    pub db: u8,
    /// Password (never inline: from an env var or a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretSource>,
    /// Prefix of every key the gateway writes (default `vmcp:`).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Replicas that must hold a session's creation, membership change or deletion before the
    /// gateway acknowledges it (Redis `WAIT`, on the master serving the session's key; default
    /// 0: asynchronous replication, see docs/redis.md for what a failover can lose then).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wait_replicas: u8,
    /// How long a write waits for `waitReplicas` replicas (default `500ms`); a write not
    /// acknowledged in time fails (HTTP 503), so the client never holds a session a failover
    /// can lose.
    #[serde(
        default = "default_wait_timeout",
        with = "humantime_serde",
        skip_serializing_if = "is_default_wait_timeout"
    )]
    #[schemars(with = "String")]
    pub wait_timeout: Duration,
}

fn default_key_prefix() -> String {
    DEFAULT_KEY_PREFIX.to_owned()
}

fn default_wait_timeout() -> Duration {
    Duration::from_millis(500)
}

fn is_default_wait_timeout(d: &Duration) -> bool {
    *d == default_wait_timeout()
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl RedisConfig {
    /// Settings for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            db: 0,
            password: None,
            key_prefix: default_key_prefix(),
            wait_replicas: 0,
            wait_timeout: default_wait_timeout(),
        }
    }
}
