//! The record's Redis form: one hash field per part of a [`SessionRecord`] (the layout table
//! is in the parent module's documentation), and the decoding of script replies.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fred::prelude::Value;

use crate::session::record::{SCHEMA_VERSION, SessionRecord};
use crate::session::store::StoreError;

pub(super) const F_VERSION: &str = "v";
pub(super) const F_BINDING: &str = "b";
pub(super) const F_PROTOCOL: &str = "p";
pub(super) const F_CLIENT: &str = "c";
pub(super) const F_GENERATION: &str = "g";
pub(super) const F_MEMBERS: &str = "m";
pub(super) const HINT_PREFIX: &str = "h:";

pub(super) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

pub(super) fn encode_members(members: &[String]) -> String {
    serde_json::Value::from(members.to_vec()).to_string()
}

/// The hash fields of a record.
pub(super) fn encode(record: &SessionRecord) -> Vec<(String, String)> {
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
pub(super) fn decode(
    id: &str,
    mut fields: HashMap<String, String>,
) -> Result<SessionRecord, StoreError> {
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
pub(super) fn pairs(id: &str, value: Value) -> Result<HashMap<String, String>, StoreError> {
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
    fn ttl_is_at_least_one_millisecond() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_millis(300)), 300);
    }
}
