//! The controllers, controller-rs style: one shared [`Context`], and per kind a free
//! `reconcile` function, the shared [`error_policy`] and the watches that trigger it.
//!
//! | module | kind | owns | also watches |
//! |---|---|---|---|
//! | [`virtual_server`] | `VirtualMCPServer` | ConfigMap, Deployment, Service, ServiceAccount, PodDisruptionBudget | `MCPServer`, `MCPServerEntry`, `MCPGroup`, `MCPExternalAuthConfig`, Secret and ConfigMap (metadata only) |
//! | [`mcp_server`] | `MCPServer` | Deployment, Service, NetworkPolicy | `MCPGroup` |
//! | [`group`] | `MCPGroup` | - | `MCPServer`, `MCPServerEntry` |
//! | [`auth_config`] | `MCPExternalAuthConfig` | - | Secret (metadata only) |
//!
//! Each kind is listed and watched once and shared by the controllers ([`reflectors`]):
//! reconciles read the group, its members and the referenced auth configs and Secrets from
//! in-memory stores, never by listing the namespace. Each controller reconciles at most
//! [`Settings::concurrency`] objects at once, and waits [`Settings::debounce`] after a trigger
//! so that a burst of changes (every member's status flipping) costs one reconcile; every
//! reconcile runs in a `reconcile` tracing span naming the controller, namespace and object.
//!
//! Every write is a server-side apply with the one field manager `vmcp-operator` (forced), so
//! re-applying an unchanged desired state writes nothing. A child is only applied when it is
//! absent or controlled by the reconciled object ([`ownership`]): a forced apply never takes
//! over somebody else's object; status is compared with the stored
//! status first and only written when it differs. Secrets are only ever read as metadata
//! (existence), never their values.

pub mod auth_config;
pub mod group;
mod index;
pub mod mcp_server;
pub mod ownership;
pub mod reflectors;
pub mod virtual_server;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::resources::{FIELD_MANAGER, RenderError};
use crate::settings::Settings;
use index::Backoff;
pub(crate) use index::{RefIndex, RefKind};

/// Why a reconcile failed; the controller retries with [`error_policy`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// Desired objects could not be built.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The object has no namespace (every vmcp kind is namespaced).
    #[error("{kind} {name} has no namespace")]
    NoNamespace {
        /// Kind of the object.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The shared watch of a kind stopped (the operator is shutting down).
    #[error("the watch of {0} stopped")]
    StoreClosed(&'static str),
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Render(_) => "render",
            Self::NoNamespace { .. } => "no_namespace",
            Self::StoreClosed(_) => "store_closed",
        }
    }
}

/// The shutdown signal every controller shares.
pub(crate) type ShutdownSignal = Shared<BoxFuture<'static, ()>>;

/// What every reconcile gets: the client, settings, metrics, the Event recorder, the stores of
/// the shared watches and the in-memory indexes that map watched objects back to the objects
/// that reference them.
pub struct Context {
    /// Client of the API server.
    pub client: Client,
    /// Operator settings.
    pub settings: Settings,
    /// Metrics (shared with `/metrics`).
    pub metrics: Arc<Metrics>,
    /// Publishes Events on the reconciled objects.
    pub recorder: Recorder,
    backoff: Backoff,
    /// Per `VirtualMCPServer`: the group, servers, auth configs and Secrets it used.
    vmcp_refs: RefIndex,
    /// Per `MCPGroup`: its member servers at the last reconcile.
    group_members: RefIndex,
    /// Per `MCPExternalAuthConfig`: the Secrets it references.
    auth_secrets: RefIndex,
    /// Serializes the ownership check and apply of each child name.
    name_locks: ownership::NameLocks,
    /// The one namespace these controllers watch, or `None` for every namespace.
    scope: Option<String>,
    /// The objects of the watched kinds, as last seen.
    pub stores: reflectors::Stores,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Context {
    /// A context for `client` with `settings`, watching `scope` (one namespace) or, with
    /// `None`, every namespace, reading `stores`.
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        scope: Option<String>,
        stores: reflectors::Stores,
    ) -> Self {
        let reporter =
            Reporter { controller: FIELD_MANAGER.into(), instance: settings.instance.clone() };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            backoff: Backoff::default(),
            vmcp_refs: RefIndex::default(),
            group_members: RefIndex::default(),
            auth_secrets: RefIndex::default(),
            name_locks: ownership::NameLocks::default(),
            scope,
            stores,
        }
    }

    /// Forgets what the indexes and the error backoff hold about `obj`, which was deleted.
    pub(crate) fn forget<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        let ns = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        self.backoff.reset(&Self::backoff_key(obj));
        match K::kind(&()).as_ref() {
            "VirtualMCPServer" => self.vmcp_refs.remove(&ns, &name),
            "MCPGroup" => self.group_members.remove(&ns, &name),
            "MCPExternalAuthConfig" => self.auth_secrets.remove(&ns, &name),
            _ => {}
        }
    }

    /// The controller settings: bounded concurrency and a debounce.
    pub(crate) fn controller_config(&self) -> controller::Config {
        controller::Config::default()
            .concurrency(self.settings.concurrency)
            .debounce(self.settings.debounce)
    }

    /// The API of `K` the controllers watch: every namespace, or the context's one.
    pub(crate) fn watch_api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.scope {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// The API of `K` in `ns`.
    pub(crate) fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Publishes an Event on `obj`; a failure is logged, never fatal.
    pub(crate) async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) {
        let mut note: String = note.into();
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }

    fn backoff_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
        format!("{}/{}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
    }

    /// Runs one reconcile of `obj` in a `reconcile` span (controller, namespace, name), once
    /// every store holds its first list, with its latency recorded, and records the outcome: on
    /// success the error backoff is reset; on failure the failure is counted and shown on the
    /// object as a Warning Event (never only in the log).
    pub(crate) async fn reconciled<K: Resource<DynamicType = ()>>(
        &self,
        controller: &'static str,
        obj: &K,
        run: impl Future<Output = Result<Action, Error>>,
    ) -> Result<Action, Error> {
        let span = tracing::info_span!(
            "reconcile",
            controller,
            namespace = obj.namespace().unwrap_or_default(),
            name = obj.name_any(),
        );
        self.reconciled_in_span(controller, obj, run).instrument(span).await
    }

    async fn reconciled_in_span<K: Resource<DynamicType = ()>>(
        &self,
        controller: &'static str,
        obj: &K,
        run: impl Future<Output = Result<Action, Error>>,
    ) -> Result<Action, Error> {
        self.stores.ready().await?;
        let _timer = self.metrics.reconcile(controller);
        match run.await {
            Ok(action) => {
                self.succeeded(obj);
                Ok(action)
            }
            Err(e) => {
                self.metrics.failure(controller, e.metric_label());
                self.event(obj, EventType::Warning, "ReconcileFailed", "Reconcile", e.to_string())
                    .await;
                Err(e)
            }
        }
    }

    pub(crate) fn succeeded<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        self.backoff.reset(&Self::backoff_key(obj));
    }

    /// The periodic resync action.
    pub(crate) fn resync(&self) -> Action {
        Action::requeue(self.settings.resync)
    }
}

/// Requeues a failed object with exponential backoff and jitter: base x 2^(failures-1), capped
/// at the maximum, of which a random half is waited ("equal jitter"). The counter resets when
/// a reconcile of the object succeeds.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = Context::backoff_key(obj.as_ref());
    let attempt = ctx.backoff.fail(&key);
    let delay = backoff_delay(
        attempt,
        ctx.settings.backoff_base,
        ctx.settings.backoff_max,
        rand::random::<f64>(),
    );
    tracing::warn!(object = %key, attempt, ?delay, error = %error, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// The delay before retry number `attempt` (1-based); `jitter` in `[0, 1)`.
pub fn backoff_delay(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(max);
    let half = exp / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// Server-side apply of `obj` with the operator's field manager, forced.
pub(crate) async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, kube::Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj)).await
}

/// Server-side apply of `status` on the status subresource of `name`.
pub(crate) async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    status: &impl Serialize,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name },
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map(|_| ())
}

/// Logs the outcome of each reconcile of a controller stream.
pub(crate) fn log_result<T: Debug, E: std::fmt::Display>(
    controller: &'static str,
    r: Result<T, E>,
) {
    match r {
        Ok(o) => tracing::debug!(controller, object = ?o, "reconciled"),
        Err(e) => tracing::debug!(controller, error = %e, "reconcile did not complete"),
    }
}

/// Runs every controller until `shutdown` resolves, then lets in-flight reconciles finish.
/// With `settings.namespaces` set, one set of controllers runs per listed namespace (each
/// watching only its namespace, so RBAC can be granted per namespace); else one set watches
/// every namespace.
///
/// This is what `vmcp-operator run` does once it leads; tests call it in-process against a test
/// API server:
///
/// ```no_run
/// # async fn demo(client: kube::Client) {
/// let (tx, rx) = tokio::sync::oneshot::channel::<()>();
/// let op = tokio::spawn(vmcp_operator::run_controllers(
///     client,
///     vmcp_operator::Settings::default(),
///     async move { let _ = rx.await; },
/// ));
/// // ... create objects, read back children and status ...
/// let _ = tx.send(());
/// let _ = op.await;
/// # }
/// ```
pub async fn run_controllers(
    client: Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    run_controllers_with(client, settings, Arc::new(Metrics::new()), shutdown).await;
}

/// [`run_controllers`] recording into `metrics`.
pub async fn run_controllers_with(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let signal: ShutdownSignal = shutdown.boxed().shared();
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    tracing::info!(
        namespaces = ?settings.namespaces,
        gateway_image = %settings.gateway_image,
        "starting controllers"
    );
    let sets = scopes.into_iter().map(|scope| {
        let mut watches = reflectors::Watches::new();
        let ctx = Arc::new(Context::new(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            scope,
            watches.stores(),
        ));
        let signal = signal.clone();
        // Every controller subscribes before the watches start, so none misses an event.
        let controllers = futures::future::join4(
            virtual_server::run(ctx.clone(), &mut watches, signal.clone()),
            mcp_server::run(ctx.clone(), &mut watches, signal.clone()),
            group::run(ctx.clone(), &mut watches, signal.clone()),
            auth_config::run(ctx.clone(), &mut watches, signal),
        );
        async move {
            // The watches run until the controllers have stopped (they never end by themselves).
            futures::future::select(Box::pin(controllers), Box::pin(watches.run(ctx))).await;
        }
    });
    futures::future::join_all(sets).await;
    tracing::info!("controllers stopped");
}

/// The watcher label selector of every child the operator creates.
pub(crate) fn managed_selector() -> String {
    format!("app.kubernetes.io/managed-by={}", crate::resources::MANAGED_BY)
}

/// Namespace of `obj` or an error naming it.
pub(crate) fn namespace<K: Resource<DynamicType = ()>>(obj: &K) -> Result<String, Error> {
    obj.namespace().ok_or_else(|| Error::NoNamespace {
        kind: match K::kind(&()) {
            std::borrow::Cow::Borrowed(k) => k,
            std::borrow::Cow::Owned(_) => "object",
        },
        name: obj.name_any(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::collections::BTreeSet;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(300);
        assert_eq!(backoff_delay(1, base, max, 0.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(1, base, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(2, base, max, 0.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(4, base, max, 1.0), Duration::from_secs(8));
        assert_eq!(backoff_delay(30, base, max, 1.0), max);
        assert_eq!(backoff_delay(30, base, max, 0.0), max / 2);
        for j in [0.0, 0.3, 0.99] {
            let d = backoff_delay(3, base, max, j);
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(4), "{d:?}");
        }
    }

    fn context(stores: reflectors::Stores) -> Context {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        Context::new(client, Settings::default(), Arc::new(Metrics::new()), None, stores)
    }

    #[tokio::test]
    async fn deleted_objects_are_pruned_from_the_indexes_and_the_backoff() {
        use crate::resources::fixtures;
        use kube::runtime::watcher::Event;
        let ctx = context(reflectors::Watches::new().stores());
        let (vmcp, group) = (fixtures::vmcp(), fixtures::group());
        let ns = fixtures::NS;
        let refs = || BTreeSet::from([(RefKind::Server, "time".to_owned())]);
        ctx.vmcp_refs.set(ns, &vmcp.name_any(), refs());
        ctx.vmcp_refs.set(ns, "other", refs());
        ctx.group_members.set(ns, &group.name_any(), refs());
        ctx.backoff.fail(&Context::backoff_key(&vmcp));
        ctx.backoff.fail(&Context::backoff_key(&group));

        // A deletion seen by the shared watch prunes the deleted object only.
        let mut vmcps = reflectors::Watches::new().vmcps;
        let _trigger = vmcps.touched();
        let events = futures::stream::iter(vec![Ok(Event::Delete(vmcp.clone()))]);
        vmcps.run("VirtualMCPServer", events, |o| ctx.forget(o)).await;
        assert_eq!(ctx.vmcp_refs.referrers(ns, RefKind::Server, "time"), ["other"]);
        assert_eq!((ctx.group_members.len(), ctx.backoff.len()), (1, 1));

        ctx.forget(&group);
        assert_eq!((ctx.group_members.len(), ctx.backoff.len()), (0, 0));
        assert_eq!(ctx.vmcp_refs.len(), 1);
    }

    /// A log line written inside a reconcile names the controller and the object.
    #[tokio::test]
    async fn every_reconcile_runs_in_a_span_naming_the_object() {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let ctx = context(reflectors::Stores::listed_empty());
        let vmcp = crate::resources::fixtures::vmcp();
        let done = ctx
            .reconciled("virtualmcpserver", &vmcp, async {
                tracing::info!("inside");
                Ok(Action::await_change())
            })
            .await;
        assert!(done.is_ok());
        let out = String::from_utf8(buf.0.lock().clone()).unwrap();
        let line = out.lines().find(|l| l.contains("inside")).unwrap_or_else(|| panic!("{out}"));
        assert!(
            line.contains(r#"reconcile{controller="virtualmcpserver" namespace="team-a" name="engineering-gateway"}"#),
            "{line}"
        );
    }
}
