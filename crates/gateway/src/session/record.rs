//! The session record kept in the store. It holds no token or secret (I6): the binding is a
//! hash, and backend session ids are opaque hints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of the record layout; a reader refuses records of a newer version.
pub const SCHEMA_VERSION: u32 = 1;

/// One stored session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SessionRecord {
    /// Layout version ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// `anonymous` or `sha256:<hex of issuer \0 subject>` (I2).
    pub binding: String,
    /// Protocol revision negotiated with the client.
    pub protocol_version: String,
    /// What restore needs of the client's `initialize` params, capped
    /// ([`restorable_client_params`]): never the raw params.
    pub client: Value,
    /// Membership generation; bumped by compare-and-set on config changes (I4).
    pub generation: u64,
    /// Member backends, in configuration order. Restore never shrinks it (I3).
    pub members: Vec<String>,
    /// Backend session hints by backend name (I7): `<Mcp-Session-Id> <protocol version>`
    /// ([`BackendHint`]); records of earlier gateways hold the session id alone.
    #[serde(default)]
    pub hints: BTreeMap<String, String>,
}

/// A stored backend session: its `Mcp-Session-Id` and the protocol revision that backend
/// negotiated, which every later request to it must carry (H3: a backend built on an older SDK
/// answers 400 to a newer `MCP-Protocol-Version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHint {
    /// The backend's `Mcp-Session-Id` (visible ASCII, so it never holds a space).
    pub session_id: String,
    /// The negotiated revision; unknown in records of earlier gateways.
    pub protocol_version: Option<String>,
}

impl BackendHint {
    /// Parses the stored form.
    pub fn parse(stored: &str) -> Self {
        match stored.split_once(' ') {
            Some((id, v)) => {
                Self { session_id: id.to_owned(), protocol_version: Some(v.to_owned()) }
            }
            None => Self { session_id: stored.to_owned(), protocol_version: None },
        }
    }

    /// The stored form.
    pub fn encode(&self) -> String {
        match &self.protocol_version {
            Some(v) => format!("{} {v}", self.session_id),
            None => self.session_id.clone(),
        }
    }
}

/// Longest `clientInfo.name` / `clientInfo.version` kept.
const MAX_INFO_CHARS: usize = 64;
/// Largest serialized client `capabilities` kept (larger ones keep only the standard keys).
const MAX_CAPABILITIES_BYTES: usize = 1024;
/// The client capabilities the MCP specification defines.
const STANDARD_CAPABILITIES: [&str; 3] = ["roots", "sampling", "elicitation"];

/// What a session keeps of the client's `initialize` params (H4): the requested protocol
/// version, the client's capabilities (only the standard ones, each capped, when they are
/// large) and its name and version, truncated. A client cannot make a record large: the
/// result serializes to well under 2 KiB whatever the params were.
pub fn restorable_client_params(params: &Value) -> Value {
    let text = |v: Option<&Value>| -> Value {
        v.and_then(Value::as_str)
            .map(|s| Value::from(s.chars().take(MAX_INFO_CHARS).collect::<String>()))
            .unwrap_or(Value::Null)
    };
    let mut out = serde_json::Map::new();
    out.insert("protocolVersion".into(), text(params.get("protocolVersion")));
    let info = params.get("clientInfo");
    out.insert(
        "clientInfo".into(),
        serde_json::json!({
            "name": text(info.and_then(|i| i.get("name"))),
            "version": text(info.and_then(|i| i.get("version"))),
        }),
    );
    let caps = params.get("capabilities").and_then(Value::as_object);
    let small = |v: &Value| v.to_string().len() <= MAX_CAPABILITIES_BYTES;
    let kept: serde_json::Map<String, Value> = match caps {
        Some(c) if small(&Value::Object(c.clone())) => c.clone(),
        Some(c) => STANDARD_CAPABILITIES
            .iter()
            .filter_map(|k| c.get(*k).map(|v| (k.to_string(), v)))
            .map(|(k, v)| (k, if small(v) { v.clone() } else { serde_json::json!({}) }))
            .collect(),
        None => serde_json::Map::new(),
    };
    out.insert("capabilities".into(), Value::Object(kept));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hints_round_trip_and_old_hints_parse() {
        let h =
            BackendHint { session_id: "abc".into(), protocol_version: Some("2025-03-26".into()) };
        assert_eq!(BackendHint::parse(&h.encode()), h);
        assert_eq!(
            BackendHint::parse("abc"),
            BackendHint { session_id: "abc".into(), protocol_version: None }
        );
    }

    #[test]
    fn small_params_keep_what_restore_needs() {
        let p = json!({"protocolVersion": "2025-06-18",
            "capabilities": {"sampling": {}, "roots": {"listChanged": true}},
            "clientInfo": {"name": "c", "version": "1", "title": "dropped"}, "_meta": {"x": 1}});
        assert_eq!(
            restorable_client_params(&p),
            json!({"protocolVersion": "2025-06-18",
                "capabilities": {"sampling": {}, "roots": {"listChanged": true}},
                "clientInfo": {"name": "c", "version": "1"}})
        );
    }

    #[test]
    fn hostile_params_are_capped() {
        let big = "x".repeat(3 << 20);
        let p = json!({"protocolVersion": big,
            "capabilities": {"experimental": {"blob": big}, "sampling": {"blob": big}, "roots": {}},
            "clientInfo": {"name": big, "version": big}, "_meta": {"blob": big}});
        let kept = restorable_client_params(&p);
        assert!(kept.to_string().len() < 512, "{} bytes kept", kept.to_string().len());
        assert_eq!(kept["capabilities"], json!({"sampling": {}, "roots": {}}));
    }
}
