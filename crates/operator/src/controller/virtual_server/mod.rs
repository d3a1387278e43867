//! `VirtualMCPServer` controller: renders the gateway configuration from the group's members
//! and applies the gateway's children; reports phase, URL, backends and conditions.
//!
//! Reconcile steps:
//! 1. Read from the shared stores ([`super::reflectors`], no API call): the `MCPGroup`, the
//!    namespace's `MCPServer`s and `MCPServerEntry`s (remote servers) in the group, the
//!    referenced `MCPExternalAuthConfig`s, and whether each referenced Secret exists (metadata
//!    only). The one Secret value read is each stdio member's bridge token (one GET each:
//!    [`bridge_tokens`]).
//! 2. Render ([`crate::resources::render_gateway_config`]); backends with unresolvable
//!    credentials are left out and reported.
//! 3. Apply the bridge tokens Secret, ConfigMap, ServiceAccount, Service, Deployment and
//!    (replicas > 1) the PDB with server-side apply; delete a PDB of ours when replicas drop
//!    to 1. Nothing is applied when one of those names is held by an object this gateway does
//!    not control ([`super::ownership`]): the status says `NameConflict` instead.
//! 4. Compute the status from what was observed ([`desired_status`], pure) and write it only when
//!    it differs from the stored status. Events: `Created`, `Updated`, and a Warning when a
//!    condition turns bad or a reconcile fails.
//!
//! A missing group or an invalid spec is not retried with backoff: the status says `Failed`
//! and names the problem, and the watches re-run the reconcile when something changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::DeleteParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use vmcp_types::crd::{
    MCPExternalAuthConfig, MCPServer, MCPServerEntry, SessionStorageProvider, VirtualMCPServer,
    VirtualMCPServerStatus,
};

use super::mcp_server::NOT_READY_RECHECK;
use super::ownership::{self, CONFLICT_RECHECK, NAME_CONFLICT, NameConflict, claim};
use super::reflectors::{Stores, Watches};
use super::{
    Context, Error, RefKind, ShutdownSignal, apply, apply_status, error_policy, log_result,
    namespace,
};
use crate::pod_health::{PodProblem, pod_problem, pod_selector};
use crate::resources::bridge_token::{gateway_bridge_tokens_name, gateway_bridge_tokens_secret};
use crate::resources::gateway::{
    GatewayChildren, config_map_name, gateway_children, gateway_name, gateway_url, replicas,
};
use crate::resources::gateway_config::referenced_auth_configs;
use crate::resources::{
    MountSource, Problem, ProblemKind, RenderError, RenderInput, Rendered, render_gateway_config,
};
use crate::status::{self, Status, transitioned_to};

mod bridge_tokens;
mod desired_status;
#[cfg(test)]
mod tests;
mod watches;

pub use desired_status::{Observation, Outcome, desired_status};
use watches::{
    gateways_for_auth_config, gateways_for_entry, gateways_for_group, gateways_for_server,
    referrers,
};

const CONTROLLER: &str = "virtualmcpserver";

/// Condition: the gateway serves with every backend.
pub use crate::status::READY;
/// Condition: `spec.groupRef` names an existing `MCPGroup`.
pub const GROUP_REF_VALIDATED: &str = "GroupRefValidated";
/// Condition: every backend's credential (auth config, Secrets) resolved.
pub const AUTH_CONFIGURED: &str = "AuthConfigured";
/// Condition: the group's servers were found and rendered as backends.
pub const BACKENDS_DISCOVERED: &str = "BackendsDiscovered";
/// Condition: `True` when more than one replica runs without Redis session storage.
pub const SESSION_STORAGE_WARNING: &str = "SessionStorageWarning";

/// Subscribes to the shared watches; the returned future runs the controller until `shutdown`.
pub(crate) fn run(
    ctx: Arc<Context>,
    w: &mut Watches,
    shutdown: ShutdownSignal,
) -> impl Future<Output = ()> + Send + use<> {
    let store = w.vmcps.store();
    let (st1, st2, st3, st4) = (store.clone(), store.clone(), store.clone(), store.clone());
    let (c1, c2, c3, c4, c5) = (ctx.clone(), ctx.clone(), ctx.clone(), ctx.clone(), ctx.clone());
    let controller = Controller::for_shared_stream(w.vmcps.applied(), store)
        .with_config(ctx.controller_config())
        .owns_shared_stream(w.config_maps.touched())
        .owns_shared_stream(w.deployments.touched())
        .owns_shared_stream(w.services.touched())
        .owns_shared_stream(w.service_accounts.touched())
        .owns_shared_stream(w.pdbs.touched())
        .watches_shared_stream(w.servers.touched(), move |s| {
            gateways_for_server(&st1.state(), &c1.vmcp_refs, &s)
        })
        .watches_shared_stream(w.entries.touched(), move |e| {
            gateways_for_entry(&st4.state(), &c4.vmcp_refs, &e)
        })
        .watches_shared_stream(w.groups.touched(), move |g| gateways_for_group(&st2.state(), &g))
        .watches_shared_stream(w.auth_configs.touched(), move |a| {
            gateways_for_auth_config(&st3.state(), &c2.vmcp_refs, &a)
        })
        .watches_shared_stream(w.secrets.touched(), move |s| {
            referrers(&c3.vmcp_refs, RefKind::Secret, &*s)
        })
        .watches_shared_stream(w.config_maps.touched(), move |m| {
            referrers(&c5.vmcp_refs, RefKind::ConfigMap, &*m)
        })
        .graceful_shutdown_on(shutdown);
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move { log_result(CONTROLLER, r) })
}

/// Reconciles one `VirtualMCPServer` (see the module documentation).
pub async fn reconcile(vmcp: Arc<VirtualMCPServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconciled(CONTROLLER, vmcp.as_ref(), reconcile_inner(&vmcp, &ctx)).await
}

/// Which children changed in this reconcile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Change {
    created: bool,
    updated: bool,
}

async fn reconcile_inner(vmcp: &VirtualMCPServer, ctx: &Context) -> Result<Action, Error> {
    let ns = namespace(vmcp)?;
    let name = vmcp.name_any();
    if vmcp.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children (owner references).
        return Ok(Action::await_change());
    }
    let effective = ctx.settings.defaults.apply(vmcp);
    let v = effective.as_ref();
    let group = v.spec.group_ref.name.clone();
    let stores = &ctx.stores;
    let group_found = !group.is_empty() && Stores::get(&stores.groups, &ns, &group).is_some();
    let members = Stores::in_namespace(&stores.servers, &ns, |s: &MCPServer| {
        s.spec.group_ref.as_ref().is_some_and(|g| g.name == group)
    });
    let entries = Stores::in_namespace(&stores.entries, &ns, |e: &MCPServerEntry| {
        e.spec.group_ref.name == group
    });
    let mut refs = BTreeSet::from([(RefKind::Group, group.clone())]);
    refs.extend(members.iter().map(|m| (RefKind::Server, m.name_any())));
    refs.extend(entries.iter().map(|e| (RefKind::Entry, e.name_any())));

    let mut change = Change::default();
    let mut rendered_backends = 0;
    refs.insert((RefKind::Secret, gateway_bridge_tokens_name(v)));
    let outcome = if group_found {
        let bridge = bridge_tokens::read_bridge_tokens(ctx, &ns, &members, &mut refs).await?;
        let rendered = render(v, &members, &entries, ctx, &ns, &bridge.missing, &mut refs)
            .and_then(|(r, children)| {
                Ok((r, children, gateway_bridge_tokens_secret(v, bridge.tokens)?))
            });
        match rendered {
            Err(e) => Outcome::RenderFailed(e.to_string()),
            Ok((r, children, tokens)) => match apply_children(v, &children, &tokens, ctx, &ns)
                .await?
            {
                Err(conflicts) => Outcome::NameConflict(ownership::describe(&conflicts)),
                Ok((available, pod_problem, ch)) => {
                    change = ch;
                    rendered_backends = r.config.backends.len();
                    Outcome::Applied {
                        backend_count: i32::try_from(r.config.backends.len()).unwrap_or(i32::MAX),
                        backends: r.backends,
                        problems: r.problems,
                        available_replicas: available,
                        pod_problem,
                    }
                }
            },
        }
    } else {
        Outcome::GroupNotFound
    };
    ctx.vmcp_refs
        .set_unless_gone(&ns, &name, refs, || Stores::get(&ctx.stores.vmcps, &ns, &name).is_some());

    let conflicted = matches!(outcome, Outcome::NameConflict(_));
    let not_available = matches!(
        outcome,
        Outcome::Applied { available_replicas, .. } if available_replicas < replicas(v)
    );
    let observation = Observation {
        generation: vmcp.metadata.generation,
        namespace: ns.clone(),
        group,
        replicas: replicas(v),
        redis: v
            .spec
            .session_storage
            .as_ref()
            .is_some_and(|s| s.provider == SessionStorageProvider::Redis),
        url: gateway_url(v, &ns),
        outcome,
    };
    let api = ctx.api::<VirtualMCPServer>(&ns);
    // The stored status, not the (possibly older) cached one: an unchanged observation then
    // yields an identical status and nothing is written.
    let current = api.get_status(&name).await?;
    let prev = current.status.unwrap_or_default();
    let new = desired_status(Some(&prev), &observation, &status::now());
    if new != prev {
        apply_status(&api, &name, &new).await?;
        ctx.metrics.status_write(CONTROLLER);
    }
    publish_events(vmcp, ctx, &prev, &new, change, rendered_backends).await;
    Ok(if conflicted {
        Action::requeue(CONFLICT_RECHECK)
    } else if not_available {
        // Pods are not watched: look again until every gateway pod is available.
        Action::requeue(NOT_READY_RECHECK)
    } else {
        ctx.resync()
    })
}

/// Renders the configuration and the children. Secrets are checked by metadata only; backends
/// needing a missing one are re-rendered out, and the others' `resourceVersion`s go into the
/// rollout checksum. `bridge_missing` names the token Secrets of stdio members whose token
/// is not available (they stay pending).
fn render(
    v: &VirtualMCPServer,
    members: &[MCPServer],
    entries: &[MCPServerEntry],
    ctx: &Context,
    ns: &str,
    bridge_missing: &BTreeSet<String>,
    refs: &mut BTreeSet<(RefKind, String)>,
) -> Result<(Rendered, GatewayChildren), RenderError> {
    let wanted = referenced_auth_configs(v, members, entries);
    refs.extend(wanted.iter().map(|n| (RefKind::AuthConfig, n.clone())));
    let auth_configs: BTreeMap<String, MCPExternalAuthConfig> =
        Stores::in_namespace(&ctx.stores.auth_configs, ns, |a: &MCPExternalAuthConfig| {
            wanted.contains(&a.name_any())
        })
        .into_iter()
        .map(|a| (a.name_any(), a))
        .collect();
    let input = RenderInput {
        vmcp: v,
        members,
        entries,
        auth_configs: &auth_configs,
        missing_secrets: bridge_missing,
    };
    let first = render_gateway_config(&input)?;
    let mut missing = bridge_missing.clone();
    let mut missing_config_maps = Vec::new();
    let mut versions = BTreeMap::new();
    for m in &first.secret_mounts {
        let found = match m.source {
            MountSource::Secret => {
                refs.insert((RefKind::Secret, m.secret.clone()));
                Stores::get(&ctx.stores.secrets, ns, &m.secret).map(|o| o.metadata.clone())
            }
            MountSource::ConfigMap => {
                refs.insert((RefKind::ConfigMap, m.secret.clone()));
                Stores::get(&ctx.stores.config_maps, ns, &m.secret).map(|o| o.metadata.clone())
            }
        };
        match found {
            None if m.source == MountSource::Secret => {
                missing.insert(m.secret.clone());
            }
            None => missing_config_maps.push(m.clone()),
            Some(meta) => {
                versions.insert((m.source, m.secret.clone()), meta.resource_version);
            }
        }
    }
    let mut rendered = if missing == *bridge_missing {
        first
    } else {
        render_gateway_config(&RenderInput { missing_secrets: &missing, ..input })?
    };
    for m in missing_config_maps {
        let keys = m.keys.iter().cloned().collect::<Vec<_>>().join("', '");
        rendered.problems.push(Problem {
            kind: ProblemKind::Auth,
            message: format!(
                "ConfigMap '{}' (key '{keys}') referenced by spec.caBundleConfigMapRef not found",
                m.secret
            ),
        });
    }
    // A rotated Secret or CA bundle (new resourceVersion) the gateway reads only at start
    // changes the rollout checksum: new pods read it (backend credentials are re-read).
    for m in &mut rendered.secret_mounts {
        m.version = versions.get(&(m.source, m.secret.clone())).cloned().flatten();
    }
    let children = gateway_children(
        v,
        &rendered.config,
        &rendered.secret_mounts,
        &ctx.settings.gateway_image,
        &ctx.settings.workloads,
    )?;
    Ok((rendered, children))
}

/// Applies every child (`tokens`: the bridge tokens Secret, first, so that a configuration
/// naming a member's token file never precedes the token); returns the available gateway
/// pods, why the others are not (read from the pods while fewer than desired are available)
/// and what changed, or, when a child name is held by an object this gateway does not
/// control, the conflicts (nothing applied).
async fn apply_children(
    v: &VirtualMCPServer,
    children: &GatewayChildren,
    tokens: &Secret,
    ctx: &Context,
    ns: &str,
) -> Result<Result<(i32, Option<PodProblem>, Change), Vec<NameConflict>>, Error> {
    let secret_api = ctx.api::<Secret>(ns);
    let cm_api = ctx.api::<ConfigMap>(ns);
    let sa_api = ctx.api::<ServiceAccount>(ns);
    let svc_api = ctx.api::<Service>(ns);
    let dep_api = ctx.api::<Deployment>(ns);
    let pdb_api = ctx.api::<PodDisruptionBudget>(ns);
    let (name, cm_name, tokens_name) =
        (gateway_name(v), config_map_name(v), gateway_bridge_tokens_name(v));
    let _locked = ctx.name_locks.lock(ns, &[&name, &cm_name, &tokens_name]).await;
    let uid = ownership::uid(v);
    let mut conflicts = Vec::new();
    let prior_tokens = claim(&secret_api, &tokens_name, &uid, &mut conflicts).await?;
    let prior_cm = claim(&cm_api, &cm_name, &uid, &mut conflicts).await?;
    claim(&sa_api, &name, &uid, &mut conflicts).await?;
    claim(&svc_api, &name, &uid, &mut conflicts).await?;
    let prior_dep = claim(&dep_api, &name, &uid, &mut conflicts).await?;
    if children.pdb.is_some() {
        claim(&pdb_api, &name, &uid, &mut conflicts).await?;
    }
    if !conflicts.is_empty() {
        return Ok(Err(conflicts));
    }

    // The applied Secret (with its values) is dropped at once: only its version is kept.
    let tokens_version = apply(&secret_api, tokens).await?.metadata.resource_version;
    let cm = apply(&cm_api, &children.config_map).await?;
    apply(&sa_api, &children.service_account).await?;
    apply(&svc_api, &children.service).await?;
    let dep = apply(&dep_api, &children.deployment).await?;
    match &children.pdb {
        Some(pdb) => {
            apply(&pdb_api, pdb).await?;
        }
        None => {
            let owned = pdb_api.get_metadata_opt(&gateway_name(v)).await?.is_some_and(|p| {
                p.owner_references().iter().any(|o| Some(&o.uid) == v.metadata.uid.as_ref())
            });
            if owned {
                pdb_api.delete(&gateway_name(v), &DeleteParams::default()).await?;
            }
        }
    }
    let change = match prior_dep {
        None => Change { created: true, updated: false },
        Some(d) => Change {
            created: false,
            updated: prior_cm.and_then(|c| c.metadata.resource_version)
                != cm.metadata.resource_version
                || prior_tokens.and_then(|t| t.metadata.resource_version) != tokens_version
                || d.metadata.generation != dep.metadata.generation,
        },
    };
    let available = dep.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    let mut problem = None;
    if available < replicas(v) {
        let pods = ctx.api::<Pod>(ns).list(&pod_selector(&children.deployment)).await?;
        problem = pod_problem(dep.status.as_ref(), &pods.items);
    }
    Ok(Ok((available, problem, change)))
}

async fn publish_events(
    vmcp: &VirtualMCPServer,
    ctx: &Context,
    prev: &VirtualMCPServerStatus,
    new: &VirtualMCPServerStatus,
    change: Change,
    backends: usize,
) {
    if change.created {
        ctx.event(
            vmcp,
            EventType::Normal,
            "Created",
            "Apply",
            format!("Created gateway {} with {backends} backends", gateway_name(vmcp)),
        )
        .await;
    } else if change.updated {
        ctx.event(
            vmcp,
            EventType::Normal,
            "Updated",
            "Apply",
            format!("Updated gateway {} ({backends} backends)", gateway_name(vmcp)),
        )
        .await;
    }
    let (before, after) = (&prev.conditions, &new.conditions);
    for (type_, reason) in
        [(GROUP_REF_VALIDATED, "GroupNotFound"), (AUTH_CONFIGURED, "AuthNotConfigured")]
    {
        if transitioned_to(before, after, type_, Status::False) {
            let msg = status::find(after, type_).map(|c| c.message.clone()).unwrap_or_default();
            ctx.event(vmcp, EventType::Warning, reason, "Reconcile", msg).await;
        }
    }
    if transitioned_to(before, after, SESSION_STORAGE_WARNING, Status::True) {
        let msg = status::find(after, SESSION_STORAGE_WARNING)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.event(vmcp, EventType::Warning, "SessionStorageWarning", "Reconcile", msg).await;
    }
    if let Some(a) = status::find(after, READY)
        && (a.reason == "InvalidSpec" || a.reason == NAME_CONFLICT)
        && status::find(before, READY)
            .is_none_or(|b| b.reason != a.reason || b.message != a.message)
    {
        let action = if a.reason == NAME_CONFLICT { "Apply" } else { "Render" };
        ctx.event(vmcp, EventType::Warning, &a.reason, action, a.message.clone()).await;
    }
}
