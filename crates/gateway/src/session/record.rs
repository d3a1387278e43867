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
    /// The client's `initialize` params (capabilities, clientInfo, protocolVersion).
    pub client: Value,
    /// Membership generation; bumped by compare-and-set on config changes (I4).
    pub generation: u64,
    /// Member backends, in configuration order. Restore never shrinks it (I3).
    pub members: Vec<String>,
    /// Backend `Mcp-Session-Id` hints by backend name (I7).
    #[serde(default)]
    pub hints: BTreeMap<String, String>,
}
