//! The CRDs and examples against a real kube-apiserver (one per test process, one namespace
//! per test): CRD installation, CEL validation messages, printer columns, the status
//! subresource with server-side apply, and RBAC.
//!
//! Layout: CRD installation and printer columns here, the examples (accepted and read back
//! typed, or rejected with their CEL message) in `examples.rs`, the status subresource in
//! `status.rs`, RBAC in `rbac.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod examples;
mod rbac;
mod status;

use std::path::{Path, PathBuf};
use std::time::Instant;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use serde_json::Value;
use vmcp_e2e::k8s::ApiServer;
use vmcp_e2e::repo_root;

/// The shared server with the CRDs installed, a client for this test and a fresh namespace.
pub(crate) async fn setup(test: &str) -> (&'static ApiServer, kube::Client, String) {
    let t0 = Instant::now();
    let api = ApiServer::shared().await;
    let t_shared = t0.elapsed();
    api.apply_crds().await.expect("apply config/crd/ and wait until the CRDs are ready");
    eprintln!(
        "[timing] {test}: ApiServer::shared() {t_shared:.2?} + apply_crds() {:.2?} = {:.2?} \
         (server startup took {:.2?})",
        t0.elapsed() - t_shared,
        t0.elapsed(),
        api.startup_time()
    );
    let ns = api.create_namespace(test).await.expect("create a namespace");
    (api, api.client(), ns)
}

pub(crate) fn files(dir: &str) -> Vec<PathBuf> {
    let dir = repo_root().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());
    files
}

pub(crate) fn yaml_docs(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("parse {}: {e}", file.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// `kubectl get vmcp -n <ns>` as rows of whitespace-separated cells (header first).
pub(crate) async fn get_vmcp_table(api: &ApiServer, ns: &str) -> Vec<Vec<String>> {
    let out = api.run_kubectl(&["get", "vmcp", "-n", ns]).await.unwrap();
    out.lines().map(|l| l.split_whitespace().map(str::to_owned).collect()).collect()
}

#[tokio::test]
async fn crds_apply_and_become_established() {
    let (api, client, _ns) = setup("crds").await;
    // apply_crds() already ran `kubectl apply -f config/crd/`; applying again is a no-op.
    let dir = repo_root().join("config/crd");
    let out = api.run_kubectl(&["apply", "-f", dir.to_str().unwrap()]).await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let mut names = Vec::new();
    for crd in vmcp_types::crd::all_crds() {
        let name = crd.metadata.name.clone().unwrap();
        assert!(
            out.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{name} unchanged"
            )),
            "re-applying {name} should be a no-op: {out}"
        );
        let stored = crds.get(&name).await.unwrap();
        let conditions = stored.status.unwrap().conditions.unwrap_or_default();
        for wanted in ["Established", "NamesAccepted"] {
            assert!(
                conditions.iter().any(|c| c.type_ == wanted && c.status == "True"),
                "{name}: {wanted} is not True: {conditions:?}"
            );
        }
        assert_eq!(stored.spec.names.kind, crd.spec.names.kind);
        assert!(stored.spec.versions.iter().any(|v| v.name == "v1alpha1" && v.served && v.storage));
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "mcpexternalauthconfigs.vmcp.dev",
            "mcpgroups.vmcp.dev",
            "mcpserverentries.vmcp.dev",
            "mcpservers.vmcp.dev",
            "virtualmcpservers.vmcp.dev"
        ]
    );
    // The short names work through discovery.
    let resources =
        api.run_kubectl(&["api-resources", "--api-group=vmcp.dev", "-o", "name"]).await.unwrap();
    assert_eq!(resources.lines().count(), names.len(), "{resources}");
}

#[tokio::test]
async fn kubectl_get_vmcp_prints_printer_columns() {
    let (api, _client, ns) = setup("columns").await;
    let file = repo_root().join("examples/k8s/40-virtualmcpserver.yaml");
    api.run_kubectl(&["apply", "-n", &ns, "-f", file.to_str().unwrap()]).await.unwrap();
    let table = get_vmcp_table(api, &ns).await;
    assert_eq!(table[0], ["NAME", "PHASE", "URL", "BACKENDS", "READY", "AGE"], "{table:?}");
    assert_eq!(table.len(), 2, "{table:?}");
    assert_eq!(table[1][0], "engineering-gateway", "{table:?}");
}
