//! Incoming authentication: who is calling (step 2 of the request path).
//!
//! - [`bearer_from_headers`] / [`reject_token_in_query`]: where a token may come from
//!   (`Authorization: Bearer` only).
//! - [`OidcValidator`]: validates it against one OpenID provider (discovery, JWKS with rotation,
//!   algorithm allow-list, `iss`, `aud`, `exp`/`nbf`, `sub`; RFC 7662 introspection for opaque
//!   tokens when configured) and yields a [`UserIdentity`](super::UserIdentity).
//! - [`IncomingAuthError`]: why not, with the status and `WWW-Authenticate` value to answer.
//! - [`protected_resource_metadata`] and [`resource_metadata_url`]: RFC 9728, what the 401
//!   points clients to.

mod bearer;
mod claims;
pub(crate) mod discovery;
mod error;
mod header;
mod introspection;
mod jwks;
mod metadata;
mod validate;

#[cfg(test)]
mod tests;

pub use bearer::{bearer_from_headers, reject_token_in_query};
pub use claims::check_jwt_claims;
pub use error::IncomingAuthError;
pub use header::{DEFAULT_ALGORITHMS, JwtHeader, check_jwt_header, parse_algorithms};
pub use metadata::{
    WELL_KNOWN_PREFIX, protected_resource_metadata, resource_metadata_path, resource_metadata_url,
};
pub use validate::{OidcValidator, ValidatorOptions};
