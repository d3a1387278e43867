//! vmcp-types: the contracts shared by the vmcp operator and gateway.
//!
//! - [`config`]: `GatewayConfig`, the file the operator renders and the gateway reads (plain
//!   serde, no Kubernetes dependency).
//! - `crd` (feature `crd`): the `vmcp.dev/v1alpha1` custom resource types.

pub mod config;
#[cfg(feature = "crd")]
pub mod crd;
