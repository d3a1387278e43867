//! Operator-wide defaults applied to a `VirtualMCPServer` before rendering.

use std::borrow::Cow;

use vmcp_types::crd::{SecretKeyRef, SessionStorage, SessionStorageProvider, VirtualMCPServer};

/// Operator-wide defaults applied to a `VirtualMCPServer` before rendering.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    /// Redis used for session storage by every `VirtualMCPServer` that does not set
    /// `spec.sessionStorage` at all (an explicit `provider: memory` is kept).
    pub redis: Option<DefaultRedis>,
}

/// The operator-wide default Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultRedis {
    /// `host:port` or a Redis URL.
    pub address: String,
    /// Key prefix; each gateway gets `<keyPrefix><namespace>:<name>:` under it.
    pub key_prefix: String,
    /// The Redis password: a key of a Secret that must exist in the namespace of each
    /// `VirtualMCPServer` the default applies to (the gateway pod mounts it from there).
    pub password: Option<SecretKeyRef>,
}

impl Defaults {
    /// `vmcp` with these defaults applied (borrowed unchanged when none applies).
    pub fn apply<'a>(&self, vmcp: &'a VirtualMCPServer) -> Cow<'a, VirtualMCPServer> {
        match (&self.redis, &vmcp.spec.session_storage) {
            (Some(r), None) => {
                let mut v = vmcp.clone();
                let ns = vmcp.metadata.namespace.as_deref().unwrap_or_default();
                let name = vmcp.metadata.name.as_deref().unwrap_or_default();
                v.spec.session_storage = Some(SessionStorage {
                    provider: SessionStorageProvider::Redis,
                    address: Some(r.address.clone()),
                    key_prefix: Some(format!("{}{ns}:{name}:", r.key_prefix)),
                    password_ref: r.password.clone(),
                    ..SessionStorage::default()
                });
                Cow::Owned(v)
            }
            _ => Cow::Borrowed(vmcp),
        }
    }
}
