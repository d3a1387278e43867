//! The bridge token of a `stdio` `MCPServer` (M8): a random bearer token in a Secret the
//! server owns (`<server>-bridge-token`, key `token`). The bridge container reads it from a
//! read-only volume (`--auth-token-file`) and refuses every `/mcp` request without it; the
//! gateway gets the same Secret mounted and sends it as the backend's `bearerToken`. So only
//! the gateway can start stdio processes, whatever the cluster's network policy.
//!
//! The controller creates the Secret once, when it is missing, and never rewrites it: a
//! reconcile does not rotate the token. Deleting the Secret makes a later reconcile create a
//! new one; the Secret's uid on the bridge pod template then rolls the bridge pods (they read
//! the token at start), and its new version rolls the gateway pods.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, SecretVolumeSource, Volume, VolumeMount};
use rand::RngCore;
use vmcp_types::crd::{MCPServer, McpTransport, SecretKeyRef};

use super::mcp_server::{SERVER_APP, SERVER_COMPONENT};
use super::{RenderError, child_meta, labels};

/// Key of the token in the Secret.
pub const BRIDGE_TOKEN_KEY: &str = "token";
/// Folder the token Secret is mounted at in the bridge container.
pub const BRIDGE_TOKEN_DIR: &str = "/var/run/secrets/vmcp-bridge";
const VOLUME: &str = "vmcp-bridge-token";
const KIND: &str = "MCPServer";

/// The name of the token Secret of `s`, when `s` runs behind the bridge (`stdio`).
pub fn bridge_token_secret_name(s: &MCPServer) -> Option<String> {
    (s.spec.transport == McpTransport::Stdio)
        .then(|| format!("{}-bridge-token", s.metadata.name.as_deref().unwrap_or_default()))
}

/// The Secret key holding the token of `s` (what the gateway mounts), for a `stdio` server.
pub fn bridge_token_ref(s: &MCPServer) -> Option<SecretKeyRef> {
    bridge_token_secret_name(s).map(|name| SecretKeyRef { name, key: BRIDGE_TOKEN_KEY.into() })
}

/// A new random token: 32 bytes from the OS-seeded CSPRNG, hex.
pub fn new_bridge_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The token Secret of `s` holding `token`, owned by `s` (deleted with it). `None` for a
/// server that is not `stdio`.
pub fn bridge_token_secret(s: &MCPServer, token: &str) -> Result<Option<Secret>, RenderError> {
    let Some(name) = bridge_token_secret_name(s) else { return Ok(None) };
    let instance = s.metadata.name.clone().unwrap_or_default();
    Ok(Some(Secret {
        metadata: child_meta(s, KIND, name, labels(SERVER_APP, &instance, SERVER_COMPONENT))?,
        type_: Some("Opaque".into()),
        string_data: Some([(BRIDGE_TOKEN_KEY.to_owned(), token.to_owned())].into()),
        ..Secret::default()
    }))
}

/// Pod template annotation holding the uid of the bridge token Secret the pods read.
pub const BRIDGE_TOKEN_ANNOTATION: &str = "vmcp.dev/bridge-token-uid";

/// Marks the bridge pods with the uid of their token Secret, so a re-created Secret (a new
/// token) rolls them (the bridge reads the token at start). `None` (not known) changes nothing.
pub fn roll_on_new_bridge_token(d: &mut Deployment, secret_uid: Option<String>) {
    let Some(uid) = secret_uid else { return };
    if let Some(spec) = d.spec.as_mut() {
        spec.template
            .metadata
            .get_or_insert_with(Default::default)
            .annotations
            .get_or_insert_with(Default::default)
            .insert(BRIDGE_TOKEN_ANNOTATION.to_owned(), uid);
    }
}

/// The bridge container's volume and mount of the token, and the path it reads.
pub(super) fn bridge_token_volume(secret: &str) -> (Volume, VolumeMount, String) {
    let volume = Volume {
        name: VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            // Any UID may run the server image (restricted PSS, no fixed user): readable by
            // all inside the container, which only the bridge and its server share.
            default_mode: Some(0o444),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: VOLUME.into(),
        mount_path: BRIDGE_TOKEN_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    (volume, mount, format!("{BRIDGE_TOKEN_DIR}/{BRIDGE_TOKEN_KEY}"))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    #[test]
    fn only_stdio_servers_get_an_owned_token_secret() {
        let s = fixtures::server("time");
        let secret = bridge_token_secret(&s, "abc").unwrap().unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("time-bridge-token"));
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("MCPServer", Some(true)));
        assert_eq!(secret.string_data.unwrap()["token"], "abc");
        let http = fixtures::server("github-tools");
        assert!(bridge_token_secret(&http, "abc").unwrap().is_none());
        assert!(bridge_token_ref(&http).is_none());
    }

    #[test]
    fn a_new_secret_uid_changes_the_pod_template() {
        let s = fixtures::server("time");
        let base = super::super::mcp_server::server_deployment(
            &s,
            "img",
            &super::super::WorkloadDefaults::default(),
        )
        .unwrap();
        let mut a = base.clone();
        roll_on_new_bridge_token(&mut a, Some("uid-1".into()));
        let mut b = base.clone();
        roll_on_new_bridge_token(&mut b, Some("uid-2".into()));
        let template = |d: &Deployment| d.spec.as_ref().unwrap().template.clone();
        assert_ne!(template(&a), template(&b));
        let annotations = template(&a).metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[BRIDGE_TOKEN_ANNOTATION], "uid-1");
        let mut unknown = base.clone();
        roll_on_new_bridge_token(&mut unknown, None);
        assert_eq!(unknown, base);
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (new_bridge_token(), new_bridge_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
    }
}
