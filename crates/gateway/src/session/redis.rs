//! Redis session store (fred): shared by every replica, survives restarts.
//!
//! # Layout
//! One hash per session at `<prefix>session:<id>` with a sliding TTL (`PEXPIRE`):
//!
//! | field       | value                                                  |
//! |-------------|--------------------------------------------------------|
//! | `v`         | record layout version ([`SCHEMA_VERSION`])             |
//! | `b`         | binding hash (`anonymous` / `sha256:…`, I2)            |
//! | `p`         | negotiated protocol revision                           |
//! | `c`         | what restore needs of `initialize` (JSON, capped, H4)  |
//! | `g`         | membership generation (decimal)                        |
//! | `m`         | member backends (JSON array of names, in order)        |
//! | `h:<name>`  | member hint (I7): `<Mcp-Session-Id> <protocol version>` |
//!
//! A hash lets a hint change without rewriting (or re-encoding) the rest of the record, and
//! lets the Lua scripts treat the client params as an opaque string. Nothing secret is written
//! (I6): the record type holds no token, and the password is only handed to the client library.
//!
//! # Atomicity
//! `create`, `set_hint`, `cas_members` and `delete` are Lua scripts (`EVALSHA`, falling back to
//! `EVAL` on `NOSCRIPT`, e.g. after a Redis restart), so a hint write can never interleave with a
//! membership compare-and-set (I4). Every script touches one key, so Cluster works too.
//!
//! # Termination (I5)
//! `delete` also `PUBLISH`es the session id on `<prefix>terminated` (even when the record had
//! already expired, so replicas still caching it drop it).
//! [`RedisStore::subscribe_terminations`] delivers those ids from a dedicated subscriber
//! connection that resubscribes after reconnects. Pub/sub is best effort: while
//! [`RedisStore::subscription_healthy`] is false (or a receiver reports `Lagged`), callers must
//! fall back to [`SessionStore::exists`] / [`SessionStore::touch`] checks to notice
//! terminations; TTL expiry is never published (it is noticed the same way).
//!
//! Like [`super::memory::MemoryStore`], `set_hint` does not check that the backend is a member;
//! `cas_members` drops the hints of backends it removes.
//!
//! # Failures
//! Commands time out after [`COMMAND_TIMEOUT`], so a dead Redis yields
//! [`StoreError::Unavailable`] quickly; the client reconnects in the background with exponential
//! backoff, so recovery needs no restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::{
    ClientLike, Config, ErrorKind, EventInterface, HashesInterface, KeysInterface, LuaInterface,
    PubsubInterface, ReconnectPolicy, Value,
};
use fred::types::config::UnresponsiveConfig;
use fred::types::{Builder, FromValue};
use secrecy::ExposeSecret;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use vmcp_types::config::RedisConfig;

use super::record::{SCHEMA_VERSION, SessionRecord};
use super::store::{CasOutcome, SessionStore, StoreError};
use crate::auth::outgoing::read_secret;

/// Upper bound of one Redis command (a dead Redis answers `Unavailable` after this).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of one TCP (and TLS) connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of the initial connection in [`RedisStore::connect`].
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with a request waiting this long is considered dead and replaced.
const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(5);
/// Reconnect backoff: 50 ms doubling up to 2 s, with jitter, forever.
const RECONNECT_MIN_MS: u32 = 50;
const RECONNECT_MAX_MS: u32 = 2_000;
const RECONNECT_JITTER_MS: u32 = 100;
/// Each replica publishes a liveness message on the termination channel this often; the
/// subscription counts as alive only while such messages arrive (an idle subscriber has no
/// reply outstanding, so a connection a NAT dropped silently looks healthy otherwise: M1).
const CANARY_EVERY: Duration = Duration::from_secs(1);
/// The subscription is considered dead when no liveness message arrived for this long.
const CANARY_STALE: Duration = Duration::from_secs(3);
/// Liveness messages start with this (session ids are 32 hex digits, so never).
const CANARY: &str = "alive:";
/// Buffer of termination ids per receiver.
const TERMINATIONS_CAPACITY: usize = 4096;

const F_VERSION: &str = "v";
const F_BINDING: &str = "b";
const F_PROTOCOL: &str = "p";
const F_CLIENT: &str = "c";
const F_GENERATION: &str = "g";
const F_MEMBERS: &str = "m";
const HINT_PREFIX: &str = "h:";

/// KEYS[1] = record; ARGV[1] = ttl ms; ARGV[2..] = field, value, … (replaces any old record).
const CREATE_LUA: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"#;

/// KEYS[1] = record; ARGV[1] = hint field; ARGV[2] = '1' set / '0' clear; ARGV[3] = hint.
/// Never touches membership, the generation or the TTL.
const SET_HINT_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
"#;

/// KEYS[1] = record; ARGV[1] = expected generation; ARGV[2] = members (encoded);
/// ARGV[3..] = member names. Returns {0} missing, {1, HGETALL} conflict, {2, generation} updated.
const CAS_MEMBERS_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local g = redis.call('HGET', KEYS[1], 'g')
if g ~= ARGV[1] then return {1, redis.call('HGETALL', KEYS[1])} end
local n = redis.call('HINCRBY', KEYS[1], 'g', 1)
redis.call('HSET', KEYS[1], 'm', ARGV[2])
local keep = {}
for i = 3, #ARGV do keep['h:' .. ARGV[i]] = true end
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 2) == 'h:' and not keep[f] then redis.call('HDEL', KEYS[1], f) end
end
return {2, n}
"#;

/// KEYS[1] = record; ARGV[1] = termination channel; ARGV[2] = session id.
const DELETE_LUA: &str = r#"
local n = redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
"#;

/// A Lua script run with `EVALSHA`, falling back to `EVAL` (which also re-caches it).
#[derive(Debug)]
struct Script {
    lua: &'static str,
    sha: OnceLock<String>,
}

impl Script {
    const fn new(lua: &'static str) -> Self {
        Self { lua, sha: OnceLock::new() }
    }

    async fn load(&self, client: &fred::clients::Client) {
        match client.script_load::<String, _>(self.lua).await {
            Ok(sha) => {
                let _ = self.sha.set(sha);
            }
            Err(e) => tracing::debug!(error = %e, "SCRIPT LOAD failed; using EVAL"),
        }
    }

    async fn run<R: FromValue>(
        &self,
        client: &fred::clients::Client,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, fred::error::Error> {
        if let Some(sha) = self.sha.get() {
            match client.evalsha(sha.as_str(), keys.clone(), args.clone()).await {
                Err(e) if e.details().starts_with("NOSCRIPT") => {}
                other => return other,
            }
        }
        client.eval(self.lua, keys, args).await
    }
}

#[derive(Debug)]
struct Scripts {
    create: Script,
    set_hint: Script,
    cas_members: Script,
    delete: Script,
}

/// The termination subscription (I5).
struct Subscription {
    client: SubscriberClient,
    healthy: Arc<AtomicBool>,
    /// Times the subscription came back after being down (see [`RedisStore::feed_epoch`]).
    restored: Arc<std::sync::atomic::AtomicU64>,
    tx: broadcast::Sender<String>,
    tasks: Vec<JoinHandle<()>>,
}

/// Session records in Redis (standalone, Sentinel or Cluster).
pub struct RedisStore {
    client: fred::clients::Client,
    prefix: String,
    channel: String,
    server: String,
    scripts: Scripts,
    sub: Subscription,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.server)
            .field("prefix", &self.prefix)
            .field("connected", &self.client.is_connected())
            .field("subscription_healthy", &self.subscription_healthy())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        for t in &self.sub.tasks {
            t.abort();
        }
        // Stop the background (re)connection tasks; needs a runtime, which may be gone.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let sub = self.sub.client.clone();
            rt.spawn(async move {
                let _ = client.quit().await;
                let _ = sub.quit().await;
            });
        }
    }
}

/// `host:port` means `redis://host:port`.
fn normalize_url(url: &str) -> String {
    let url = url.trim();
    if url.contains("://") { url.to_owned() } else { format!("redis://{url}") }
}

/// The server for logs: scheme, host and port only (no credentials, no query).
fn describe(url: &str) -> String {
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
fn command_error(op: &str, id: &str, e: &fred::error::Error) -> StoreError {
    if e.details().starts_with("WRONGTYPE") || *e.kind() == ErrorKind::Parse {
        StoreError::Corrupt { id: id.to_owned(), reason: e.to_string() }
    } else {
        unavailable(op, e)
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn encode_members(members: &[String]) -> String {
    serde_json::Value::from(members.to_vec()).to_string()
}

/// The hash fields of a record.
fn encode(record: &SessionRecord) -> Vec<(String, String)> {
    let mut fields = vec![
        (F_VERSION.to_owned(), record.v.to_string()),
        (F_BINDING.to_owned(), record.binding.clone()),
        (F_PROTOCOL.to_owned(), record.protocol_version.clone()),
        (F_CLIENT.to_owned(), record.client.to_string()),
        (F_GENERATION.to_owned(), record.generation.to_string()),
        (F_MEMBERS.to_owned(), encode_members(&record.members)),
    ];
    fields.extend(record.hints.iter().map(|(k, v)| (format!("{HINT_PREFIX}{k}"), v.clone())));
    fields
}

/// A record from its hash fields.
fn decode(id: &str, mut fields: HashMap<String, String>) -> Result<SessionRecord, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { id: id.to_owned(), reason };
    let mut take = |name: &str| {
        fields.remove(name).ok_or_else(|| corrupt(format!("field `{name}` is missing")))
    };
    let v: u32 = take(F_VERSION)?.parse().map_err(|e| corrupt(format!("field `v`: {e}")))?;
    if v > SCHEMA_VERSION {
        return Err(corrupt(format!(
            "record layout version {v} is newer than this gateway's ({SCHEMA_VERSION})"
        )));
    }
    let binding = take(F_BINDING)?;
    let protocol_version = take(F_PROTOCOL)?;
    let client =
        serde_json::from_str(&take(F_CLIENT)?).map_err(|e| corrupt(format!("field `c`: {e}")))?;
    let generation = take(F_GENERATION)?.parse().map_err(|e| corrupt(format!("field `g`: {e}")))?;
    let members =
        serde_json::from_str(&take(F_MEMBERS)?).map_err(|e| corrupt(format!("field `m`: {e}")))?;
    let hints: BTreeMap<String, String> = fields
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(HINT_PREFIX).map(|name| (name.to_owned(), v)))
        .collect();
    Ok(SessionRecord { v, binding, protocol_version, client, generation, members, hints })
}

/// A flat `[field, value, …]` reply as a map.
fn pairs(id: &str, value: Value) -> Result<HashMap<String, String>, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt { id: id.to_owned(), reason: reason.into() };
    let Value::Array(items) = value else { return Err(corrupt("unexpected reply shape")) };
    let mut out = HashMap::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let (Some(k), Some(v)) = (k.into_string(), v.into_string()) else {
            return Err(corrupt("non-text field"));
        };
        out.insert(k, v);
    }
    Ok(out)
}

impl RedisStore {
    /// Connects to Redis (`redis://`, `rediss://`, `redis-sentinel://…`, `redis-cluster://…` or
    /// a bare `host:port`), selects `cfg.db`, authenticates with `cfg.password`, loads the
    /// scripts and subscribes to `<prefix>terminated`.
    ///
    /// Fails with [`StoreError::Unavailable`] when the URL or password is unusable or Redis
    /// cannot be reached now. Once connected, lost connections are re-established in the
    /// background (exponential backoff, no limit); commands meanwhile fail after
    /// [`COMMAND_TIMEOUT`].
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, StoreError> {
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
        let build_err = |e: fred::error::Error| {
            StoreError::Unavailable(format!("redis client ({server}): {}", e.details()))
        };
        let client = builder.build().map_err(build_err)?;
        let sub = builder.build_subscriber_client().map_err(build_err)?;

        let init_err = |e: fred::error::Error| {
            StoreError::Unavailable(format!("cannot connect to redis ({server}): {e}"))
        };
        let timed_out =
            || StoreError::Unavailable(format!("cannot connect to redis ({server}): timed out"));
        match tokio::time::timeout(INIT_TIMEOUT, client.init()).await {
            Ok(Ok(_task)) => {}
            Ok(Err(e)) => return Err(init_err(e)),
            Err(_) => {
                let _ = client.quit().await;
                return Err(timed_out());
            }
        }
        let channel = format!("{}terminated", cfg.key_prefix);
        let subscribed = async {
            sub.init().await?;
            sub.subscribe(channel.as_str()).await
        };
        match tokio::time::timeout(INIT_TIMEOUT, subscribed).await {
            Ok(Ok(())) => {}
            other => {
                let _ = client.quit().await;
                let _ = sub.quit().await;
                return Err(match other {
                    Ok(Err(e)) => init_err(e),
                    _ => timed_out(),
                });
            }
        }

        let scripts = Scripts {
            create: Script::new(CREATE_LUA),
            set_hint: Script::new(SET_HINT_LUA),
            cas_members: Script::new(CAS_MEMBERS_LUA),
            delete: Script::new(DELETE_LUA),
        };
        for s in [&scripts.create, &scripts.set_hint, &scripts.cas_members, &scripts.delete] {
            s.load(&client).await;
        }

        let (tx, _) = broadcast::channel(TERMINATIONS_CAPACITY);
        let healthy = Arc::new(AtomicBool::new(true));
        let restored = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let alive = Arc::new(Liveness::default());
        let tasks = vec![
            tokio::spawn(forward_terminations(
                sub.clone(),
                channel.clone(),
                tx.clone(),
                alive.clone(),
            )),
            tokio::spawn(keep_subscribed(
                Feed { sub: sub.clone(), publisher: client.clone(), channel: channel.clone() },
                healthy.clone(),
                restored.clone(),
                alive,
            )),
        ];
        tracing::info!(server = %server, prefix = %cfg.key_prefix, "connected to the redis session store");
        Ok(Self {
            client,
            prefix: cfg.key_prefix.clone(),
            channel,
            server,
            scripts,
            sub: Subscription { client: sub, healthy, restored, tx, tasks },
        })
    }

    /// The key of a session record: `<prefix>session:<id>`.
    pub fn session_key(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }

    /// The pub/sub channel carrying terminated session ids: `<prefix>terminated`.
    pub fn termination_channel(&self) -> &str {
        &self.channel
    }

    /// Ids of sessions deleted on any replica (including this one), as published by
    /// [`SessionStore::delete`]. Best effort: while [`Self::subscription_healthy`] is false, or
    /// after the receiver reports `Lagged`, callers must fall back to `exists()` checks; TTL
    /// expiry is never announced here.
    pub fn subscribe_terminations(&self) -> broadcast::Receiver<String> {
        self.sub.tx.subscribe()
    }

    /// Is the termination subscription connected and subscribed right now?
    pub fn subscription_healthy(&self) -> bool {
        self.sub.healthy.load(Ordering::Acquire) && self.sub.client.is_connected()
    }

    /// Changes each time the termination subscription comes back after being down: ids
    /// published meanwhile were missed, so cached sessions must be checked against the store.
    pub fn feed_epoch(&self) -> u64 {
        self.sub.restored.load(Ordering::Acquire)
    }

    /// Is the command connection up right now (for readiness)?
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }
}

/// When the last liveness message arrived on the subscription.
#[derive(Debug)]
struct Liveness {
    start: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Self { start: std::time::Instant::now(), last_ms: std::sync::atomic::AtomicU64::new(0) }
    }
}

impl Liveness {
    fn seen(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Release);
    }

    fn silent_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Acquire)))
    }
}

/// Copies published ids from the subscriber connection to the broadcast channel (liveness
/// messages only mark the subscription alive).
async fn forward_terminations(
    sub: SubscriberClient,
    channel: String,
    tx: broadcast::Sender<String>,
    alive: Arc<Liveness>,
) {
    let mut rx = sub.message_rx();
    loop {
        match rx.recv().await {
            Ok(message) => {
                if *message.channel == *channel
                    && let Some(id) = message.value.into_string()
                {
                    if id.starts_with(CANARY) {
                        alive.seen();
                    } else {
                        let _ = tx.send(id);
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "session termination notices were dropped");
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// The connections of the termination feed.
struct Feed {
    sub: SubscriberClient,
    publisher: fred::clients::Client,
    channel: String,
}

/// Keeps the subscription alive and its health honest: re-subscribes after reconnects,
/// publishes a liveness message every [`CANARY_EVERY`], marks the feed down when none came
/// back for [`CANARY_STALE`] (and forces the subscriber to reconnect), and up again, with a
/// new epoch, when they flow again.
async fn keep_subscribed(
    feed: Feed,
    healthy: Arc<AtomicBool>,
    restored: Arc<std::sync::atomic::AtomicU64>,
    alive: Arc<Liveness>,
) {
    let Feed { sub, publisher, channel } = feed;
    let canary = format!("{CANARY}{:032x}", rand::random::<u128>());
    let mut errors = sub.error_rx();
    let mut reconnects = sub.reconnect_rx();
    let mut tick = tokio::time::interval(CANARY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut forced_at: Option<std::time::Instant> = None;
    alive.seen();
    loop {
        tokio::select! {
            e = errors.recv() => {
                if matches!(e, Err(broadcast::error::RecvError::Closed)) {
                    break;
                }
            }
            r = reconnects.recv() => {
                if matches!(r, Err(broadcast::error::RecvError::Closed)) {
                    break;
                }
                if let Err(e) = sub.subscribe(channel.as_str()).await {
                    tracing::warn!(error = %e, "session termination subscription is down");
                }
            }
            _ = tick.tick() => {
                let publish = publisher.publish::<(), _, _>(channel.as_str(), canary.as_str());
                let _ = tokio::time::timeout(CANARY_EVERY, publish).await;
                if alive.silent_for() > CANARY_STALE {
                    if healthy.swap(false, Ordering::AcqRel) {
                        tracing::warn!("session termination feed is silent; checking sessions against the store");
                    }
                    // A silently dead connection is never noticed by the client: replace it.
                    if forced_at.is_none_or(|t| t.elapsed() > 2 * CANARY_STALE) {
                        forced_at = Some(std::time::Instant::now());
                        // The command connection may be just as dead: its timed-out commands
                        // leave nothing pending for the client's own unresponsiveness check.
                        let _ = tokio::time::timeout(CANARY_STALE, publisher.force_reconnection()).await;
                        let _ = tokio::time::timeout(CANARY_STALE, sub.force_reconnection()).await;
                        let _ = tokio::time::timeout(CANARY_STALE, sub.subscribe(channel.as_str())).await;
                    }
                } else if !healthy.swap(true, Ordering::AcqRel) {
                    restored.fetch_add(1, Ordering::AcqRel);
                    tracing::info!("session termination feed restored");
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for RedisStore {
    async fn create(
        &self,
        id: &str,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut args = vec![ttl_ms(ttl).to_string()];
        for (k, v) in encode(record) {
            args.push(k);
            args.push(v);
        }
        self.scripts
            .create
            .run::<Value>(&self.client, vec![self.session_key(id)], args)
            .await
            .map(drop)
            .map_err(|e| command_error("create", id, &e))
    }

    async fn load(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let fields: HashMap<String, String> = self
            .client
            .hgetall(self.session_key(id))
            .await
            .map_err(|e| command_error("load", id, &e))?;
        if fields.is_empty() {
            return Ok(None);
        }
        decode(id, fields).map(Some)
    }

    async fn touch(&self, id: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.client
            .pexpire::<bool, _>(self.session_key(id), ttl_ms(ttl), None)
            .await
            .map_err(|e| command_error("touch", id, &e))
    }

    async fn set_hint(
        &self,
        id: &str,
        backend: &str,
        hint: Option<&str>,
    ) -> Result<(), StoreError> {
        let args = vec![
            format!("{HINT_PREFIX}{backend}"),
            if hint.is_some() { "1" } else { "0" }.to_owned(),
            hint.unwrap_or_default().to_owned(),
        ];
        self.scripts
            .set_hint
            .run::<Value>(&self.client, vec![self.session_key(id)], args)
            .await
            .map(drop)
            .map_err(|e| command_error("set_hint", id, &e))
    }

    async fn cas_members(
        &self,
        id: &str,
        expected: u64,
        members: &[String],
    ) -> Result<CasOutcome, StoreError> {
        let mut args = Vec::with_capacity(members.len() + 2);
        args.push(expected.to_string());
        args.push(encode_members(members));
        args.extend(members.iter().cloned());
        let reply: Value = self
            .scripts
            .cas_members
            .run(&self.client, vec![self.session_key(id)], args)
            .await
            .map_err(|e| command_error("cas_members", id, &e))?;
        let corrupt = || StoreError::Corrupt {
            id: id.to_owned(),
            reason: "unexpected compare-and-set reply".into(),
        };
        let Value::Array(mut items) = reply else { return Err(corrupt()) };
        let payload = if items.len() > 1 { items.swap_remove(1) } else { Value::Null };
        match items.first().and_then(Value::as_i64) {
            Some(0) => Ok(CasOutcome::Missing),
            Some(1) => Ok(CasOutcome::Conflict(Box::new(decode(id, pairs(id, payload)?)?))),
            Some(2) => payload.as_u64().map(CasOutcome::Updated).ok_or_else(corrupt),
            _ => Err(corrupt()),
        }
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let args = vec![self.channel.clone(), id.to_owned()];
        self.scripts
            .delete
            .run::<i64>(&self.client, vec![self.session_key(id)], args)
            .await
            .map(|n| n > 0)
            .map_err(|e| command_error("delete", id, &e))
    }

    async fn exists(&self, id: &str) -> Result<bool, StoreError> {
        self.client
            .exists::<i64, _>(self.session_key(id))
            .await
            .map(|n| n > 0)
            .map_err(|e| command_error("exists", id, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SessionRecord {
        SessionRecord {
            v: SCHEMA_VERSION,
            binding: "sha256:00ff".into(),
            protocol_version: "2025-11-25".into(),
            client: serde_json::json!({"capabilities": {"roots": {}}, "clientInfo": {"name": "x"}}),
            generation: 7,
            members: vec!["a".into(), "b:c".into()],
            hints: [("a".to_owned(), "h1".to_owned())].into_iter().collect(),
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let r = record();
        let fields: HashMap<String, String> = encode(&r).into_iter().collect();
        assert_eq!(fields.get("h:a").map(String::as_str), Some("h1"));
        assert_eq!(decode("s", fields).unwrap(), r);
    }

    #[test]
    fn newer_layout_and_missing_fields_are_corrupt() {
        let mut fields: HashMap<String, String> = encode(&record()).into_iter().collect();
        fields.insert("v".into(), (SCHEMA_VERSION + 1).to_string());
        assert!(matches!(decode("s", fields), Err(StoreError::Corrupt { .. })));
        let mut fields: HashMap<String, String> = encode(&record()).into_iter().collect();
        fields.remove("g");
        assert!(matches!(decode("s", fields), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn urls() {
        assert_eq!(normalize_url("10.0.0.1:6379"), "redis://10.0.0.1:6379");
        assert_eq!(normalize_url("rediss://h:1"), "rediss://h:1");
        assert_eq!(describe("redis://user:pw@host:7000/2?x=y"), "redis://host:7000");
        assert!(!describe("redis-sentinel://:pw@h:26379/0?sentinelServiceName=m").contains("pw"));
    }

    #[test]
    fn ttl_is_at_least_one_millisecond() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_millis(300)), 300);
    }
}
