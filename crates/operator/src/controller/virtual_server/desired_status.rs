//! The gateway's status, computed from what one reconcile observed (pure).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use vmcp_types::crd::{DiscoveredBackend, VirtualMCPServerPhase, VirtualMCPServerStatus};

use super::super::ownership::NAME_CONFLICT;
use super::{
    AUTH_CONFIGURED, BACKENDS_DISCOVERED, GROUP_REF_VALIDATED, READY, SESSION_STORAGE_WARNING,
};
use crate::pod_health::PodProblem;
use crate::resources::{Problem, ProblemKind};
use crate::status::{NewCondition, Status, set_condition};

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

pub(super) fn join(problems: &[Problem], kinds: &[ProblemKind]) -> String {
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
    for st in ["ready", "remote", "pending", "error"] {
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
