//! vmcp-operator: reconciles `VirtualMCPServer`, `MCPServer`, `MCPGroup` and
//! `MCPExternalAuthConfig` into gateway Deployments, Services and ConfigMaps.

pub mod crdgen;
