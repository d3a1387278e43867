//! The tokens of the gateway's bridge tokens Secret ([`crate::resources::bridge_token`]): a
//! copy of each stdio member's bridge token. The stores hold Secret metadata only, so each
//! token is read with one GET of that member's own Secret, and only of a Secret the member
//! controls (a foreign Secret of that name is the member's name conflict, never copied).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use vmcp_types::crd::MCPServer;

use super::super::reflectors::Stores;
use super::super::{Context, Error, RefKind};
use crate::resources::bridge_token::{BRIDGE_TOKEN_KEY, bridge_token_secret_name};

/// What was read. Holds secret values: never logged (no `Debug`).
pub(super) struct BridgeTokens {
    /// Member name -> its bridge token.
    pub(super) tokens: BTreeMap<String, ByteString>,
    /// The token Secret names (`<server>-bridge-token`) of members whose token is not
    /// available yet: they stay `pending`.
    pub(super) missing: BTreeSet<String>,
}

/// Reads the bridge token of every `stdio` server of `members` (the group's servers in `ns`)
/// and records each token Secret in `refs` (its creation or re-creation reconciles the
/// gateway again).
pub(super) async fn read_bridge_tokens(
    ctx: &Context,
    ns: &str,
    members: &[MCPServer],
    refs: &mut BTreeSet<(RefKind, String)>,
) -> Result<BridgeTokens, Error> {
    let api = ctx.api::<Secret>(ns);
    let mut out = BridgeTokens { tokens: BTreeMap::new(), missing: BTreeSet::new() };
    for server in members.iter().filter(|s| s.metadata.deletion_timestamp.is_none()) {
        let Some(secret) = bridge_token_secret_name(server) else { continue };
        refs.insert((RefKind::Secret, secret.clone()));
        let controlled = Stores::get(&ctx.stores.secrets, ns, &secret).is_some_and(|m| {
            m.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == server.metadata.uid.as_ref())
        });
        let token = if controlled {
            api.get_opt(&secret)
                .await?
                .and_then(|s| s.data?.remove(BRIDGE_TOKEN_KEY))
                .filter(|t| !t.0.is_empty())
        } else {
            None
        };
        match token {
            Some(t) => {
                out.tokens.insert(server.name_any(), t);
            }
            None => {
                out.missing.insert(secret);
            }
        }
    }
    Ok(out)
}
