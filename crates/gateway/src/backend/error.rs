//! Backend call errors.

use crate::jsonrpc::RpcError;

/// Why a backend call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// Connection refused, reset, DNS, TLS…
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No answer within the backend's timeout.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The backend answered 404 to our session id: its session is gone (I7).
    #[error("the backend session expired")]
    SessionExpired,
    /// An unexpected HTTP status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// Status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The backend answered with a JSON-RPC error.
    #[error("{}", .0.message)]
    Rpc(RpcError),
    /// The backend sent something that is not MCP.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The credential for this backend could not be obtained.
    #[error("{0}")]
    Auth(#[from] crate::auth::outgoing::OutgoingAuthError),
}

impl BackendError {
    /// Maps a reqwest error. The URL is left out: backend URLs may carry credentials in their
    /// userinfo or query (M7).
    pub fn from_reqwest(e: reqwest::Error, timeout: std::time::Duration) -> Self {
        if e.is_timeout() {
            Self::Timeout(timeout)
        } else {
            Self::Unreachable(crate::outbound::TransportFailure::of(&e).to_string())
        }
    }

    /// A short, fixed name of the kind of failure: safe to show to anyone (no URL, no body,
    /// no backend text).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Timeout(_) => "timeout",
            Self::SessionExpired => "session expired",
            Self::Status { .. } => "unexpected HTTP status",
            Self::Rpc(_) => "JSON-RPC error",
            Self::Protocol(_) => "protocol error",
            Self::Auth(_) => "credential unavailable",
        }
    }
}
