//! Kubernetes custom resource types of the `vmcp.dev/v1alpha1` API.
//!
//! Field names follow the established `VirtualMCPServer` API so that existing manifests port by
//! changing `apiVersion`. Every status carries `observedGeneration` and `conditions`
//! (`meta.v1.Condition`, a list-map keyed by `type`).

// kube's `printcolumn(... type_ = "string" ...)` repeats by design; clippy reads it as a
// duplicated attribute.
#[allow(clippy::duplicated_attributes)]
mod auth_config;
mod common;
#[allow(clippy::duplicated_attributes)]
mod group;
#[allow(clippy::duplicated_attributes)]
mod server;
#[allow(clippy::duplicated_attributes)]
mod server_entry;
#[allow(clippy::duplicated_attributes)]
mod virtual_server;

pub use auth_config::*;
pub use common::*;
pub use group::*;
pub use server::*;
pub use server_entry::*;
pub use virtual_server::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every vmcp custom resource.
pub const GROUP: &str = "vmcp.dev";
/// The API version served and stored.
pub const VERSION: &str = "v1alpha1";

/// Every CRD of the API, in a stable order (used by crdgen and the drift check).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        MCPGroup::crd(),
        MCPServer::crd(),
        MCPServerEntry::crd(),
        MCPExternalAuthConfig::crd(),
        VirtualMCPServer::crd(),
    ]
}
