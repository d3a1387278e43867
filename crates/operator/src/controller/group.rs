//! `MCPGroup` controller: lists the group's member servers in the status (`servers`,
//! `serverCount`, phase `Ready`, condition `Ready`).

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::ListParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use vmcp_types::crd::{MCPGroup, MCPGroupStatus, MCPServer};

use super::{
    Context, Error, RefIndex, RefKind, ShutdownSignal, apply_status, error_policy, log_result,
    namespace,
};
use crate::status::{self, NewCondition, set_condition};

const CONTROLLER: &str = "mcpgroup";

/// Condition: the group is usable (always `True` once reconciled).
pub const READY: &str = "Ready";

/// Runs the controller until `shutdown`.
pub(crate) async fn run(ctx: Arc<Context>, shutdown: ShutdownSignal) {
    let c = ctx.clone();
    Controller::new(ctx.watch_api::<MCPGroup>(), Default::default())
        .watches(ctx.watch_api::<MCPServer>(), Default::default(), move |s| {
            groups_for_server(&c.group_members, &s)
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move { log_result(CONTROLLER, r) })
        .await;
}

/// The server's group now, and the groups that listed it before (it may have moved).
fn groups_for_server(index: &RefIndex, s: &MCPServer) -> Vec<ObjectRef<MCPGroup>> {
    let ns = s.namespace().unwrap_or_default();
    let mut names: BTreeSet<String> =
        index.referrers(&ns, RefKind::Server, &s.name_any()).into_iter().collect();
    if let Some(g) = &s.spec.group_ref {
        names.insert(g.name.clone());
    }
    names.into_iter().filter(|n| !n.is_empty()).map(|n| ObjectRef::new(&n).within(&ns)).collect()
}

/// The status of a group with `members` (sorted names).
pub fn desired_group_status(
    prev: Option<&MCPGroupStatus>,
    generation: Option<i64>,
    members: Vec<String>,
    now: &Time,
) -> MCPGroupStatus {
    let mut s = prev.cloned().unwrap_or_default();
    let n = members.len();
    let message = match n {
        0 => "no MCPServers reference this group".to_owned(),
        1 => "1 server".to_owned(),
        n => format!("{n} servers"),
    };
    set_condition(
        &mut s.conditions,
        NewCondition::new(READY, true, "Ready", message),
        generation,
        now,
    );
    s.phase = Some("Ready".into());
    s.server_count = i32::try_from(n).unwrap_or(i32::MAX);
    s.servers = members;
    s.observed_generation = generation;
    s
}

/// Reconciles one `MCPGroup`.
pub async fn reconcile(group: Arc<MCPGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconciled(CONTROLLER, group.as_ref(), reconcile_inner(&group, &ctx)).await
}

async fn reconcile_inner(group: &MCPGroup, ctx: &Context) -> Result<Action, Error> {
    let ns = namespace(group)?;
    let name = group.name_any();
    let mut members: Vec<String> = ctx
        .api::<MCPServer>(&ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter(|s| s.spec.group_ref.as_ref().is_some_and(|g| g.name == name))
        .map(|s| s.name_any())
        .collect();
    members.sort();
    ctx.group_members.set(
        &ns,
        &name,
        members.iter().map(|m| (RefKind::Server, m.clone())).collect(),
    );
    let api = ctx.api::<MCPGroup>(&ns);
    let prev = api.get_status(&name).await?.status.unwrap_or_default();
    let new = desired_group_status(Some(&prev), group.metadata.generation, members, &status::now());
    if new != prev {
        apply_status(&api, &name, &new).await?;
        ctx.metrics.status_write(CONTROLLER);
    }
    Ok(ctx.resync())
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

    #[test]
    fn status_lists_members() {
        let s =
            desired_group_status(None, Some(1), vec!["github-tools".into(), "time".into()], &t(1));
        assert_eq!(s.server_count, 2);
        assert_eq!(s.servers, ["github-tools", "time"]);
        assert_eq!(s.phase.as_deref(), Some("Ready"));
        assert!(status::is_true(&s.conditions, READY));
        let again = desired_group_status(
            Some(&s),
            Some(1),
            vec!["github-tools".into(), "time".into()],
            &t(9),
        );
        assert_eq!(again, s);
        let fewer = desired_group_status(Some(&s), Some(1), vec!["time".into()], &t(9));
        assert_eq!(fewer.server_count, 1);
        assert_eq!(status::find(&fewer.conditions, READY).unwrap().last_transition_time, t(1));
        insta::assert_yaml_snapshot!("group_status", s);
    }

    #[test]
    fn server_maps_to_old_and_new_group() {
        let index = RefIndex::default();
        index.set(fixtures::NS, "old", BTreeSet::from([(RefKind::Server, "time".into())]));
        let mut s = fixtures::server("time");
        s.spec.group_ref = Some(LocalRef { name: "new".into() });
        let names: Vec<_> = groups_for_server(&index, &s).into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["new", "old"]);
    }
}
