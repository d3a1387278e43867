//! vmcp-operator: reconciles `VirtualMCPServer`, `MCPServer`, `MCPGroup` and
//! `MCPExternalAuthConfig` into gateway Deployments, Services and ConfigMaps.
//!
//! - [`resources`]: pure builders (spec in, desired objects out), snapshot-tested.
//! - [`status`]: the conditions helper.
//! - [`controller`]: one controller per kind, started together by [`run_controllers`].
//! - [`leader`]: leader election with a `coordination.k8s.io/v1` Lease.
//! - [`metrics`]: Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints.
//! - [`crdgen`]: the CRDs as YAML (`vmcp-operator crds`).

pub mod controller;
pub mod crdgen;
pub mod leader;
pub mod metrics;
pub mod pod_health;
pub mod resources;
pub mod settings;
pub mod status;

pub use controller::{Context, run_controllers, run_controllers_with};
pub use metrics::Metrics;
pub use settings::Settings;
