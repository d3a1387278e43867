//! Authentication: who the live request is ([`Identity`], from [`incoming`]) and which
//! credential each backend gets for that identity ([`outgoing`]).
//!
//! Invariant I1: backend credentials are derived only from the identity of the request being
//! served; nothing here reads identity from stored session metadata.

pub mod binding;
pub mod incoming;
pub mod jwt_crypto;
pub mod outgoing;
pub mod token_exchange;

pub use binding::Binding;

use std::time::SystemTime;

use secrecy::SecretString;

/// The authenticated caller of one HTTP request (put into the request extensions).
#[derive(Debug, Clone)]
pub enum Identity {
    /// No authentication configured.
    Anonymous,
    /// A validated OIDC bearer token.
    User(UserIdentity),
}

/// A validated token's subject.
#[derive(Debug, Clone)]
pub struct UserIdentity {
    /// `iss` claim.
    pub issuer: String,
    /// `sub` claim.
    pub subject: String,
    /// The raw bearer token (only ever sent to the token endpoint as `subject_token`).
    pub token: SecretString,
    /// All claims of the token.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// `exp` claim.
    pub expires_at: Option<SystemTime>,
}

impl Identity {
    /// The session binding of this identity.
    pub fn binding(&self) -> Binding {
        match self {
            Self::Anonymous => Binding::anonymous(),
            Self::User(u) => Binding::for_subject(&u.issuer, &u.subject),
        }
    }

    /// The subject for audit logs (`anonymous` when unauthenticated).
    pub fn subject(&self) -> &str {
        match self {
            Self::Anonymous => "anonymous",
            Self::User(u) => &u.subject,
        }
    }
}
