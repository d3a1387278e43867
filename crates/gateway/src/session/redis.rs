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
//! backoff, so recovery needs no restart (after a Sentinel or Cluster failover too: the client
//! asks the sentinels, or the cluster, where the master is now).
//!
//! # Durability
//! With `waitReplicas` set, `create`, `cas_members` and `delete` are acknowledged only once that
//! many replicas hold the write (`WAIT`); otherwise they fail with [`StoreError::Unavailable`].
//! Hint writes and TTL refreshes are never waited for: losing one in a failover costs a backend
//! re-initialization (I7) or a few seconds of TTL, never the session.
//!
//! # Parts
//! [`codec`] (record <-> hash fields), [`scripts`] (the Lua), [`connection`] (URLs, client
//! settings, `WAIT`), [`feed`] (the termination subscription).

mod codec;
mod connection;
mod feed;
mod scripts;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fred::prelude::{
    ClientLike, HashesInterface, KeysInterface, ListInterface, PubsubInterface, Value,
};
use tokio::sync::broadcast;
use vmcp_types::config::RedisConfig;

use self::codec::{HINT_PREFIX, decode, encode, encode_members, pairs, ttl_ms};
pub use self::connection::COMMAND_TIMEOUT;
use self::connection::{Durability, INIT_TIMEOUT, command_error};
use self::feed::{
    ANSWER, Feed, Liveness, Subscription, TERMINATIONS_CAPACITY, forward_terminations,
    keep_subscribed,
};
use self::scripts::Scripts;
use super::record::SessionRecord;
use super::store::{CasOutcome, SessionStore, StoreError, StoredEvent};

/// Session records in Redis (standalone, Sentinel or Cluster).
pub struct RedisStore {
    client: fred::clients::Client,
    prefix: String,
    channel: String,
    server: String,
    scripts: Scripts,
    durability: Durability,
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
        let (builder, server) = connection::builder(cfg)?;
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

        let scripts = Scripts::load(&client).await;

        let (tx, _) = broadcast::channel(TERMINATIONS_CAPACITY);
        let (answers, _) = broadcast::channel(TERMINATIONS_CAPACITY);
        let healthy = Arc::new(AtomicBool::new(true));
        let restored = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let alive = Arc::new(Liveness::default());
        let tasks = vec![
            tokio::spawn(forward_terminations(
                sub.clone(),
                channel.clone(),
                tx.clone(),
                answers.clone(),
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
            durability: Durability::of(cfg),
            sub: Subscription { client: sub, healthy, restored, tx, answers, tasks },
        })
    }

    /// The key of a session record: `<prefix>session:<id>`.
    pub fn session_key(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }

    /// The key of a client stream's kept events: `<prefix>events:<id>:<stream>`.
    pub fn events_key(&self, id: &str, stream: &str) -> String {
        format!("{}events:{id}:{stream}", self.prefix)
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

    /// Client answers to backend requests that reached another replica: `<session id>
    /// <JSON-RPC response>`, as published by [`Self::publish_answer`] (best effort, like the
    /// termination feed they share a channel with).
    pub fn subscribe_answers(&self) -> broadcast::Receiver<String> {
        self.sub.answers.subscribe()
    }

    /// Hands a client's answer that no backend request waits for on this replica to the
    /// replica holding the backend call.
    pub async fn publish_answer(&self, session: &str, message: &str) -> Result<(), StoreError> {
        self.client
            .publish::<i64, _, _>(self.channel.as_str(), format!("{ANSWER}{session} {message}"))
            .await
            .map(drop)
            .map_err(|e| command_error("publish_answer", session, &e))
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
        let key = self.session_key(id);
        self.scripts
            .create
            .run::<Value>(&self.client, vec![key.clone()], args)
            .await
            .map_err(|e| command_error("create", id, &e))?;
        self.durability.wait(&self.client, "create", id, &key).await
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
        let key = self.session_key(id);
        let reply: Value = self
            .scripts
            .cas_members
            .run(&self.client, vec![key.clone()], args)
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
            Some(2) => {
                let generation = payload.as_u64().ok_or_else(corrupt)?;
                self.durability.wait(&self.client, "cas_members", id, &key).await?;
                Ok(CasOutcome::Updated(generation))
            }
            _ => Err(corrupt()),
        }
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let args = vec![self.channel.clone(), id.to_owned()];
        let key = self.session_key(id);
        let n = self
            .scripts
            .delete
            .run::<i64>(&self.client, vec![key.clone()], args)
            .await
            .map_err(|e| command_error("delete", id, &e))?;
        // A deletion the new master never saw would bring the session back after a failover.
        self.durability.wait(&self.client, "delete", id, &key).await?;
        Ok(n > 0)
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn append_events(
        &self,
        id: &str,
        stream: &str,
        events: &[StoredEvent],
        over: bool,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut args = vec![
            ttl_ms(ttl).to_string(),
            super::streams::WINDOW.to_string(),
            if over { "1" } else { "0" }.to_owned(),
        ];
        args.extend(events.iter().map(|e| format!("e {} {}", e.seq, e.data)));
        self.scripts
            .append_events
            .run::<Value>(&self.client, vec![self.events_key(id, stream)], args)
            .await
            .map(drop)
            .map_err(|e| command_error("append_events", id, &e))
    }

    async fn load_events(
        &self,
        id: &str,
        stream: &str,
    ) -> Result<Option<(Vec<StoredEvent>, bool)>, StoreError> {
        let entries: Vec<String> = self
            .client
            .lrange(self.events_key(id, stream), 0, -1)
            .await
            .map_err(|e| command_error("load_events", id, &e))?;
        if entries.is_empty() {
            return Ok(None);
        }
        let mut over = false;
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry == "x" {
                over = true;
                continue;
            }
            let parsed = entry.strip_prefix("e ").and_then(|rest| {
                let (seq, data) = rest.split_once(' ')?;
                Some(StoredEvent { seq: seq.parse().ok()?, data: data.to_owned() })
            });
            match parsed {
                Some(e) => events.push(e),
                None => {
                    return Err(StoreError::Corrupt {
                        id: id.to_owned(),
                        reason: format!("unreadable event entry in stream {stream}"),
                    });
                }
            }
        }
        Ok(Some((events, over)))
    }

    async fn exists(&self, id: &str) -> Result<bool, StoreError> {
        self.client
            .exists::<i64, _>(self.session_key(id))
            .await
            .map(|n| n > 0)
            .map_err(|e| command_error("exists", id, &e))
    }
}
