//! vmcp-e2e: the harness that starts real peers for the end-to-end tests, and the scenario
//! tests themselves (in `tests/tests/`).
//!
//! Every peer is a real program on loopback: `redis-server`, OpenID providers, MCP SDK servers
//! and clients, kube-apiserver + etcd, and the vmcp binaries. Each starts on free ports and is
//! stopped (with its data removed) when its handle is dropped.

pub mod balancer;
pub mod cluster;
pub mod conformance;
pub mod example_backend;
pub mod gateway;
pub mod images;
pub mod k8s;
pub mod keycloak;
pub mod kube_tools;
pub mod oidc;
pub mod peers;
pub mod ports;
pub mod process;
pub mod raw_mcp;
pub mod redis;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_topology;
pub mod tcp_proxy;
pub mod tls;
pub mod wait;

/// Root of the repository (for fixtures, scripts and the cache folder).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
