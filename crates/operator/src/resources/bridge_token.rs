//! The bridge token of a `stdio` `MCPServer` (M8): a random bearer token in a Secret the
//! server owns (`<server>-bridge-token`, key `token`). The bridge container reads it from a
//! read-only volume (`--auth-token-file`) and refuses every `/mcp` request without it; the
//! gateway gets the same Secret mounted and sends it as the backend's `bearerToken`. So only
//! the gateway can start stdio processes, whatever the cluster's network policy.
//!
//! The controller creates the Secret once, when it is missing, and never rewrites it: a
//! reconcile does not rotate the token. Deleting the Secret makes a later reconcile create a
//! new one; the Secret's uid on the bridge pod template then rolls the bridge pods (they read
//! the token at start).
//!
//! The gateway does not mount the servers' Secrets (a member joining or leaving would change
//! its pod template and roll every gateway pod): each `VirtualMCPServer` owns one Secret,
//! `<name>-vmcp-bridge-tokens`, with one key per stdio member (the member's name) holding a
//! copy of that member's token, always mounted at [`GATEWAY_BRIDGE_TOKENS_DIR`]. Membership
//! and token changes change only that Secret's keys; the gateway re-reads the files (a missing
//! one leaves its backend out until the kubelet syncs it: `waitForFile`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, SecretVolumeSource, Volume, VolumeMount};
use rand::RngCore;
use vmcp_types::crd::{MCPServer, McpTransport, SecretKeyRef, VirtualMCPServer};

use super::gateway::{GATEWAY_APP, GATEWAY_COMPONENT};
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

/// Folder the gateway pod mounts its bridge tokens Secret at: one file per stdio member, named
/// like the member.
pub const GATEWAY_BRIDGE_TOKENS_DIR: &str = "/var/run/secrets/vmcp-bridge-tokens";
const GATEWAY_VOLUME: &str = "vmcp-bridge-tokens";

/// The gateway's bridge tokens Secret: `<name>-vmcp-bridge-tokens`.
pub fn gateway_bridge_tokens_name(v: &VirtualMCPServer) -> String {
    format!("{}-vmcp-bridge-tokens", v.metadata.name.as_deref().unwrap_or_default())
}

/// Where the gateway reads the bridge token of stdio member `server`.
pub fn gateway_bridge_token_file(server: &str) -> String {
    format!("{GATEWAY_BRIDGE_TOKENS_DIR}/{server}")
}

/// The gateway's bridge tokens Secret holding `tokens` (member name -> that member's token),
/// owned by `v`. It holds secret values: never log it.
pub fn gateway_bridge_tokens_secret(
    v: &VirtualMCPServer,
    tokens: BTreeMap<String, ByteString>,
) -> Result<Secret, RenderError> {
    let instance = v.metadata.name.clone().unwrap_or_default();
    Ok(Secret {
        metadata: child_meta(
            v,
            "VirtualMCPServer",
            gateway_bridge_tokens_name(v),
            labels(GATEWAY_APP, &instance, GATEWAY_COMPONENT),
        )?,
        type_: Some("Opaque".into()),
        data: Some(tokens),
        ..Secret::default()
    })
}

/// The gateway pod's volume and mount of its bridge tokens Secret: every key, whatever the
/// members, so membership never changes the pod template.
pub fn gateway_bridge_tokens_volume(v: &VirtualMCPServer) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: GATEWAY_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(gateway_bridge_tokens_name(v)),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: GATEWAY_VOLUME.into(),
        mount_path: GATEWAY_BRIDGE_TOKENS_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    (volume, mount)
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
    fn the_gateway_secret_holds_one_key_per_member_and_is_owned_by_the_gateway() {
        let v = fixtures::vmcp();
        let tokens = BTreeMap::from([
            ("a".to_owned(), ByteString(b"token-a".to_vec())),
            ("b".to_owned(), ByteString(b"token-b".to_vec())),
        ]);
        let secret = gateway_bridge_tokens_secret(&v, tokens.clone()).unwrap();
        let name = format!("{}-vmcp-bridge-tokens", v.metadata.name.as_deref().unwrap());
        assert_eq!(secret.metadata.name.as_deref(), Some(name.as_str()));
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("VirtualMCPServer", Some(true)));
        assert_eq!(secret.data, Some(tokens));
        assert!(secret.string_data.is_none());
        let empty = gateway_bridge_tokens_secret(&v, BTreeMap::new()).unwrap();
        assert_eq!(empty.data, Some(BTreeMap::new()), "no member: an empty Secret, still mounted");
        assert_eq!(gateway_bridge_token_file("a"), "/var/run/secrets/vmcp-bridge-tokens/a");
        let (volume, mount) = gateway_bridge_tokens_volume(&v);
        let source = volume.secret.unwrap();
        assert_eq!(source.secret_name, Some(name));
        assert!(source.items.is_none(), "every key: members come and go");
        assert_eq!(mount.mount_path, GATEWAY_BRIDGE_TOKENS_DIR);
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (new_bridge_token(), new_bridge_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
    }
}
