//! One watch per kind, shared by every controller that needs it, and the [`Stores`] the
//! reconciles read instead of listing a namespace.
//!
//! [`Watches::new`] sets up one [`Shared`] per kind; each controller subscribes to the kinds it
//! is triggered by ([`Shared::applied`] for its own kind, [`Shared::touched`] for owned and
//! watched kinds) and hands the subscription to kube's `Controller::for_shared_stream`,
//! `owns_shared_stream` or `watches_shared_stream`; then [`Watches::run`] lists and watches each
//! kind once. Each event is applied to the kind's [`Store`] *before* it is passed on, so a
//! reconcile triggered by an object always finds that object (and its newer state) in the store;
//! a (re)list is passed on once complete, with the objects it no longer finds as deletions.
//!
//! Why the fan-out is ours and not kube's `store_shared` dispatcher: in kube-runtime 5.0 a
//! shared store's subscribers see applied objects only, never deletions
//! (`Writer::dispatch_event` skips `Delete`), so a deleted `MCPServer` would never re-render its
//! gateway and a deleted child would never be recreated. Here a subscriber sees every touched
//! object, deleted ones included, and a deleted primary also prunes the in-memory indexes
//! ([`super::Context::forget`]).
//!
//! Subscriptions are unbounded channels. A bounded one could deadlock at start-up: reconciles
//! wait until every store has its first list ([`Stores::ready`]), and a watch that blocked on a
//! full subscriber would never finish that list. The backlog is bounded by the number of
//! objects (a controller's scheduler takes triggers as they come and deduplicates them).
//!
//! Stored objects lose `managedFields`; Secrets and ConfigMaps are watched as metadata only and
//! also lose their annotations (`kubectl apply` copies a Secret's data into
//! `last-applied-configuration`: the operator never keeps Secret values in memory).

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{Lookup, ObjectRef, Store};
use kube::runtime::watcher::{self, Event, watcher};
use kube::runtime::{WatchStreamExt, reflector};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use vmcp_types::crd::{
    MCPExternalAuthConfig, MCPGroup, MCPServer, MCPServerEntry, VirtualMCPServer,
};

use super::{Context, Error};

/// A trigger stream of one controller: the objects of one kind as they change.
pub(crate) type Trigger<K> = BoxStream<'static, Arc<K>>;

/// One watched kind: its store and its subscribers.
pub(crate) struct Shared<K>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    writer: Writer<K>,
    subscribers: Vec<(bool, mpsc::UnboundedSender<Arc<K>>)>,
}

impl<K> Shared<K>
where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    fn new() -> Self {
        let (store, writer) = reflector::store();
        Self { store, writer, subscribers: Vec::new() }
    }

    /// The kind's objects as last seen (ready once the first list is in: [`Store::wait_until_ready`]).
    pub(crate) fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every created, changed or deleted object (for `owns` and `watches` relations).
    pub(crate) fn touched(&mut self) -> Trigger<K> {
        self.subscribe(true)
    }

    /// Every created or changed object, not deleted ones (for a controller's own kind: a
    /// deleted object has nothing left to reconcile).
    pub(crate) fn applied(&mut self) -> Trigger<K> {
        self.subscribe(false)
    }

    fn subscribe(&mut self, deletions: bool) -> Trigger<K> {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers.push((deletions, tx));
        rx.boxed()
    }

    /// Applies `events` to the store and passes every touched object on to the subscribers;
    /// `deleted` is called with each deleted object. A (re)list is passed on when it is complete
    /// (`InitDone`): every listed object as applied, and every object the list no longer has as
    /// deleted (a deletion missed while the watch was down). Runs until `events` ends (a watch
    /// never does: errors are logged and the watch retried with backoff).
    pub(crate) async fn run(
        self,
        kind: &'static str,
        events: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send,
        deleted: impl Fn(&K),
    ) {
        let Self { store, mut writer, subscribers } = self;
        let send = |obj: Arc<K>, deletion: bool| {
            for (with_deletions, tx) in &subscribers {
                if !deletion || *with_deletions {
                    // A closed subscription is a controller that stopped: nothing to do.
                    let _ = tx.unbounded_send(obj.clone());
                }
            }
        };
        let key = |o: &K| o.to_object_ref(Default::default());
        let mut before = Vec::new();
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(kind, error = %e, "watch failed; retrying with backoff");
                    continue;
                }
            };
            if matches!(event, Event::Init) {
                before = store.state();
            }
            writer.apply_watcher_event(&event);
            match event {
                // Kept apart until the list is complete.
                Event::Init | Event::InitApply(_) => {}
                Event::InitDone => {
                    let now = store.state();
                    let listed: HashSet<ObjectRef<K>> =
                        now.iter().map(|o| key(o.as_ref())).collect();
                    for gone in before.drain(..).filter(|o| !listed.contains(&key(o.as_ref()))) {
                        deleted(gone.as_ref());
                        send(gone, true);
                    }
                    for obj in now {
                        send(obj, false);
                    }
                }
                Event::Apply(o) => send(Arc::new(o), false),
                Event::Delete(o) => {
                    deleted(&o);
                    send(Arc::new(o), true);
                }
            }
        }
    }
}

/// The stores of the kinds reconciles read.
#[derive(Clone)]
pub struct Stores {
    /// `VirtualMCPServer`s.
    pub vmcps: Store<VirtualMCPServer>,
    /// `MCPServer`s.
    pub servers: Store<MCPServer>,
    /// `MCPServerEntry`s.
    pub entries: Store<MCPServerEntry>,
    /// `MCPGroup`s.
    pub groups: Store<MCPGroup>,
    /// `MCPExternalAuthConfig`s.
    pub auth_configs: Store<MCPExternalAuthConfig>,
    /// Secrets, metadata only (without annotations).
    pub secrets: Store<PartialObjectMeta<Secret>>,
    /// ConfigMaps, metadata only (without annotations): the gateways' own and CA bundles.
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
}

impl Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    /// Waits until every store holds its first list, so that no reconcile mistakes a kind not
    /// listed yet for an empty one (a gateway rendered with no backends, a group "not found").
    pub(crate) async fn ready(&self) -> Result<(), Error> {
        let closed = |kind: &'static str| move |_| Error::StoreClosed(kind);
        self.vmcps.wait_until_ready().await.map_err(closed("VirtualMCPServer"))?;
        self.servers.wait_until_ready().await.map_err(closed("MCPServer"))?;
        self.entries.wait_until_ready().await.map_err(closed("MCPServerEntry"))?;
        self.groups.wait_until_ready().await.map_err(closed("MCPGroup"))?;
        self.auth_configs.wait_until_ready().await.map_err(closed("MCPExternalAuthConfig"))?;
        self.secrets.wait_until_ready().await.map_err(closed("Secret"))?;
        self.config_maps.wait_until_ready().await.map_err(closed("ConfigMap"))?;
        Ok(())
    }

    /// Stores that are listed and empty (unit tests of reconcile plumbing).
    #[cfg(test)]
    pub(crate) fn listed_empty() -> Self {
        fn listed<K>() -> Store<K>
        where
            K: Lookup + Clone + 'static,
            K::DynamicType: Eq + Hash + Clone + Default,
        {
            let (store, mut writer) = reflector::store();
            writer.apply_watcher_event(&Event::InitDone);
            store
        }
        Self {
            vmcps: listed(),
            servers: listed(),
            entries: listed(),
            groups: listed(),
            auth_configs: listed(),
            secrets: listed(),
            config_maps: listed(),
        }
    }

    /// The objects of `store` in `ns` that `keep` selects.
    pub(crate) fn in_namespace<K>(store: &Store<K>, ns: &str, keep: impl Fn(&K) -> bool) -> Vec<K>
    where
        K: Lookup + Resource + Clone + 'static,
        <K as Lookup>::DynamicType: Eq + Hash + Clone,
    {
        store
            .state()
            .iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(ns) && keep(o.as_ref()))
            .map(|o| K::clone(o.as_ref()))
            .collect()
    }

    /// Object `name` of `store` in `ns`.
    pub(crate) fn get<K>(store: &Store<K>, ns: &str, name: &str) -> Option<Arc<K>>
    where
        K: Lookup + Clone + 'static,
        <K as Lookup>::DynamicType: Eq + Hash + Clone + Default,
    {
        store.get(&ObjectRef::new_with(name, Default::default()).within(ns))
    }
}

/// Every shared watch of one scope (every namespace, or one).
pub(crate) struct Watches {
    pub(crate) vmcps: Shared<VirtualMCPServer>,
    pub(crate) servers: Shared<MCPServer>,
    pub(crate) entries: Shared<MCPServerEntry>,
    pub(crate) groups: Shared<MCPGroup>,
    pub(crate) auth_configs: Shared<MCPExternalAuthConfig>,
    pub(crate) secrets: Shared<PartialObjectMeta<Secret>>,
    /// Every ConfigMap (metadata): the gateways' configurations and CA bundles.
    pub(crate) config_maps: Shared<PartialObjectMeta<ConfigMap>>,
    /// Children (metadata). Deployments and Services of gateways and of MCP servers share one
    /// watch each: `owns` relations pick the children of their own kind by owner reference.
    pub(crate) deployments: Shared<PartialObjectMeta<Deployment>>,
    pub(crate) services: Shared<PartialObjectMeta<Service>>,
    pub(crate) service_accounts: Shared<PartialObjectMeta<ServiceAccount>>,
    pub(crate) pdbs: Shared<PartialObjectMeta<PodDisruptionBudget>>,
    pub(crate) network_policies: Shared<PartialObjectMeta<NetworkPolicy>>,
}

impl Watches {
    /// Every shared watch, not started yet.
    pub(crate) fn new() -> Self {
        Self {
            vmcps: Shared::new(),
            servers: Shared::new(),
            entries: Shared::new(),
            groups: Shared::new(),
            auth_configs: Shared::new(),
            secrets: Shared::new(),
            deployments: Shared::new(),
            services: Shared::new(),
            config_maps: Shared::new(),
            service_accounts: Shared::new(),
            pdbs: Shared::new(),
            network_policies: Shared::new(),
        }
    }

    /// The stores reconciles read.
    pub(crate) fn stores(&self) -> Stores {
        Stores {
            vmcps: self.vmcps.store(),
            servers: self.servers.store(),
            entries: self.entries.store(),
            groups: self.groups.store(),
            auth_configs: self.auth_configs.store(),
            secrets: self.secrets.store(),
            config_maps: self.config_maps.store(),
        }
    }

    /// Lists and watches every kind in `ctx`'s scope until dropped (a watch never ends).
    /// Every watch uses `any_semantic` lists (served from the API server's watch cache, no
    /// quorum read of etcd); children other than ConfigMaps are watched by the operator's
    /// `managed-by` label.
    pub(crate) async fn run(self, ctx: Arc<Context>) {
        let any = || watcher::Config::default().any_semantic();
        let children = || any().labels(&super::managed_selector());
        let c = &ctx;
        futures::join!(
            self.vmcps.run("VirtualMCPServer", events(c, any()), |o| c.forget(o)),
            self.servers.run("MCPServer", events(c, any()), |o| c.forget(o)),
            self.entries.run("MCPServerEntry", events(c, any()), |_| ()),
            self.groups.run("MCPGroup", events(c, any()), |o| c.forget(o)),
            self.auth_configs.run("MCPExternalAuthConfig", events(c, any()), |o| c.forget(o)),
            self.secrets.run("Secret", without_annotations(events(c, any())), |_| ()),
            self.config_maps.run("ConfigMap", without_annotations(events(c, any())), |_| ()),
            self.deployments.run("Deployment", events(c, children()), |_| ()),
            self.services.run("Service", events(c, children()), |_| ()),
            self.service_accounts.run("ServiceAccount", events(c, children()), |_| ()),
            self.pdbs.run("PodDisruptionBudget", events(c, children()), |_| ()),
            self.network_policies.run("NetworkPolicy", events(c, children()), |_| ()),
        );
    }
}

/// The watch events of `K` in the context's scope, without `managedFields`.
fn events<K>(
    ctx: &Context,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + 'static,
    K::DynamicType: Default,
{
    watcher(ctx.watch_api::<K>(), config).default_backoff().modify(|o| {
        o.managed_fields_mut().clear();
    })
}

/// `events` without annotations.
fn without_annotations<K: Resource>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send {
    events.modify(|o| {
        o.annotations_mut().clear();
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn server(name: &str, rv: &str) -> MCPServer {
        let mut s = crate::resources::fixtures::server("time");
        s.metadata.name = Some(name.into());
        s.metadata.resource_version = Some(rv.into());
        s
    }

    fn names(v: Vec<Arc<MCPServer>>) -> Vec<String> {
        let mut n: Vec<String> = v.iter().map(|o| o.name_any()).collect();
        n.sort();
        n
    }

    /// What one run over `events` left: the store's names, the names the `deleted` hook got,
    /// and what a touched and an applied subscriber got.
    struct Seen {
        store: Vec<String>,
        deleted: Vec<String>,
        touched: Vec<Arc<MCPServer>>,
        applied: Vec<Arc<MCPServer>>,
    }

    async fn through(events: Vec<Event<MCPServer>>) -> Seen {
        let mut shared = Shared::<MCPServer>::new();
        let store = shared.store();
        let (touched, applied) = (shared.touched(), shared.applied());
        let deleted = parking_lot::Mutex::new(Vec::new());
        let events = stream::iter(events.into_iter().map(Ok));
        shared.run("MCPServer", events, |o: &MCPServer| deleted.lock().push(o.name_any())).await;
        Seen {
            store: names(store.state()),
            deleted: deleted.into_inner(),
            touched: touched.collect().await,
            applied: applied.collect().await,
        }
    }

    #[tokio::test]
    async fn events_reach_the_store_first_and_deletions_reach_only_touched_subscribers() {
        let seen = through(vec![
            Event::Init,
            Event::InitApply(server("a", "1")),
            Event::InitDone,
            Event::Apply(server("b", "2")),
            Event::Delete(server("a", "3")),
        ])
        .await;
        assert_eq!(seen.deleted, ["a"]);
        // The store: "a" listed, "b" added, "a" deleted.
        assert_eq!(seen.store, ["b"]);
        let order = |v: &[Arc<MCPServer>]| v.iter().map(|o| o.name_any()).collect::<Vec<_>>();
        assert_eq!(order(&seen.touched), ["a", "b", "a"]);
        assert_eq!(order(&seen.applied), ["a", "b"]);
    }

    /// A relist (after the watch was down) passes on what it found only once it is complete,
    /// and reports what it no longer found as deleted.
    #[tokio::test]
    async fn a_relist_reports_the_objects_it_no_longer_finds_as_deleted() {
        let seen = through(vec![
            Event::Init,
            Event::InitApply(server("a", "1")),
            Event::InitApply(server("b", "1")),
            Event::InitDone,
            Event::Init,
            Event::InitApply(server("b", "2")),
            Event::InitApply(server("c", "2")),
            Event::InitDone,
        ])
        .await;
        assert_eq!(seen.deleted, ["a"]);
        assert_eq!(seen.store, ["b", "c"]);
        let got = seen.touched;
        // First list: a, b; relist: a gone (first), then b (its new version) and c.
        assert_eq!(names(got[..2].to_vec()), ["a", "b"]);
        assert_eq!(got[2].name_any(), "a");
        assert_eq!(names(got[3..].to_vec()), ["b", "c"]);
        let b = got[3..].iter().find(|o| o.name_any() == "b").unwrap();
        assert_eq!(b.metadata.resource_version.as_deref(), Some("2"));
        assert_eq!(names(seen.applied), ["a", "b", "b", "c"]);
    }

    #[tokio::test]
    async fn a_stopped_subscriber_does_not_stop_the_others() {
        let mut shared = Shared::<MCPServer>::new();
        drop(shared.touched());
        let mut live = shared.touched();
        let events = stream::iter(vec![Ok(Event::Apply(server("a", "1")))]);
        shared.run("MCPServer", events, |_: &MCPServer| ()).await;
        assert_eq!(live.next().await.map(|o| o.name_any()).as_deref(), Some("a"));
    }
}
