//! MCP protocol revisions the gateway serves and speaks.

/// Revisions served to clients, newest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

/// The revision assumed when a request carries no `MCP-Protocol-Version` header.
pub const DEFAULT_VERSION: &str = "2025-03-26";

/// The newest revision (offered to backends, answered when a client asks for an unknown one).
pub const LATEST_VERSION: &str = "2025-11-25";

/// Is `v` a revision the gateway serves?
pub fn is_supported(v: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&v)
}

/// The revision to answer an `initialize` that requested `requested`: the same if supported,
/// otherwise the newest.
pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| SUPPORTED_VERSIONS.iter().find(|v| **v == r).copied())
        .unwrap_or(LATEST_VERSION)
}

/// Are JSON-RPC batches allowed in revision `v`? (Only 2025-03-26.)
pub fn allows_batches(v: &str) -> bool {
    v == "2025-03-26"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates() {
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("2099-01-01")), LATEST_VERSION);
        assert_eq!(negotiate(None), LATEST_VERSION);
        assert!(allows_batches("2025-03-26") && !allows_batches("2025-06-18"));
    }
}
