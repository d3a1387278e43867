//! `VirtualMCPServer` controller: renders the gateway configuration from the group's members
//! and applies the gateway's children; reports phase, URL, backends and conditions.
//!
//! Reconcile steps:
//! 1. Read the `MCPGroup` (metadata), the namespace's `MCPServer`s in the group, the referenced
//!    `MCPExternalAuthConfig`s, and whether each referenced Secret exists (metadata only).
//! 2. Render ([`crate::resources::render_gateway_config`]); backends with unresolvable
//!    credentials are left out and reported.
//! 3. Apply ConfigMap, ServiceAccount, Service, Deployment and (replicas > 1) the PDB with
//!    server-side apply; delete a PDB of ours when replicas drop to 1. Nothing is applied when
//!    one of those names is held by an object this gateway does not control
//!    ([`super::ownership`]): the status says `NameConflict` instead.
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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use vmcp_types::crd::{
    DiscoveredBackend, MCPExternalAuthConfig, MCPGroup, MCPServer, SessionStorageProvider,
    VirtualMCPServer, VirtualMCPServerPhase, VirtualMCPServerStatus,
};

use super::mcp_server::NOT_READY_RECHECK;
use super::ownership::{self, CONFLICT_RECHECK, NAME_CONFLICT, NameConflict, claim};
use super::{
    Context, Error, RefIndex, RefKind, ShutdownSignal, apply, apply_status, error_policy,
    log_result, managed_selector, namespace,
};
use crate::pod_health::{PodProblem, pod_problem, pod_selector};
use crate::resources::gateway::{
    GATEWAY_COMPONENT, GatewayChildren, config_map_name, gateway_children, gateway_name,
    gateway_url, replicas,
};
use crate::resources::gateway_config::referenced_auth_configs;
use crate::resources::{
    Problem, ProblemKind, RenderError, RenderInput, Rendered, render_gateway_config,
};
use crate::status::{self, NewCondition, Status, set_condition, transitioned_to};

const CONTROLLER: &str = "virtualmcpserver";

/// Condition: the gateway serves with every backend.
pub const READY: &str = "Ready";
/// Condition: `spec.groupRef` names an existing `MCPGroup`.
pub const GROUP_REF_VALIDATED: &str = "GroupRefValidated";
/// Condition: every backend's credential (auth config, Secrets) resolved.
pub const AUTH_CONFIGURED: &str = "AuthConfigured";
/// Condition: the group's servers were found and rendered as backends.
pub const BACKENDS_DISCOVERED: &str = "BackendsDiscovered";
/// Condition: `True` when more than one replica runs without Redis session storage.
pub const SESSION_STORAGE_WARNING: &str = "SessionStorageWarning";

/// Runs the controller until `shutdown`.
pub(crate) async fn run(ctx: Arc<Context>, shutdown: ShutdownSignal) {
    let children = watcher::Config::default().labels(&managed_selector(GATEWAY_COMPONENT));
    let controller = Controller::new(ctx.watch_api::<VirtualMCPServer>(), Default::default());
    let store = controller.store();
    let (st1, st2, st3) = (store.clone(), store.clone(), store);
    let (c1, c2, c3) = (ctx.clone(), ctx.clone(), ctx.clone());
    controller
        .owns(ctx.watch_api::<PartialObjectMeta<ConfigMap>>(), children.clone())
        .owns(ctx.watch_api::<PartialObjectMeta<Deployment>>(), children.clone())
        .owns(ctx.watch_api::<PartialObjectMeta<Service>>(), children.clone())
        .owns(ctx.watch_api::<PartialObjectMeta<ServiceAccount>>(), children.clone())
        .owns(ctx.watch_api::<PartialObjectMeta<PodDisruptionBudget>>(), children)
        .watches(ctx.watch_api::<MCPServer>(), Default::default(), move |s| {
            gateways_for_server(&st1.state(), &c1.vmcp_refs, &s)
        })
        .watches(ctx.watch_api::<MCPGroup>(), Default::default(), move |g| {
            gateways_for_group(&st2.state(), &g)
        })
        .watches(ctx.watch_api::<MCPExternalAuthConfig>(), Default::default(), move |a| {
            gateways_for_auth_config(&st3.state(), &c2.vmcp_refs, &a)
        })
        .watches(ctx.watch_api::<PartialObjectMeta<Secret>>(), Default::default(), move |s| {
            referrers(&c3.vmcp_refs, RefKind::Secret, &s)
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move { log_result(CONTROLLER, r) })
        .await;
}

fn refs_in(ns: &str, names: impl IntoIterator<Item = String>) -> Vec<ObjectRef<VirtualMCPServer>> {
    let set: BTreeSet<String> = names.into_iter().collect();
    set.into_iter().map(|n| ObjectRef::new(&n).within(ns)).collect()
}

fn referrers<K: Resource>(
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
fn gateways_for_server(
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
fn gateways_for_group(
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
fn gateways_for_auth_config(
    gateways: &[Arc<VirtualMCPServer>],
    index: &RefIndex,
    a: &MCPExternalAuthConfig,
) -> Vec<ObjectRef<VirtualMCPServer>> {
    let ns = a.namespace().unwrap_or_default();
    let name = a.name_any();
    let mut names: Vec<String> = gateways
        .iter()
        .filter(|v| v.namespace().as_deref() == Some(ns.as_str()))
        .filter(|v| referenced_auth_configs(v, &[]).contains(&name))
        .map(|v| v.name_any())
        .collect();
    names.extend(index.referrers(&ns, RefKind::AuthConfig, &name));
    refs_in(&ns, names)
}

/// What one reconcile found, before status.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// `spec.groupRef` names no `MCPGroup`: nothing was applied.
    GroupNotFound,
    /// The spec cannot be rendered: nothing was applied.
    RenderFailed(String),
    /// A child name is held by an object this gateway does not control: nothing was applied.
    NameConflict(String),
    /// The children were applied.
    Applied {
        /// Every member as discovered.
        backends: Vec<DiscoveredBackend>,
        /// Backends in the rendered configuration.
        backend_count: i32,
        /// Problems that left something out.
        problems: Vec<Problem>,
        /// Available gateway pods.
        available_replicas: i32,
        /// Why gateway pods are not available, from the pods and the Deployment
        /// ([`crate::pod_health`]); looked for only while fewer than `replicas` are.
        pod_problem: Option<PodProblem>,
    },
}

/// Everything [`desired_status`] needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// `metadata.generation` of the reconciled spec.
    pub generation: Option<i64>,
    /// Namespace.
    pub namespace: String,
    /// `spec.groupRef.name`.
    pub group: String,
    /// Desired gateway pods.
    pub replicas: i32,
    /// Is session storage Redis (after operator defaults)?
    pub redis: bool,
    /// The gateway URL.
    pub url: String,
    /// What happened.
    pub outcome: Outcome,
}

fn join(problems: &[Problem], kinds: &[ProblemKind]) -> String {
    problems
        .iter()
        .filter(|p| kinds.contains(&p.kind))
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The status for `o`, starting from `prev` so that unchanged conditions keep their
/// `lastTransitionTime` (and an unchanged observation yields exactly `prev`).
pub fn desired_status(
    prev: Option<&VirtualMCPServerStatus>,
    o: &Observation,
    now: &Time,
) -> VirtualMCPServerStatus {
    let mut s = prev.cloned().unwrap_or_default();
    let g = o.generation;
    let c = &mut s.conditions;
    let group = &o.group;

    let group_cond = match o.outcome {
        Outcome::GroupNotFound => NewCondition::new(
            GROUP_REF_VALIDATED,
            false,
            "GroupNotFound",
            format!("MCPGroup '{group}' not found in namespace '{}'", o.namespace),
        ),
        _ => NewCondition::new(
            GROUP_REF_VALIDATED,
            true,
            "GroupFound",
            format!("MCPGroup '{group}' found"),
        ),
    };
    set_condition(c, group_cond, g, now);

    let (phase, ready) = match &o.outcome {
        Outcome::GroupNotFound => {
            let msg = format!("MCPGroup '{group}' not found");
            set_condition(
                c,
                NewCondition::new(AUTH_CONFIGURED, Status::Unknown, "GroupNotFound", msg.clone()),
                g,
                now,
            );
            set_condition(
                c,
                NewCondition::new(BACKENDS_DISCOVERED, false, "GroupNotFound", msg.clone()),
                g,
                now,
            );
            s.backend_count = 0;
            s.discovered_backends = Vec::new();
            (VirtualMCPServerPhase::Failed, NewCondition::new(READY, false, "GroupNotFound", msg))
        }
        Outcome::RenderFailed(msg) | Outcome::NameConflict(msg) => {
            let reason = match &o.outcome {
                Outcome::NameConflict(_) => NAME_CONFLICT,
                _ => "InvalidSpec",
            };
            set_condition(
                c,
                NewCondition::new(AUTH_CONFIGURED, Status::Unknown, reason, msg.clone()),
                g,
                now,
            );
            set_condition(
                c,
                NewCondition::new(BACKENDS_DISCOVERED, Status::Unknown, reason, msg.clone()),
                g,
                now,
            );
            (VirtualMCPServerPhase::Failed, NewCondition::new(READY, false, reason, msg.clone()))
        }
        Outcome::Applied { backends, backend_count, problems, available_replicas, pod_problem } => {
            let pods = match pod_problem {
                Some(p) => format!(
                    "{available_replicas} of {} gateway pods available; {}",
                    o.replicas, p.message
                ),
                None => format!("{available_replicas} of {} gateway pods available", o.replicas),
            };
            let auth = join(problems, &[ProblemKind::Auth]);
            let auth_cond = if auth.is_empty() {
                NewCondition::new(
                    AUTH_CONFIGURED,
                    true,
                    "AuthConfigured",
                    "every backend credential resolved",
                )
            } else {
                NewCondition::new(AUTH_CONFIGURED, false, "AuthNotConfigured", auth)
            };
            set_condition(c, auth_cond, g, now);
            set_condition(c, backends_condition(group, backends, *backend_count, problems), g, now);
            s.backend_count = *backend_count;
            s.discovered_backends = backends.clone();
            let broken = join(problems, &[ProblemKind::Auth, ProblemKind::Backend]);
            if !broken.is_empty() {
                (
                    VirtualMCPServerPhase::Degraded,
                    NewCondition::new(READY, false, "Degraded", broken),
                )
            } else if *available_replicas < 1 {
                match pod_problem {
                    Some(p) => (
                        VirtualMCPServerPhase::Failed,
                        NewCondition::new(READY, false, &p.reason, pods),
                    ),
                    None => (
                        VirtualMCPServerPhase::Pending,
                        NewCondition::new(READY, false, "DeploymentNotAvailable", pods),
                    ),
                }
            } else {
                (VirtualMCPServerPhase::Ready, NewCondition::new(READY, true, "Ready", pods))
            }
        }
    };
    let warn = o.replicas > 1 && !o.redis;
    let storage = if warn {
        NewCondition::new(
            SESSION_STORAGE_WARNING,
            true,
            "MultipleReplicasWithoutRedis",
            format!(
                "{} replicas with in-memory session storage: sessions are not shared between \
                 replicas and end when a pod restarts; set spec.sessionStorage.provider to redis",
                o.replicas
            ),
        )
    } else {
        NewCondition::new(SESSION_STORAGE_WARNING, false, "SessionStorageOk", "")
    };
    set_condition(c, storage, g, now);
    set_condition(c, ready, g, now);
    s.phase = Some(phase);
    s.url = Some(o.url.clone());
    s.observed_generation = g;
    s
}

fn backends_condition<'a>(
    group: &str,
    backends: &[DiscoveredBackend],
    count: i32,
    problems: &[Problem],
) -> NewCondition<'a> {
    if backends.is_empty() {
        return NewCondition::new(
            BACKENDS_DISCOVERED,
            false,
            "NoBackends",
            format!("MCPGroup '{group}' has no MCPServers"),
        );
    }
    let by = |st: &str| {
        backends
            .iter()
            .filter(|b| b.status.as_deref() == Some(st))
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>()
    };
    let mut parts = Vec::new();
    for st in ["ready", "pending", "error"] {
        let names = by(st);
        if !names.is_empty() {
            parts.push(format!("{st}: {}", names.join(", ")));
        }
    }
    let mut message =
        format!("{count} of {} servers configured ({})", backends.len(), parts.join("; "));
    let other = join(problems, &[ProblemKind::Backend, ProblemKind::Aggregation]);
    if !other.is_empty() {
        message.push_str("; ");
        message.push_str(&other);
    }
    if count == 0 {
        NewCondition::new(BACKENDS_DISCOVERED, false, "NoUsableBackends", message)
    } else {
        NewCondition::new(BACKENDS_DISCOVERED, true, "BackendsDiscovered", message)
    }
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
    let group_found =
        !group.is_empty() && ctx.api::<MCPGroup>(&ns).get_metadata_opt(&group).await?.is_some();
    let members: Vec<MCPServer> = ctx
        .api::<MCPServer>(&ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|s| s.spec.group_ref.as_ref().is_some_and(|g| g.name == group))
        .collect();
    let mut refs = BTreeSet::from([(RefKind::Group, group.clone())]);
    refs.extend(members.iter().map(|m| (RefKind::Server, m.name_any())));

    let mut change = Change::default();
    let mut rendered_backends = 0;
    let outcome = if group_found {
        match render(v, &members, ctx, &ns, &mut refs).await? {
            Err(e) => Outcome::RenderFailed(e.to_string()),
            Ok((r, children)) => match apply_children(v, &children, ctx, &ns).await? {
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
    ctx.vmcp_refs.set(&ns, &name, refs);

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
/// rollout checksum.
async fn render(
    v: &VirtualMCPServer,
    members: &[MCPServer],
    ctx: &Context,
    ns: &str,
    refs: &mut BTreeSet<(RefKind, String)>,
) -> Result<Result<(Rendered, GatewayChildren), RenderError>, Error> {
    let wanted = referenced_auth_configs(v, members);
    refs.extend(wanted.iter().map(|n| (RefKind::AuthConfig, n.clone())));
    let auth_configs: BTreeMap<String, MCPExternalAuthConfig> = if wanted.is_empty() {
        BTreeMap::new()
    } else {
        ctx.api::<MCPExternalAuthConfig>(ns)
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|a| wanted.contains(&a.name_any()))
            .map(|a| (a.name_any(), a))
            .collect()
    };
    let none = BTreeSet::new();
    let input =
        RenderInput { vmcp: v, members, auth_configs: &auth_configs, missing_secrets: &none };
    let first = match render_gateway_config(&input) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let secrets = ctx.api::<Secret>(ns);
    let mut missing = BTreeSet::new();
    let mut versions = BTreeMap::new();
    for m in &first.secret_mounts {
        refs.insert((RefKind::Secret, m.secret.clone()));
        match secrets.get_metadata_opt(&m.secret).await? {
            None => {
                missing.insert(m.secret.clone());
            }
            Some(meta) => {
                versions.insert(m.secret.clone(), meta.metadata.resource_version);
            }
        }
    }
    let mut rendered = if missing.is_empty() {
        first
    } else {
        match render_gateway_config(&RenderInput { missing_secrets: &missing, ..input }) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        }
    };
    // A rotated Secret (new resourceVersion) changes the rollout checksum: new pods read it.
    for m in &mut rendered.secret_mounts {
        m.version = versions.get(&m.secret).cloned().flatten();
    }
    Ok(gateway_children(v, &rendered.config, &rendered.secret_mounts, &ctx.settings.gateway_image)
        .map(|children| (rendered, children)))
}

/// Applies every child; returns the available gateway pods, why the others are not (read
/// from the pods while fewer than desired are available) and what changed, or, when a child
/// name is held by an object this gateway does not control, the conflicts (nothing applied).
async fn apply_children(
    v: &VirtualMCPServer,
    children: &GatewayChildren,
    ctx: &Context,
    ns: &str,
) -> Result<Result<(i32, Option<PodProblem>, Change), Vec<NameConflict>>, Error> {
    let cm_api = ctx.api::<ConfigMap>(ns);
    let sa_api = ctx.api::<ServiceAccount>(ns);
    let svc_api = ctx.api::<Service>(ns);
    let dep_api = ctx.api::<Deployment>(ns);
    let pdb_api = ctx.api::<PodDisruptionBudget>(ns);
    let (name, cm_name) = (gateway_name(v), config_map_name(v));
    let _locked = ctx.name_locks.lock(ns, &[&name, &cm_name]).await;
    let uid = ownership::uid(v);
    let mut conflicts = Vec::new();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;
    use k8s_openapi::jiff::Timestamp;
    use vmcp_types::crd::LocalRef;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn observation(outcome: Outcome) -> Observation {
        Observation {
            generation: Some(1),
            namespace: "team-a".into(),
            group: "engineering".into(),
            replicas: 2,
            redis: true,
            url: "http://engineering-gateway-vmcp.team-a.svc.cluster.local:4483/mcp".into(),
            outcome,
        }
    }

    fn applied(problems: Vec<Problem>, available: i32) -> Outcome {
        Outcome::Applied {
            backends: vec![
                DiscoveredBackend {
                    name: "github-tools".into(),
                    status: Some("ready".into()),
                    ..Default::default()
                },
                DiscoveredBackend {
                    name: "time".into(),
                    status: Some("pending".into()),
                    ..Default::default()
                },
            ],
            backend_count: 2,
            problems,
            available_replicas: available,
            pod_problem: None,
        }
    }

    #[test]
    fn crash_looping_gateway_pods_are_failed_with_the_reason() {
        let problem = PodProblem {
            reason: "CrashLoopBackOff".into(),
            message: "pod gw-1 container gateway: CrashLoopBackOff (last exit code 1, Error)"
                .into(),
        };
        let Outcome::Applied { backends, backend_count, problems, .. } = applied(vec![], 0) else {
            unreachable!()
        };
        let o = observation(Outcome::Applied {
            backends,
            backend_count,
            problems,
            available_replicas: 0,
            pod_problem: Some(problem.clone()),
        });
        let s = desired_status(None, &o, &t(1));
        assert_eq!(s.phase, Some(VirtualMCPServerPhase::Failed));
        let ready = cond(&s, READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "CrashLoopBackOff"));
        assert_eq!(ready.message, format!("0 of 2 gateway pods available; {}", problem.message));
    }

    fn cond<'a>(
        s: &'a VirtualMCPServerStatus,
        t: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        status::find(&s.conditions, t).unwrap()
    }

    #[test]
    fn missing_group_fails_naming_it() {
        let s = desired_status(None, &observation(Outcome::GroupNotFound), &t(1));
        assert_eq!(s.phase, Some(VirtualMCPServerPhase::Failed));
        let c = cond(&s, GROUP_REF_VALIDATED);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "GroupNotFound"));
        assert!(c.message.contains("'engineering'"), "{}", c.message);
        assert_eq!(cond(&s, READY).status, "False");
        assert_eq!(s.backend_count, 0);
        insta::assert_yaml_snapshot!("status_group_not_found", s);
    }

    #[test]
    fn ready_when_pods_available() {
        let s = desired_status(None, &observation(applied(vec![], 2)), &t(1));
        assert_eq!(s.phase, Some(VirtualMCPServerPhase::Ready));
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(cond(&s, GROUP_REF_VALIDATED).status, "True");
        assert_eq!(cond(&s, AUTH_CONFIGURED).status, "True");
        assert_eq!(cond(&s, BACKENDS_DISCOVERED).status, "True");
        assert_eq!(cond(&s, SESSION_STORAGE_WARNING).status, "False");
        assert_eq!(s.backend_count, 2);
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(
            s.url.as_deref(),
            Some("http://engineering-gateway-vmcp.team-a.svc.cluster.local:4483/mcp")
        );
        insta::assert_yaml_snapshot!("status_ready", s);
    }

    #[test]
    fn pending_until_a_pod_is_available() {
        let s = desired_status(None, &observation(applied(vec![], 0)), &t(1));
        assert_eq!(s.phase, Some(VirtualMCPServerPhase::Pending));
        assert_eq!(cond(&s, READY).reason, "DeploymentNotAvailable");
    }

    #[test]
    fn auth_problem_degrades_and_names_the_object() {
        let p = Problem {
            kind: ProblemKind::Auth,
            message: "MCPExternalAuthConfig 'x' (used by backend 'github-tools') not found".into(),
        };
        let s = desired_status(None, &observation(applied(vec![p], 2)), &t(1));
        assert_eq!(s.phase, Some(VirtualMCPServerPhase::Degraded));
        let c = cond(&s, AUTH_CONFIGURED);
        assert_eq!(c.status, "False");
        assert!(c.message.contains("'x'"));
        assert_eq!(cond(&s, READY).status, "False");
    }

    #[test]
    fn session_storage_warning_logic() {
        for (replicas, redis, warn) in [
            (1, false, false),
            (2, false, true),
            (3, true, false),
            (1, true, false),
            (0, false, false),
        ] {
            let mut o = observation(applied(vec![], 1));
            o.replicas = replicas;
            o.redis = redis;
            let s = desired_status(None, &o, &t(1));
            let c = cond(&s, SESSION_STORAGE_WARNING);
            assert_eq!(c.status == "True", warn, "replicas {replicas} redis {redis}");
            if warn {
                assert_eq!(c.reason, "MultipleReplicasWithoutRedis");
            }
        }
    }

    #[test]
    fn unchanged_observation_changes_nothing() {
        let o = observation(applied(vec![], 2));
        let first = desired_status(None, &o, &t(1));
        let second = desired_status(Some(&first), &o, &t(100));
        assert_eq!(first, second, "a second reconcile with no changes must write nothing");
    }

    #[test]
    fn transition_times_move_only_on_status_change() {
        let first = desired_status(None, &observation(applied(vec![], 0)), &t(1));
        let second = desired_status(Some(&first), &observation(applied(vec![], 2)), &t(50));
        assert_eq!(cond(&second, READY).last_transition_time, t(50));
        assert_eq!(cond(&second, GROUP_REF_VALIDATED).last_transition_time, t(1));
        let mut o = observation(applied(vec![], 2));
        o.generation = Some(2);
        let third = desired_status(Some(&second), &o, &t(90));
        assert_eq!(cond(&third, READY).last_transition_time, t(50));
        assert_eq!(cond(&third, READY).observed_generation, Some(2));
        assert_eq!(third.observed_generation, Some(2));
    }

    #[test]
    fn render_failure_is_failed_with_message() {
        let s = desired_status(
            None,
            &observation(Outcome::RenderFailed("spec.sessionStorage.ttl: bad".into())),
            &t(1),
        );
        assert_eq!(s.phase, Some(VirtualMCPServerPhase::Failed));
        assert_eq!(cond(&s, READY).reason, "InvalidSpec");
        assert!(cond(&s, READY).message.contains("ttl"));
    }

    #[test]
    fn name_conflict_fails_and_says_why() {
        let msg = "Service 'engineering-gateway-vmcp' already exists and is controlled by \
                   MCPServer 'engineering-gateway-vmcp'";
        let s = desired_status(None, &observation(Outcome::NameConflict(msg.into())), &t(1));
        assert_eq!(s.phase, Some(VirtualMCPServerPhase::Failed));
        let ready = cond(&s, READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", NAME_CONFLICT));
        assert_eq!(ready.message, msg);
        assert_eq!(cond(&s, GROUP_REF_VALIDATED).status, "True");
    }

    #[test]
    fn no_members_means_no_backends() {
        let o = observation(Outcome::Applied {
            backends: vec![],
            backend_count: 0,
            problems: vec![],
            available_replicas: 1,
            pod_problem: None,
        });
        let s = desired_status(None, &o, &t(1));
        assert_eq!(cond(&s, BACKENDS_DISCOVERED).reason, "NoBackends");
    }

    #[test]
    fn watch_mappings() {
        let vmcp = Arc::new(fixtures::vmcp());
        let mut other = fixtures::vmcp();
        other.metadata.name = Some("other-gw".into());
        other.spec.group_ref = LocalRef { name: "other".into() };
        let gateways = vec![vmcp, Arc::new(other)];
        let index = RefIndex::default();
        index.set(
            fixtures::NS,
            "other-gw",
            BTreeSet::from([(RefKind::Server, "time".into()), (RefKind::Secret, "s".into())]),
        );
        let names = |refs: Vec<ObjectRef<VirtualMCPServer>>| {
            refs.into_iter().map(|r| r.name).collect::<Vec<_>>()
        };
        // A member of `engineering` that `other-gw` used before (it moved groups).
        assert_eq!(
            names(gateways_for_server(&gateways, &index, &fixtures::server("time"))),
            ["engineering-gateway", "other-gw"]
        );
        assert_eq!(
            names(gateways_for_group(&gateways, &fixtures::group())),
            ["engineering-gateway"]
        );
        let refs = gateways_for_auth_config(&gateways, &index, &fixtures::auth_config());
        assert!(refs.is_empty(), "discovered refs come from the index only");
        let mut secret = PartialObjectMeta::<Secret>::default();
        secret.metadata.name = Some("s".into());
        secret.metadata.namespace = Some(fixtures::NS.into());
        assert_eq!(names(referrers(&index, RefKind::Secret, &secret)), ["other-gw"]);
        let r = &gateways_for_group(&gateways, &fixtures::group())[0];
        assert_eq!(r.namespace.as_deref(), Some(fixtures::NS));
    }
}
