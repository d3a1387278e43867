//! What the tests read from gateway pods: their names and IPs, and their metrics (pod IPs are
//! reachable from the node; operator-run gateways serve `/metrics` on
//! `vmcp_operator::resources::GATEWAY_METRICS_PORT`, not on the MCP port).

use vmcp_e2e::cluster::Cluster;
use vmcp_e2e::gateway::{metric_sum, scrape_metrics};

/// Pod names and IPs of the gateway `name` in `ns` (running pods only).
pub(crate) async fn gateway_pods(cluster: &Cluster, ns: &str, name: &str) -> Vec<(String, String)> {
    let selector = format!("app.kubernetes.io/instance={name}");
    let out = cluster
        .run_kubectl(&[
            "get", "pods", "-n", ns, "-l", &selector, "--field-selector=status.phase=Running",
            "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
        .await
        .unwrap();
    out.lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (parts.len() == 2).then(|| (parts[0].to_owned(), parts[1].to_owned()))
        })
        .collect()
}

/// The sum of the samples on a gateway pod's `/metrics` whose line `matches`.
async fn pod_metric(pod_ip: &str, matches: impl Fn(&str) -> bool) -> f64 {
    let port = vmcp_operator::resources::GATEWAY_METRICS_PORT;
    metric_sum(&scrape_metrics(&format!("http://{pod_ip}:{port}/metrics")).await, matches)
}

/// Client requests a gateway pod served (the sum of its `requests_total` series).
pub(crate) async fn requests_served(pod_ip: &str) -> f64 {
    pod_metric(pod_ip, |l| l.contains("requests_total")).await
}

/// Token-exchange work a gateway pod did: cache hits plus token endpoint requests.
pub(crate) async fn exchange_work(pod_ip: &str) -> f64 {
    pod_metric(pod_ip, |l| {
        l.starts_with("vmcp_token_exchange_cache_hits")
            || l.starts_with("vmcp_token_exchange_idp_requests")
    })
    .await
}
