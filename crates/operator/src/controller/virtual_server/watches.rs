//! Which gateways a change of a watched object affects.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use vmcp_types::crd::{
    MCPExternalAuthConfig, MCPGroup, MCPServer, MCPServerEntry, VirtualMCPServer,
};

use super::super::{RefIndex, RefKind};
use crate::resources::gateway_config::referenced_auth_configs;

pub(super) fn refs_in(
    ns: &str,
    names: impl IntoIterator<Item = String>,
) -> Vec<ObjectRef<VirtualMCPServer>> {
    let set: BTreeSet<String> = names.into_iter().collect();
    set.into_iter().map(|n| ObjectRef::new(&n).within(ns)).collect()
}

pub(super) fn referrers<K: Resource>(
    index: &RefIndex,
    kind: RefKind,
    obj: &K,
) -> Vec<ObjectRef<VirtualMCPServer>> {
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let name = obj.meta().name.clone().unwrap_or_default();
    refs_in(&ns, index.referrers(&ns, kind, &name))
}

/// Gateways affected by a change of server `s`: those of its group now, and those that had it
/// as a member (it may have left the group).
pub(super) fn gateways_for_server(
    gateways: &[Arc<VirtualMCPServer>],
    index: &RefIndex,
    s: &MCPServer,
) -> Vec<ObjectRef<VirtualMCPServer>> {
    let ns = s.namespace().unwrap_or_default();
    let group = s.spec.group_ref.as_ref().map(|g| g.name.as_str());
    let mut names: Vec<String> = gateways
        .iter()
        .filter(|v| v.namespace().as_deref() == Some(ns.as_str()))
        .filter(|v| Some(v.spec.group_ref.name.as_str()) == group)
        .map(|v| v.name_any())
        .collect();
    names.extend(index.referrers(&ns, RefKind::Server, &s.name_any()));
    refs_in(&ns, names)
}

/// Gateways whose `groupRef` names `g`.
pub(super) fn gateways_for_group(
    gateways: &[Arc<VirtualMCPServer>],
    g: &MCPGroup,
) -> Vec<ObjectRef<VirtualMCPServer>> {
    let ns = g.namespace().unwrap_or_default();
    let names = gateways
        .iter()
        .filter(|v| v.namespace().as_deref() == Some(ns.as_str()))
        .filter(|v| v.spec.group_ref.name == g.name_any())
        .map(|v| v.name_any());
    refs_in(&ns, names)
}

/// Gateways that used `a` at their last reconcile or reference it in `outgoingAuth`.
pub(super) fn gateways_for_auth_config(
    gateways: &[Arc<VirtualMCPServer>],
    index: &RefIndex,
    a: &MCPExternalAuthConfig,
) -> Vec<ObjectRef<VirtualMCPServer>> {
    let ns = a.namespace().unwrap_or_default();
    let name = a.name_any();
    let mut names: Vec<String> = gateways
        .iter()
        .filter(|v| v.namespace().as_deref() == Some(ns.as_str()))
        .filter(|v| referenced_auth_configs(v, &[], &[]).contains(&name))
        .map(|v| v.name_any())
        .collect();
    names.extend(index.referrers(&ns, RefKind::AuthConfig, &name));
    refs_in(&ns, names)
}

/// Gateways affected by a change of entry `e`: those of its group now, and those that had it
/// as a member.
pub(super) fn gateways_for_entry(
    gateways: &[Arc<VirtualMCPServer>],
    index: &RefIndex,
    e: &MCPServerEntry,
) -> Vec<ObjectRef<VirtualMCPServer>> {
    let ns = e.namespace().unwrap_or_default();
    let mut names: Vec<String> = gateways
        .iter()
        .filter(|v| v.namespace().as_deref() == Some(ns.as_str()))
        .filter(|v| v.spec.group_ref.name == e.spec.group_ref.name)
        .map(|v| v.name_any())
        .collect();
    names.extend(index.referrers(&ns, RefKind::Entry, &e.name_any()));
    refs_in(&ns, names)
}
