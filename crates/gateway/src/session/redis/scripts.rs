//! The Lua scripts behind every write (each touches one key, so it runs on Cluster too) and
//! their `EVALSHA`-with-`EVAL`-fallback runner.

use std::sync::OnceLock;

use fred::prelude::LuaInterface;
use fred::types::FromValue;

/// KEYS[1] = record; ARGV[1] = ttl ms; ARGV[2..] = field, value, … (replaces any old record).
pub(super) const CREATE_LUA: &str = r#"
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

/// KEYS[1] = stream events (a list); ARGV[1] = ttl ms; ARGV[2] = window (events kept);
/// ARGV[3] = '1' when the stream is over (an end marker "x" follows the events);
/// ARGV[4..] = events to append ("e <seq> <json>").
const APPEND_EVENTS_LUA: &str = r#"
if #ARGV > 3 then redis.call('RPUSH', KEYS[1], unpack(ARGV, 4)) end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
if ARGV[3] == '1' then redis.call('RPUSH', KEYS[1], 'x') end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"#;

/// A Lua script run with `EVALSHA`, falling back to `EVAL` (which also re-caches it).
#[derive(Debug)]
pub(super) struct Script {
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

    pub(super) async fn run<R: FromValue>(
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
pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) set_hint: Script,
    pub(super) cas_members: Script,
    pub(super) delete: Script,
    pub(super) append_events: Script,
}

impl Scripts {
    /// The scripts, loaded into the script cache where possible (`EVAL` covers the rest).
    pub(super) async fn load(client: &fred::clients::Client) -> Self {
        let scripts = Self {
            create: Script::new(CREATE_LUA),
            set_hint: Script::new(SET_HINT_LUA),
            cas_members: Script::new(CAS_MEMBERS_LUA),
            delete: Script::new(DELETE_LUA),
            append_events: Script::new(APPEND_EVENTS_LUA),
        };
        for s in [
            &scripts.create,
            &scripts.set_hint,
            &scripts.cas_members,
            &scripts.delete,
            &scripts.append_events,
        ] {
            s.load(client).await;
        }
        scripts
    }
}
