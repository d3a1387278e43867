//! Installing the vmcp CRDs into an [`ApiServer`] and waiting until the API server serves them.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};

use super::{ApiServer, CRD_TIMEOUT, K8sError, kube_err};
use crate::repo_root;

impl ApiServer {
    /// `kubectl apply -f config/crd/` once per instance, then waits until every vmcp CRD is
    /// `Established` and its list endpoint answers (retrying 429s). Later calls return the
    /// first call's result.
    pub async fn apply_crds(&self) -> Result<(), K8sError> {
        let result = self
            .crds
            .get_or_init(|| async {
                let dir = repo_root().join("config/crd");
                let dir = dir.to_string_lossy();
                self.run_kubectl(&["apply", "-f", &dir]).await.map_err(|e| e.to_string())?;
                let names: Vec<String> = vmcp_types::crd::all_crds()
                    .into_iter()
                    .filter_map(|crd| crd.metadata.name)
                    .collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                wait_crds_ready(&self.client(), &names, CRD_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        result.clone().map_err(K8sError::Earlier)
    }
}

/// Waits until each named CRD is `Established` (and its names accepted) and a list of its
/// objects succeeds; 404, 429 and 503 answers are retried. Use after installing CRDs by other
/// means (e.g. a Helm chart).
pub async fn wait_crds_ready(
    client: &kube::Client,
    names: &[&str],
    timeout: Duration,
) -> Result<(), K8sError> {
    let deadline = Instant::now() + timeout;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in names {
        let crd = loop {
            let crd = crds.get(name).await.map_err(kube_err(format!("get CRD {name}")))?;
            let conditions = crd.status.as_ref().and_then(|s| s.conditions.clone());
            let is_true =
                |t: &str| conditions.iter().flatten().any(|c| c.type_ == t && c.status == "True");
            if is_true("Established") && is_true("NamesAccepted") {
                break crd;
            }
            if Instant::now() > deadline {
                return Err(K8sError::Timeout(format!(
                    "CRD {name} not Established after {timeout:?}; conditions: {conditions:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let version =
            crd.spec.versions.iter().find(|v| v.served).map(|v| v.name.clone()).unwrap_or_default();
        let resource = ApiResource {
            group: crd.spec.group.clone(),
            version: version.clone(),
            api_version: format!("{}/{version}", crd.spec.group),
            kind: crd.spec.names.kind.clone(),
            plural: crd.spec.names.plural.clone(),
        };
        let objects: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        loop {
            match objects.list(&ListParams::default().limit(1)).await {
                Ok(_) => break,
                Err(kube::Error::Api(status))
                    if [404, 429, 503].contains(&status.code) && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(kube_err(format!("list {}", resource.plural))(e)),
            }
        }
    }
    Ok(())
}
