//! One contract for every `SessionStore`: the same cases run against `MemoryStore` and against
//! `RedisStore` on a real `redis-server` (started per test on a free loopback port, persistence
//! off, in a temp dir). Redis-only cases check what is stored (no secrets, small), the
//! termination pub/sub (I5), password/db handling and behaviour while Redis is down.
//!
//! Layout: the contract cases are in `contract.rs`, the Redis cases that run on each deployment
//! (standalone, Cluster, Sentinel) in `topology.rs`, a single server's password, db and outage
//! cases in `outage.rs`. The tests are generated here, so their names are `memory::…`,
//! `redis::…`, `each_topology::…`.

// Test helpers panic on purpose: the panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod contract;
mod outage;
mod topology;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use vmcp_e2e::redis_topology::Topology;
use vmcp_gateway::session::record::{SCHEMA_VERSION, SessionRecord};
use vmcp_types::config::RedisConfig;

use contract::*;
use topology::*;

/// A typical record: 3 members, 3 hints, realistic client params.
fn record(generation: u64) -> SessionRecord {
    SessionRecord {
        v: SCHEMA_VERSION,
        binding: format!("sha256:{}", "a1".repeat(32)),
        protocol_version: "2025-11-25".into(),
        client: json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {"roots": {"listChanged": true}, "sampling": {}, "elicitation": {}},
            "clientInfo": {"name": "example-client", "title": "Example Client", "version": "1.4.2"}
        }),
        generation,
        members: vec!["github".into(), "jira".into(), "filesystem".into()],
        hints: [
            ("github", "5f0c1e2a-8a47-4d2b-9a3e-1b7f6c2d9e01"),
            ("jira", "b3a9d4c2-6e1f-4a8b-8c7d-2e5f9a1b3c4d"),
            ("filesystem", "0d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect::<BTreeMap<_, _>>(),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

const LONG: Duration = Duration::from_secs(60);

/// The store's settings for a deployment at `url`.
fn config_for(url: String, prefix: &str) -> RedisConfig {
    RedisConfig { key_prefix: prefix.to_owned(), ..RedisConfig::new(url) }
}

macro_rules! contract {
    ($store:ident, $make:expr) => {
        mod $store {
            use super::*;
            contract!(@case $make; create_load_round_trip, ttl_expiry, touch_extends,
                set_hint_keeps_membership, cas_members_outcomes, delete_removes,
                concurrent_cas_single_winner, stream_events_round_trip);
        }
    };
    (@case $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $make.await;
                super::$case(store).await;
            }
        )*
    };
}

contract!(memory, memory_store());
contract!(redis, redis_store(Topology::Standalone));
contract!(redis_cluster, redis_store(Topology::Cluster));
contract!(redis_sentinel, redis_store(Topology::Sentinel));

/// Generates one test per Redis deployment for a Redis-only case `fn(Topology)`.
macro_rules! per_topology {
    ($($case:ident),*) => {
        mod each_topology {
            use super::*;
            $(
                mod $case {
                    use super::*;
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn standalone() { super::super::$case(Topology::Standalone).await }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn cluster() { super::super::$case(Topology::Cluster).await }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn sentinel() { super::super::$case(Topology::Sentinel).await }
                }
            )*
        }
    };
}

per_topology!(redis_record_is_small_and_holds_no_secrets, redis_delete_publishes_termination);

/// Generates one test per deployment that can fail over (Cluster, Sentinel).
macro_rules! per_failover_topology {
    ($($case:ident),*) => {
        mod each_failover_topology {
            use super::*;
            $(
                mod $case {
                    use super::*;
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn cluster() { super::super::$case(Topology::Cluster).await }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn sentinel() { super::super::$case(Topology::Sentinel).await }
                }
            )*
        }
    };
}

per_failover_topology!(failover_keeps_every_acknowledged_write_and_the_feed);
