//! The controllers read from shared watches: each kind is listed and watched once, and no
//! reconcile lists a namespace. Proven by counting the operator's own HTTP requests (a layer
//! on its client) while reconciles run; and the `MCPGroup` status those stores feed.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::support::*;
use vmcp_types::crd::{MCPGroup, MCPGroupPhase, MCPServer};

/// The operator's requests to the API server, by `(verb, resource)`: `list` is a GET of a
/// collection, `watch` one with `watch=true`.
#[derive(Clone, Default)]
struct Requests(Arc<parking_lot::Mutex<BTreeMap<(&'static str, String), usize>>>);

impl Requests {
    fn record(&self, req: &http::Request<kube::client::Body>) {
        if req.method() != http::Method::GET {
            return;
        }
        let query = req.uri().query().unwrap_or("");
        let watch = query.split('&').any(|p| p == "watch=true" || p == "watch=1");
        // .../namespaces/<ns>/<resource> is a collection; .../<resource>/<name> is one object.
        let parts: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
        if parts.len() >= 2 && parts[parts.len() - 2] == "namespaces" {
            return; // GET of a Namespace.
        }
        let resource = match parts.as_slice() {
            [.., "namespaces", _, resource] => *resource,
            _ => return,
        };
        let verb = if watch { "watch" } else { "list" };
        *self.0.lock().entry((verb, resource.to_owned())).or_default() += 1;
    }

    fn count(&self, verb: &'static str, resource: &str) -> usize {
        self.0.lock().get(&(verb, resource.to_owned())).copied().unwrap_or(0)
    }
}

/// A client of `api` that records every request into `requests`.
fn counting_client(api: &ApiServer, requests: &Requests) -> kube::Client {
    let r = requests.clone();
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        r.record(&req);
        req
    });
    kube::client::ClientBuilder::try_from(api.config().clone()).unwrap().with_layer(&layer).build()
}

const KINDS: [&str; 6] = [
    "mcpservers",
    "mcpserverentries",
    "mcpgroups",
    "mcpexternalauthconfigs",
    "secrets",
    "configmaps",
];

fn server(name: &str) -> String {
    format!(
        "apiVersion: vmcp.dev/v1alpha1\nkind: MCPServer\nmetadata:\n  name: {name}\nspec:\n  \
         image: example/{name}:1\n  transport: streamable-http\n  groupRef:\n    name: g\n---\n"
    )
}

/// Reconciles read the group's members, auth configs and Secrets from the shared stores:
/// once the operator has listed each kind, adding and removing members re-renders the
/// gateway and the group status with no further list of any of those kinds, and each kind
/// is watched by one stream (before, `MCPServer` had three watches and every gateway
/// reconcile listed the namespace's servers, entries and auth configs).
#[tokio::test(flavor = "multi_thread")]
async fn reconciles_read_stores_and_each_kind_is_watched_once() {
    let (api, admin, ns) = setup("op-stores").await;
    apply_text(
        api,
        &ns,
        &format!(
            "apiVersion: vmcp.dev/v1alpha1\nkind: MCPGroup\nmetadata:\n  name: g\nspec: {{}}\n---\n\
             {}{}\
             apiVersion: vmcp.dev/v1alpha1\nkind: MCPServerEntry\nmetadata:\n  name: remote\nspec:\n  \
             url: https://mcp.example.com/mcp\n  groupRef:\n    name: g\n---\n\
             apiVersion: vmcp.dev/v1alpha1\nkind: VirtualMCPServer\nmetadata:\n  name: gw\nspec:\n  \
             groupRef:\n    name: g\n  incomingAuth:\n    type: anonymous\n",
            server("alpha"),
            server("beta")
        ),
    )
    .await;
    let requests = Requests::default();
    let _stop = run_operator(counting_client(api, &requests), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let backends = || async {
        let cm = cms.get_opt("gw-vmcp-config").await.unwrap()?;
        let config = vmcp_types::config::from_yaml_str(&cm.data?["config.yaml"]).unwrap();
        Some(config.backends.into_iter().map(|b| b.name).collect::<Vec<_>>())
    };
    eventually("3 backends", Duration::from_secs(60), || async {
        backends().await.filter(|b| b == &["alpha", "beta", "remote"])
    })
    .await;
    let groups: Api<MCPGroup> = Api::namespaced(admin.clone(), &ns);
    let status = |servers: &'static [&'static str]| {
        let groups = groups.clone();
        async move {
            let st = groups.get("g").await.unwrap().status?;
            (st.servers == servers).then_some(st)
        }
    };
    let st =
        eventually("the group's members", Duration::from_secs(60), || status(&["alpha", "beta"]))
            .await;
    assert_eq!((st.server_count, st.entry_count), (2, 1), "{st:?}");
    assert_eq!(st.entries, ["remote"]);
    assert_eq!(st.phase, Some(MCPGroupPhase::Ready));
    let listed: Vec<usize> = KINDS.iter().map(|k| requests.count("list", k)).collect();
    for (kind, n) in KINDS.iter().zip(&listed) {
        assert!(*n >= 1, "{kind} was never listed: {:?}", requests.0.lock());
    }

    // Membership changes: each re-renders the gateway and the group.
    apply_text(api, &ns, &server("gamma")).await;
    let servers: Api<MCPServer> = Api::namespaced(admin.clone(), &ns);
    servers.delete("alpha", &DeleteParams::default()).await.unwrap();
    eventually("alpha out, gamma in", Duration::from_secs(60), || async {
        backends().await.filter(|b| b == &["beta", "gamma", "remote"])
    })
    .await;
    let st = eventually("the group's new members", Duration::from_secs(60), || {
        status(&["beta", "gamma"])
    })
    .await;
    assert_eq!((st.server_count, st.entry_count), (2, 1));

    let kubectl = api.run_kubectl(&["get", "mcpgroup", "g", "-n", &ns]).await.unwrap();
    let header: Vec<&str> = kubectl.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "PHASE", "SERVERS", "ENTRIES", "READY", "AGE"], "{kubectl}");
    let row: Vec<&str> = kubectl.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..5], ["g", "Ready", "2", "1", "True"], "{kubectl}");

    let seen = requests.0.lock().clone();
    for (kind, before) in KINDS.iter().zip(&listed) {
        assert_eq!(requests.count("list", kind), *before, "{kind} listed again: {seen:?}");
        assert_eq!(requests.count("watch", kind), 1, "{kind} watches: {seen:?}");
    }
}
