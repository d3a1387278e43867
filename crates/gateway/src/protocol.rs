//! The MCP vocabulary in one place: the protocol revisions the gateway serves and speaks, the
//! request methods it knows ([`Method`]), the notifications it sends or forwards, and the HTTP
//! header names of the Streamable HTTP transport. Payloads stay `serde_json::Value`
//! (see [`crate::jsonrpc`]); only names are typed here.

/// `Mcp-Session-Id`: the session a request belongs to.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// `MCP-Protocol-Version`: the revision a request speaks (after `initialize`).
pub const VERSION_HEADER: &str = "mcp-protocol-version";

/// The client-to-server request methods the gateway knows. Anything else is answered with
/// "method not found" and counted under one metrics label (H1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `initialize`: creates the session.
    Initialize,
    /// `ping`: answered by the gateway itself.
    Ping,
    /// `tools/list`: from the merged view.
    ToolsList,
    /// `tools/call`: routed to the tool's backend.
    ToolsCall,
    /// `resources/list`: from the merged view.
    ResourcesList,
    /// `resources/templates/list`: from the merged view.
    ResourcesTemplatesList,
    /// `resources/read`: routed to the resource's backend.
    ResourcesRead,
    /// `resources/subscribe`: routed to the resource's backend.
    ResourcesSubscribe,
    /// `resources/unsubscribe`: routed to the resource's backend.
    ResourcesUnsubscribe,
    /// `prompts/list`: from the merged view.
    PromptsList,
    /// `prompts/get`: routed to the prompt's backend.
    PromptsGet,
    /// `completion/complete`: routed to the backend owning the referenced prompt or resource.
    CompletionComplete,
    /// `logging/setLevel`: sent to every connected member.
    LoggingSetLevel,
}

impl Method {
    /// Every known method.
    pub const ALL: [Method; 13] = [
        Method::Initialize,
        Method::Ping,
        Method::ToolsList,
        Method::ToolsCall,
        Method::ResourcesList,
        Method::ResourcesTemplatesList,
        Method::ResourcesRead,
        Method::ResourcesSubscribe,
        Method::ResourcesUnsubscribe,
        Method::PromptsList,
        Method::PromptsGet,
        Method::CompletionComplete,
        Method::LoggingSetLevel,
    ];

    /// The method's wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Initialize => "initialize",
            Method::Ping => "ping",
            Method::ToolsList => "tools/list",
            Method::ToolsCall => "tools/call",
            Method::ResourcesList => "resources/list",
            Method::ResourcesTemplatesList => "resources/templates/list",
            Method::ResourcesRead => "resources/read",
            Method::ResourcesSubscribe => "resources/subscribe",
            Method::ResourcesUnsubscribe => "resources/unsubscribe",
            Method::PromptsList => "prompts/list",
            Method::PromptsGet => "prompts/get",
            Method::CompletionComplete => "completion/complete",
            Method::LoggingSetLevel => "logging/setLevel",
        }
    }

    /// The known method named `name` (exact, case-sensitive, as JSON-RPC requires).
    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Is it forwarded to exactly one backend (and may stream progress back)?
    pub const fn is_forwarded(self) -> bool {
        matches!(
            self,
            Method::ToolsCall
                | Method::ResourcesRead
                | Method::ResourcesSubscribe
                | Method::ResourcesUnsubscribe
                | Method::PromptsGet
                | Method::CompletionComplete
        )
    }

    /// Is it a list answered from the session's merged view?
    pub const fn is_list(self) -> bool {
        matches!(
            self,
            Method::ToolsList
                | Method::ResourcesList
                | Method::ResourcesTemplatesList
                | Method::PromptsList
        )
    }
}

/// Notification method names the gateway sends, forwards or interprets.
pub mod notification {
    /// Client → server after `initialize` (the gateway sends it to each backend it opens).
    pub const INITIALIZED: &str = "notifications/initialized";
    /// Either direction: a request was cancelled.
    pub const CANCELLED: &str = "notifications/cancelled";
    /// Either direction: progress of a request.
    pub const PROGRESS: &str = "notifications/progress";
    /// Client → server: the client's roots changed.
    pub const ROOTS_LIST_CHANGED: &str = "notifications/roots/list_changed";
    /// Server → client: the tool list changed.
    pub const TOOLS_LIST_CHANGED: &str = "notifications/tools/list_changed";
    /// Server → client: the prompt list changed.
    pub const PROMPTS_LIST_CHANGED: &str = "notifications/prompts/list_changed";
    /// Server → client: the resource list changed.
    pub const RESOURCES_LIST_CHANGED: &str = "notifications/resources/list_changed";
    /// Every `list_changed` the gateway sends when a session's merged view may have changed.
    pub const LISTS_CHANGED: [&str; 3] =
        [TOOLS_LIST_CHANGED, PROMPTS_LIST_CHANGED, RESOURCES_LIST_CHANGED];
}

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

/// Does a client of revision `v` get a priming event (id, empty data, `retry`) first on each
/// SSE stream? (2025-11-25 on; older clients may not expect empty data.)
pub fn sends_priming_event(v: &str) -> bool {
    // Revisions are dates, so they order as strings.
    v >= "2025-11-25"
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

    #[test]
    fn methods_round_trip_and_are_classified() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.as_str()), Some(m));
            assert!(!(m.is_list() && m.is_forwarded()), "{m:?}");
        }
        assert_eq!(Method::parse("tools/call2"), None);
        assert_eq!(Method::parse("Tools/Call"), None);
        assert!(Method::ToolsCall.is_forwarded() && Method::PromptsList.is_list());
        assert!(!Method::Ping.is_forwarded() && !Method::Ping.is_list());
    }
}
