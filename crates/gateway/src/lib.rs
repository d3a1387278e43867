//! vmcp-gateway: many backend MCP servers behind one Streamable HTTP endpoint.
//!
//! Request path: [`http`] (limits, Origin, protocol version) → `auth` (identity of the live
//! request) → [`session`] (resolve or restore the session) → [`aggregate`] (route the method) →
//! [`backend`] (call with the credential for that backend and that identity). [`app`] assembles
//! them from a configuration (the binary only parses flags and runs it).

pub mod aggregate;
pub mod app;
pub mod auth;
pub mod backend;
pub mod bridge;
pub mod bridge_auth;
pub mod bridge_install;
pub(crate) mod clock;
pub mod config;
pub mod credential_files;
pub mod health;
pub mod http;
pub mod jsonrpc;
pub mod log_writer;
pub mod methods;
pub mod metrics;
pub mod outbound;
pub mod protocol;
pub mod session;
pub mod sse;
