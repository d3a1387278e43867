//! `MCPServer` controller: applies the server's Deployment and Service (for a `stdio` server
//! after creating its bridge token Secret once: [`crate::resources::bridge_token`]) and reports phase
//! (`Pending`, `Running`, `Failed`), URL, ready pods and conditions (`Ready`,
//! `GroupRefValidated` when `groupRef` is set). Nothing is applied when the server's name is
//! held by a Deployment or Service it does not control ([`super::ownership`]): `Ready` is then
//! `False` with reason `NameConflict`. With no ready pod, a problem read from the pods and
//! the Deployment ([`crate::pod_health`]: `ImagePullBackOff`, `CrashLoopBackOff`,
//! `ReplicaFailure`, ...) makes the phase `Failed` with that reason; an apply the API server
//! rejects (400, 403, 422) is `Failed` with reason `ApplyFailed` and its message. While pods are
//! not all ready the server is reconciled again every [`NOT_READY_RECHECK`] (pods are not
//! watched).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use vmcp_types::crd::{MCPGroup, MCPServer, MCPServerPhase, MCPServerStatus};

use super::ownership::{self, CONFLICT_RECHECK, NAME_CONFLICT, claim};
use super::reflectors::{Stores, Watches};
use super::{
    Context, Error, ShutdownSignal, apply, apply_status, error_policy, log_result, namespace,
};
use crate::pod_health::{PodProblem, pod_problem, pod_selector};
use crate::resources::bridge_token::{
    bridge_token_secret, bridge_token_secret_name, new_bridge_token, roll_on_new_bridge_token,
};
use crate::resources::mcp_server::{
    server_deployment, server_network_policy, server_service, server_url,
};
use crate::resources::{FIELD_MANAGER, check_service_name};
use crate::status::{self, NewCondition, Status, remove_condition, set_condition, transitioned_to};

const CONTROLLER: &str = "mcpserver";

/// Condition: at least one server pod is ready.
pub use crate::status::READY;
/// Condition: `spec.groupRef` names an existing `MCPGroup` (only when `groupRef` is set).
pub const GROUP_REF_VALIDATED: &str = "GroupRefValidated";

/// How often a server whose pods are not all ready is reconciled again.
pub const NOT_READY_RECHECK: Duration = Duration::from_secs(10);
/// `Ready` reason when the API server rejected an apply of a child.
pub const APPLY_FAILED: &str = "ApplyFailed";

/// Subscribes to the shared watches; the returned future runs the controller until `shutdown`.
pub(crate) fn run(
    ctx: Arc<Context>,
    w: &mut Watches,
    shutdown: ShutdownSignal,
) -> impl Future<Output = ()> + Send + use<> {
    let store = w.servers.store();
    let servers = store.clone();
    let controller = Controller::for_shared_stream(w.servers.applied(), store)
        .with_config(ctx.controller_config())
        .owns_shared_stream(w.deployments.touched())
        .owns_shared_stream(w.services.touched())
        .owns_shared_stream(w.network_policies.touched())
        .watches_shared_stream(w.groups.touched(), move |g| servers_for_group(&servers.state(), &g))
        .graceful_shutdown_on(shutdown);
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move { log_result(CONTROLLER, r) })
}

fn servers_for_group(servers: &[Arc<MCPServer>], g: &MCPGroup) -> Vec<ObjectRef<MCPServer>> {
    let ns = g.namespace().unwrap_or_default();
    servers
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
        .filter(|s| s.spec.group_ref.as_ref().is_some_and(|r| r.name == g.name_any()))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// What one reconcile found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerObservation {
    /// `metadata.generation` of the reconciled spec.
    pub generation: Option<i64>,
    /// `Some(found)` when `groupRef` is set.
    pub group: Option<(String, bool)>,
    /// Render error, if the spec could not be built (nothing applied).
    pub render_error: Option<String>,
    /// Name conflicts with objects this server does not control (nothing applied).
    pub conflict: Option<String>,
    /// Desired pods.
    pub replicas: i32,
    /// Ready pods of the Deployment.
    pub ready_replicas: i32,
    /// Why the pods are not ready, from the pods and the Deployment.
    pub problem: Option<PodProblem>,
    /// An apply the API server rejected (nothing else applied after it).
    pub apply_error: Option<String>,
    /// The server's in-cluster URL.
    pub url: String,
}

/// The status for `o`, starting from `prev` (see [`crate::status`]).
pub fn desired_server_status(
    prev: Option<&MCPServerStatus>,
    o: &ServerObservation,
    now: &Time,
) -> MCPServerStatus {
    let mut s = prev.cloned().unwrap_or_default();
    let g = o.generation;
    let c = &mut s.conditions;
    match &o.group {
        None => {
            remove_condition(c, GROUP_REF_VALIDATED);
        }
        Some((name, true)) => {
            set_condition(
                c,
                NewCondition::new(
                    GROUP_REF_VALIDATED,
                    true,
                    "GroupFound",
                    format!("MCPGroup '{name}' found"),
                ),
                g,
                now,
            );
        }
        Some((name, false)) => {
            set_condition(
                c,
                NewCondition::new(
                    GROUP_REF_VALIDATED,
                    false,
                    "GroupNotFound",
                    format!("MCPGroup '{name}' not found"),
                ),
                g,
                now,
            );
        }
    }
    let mut pods = format!("{} of {} pods ready", o.ready_replicas, o.replicas);
    if let Some(p) = &o.problem {
        pods.push_str(&format!("; {}", p.message));
    }
    let failed = MCPServerPhase::Failed;
    let (phase, ready) = match (&o.render_error, &o.conflict, &o.apply_error, &o.problem) {
        (Some(e), ..) => (failed, NewCondition::new(READY, false, "InvalidSpec", e.clone())),
        (None, Some(c), ..) => (failed, NewCondition::new(READY, false, NAME_CONFLICT, c.clone())),
        (None, None, Some(e), _) => {
            (failed, NewCondition::new(READY, false, APPLY_FAILED, e.clone()))
        }
        (None, None, None, _) if o.ready_replicas >= 1 => {
            (MCPServerPhase::Running, NewCondition::new(READY, true, "Running", pods))
        }
        (None, None, None, Some(p)) => (failed, NewCondition::new(READY, false, &p.reason, pods)),
        (None, None, None, None) => {
            (MCPServerPhase::Pending, NewCondition::new(READY, false, "DeploymentNotReady", pods))
        }
    };
    set_condition(c, ready, g, now);
    s.phase = Some(phase);
    s.url = Some(o.url.clone());
    s.ready_replicas = o.ready_replicas;
    s.observed_generation = g;
    s
}

/// Reconciles one `MCPServer`.
pub async fn reconcile(server: Arc<MCPServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconciled(CONTROLLER, server.as_ref(), reconcile_inner(&server, &ctx)).await
}

async fn reconcile_inner(server: &MCPServer, ctx: &Context) -> Result<Action, Error> {
    let ns = namespace(server)?;
    let name = server.name_any();
    if server.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let group = match &server.spec.group_ref {
        Some(r) if !r.name.is_empty() => {
            Some((r.name.clone(), Stores::get(&ctx.stores.groups, &ns, &r.name).is_some()))
        }
        Some(r) => Some((r.name.clone(), false)),
        None => None,
    };
    let built = check_service_name("MCPServer", &name, &name)
        .and_then(|()| {
            server_deployment(server, &ctx.settings.gateway_image, &ctx.settings.workloads)
        })
        .and_then(|d| server_service(server).map(|s| (d, s)))
        .and_then(|(d, s)| {
            let policy = ctx
                .settings
                .workloads
                .server_network_policy
                .then(|| server_network_policy(server))
                .transpose()?;
            Ok((d, s, policy))
        });
    let mut created = false;
    let mut updated = false;
    let mut conflict = None;
    let mut problem = None;
    let mut apply_error = None;
    let mut rejected = None;
    let (render_error, ready_replicas) = match built {
        Err(e) => (Some(e.to_string()), 0),
        Ok((deployment, service, policy)) => {
            let dep_api = ctx.api::<Deployment>(&ns);
            let svc_api = ctx.api::<Service>(&ns);
            let token = bridge_token_secret_name(server);
            let secret_api = ctx.api::<Secret>(&ns);
            let names: Vec<&str> = std::iter::once(name.as_str()).chain(token.as_deref()).collect();
            let _locked = ctx.name_locks.lock(&ns, &names).await;
            let uid = ownership::uid(server);
            let mut conflicts = Vec::new();
            let prior = claim(&dep_api, &name, &uid, &mut conflicts).await?;
            let prior_svc = claim(&svc_api, &name, &uid, &mut conflicts).await?;
            let np_api = ctx.api::<NetworkPolicy>(&ns);
            let prior_np = claim(&np_api, &name, &uid, &mut conflicts).await?;
            let prior_token = match &token {
                Some(t) => Some(claim(&secret_api, t, &uid, &mut conflicts).await?),
                None => None,
            };
            if conflicts.is_empty() {
                let mut deployment = deployment;
                if let Some(prior) = prior_token {
                    let token_uid = match prior {
                        Some(meta) => meta.metadata.uid,
                        None => create_bridge_token(&secret_api, server).await?,
                    };
                    roll_on_new_bridge_token(&mut deployment, token_uid);
                }
                // The policy first: the pods never run unprotected when it is enabled.
                match &policy {
                    Some(p) => {
                        apply(&np_api, p).await?;
                    }
                    None if prior_np.is_some() => {
                        np_api.delete(&name, &DeleteParams::default()).await?;
                    }
                    None => {}
                }
                match apply_children(&svc_api, &dep_api, &service, &deployment).await {
                    Ok((svc, dep)) => {
                        created = prior.is_none();
                        updated = !created
                            && (prior.and_then(|p| p.metadata.generation)
                                != dep.metadata.generation
                                || prior_svc.and_then(|p| p.metadata.resource_version)
                                    != svc.metadata.resource_version);
                        let ready = dep.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                        if ready < server.spec.replicas.unwrap_or(1) {
                            let pods = ctx.api::<Pod>(&ns).list(&pod_selector(&deployment)).await?;
                            problem = pod_problem(dep.status.as_ref(), &pods.items);
                        }
                        (None, ready)
                    }
                    Err((kind, kube::Error::Api(e))) if [400, 403, 422].contains(&e.code) => {
                        apply_error =
                            Some(format!("apply {kind} {name}: {} (HTTP {})", e.message, e.code));
                        rejected = Some(kube::Error::Api(e));
                        (None, 0)
                    }
                    Err((_, e)) => return Err(e.into()),
                }
            } else {
                conflict = Some(ownership::describe(&conflicts));
                (None, 0)
            }
        }
    };
    let observation = ServerObservation {
        generation: server.metadata.generation,
        group,
        render_error,
        conflict: conflict.clone(),
        replicas: server.spec.replicas.unwrap_or(1),
        ready_replicas,
        problem,
        apply_error,
        url: server_url(server, &ns),
    };
    let api = ctx.api::<MCPServer>(&ns);
    let prev = api.get_status(&name).await?.status.unwrap_or_default();
    let new = desired_server_status(Some(&prev), &observation, &status::now());
    if new != prev {
        apply_status(&api, &name, &new).await?;
        ctx.metrics.status_write(CONTROLLER);
    }
    if created {
        ctx.event(
            server,
            EventType::Normal,
            "Created",
            "Apply",
            format!("Created Deployment and Service {name}"),
        )
        .await;
    } else if updated {
        ctx.event(
            server,
            EventType::Normal,
            "Updated",
            "Apply",
            format!("Updated Deployment and Service {name}"),
        )
        .await;
    }
    if transitioned_to(&prev.conditions, &new.conditions, GROUP_REF_VALIDATED, Status::False) {
        let msg = status::find(&new.conditions, GROUP_REF_VALIDATED).map(|c| c.message.clone());
        ctx.event(
            server,
            EventType::Warning,
            "GroupNotFound",
            "Reconcile",
            msg.unwrap_or_default(),
        )
        .await;
    }
    if let Some(a) = status::find(&new.conditions, READY)
        && (a.reason == "InvalidSpec" || a.reason == NAME_CONFLICT)
        && status::find(&prev.conditions, READY)
            .is_none_or(|b| b.reason != a.reason || b.message != a.message)
    {
        let action = if a.reason == NAME_CONFLICT { "Apply" } else { "Render" };
        ctx.event(server, EventType::Warning, &a.reason, action, a.message.clone()).await;
    }
    if let Some(e) = rejected {
        // Written to status above; the error policy backs off and raises the Event.
        return Err(e.into());
    }
    Ok(if conflict.is_some() {
        Action::requeue(CONFLICT_RECHECK)
    } else if ready_replicas < server.spec.replicas.unwrap_or(1) {
        Action::requeue(NOT_READY_RECHECK)
    } else {
        ctx.resync()
    })
}

/// Creates the bridge token Secret of a `stdio` server that has none yet. Created once and
/// never applied again, so a reconcile does not rotate the token the running bridge and
/// gateway share. Returns the new Secret's uid.
async fn create_bridge_token(
    api: &kube::Api<Secret>,
    server: &MCPServer,
) -> Result<Option<String>, Error> {
    let Some(secret) = bridge_token_secret(server, &new_bridge_token())? else { return Ok(None) };
    let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
    match api.create(&pp, &secret).await {
        Ok(created) => Ok(created.metadata.uid),
        // Created meanwhile by another writer: the next reconcile reads it.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Applies the Service, then the Deployment; an error names the kind that failed.
async fn apply_children(
    svc_api: &kube::Api<Service>,
    dep_api: &kube::Api<Deployment>,
    service: &Service,
    deployment: &Deployment,
) -> Result<(Service, Deployment), (&'static str, kube::Error)> {
    let svc = apply(svc_api, service).await.map_err(|e| ("Service", e))?;
    let dep = apply(dep_api, deployment).await.map_err(|e| ("Deployment", e))?;
    Ok((svc, dep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;
    use k8s_openapi::jiff::Timestamp;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn obs() -> ServerObservation {
        ServerObservation {
            generation: Some(1),
            group: Some(("engineering".into(), true)),
            render_error: None,
            conflict: None,
            replicas: 1,
            ready_replicas: 0,
            problem: None,
            apply_error: None,
            url: "http://time.team-a.svc.cluster.local:8080/mcp".into(),
        }
    }

    #[test]
    fn pod_problems_and_rejected_applies_are_the_ready_reason() {
        let pull = PodProblem {
            reason: "ImagePullBackOff".into(),
            message: "pod time-1 container mcp-server: ImagePullBackOff".into(),
        };
        let s = desired_server_status(
            None,
            &ServerObservation { problem: Some(pull.clone()), ..obs() },
            &t(1),
        );
        assert_eq!(s.phase, Some(MCPServerPhase::Failed));
        let ready = status::find(&s.conditions, READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ImagePullBackOff"));
        assert_eq!(ready.message, format!("0 of 1 pods ready; {}", pull.message));
        // A broken rollout while an old pod still serves: Running, and the message says why
        // the new pod does not start.
        let s = desired_server_status(
            None,
            &ServerObservation { problem: Some(pull), ready_replicas: 1, replicas: 2, ..obs() },
            &t(1),
        );
        assert_eq!(s.phase, Some(MCPServerPhase::Running));
        assert!(status::find(&s.conditions, READY).unwrap().message.contains("ImagePullBackOff"));
        let rejected = "apply Deployment time: spec.template: invalid (HTTP 422)";
        let s = desired_server_status(
            None,
            &ServerObservation { apply_error: Some(rejected.into()), ..obs() },
            &t(1),
        );
        assert_eq!(s.phase, Some(MCPServerPhase::Failed));
        let ready = status::find(&s.conditions, READY).unwrap();
        assert_eq!((ready.reason.as_str(), ready.message.as_str()), (APPLY_FAILED, rejected));
    }

    #[test]
    fn phases_and_conditions() {
        let s = desired_server_status(None, &obs(), &t(1));
        assert_eq!(s.phase, Some(MCPServerPhase::Pending));
        assert_eq!(status::find(&s.conditions, READY).unwrap().reason, "DeploymentNotReady");
        assert!(status::is_true(&s.conditions, GROUP_REF_VALIDATED));
        let running = desired_server_status(
            Some(&s),
            &ServerObservation { ready_replicas: 1, ..obs() },
            &t(5),
        );
        assert_eq!(running.phase, Some(MCPServerPhase::Running));
        assert_eq!(running.ready_replicas, 1);
        assert_eq!(status::find(&running.conditions, READY).unwrap().last_transition_time, t(5));
        assert_eq!(
            desired_server_status(
                Some(&running),
                &ServerObservation { ready_replicas: 1, ..obs() },
                &t(9)
            ),
            running
        );
        let failed = desired_server_status(
            None,
            &ServerObservation { render_error: Some("spec.command is required".into()), ..obs() },
            &t(1),
        );
        assert_eq!(failed.phase, Some(MCPServerPhase::Failed));
        let conflict = desired_server_status(
            Some(&running),
            &ServerObservation { conflict: Some("Service 'time' already exists".into()), ..obs() },
            &t(12),
        );
        assert_eq!(conflict.phase, Some(MCPServerPhase::Failed));
        let ready = status::find(&conflict.conditions, READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", NAME_CONFLICT));
        insta::assert_yaml_snapshot!("server_status_running", running);
    }

    #[test]
    fn group_condition_only_with_group_ref() {
        let missing = desired_server_status(
            None,
            &ServerObservation { group: Some(("nope".into(), false)), ..obs() },
            &t(1),
        );
        let c = status::find(&missing.conditions, GROUP_REF_VALIDATED).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "GroupNotFound"));
        assert!(c.message.contains("'nope'"));
        let none = desired_server_status(
            Some(&missing),
            &ServerObservation { group: None, ..obs() },
            &t(2),
        );
        assert!(status::find(&none.conditions, GROUP_REF_VALIDATED).is_none());
    }

    #[test]
    fn group_maps_to_its_servers() {
        let servers: Vec<_> = fixtures::servers().into_iter().map(Arc::new).collect();
        let refs = servers_for_group(&servers, &fixtures::group());
        let names: Vec<_> = refs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["github-tools", "time"]);
    }
}
