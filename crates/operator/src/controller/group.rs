//! `MCPGroup` controller: lists the group's members in the status (`servers` and
//! `serverCount` for `MCPServer`s, `entries` and `entryCount` for `MCPServerEntry`s, phase
//! `Ready`, condition `Ready`), read from the shared stores.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use vmcp_types::crd::{MCPGroup, MCPGroupPhase, MCPGroupStatus, MCPServer, MCPServerEntry};

use super::reflectors::{Stores, Watches};
use super::{
    Context, Error, RefIndex, RefKind, ShutdownSignal, apply_status, error_policy, log_result,
    namespace,
};
use crate::status::{self, NewCondition, READY, set_condition};

const CONTROLLER: &str = "mcpgroup";

/// Subscribes to the shared watches; the returned future runs the controller until `shutdown`.
pub(crate) fn run(
    ctx: Arc<Context>,
    w: &mut Watches,
    shutdown: ShutdownSignal,
) -> impl Future<Output = ()> + Send + use<> {
    let (c1, c2) = (ctx.clone(), ctx.clone());
    let controller = Controller::for_shared_stream(w.groups.applied(), w.groups.store())
        .with_config(ctx.controller_config())
        .watches_shared_stream(w.servers.touched(), move |s| {
            let group = s.spec.group_ref.as_ref().map(|g| g.name.clone());
            groups_for_member(&c1.group_members, RefKind::Server, &*s, group)
        })
        .watches_shared_stream(w.entries.touched(), move |e| {
            let group = Some(e.spec.group_ref.name.clone());
            groups_for_member(&c2.group_members, RefKind::Entry, &*e, group)
        })
        .graceful_shutdown_on(shutdown);
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move { log_result(CONTROLLER, r) })
}

/// A member's group now (`group`), and the groups that listed it before (it may have moved).
fn groups_for_member<K: kube::Resource>(
    index: &RefIndex,
    kind: RefKind,
    member: &K,
    group: Option<String>,
) -> Vec<ObjectRef<MCPGroup>> {
    let ns = member.meta().namespace.clone().unwrap_or_default();
    let name = member.meta().name.clone().unwrap_or_default();
    let mut names: BTreeSet<String> = index.referrers(&ns, kind, &name).into_iter().collect();
    names.extend(group);
    names.into_iter().filter(|n| !n.is_empty()).map(|n| ObjectRef::new(&n).within(&ns)).collect()
}

/// Sorted names of a group's members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// `MCPServer`s.
    pub servers: Vec<String>,
    /// `MCPServerEntry`s.
    pub entries: Vec<String>,
}

fn counted(n: usize, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

/// The status of a group with `members`.
pub fn desired_group_status(
    prev: Option<&MCPGroupStatus>,
    generation: Option<i64>,
    members: Members,
    now: &Time,
) -> MCPGroupStatus {
    let mut s = prev.cloned().unwrap_or_default();
    let (n, e) = (members.servers.len(), members.entries.len());
    let message = match (n, e) {
        (0, 0) => "no MCPServers or MCPServerEntries reference this group".to_owned(),
        (_, 0) => counted(n, "server", "servers"),
        (0, _) => counted(e, "remote entry", "remote entries"),
        _ => format!(
            "{}, {}",
            counted(n, "server", "servers"),
            counted(e, "remote entry", "remote entries")
        ),
    };
    set_condition(
        &mut s.conditions,
        NewCondition::new(READY, true, "Ready", message),
        generation,
        now,
    );
    s.phase = Some(MCPGroupPhase::Ready);
    s.server_count = i32::try_from(n).unwrap_or(i32::MAX);
    s.servers = members.servers;
    s.entry_count = i32::try_from(e).unwrap_or(i32::MAX);
    s.entries = members.entries;
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
    let mut servers: Vec<String> =
        Stores::in_namespace(&ctx.stores.servers, &ns, |s: &MCPServer| {
            s.metadata.deletion_timestamp.is_none()
                && s.spec.group_ref.as_ref().is_some_and(|g| g.name == name)
        })
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    servers.sort();
    let mut entries: Vec<String> =
        Stores::in_namespace(&ctx.stores.entries, &ns, |e: &MCPServerEntry| {
            e.metadata.deletion_timestamp.is_none() && e.spec.group_ref.name == name
        })
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    entries.sort();
    let mut refs: BTreeSet<(RefKind, String)> =
        servers.iter().map(|m| (RefKind::Server, m.clone())).collect();
    refs.extend(entries.iter().map(|e| (RefKind::Entry, e.clone())));
    ctx.group_members.set_unless_gone(&ns, &name, refs, || {
        Stores::get(&ctx.stores.groups, &ns, &name).is_some()
    });
    let api = ctx.api::<MCPGroup>(&ns);
    let prev = api.get_status(&name).await?.status.unwrap_or_default();
    let members = Members { servers, entries };
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

    fn members(servers: &[&str], entries: &[&str]) -> Members {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        Members { servers: names(servers), entries: names(entries) }
    }

    #[test]
    fn status_lists_members() {
        let s = desired_group_status(None, Some(1), members(&["github-tools", "time"], &[]), &t(1));
        assert_eq!(s.server_count, 2);
        assert_eq!(s.servers, ["github-tools", "time"]);
        assert_eq!(s.phase, Some(MCPGroupPhase::Ready));
        assert!(status::is_true(&s.conditions, READY));
        let again =
            desired_group_status(Some(&s), Some(1), members(&["github-tools", "time"], &[]), &t(9));
        assert_eq!(again, s);
        let fewer = desired_group_status(Some(&s), Some(1), members(&["time"], &[]), &t(9));
        assert_eq!(fewer.server_count, 1);
        assert_eq!(status::find(&fewer.conditions, READY).unwrap().last_transition_time, t(1));
        insta::assert_yaml_snapshot!("group_status", s);
    }

    #[test]
    fn remote_entries_are_counted_apart() {
        let s = desired_group_status(None, Some(1), members(&["time"], &["docs", "search"]), &t(1));
        assert_eq!((s.server_count, s.entry_count), (1, 2));
        assert_eq!(s.entries, ["docs", "search"]);
        let ready = status::find(&s.conditions, READY).unwrap();
        assert_eq!(ready.message, "1 server, 2 remote entries");
        let only = desired_group_status(Some(&s), Some(1), members(&[], &["docs"]), &t(2));
        assert_eq!((only.server_count, only.entry_count), (0, 1));
        assert!(only.servers.is_empty());
        assert_eq!(status::find(&only.conditions, READY).unwrap().message, "1 remote entry");
    }

    #[test]
    fn member_maps_to_old_and_new_group() {
        let index = RefIndex::default();
        index.set(fixtures::NS, "old", BTreeSet::from([(RefKind::Server, "time".into())]));
        let mut s = fixtures::server("time");
        s.spec.group_ref = Some(LocalRef { name: "new".into() });
        let group = s.spec.group_ref.as_ref().map(|g| g.name.clone());
        let names: Vec<_> = groups_for_member(&index, RefKind::Server, &s, group)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["new", "old"]);
        // An entry of the same name is another member.
        let names: Vec<_> = groups_for_member(&index, RefKind::Entry, &s, None)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert!(names.is_empty());
    }
}
