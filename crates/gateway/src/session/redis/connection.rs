//! Connecting to Redis: the URL forms (standalone, Sentinel, Cluster), the client's timeouts
//! and reconnect policy, the mapping of client errors, and the replication acknowledgement
//! (`WAIT`) of writes that must survive a failover.

use std::time::Duration;

use fred::prelude::{ClientLike, Config, ErrorKind, ReconnectPolicy};
use fred::types::config::Options;
use fred::types::config::UnresponsiveConfig;
use fred::types::{Builder, ClusterHash, CustomCommand};
use secrecy::ExposeSecret;
use vmcp_types::config::RedisConfig;

use super::feed::TERMINATIONS_CAPACITY;
use crate::auth::outgoing::read_secret;
use crate::session::store::StoreError;

/// Upper bound of one Redis command (a dead Redis answers `Unavailable` after this).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of one TCP (and TLS) connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of the initial connection in [`super::RedisStore::connect`].
pub(super) const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with a request waiting this long is considered dead and replaced.
const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(5);
/// Reconnect backoff: 50 ms doubling up to 2 s, with jitter, forever.
const RECONNECT_MIN_MS: u32 = 50;
const RECONNECT_MAX_MS: u32 = 2_000;
const RECONNECT_JITTER_MS: u32 = 100;

/// `host:port` means `redis://host:port`.
pub(super) fn normalize_url(url: &str) -> String {
    let url = url.trim();
    if url.contains("://") { url.to_owned() } else { format!("redis://{url}") }
}

/// The server for logs: scheme, host and port only (no credentials, no query).
pub(super) fn describe(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<unparsable redis url>".to_owned(),
    }
}

fn unavailable(op: &str, e: &fred::error::Error) -> StoreError {
    StoreError::Unavailable(format!("redis {op}: {e}"))
}

/// Maps a command error: a key of the wrong type is a corrupt record, anything else means the
/// store cannot answer now.
pub(super) fn command_error(op: &str, id: &str, e: &fred::error::Error) -> StoreError {
    if e.details().starts_with("WRONGTYPE") || *e.kind() == ErrorKind::Parse {
        StoreError::Corrupt { id: id.to_owned(), reason: e.to_string() }
    } else {
        unavailable(op, e)
    }
}

/// The client builder for `cfg` (URL, database, password, timeouts, reconnect policy) and the
/// server as logs may name it.
pub(super) fn builder(cfg: &RedisConfig) -> Result<(Builder, String), StoreError> {
    let url = normalize_url(&cfg.url);
    let server = describe(&url);
    let mut config = Config::from_url(&url).map_err(|e| {
        StoreError::Unavailable(format!("invalid redis url ({server}): {}", e.details()))
    })?;
    if cfg.db != 0 {
        if config.server.is_clustered() {
            return Err(StoreError::Unavailable(format!(
                "redis cluster ({server}) has only database 0, but db is {}",
                cfg.db
            )));
        }
        config.database = Some(cfg.db);
    }
    if let Some(source) = &cfg.password {
        let secret = read_secret("sessionStorage.redis.password", source)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        config.password = Some(secret.expose_secret().to_owned());
    }
    // The first connection must work (configuration errors surface at startup); later
    // losses are handled by the reconnect policy.
    config.fail_fast = true;

    let mut policy = ReconnectPolicy::new_exponential(0, RECONNECT_MIN_MS, RECONNECT_MAX_MS, 2);
    policy.set_jitter(RECONNECT_JITTER_MS);
    let mut builder = Builder::from_config(config);
    builder
        .set_policy(policy)
        .with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
            p.broadcast_channel_capacity = TERMINATIONS_CAPACITY;
        })
        .with_connection_config(|c| {
            c.connection_timeout = CONNECT_TIMEOUT;
            c.internal_command_timeout = COMMAND_TIMEOUT;
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(UNRESPONSIVE_AFTER),
                interval: Duration::from_secs(1),
            };
        });
    Ok((builder, server))
}

/// How many replicas must hold a write before it is acknowledged (`waitReplicas`), and how
/// long to wait for them (`waitTimeout`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Durability {
    replicas: u8,
    timeout: Duration,
}

impl Durability {
    pub(super) fn of(cfg: &RedisConfig) -> Self {
        Self { replicas: cfg.wait_replicas, timeout: cfg.wait_timeout }
    }

    /// After a write of `key`: waits until enough replicas hold it (`WAIT` on the master serving
    /// the key, on the same connection as the write, so it covers that write). Fewer replicas
    /// in time is [`StoreError::Unavailable`]: the caller must not acknowledge the write.
    pub(super) async fn wait(
        &self,
        client: &fred::clients::Client,
        op: &str,
        id: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        if self.replicas == 0 {
            return Ok(());
        }
        let slot = fred::util::redis_keyslot(key.as_bytes());
        let cmd = CustomCommand::new_static("WAIT", ClusterHash::Custom(slot), false);
        let timeout_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX).max(1);
        let options =
            Options { timeout: Some(self.timeout + COMMAND_TIMEOUT), ..Default::default() };
        let acked: i64 = client
            .with_options(&options)
            .custom(cmd, vec![i64::from(self.replicas), timeout_ms])
            .await
            .map_err(|e| command_error(op, id, &e))?;
        if acked < i64::from(self.replicas) {
            return Err(StoreError::Unavailable(format!(
                "redis {op}: {acked} of {} replicas acknowledged the write within {:?} (sessionStorage.redis.waitReplicas)",
                self.replicas, self.timeout
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(normalize_url("10.0.0.1:6379"), "redis://10.0.0.1:6379");
        assert_eq!(normalize_url("rediss://h:1"), "rediss://h:1");
        assert_eq!(describe("redis://user:pw@host:7000/2?x=y"), "redis://host:7000");
        assert!(!describe("redis-sentinel://:pw@h:26379/0?sentinelServiceName=m").contains("pw"));
    }

    #[test]
    fn every_deployment_form_parses() {
        let mut cfg = RedisConfig::new("redis-cluster://10.0.0.1:7000?node=10.0.0.2:7000");
        assert!(builder(&cfg).is_ok());
        cfg.url = "redis-sentinel://s1:26379/0?sentinelServiceName=m&node=s2:26379".into();
        assert!(builder(&cfg).is_ok());
        cfg.url = "redis-sentinel://s1:26379/0".into();
        let err = builder(&cfg).expect_err("a sentinel URL needs the service name");
        assert!(err.to_string().contains("redis-sentinel://s1:26379"), "{err}");
        cfg.url = "redis-cluster://10.0.0.1:7000".into();
        cfg.db = 2;
        assert!(builder(&cfg).expect_err("cluster has db 0 only").to_string().contains("db is 2"));
    }
}
