//! Session binding (invariant I2): a session belongs to one `(issuer, subject)` or to
//! "anonymous". Only a hash is kept or stored, never the raw subject; comparison is constant
//! time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The binding of a session, as stored: `anonymous` or `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding(String);

const ANONYMOUS: &str = "anonymous";

impl Binding {
    /// The binding of unauthenticated sessions.
    pub fn anonymous() -> Self {
        Self(ANONYMOUS.to_owned())
    }

    /// The binding of a user: a hash of issuer and subject.
    pub fn for_subject(issuer: &str, subject: &str) -> Self {
        let mut h = Sha256::new();
        h.update(issuer.as_bytes());
        h.update([0u8]);
        h.update(subject.as_bytes());
        Self(format!("sha256:{}", hex::encode(h.finalize())))
    }

    /// Restores a stored binding.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The stored form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time equality.
    pub fn matches(&self, other: &Binding) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.as_bytes().ct_eq(other.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_hash_and_compare() {
        let a = Binding::for_subject("https://idp", "alice");
        assert!(a.matches(&Binding::for_subject("https://idp", "alice")));
        assert!(!a.matches(&Binding::for_subject("https://idp", "bob")));
        assert!(!a.matches(&Binding::for_subject("https://other", "alice")));
        assert!(!a.matches(&Binding::anonymous()));
        assert!(!a.as_str().contains("alice"));
        // No ambiguity between issuer and subject boundaries.
        assert!(!Binding::for_subject("a", "bc").matches(&Binding::for_subject("ab", "c")));
    }
}
