//! A real Redis Cluster on loopback: 3 masters and 3 replicas (`redis-server --cluster-enabled
//! yes`, joined by `redis-cli --cluster create --cluster-replicas 1`), each on free ports (client
//! and cluster-bus port), persistence off, in a temp dir removed on drop.
//!
//! The cluster node timeout is 1 s, so a killed master is replaced by its replica within a few
//! seconds ([`RedisCluster::kill_master_of`], [`RedisCluster::wait_for_new_master`]).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::process::Peer;
use crate::redis::{RedisError, ping, redis_cli, redis_server_binary};

/// Masters and replicas.
const MASTERS: usize = 3;
const NODES: usize = 6;
/// How long a node may be unreachable before the cluster fails it over.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1000);

#[derive(Debug)]
struct Node {
    port: u16,
    bus: u16,
    dir: std::path::PathBuf,
    peer: Option<Peer>,
}

/// Starts (or restarts: its `nodes.conf` in `dir` makes it rejoin) one cluster node.
fn spawn_node(
    bin: &std::path::Path,
    port: u16,
    bus: u16,
    dir: &std::path::Path,
    log: &str,
) -> Result<Peer, RedisError> {
    let mut cmd = Command::new(bin);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-port", &bus.to_string()])
        .args(["--cluster-config-file", "nodes.conf"])
        .args(["--cluster-node-timeout", &NODE_TIMEOUT.as_millis().to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir);
    Ok(Peer::spawn("redis-server (cluster)", cmd, dir.join(log))?)
}

/// A running cluster; every node is stopped and the folder removed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// The master's node id (replicas only).
    pub master_id: Option<String>,
    /// Client port.
    pub port: u16,
    /// A master (not a replica).
    pub master: bool,
    /// Marked failed (or possibly failed) by the node asked.
    pub failed: bool,
    /// Slot ranges served (masters only), inclusive.
    pub slots: Vec<(u16, u16)>,
}

/// Parses `CLUSTER NODES` output.
pub fn parse_cluster_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = f.get(1)?;
            let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = f.get(2)?;
            let slots = f
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(NodeInfo {
                id: (*f.first()?).to_owned(),
                master_id: f.get(3).filter(|m| **m != "-").map(|m| (*m).to_owned()),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail"),
                slots,
            })
        })
        .collect()
}

impl RedisCluster {
    /// Starts 6 nodes, joins them into 3 masters with one replica each, and waits until every
    /// node reports `cluster_state:ok` and every replica is in sync.
    pub async fn start() -> Result<Self, RedisError> {
        let bin = redis_server_binary()?;
        let dir = tempfile::tempdir().map_err(RedisError::TempDir)?;
        let mut nodes = Vec::with_capacity(NODES);
        for i in 0..NODES {
            let port = free_port().map_err(RedisError::Port)?;
            let bus = free_port().map_err(RedisError::Port)?;
            let node_dir = dir.path().join(format!("node-{i}"));
            std::fs::create_dir_all(&node_dir).map_err(RedisError::TempDir)?;
            let peer = spawn_node(&bin, port, bus, &node_dir, "redis.log")?;
            nodes.push(Node { port, bus, dir: node_dir, peer: Some(peer) });
        }
        for n in &mut nodes {
            let port = n.port;
            if let Some(p) = n.peer.as_mut() {
                p.wait_ready(Duration::from_secs(10), || ping(port, None)).await?;
            }
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        redis_cli(nodes[0].port, &args)?;
        let cluster = Self { nodes, _dir: dir };
        cluster.wait_healthy(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Waits until every running node sees a complete cluster (all slots served, 3 masters
    /// with a replica each, nothing failed) and every replica's link to its master is up.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), RedisError> {
        let deadline = Instant::now() + timeout;
        loop {
            let problem = self.health_problem();
            let Some(problem) = problem else { return Ok(()) };
            if Instant::now() > deadline {
                return Err(RedisError::Topology(format!("cluster not healthy: {problem}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn health_problem(&self) -> Option<String> {
        for port in self.running_ports() {
            let info = match redis_cli(port, &["CLUSTER", "INFO"]) {
                Ok(i) => i,
                Err(e) => return Some(e.to_string()),
            };
            if !info.contains("cluster_state:ok") {
                return Some(format!("{port}: {info}"));
            }
            let nodes = parse_cluster_nodes(&redis_cli(port, &["CLUSTER", "NODES"]).ok()?);
            let live: Vec<&NodeInfo> = nodes.iter().filter(|n| !n.failed).collect();
            let masters = live.iter().filter(|n| n.master && !n.slots.is_empty()).count();
            if masters != MASTERS {
                return Some(format!("{port} sees {masters} masters serving slots"));
            }
            let repl = redis_cli(port, &["INFO", "replication"]).ok()?;
            if repl.contains("role:slave") && !repl.contains("master_link_status:up") {
                return Some(format!("replica {port} is not in sync"));
            }
        }
        None
    }

    fn running_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| n.peer.is_some()).map(|n| n.port).collect()
    }

    /// Any running node's port.
    fn any_port(&self) -> Result<u16, RedisError> {
        self.running_ports()
            .into_iter()
            .next()
            .ok_or_else(|| RedisError::Topology("no cluster node is running".into()))
    }

    /// `redis-cluster://127.0.0.1:<first>?node=127.0.0.1:<other>&…` (every node as a seed).
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", n.port));
        }
        url
    }

    /// Ports of the live masters that serve slots.
    pub fn masters(&self) -> Result<Vec<u16>, RedisError> {
        let nodes = parse_cluster_nodes(&redis_cli(self.any_port()?, &["CLUSTER", "NODES"])?);
        Ok(nodes
            .iter()
            .filter(|n| n.master && !n.failed && !n.slots.is_empty())
            .map(|n| n.port)
            .collect())
    }

    /// Every node's client port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The hash slot of `key` (asked of the cluster).
    pub fn slot_of(&self, key: &str) -> Result<u16, RedisError> {
        let out = redis_cli(self.any_port()?, &["CLUSTER", "KEYSLOT", key])?;
        out.trim().parse().map_err(|e| RedisError::Topology(format!("CLUSTER KEYSLOT: {e}")))
    }

    /// The port of the live master serving `slot`, as a running node sees it.
    pub fn master_of_slot(&self, slot: u16) -> Result<Option<u16>, RedisError> {
        let nodes = parse_cluster_nodes(&redis_cli(self.any_port()?, &["CLUSTER", "NODES"])?);
        Ok(nodes
            .iter()
            .find(|n| {
                n.master && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|n| n.port))
    }

    /// Ports of the replicas of the master on `port`.
    pub fn replicas_of(&self, port: u16) -> Result<Vec<u16>, RedisError> {
        let nodes = parse_cluster_nodes(&redis_cli(self.any_port()?, &["CLUSTER", "NODES"])?);
        let Some(master) = nodes.iter().find(|n| n.port == port) else { return Ok(vec![]) };
        Ok(nodes
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(master.id.as_str()))
            .map(|n| n.port)
            .collect())
    }

    /// Sends `signal` to the node on `port` (e.g. `STOP` to freeze a replica, `CONT`).
    pub fn signal(&self, port: u16, signal: &str) {
        if let Some(p) = self.nodes.iter().find(|n| n.port == port).and_then(|n| n.peer.as_ref()) {
            p.signal(signal);
        }
    }

    /// Kills (SIGKILL) the master serving `key`'s slot; returns its port and the slot.
    pub fn kill_master_of(&mut self, key: &str) -> Result<(u16, u16), RedisError> {
        let slot = self.slot_of(key)?;
        let port = self
            .master_of_slot(slot)?
            .ok_or_else(|| RedisError::Topology(format!("no master serves slot {slot}")))?;
        self.kill(port);
        Ok((port, slot))
    }

    /// Kills (SIGKILL) the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port)
            && let Some(mut p) = n.peer.take()
        {
            p.signal_and_wait("KILL");
        }
    }

    /// Starts the (killed) node on `port` again, as an operator would; it rejoins the cluster
    /// as a replica of whichever node took over its slots (persistence is off: it resyncs).
    pub async fn restart(&mut self, port: u16) -> Result<(), RedisError> {
        let bin = redis_server_binary()?;
        let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) else {
            return Err(RedisError::Topology(format!("no cluster node on {port}")));
        };
        if let Some(mut p) = n.peer.take() {
            p.signal_and_wait("KILL");
        }
        let mut peer = spawn_node(&bin, n.port, n.bus, &n.dir, "redis-restarted.log")?;
        peer.wait_ready(Duration::from_secs(10), || ping(port, None)).await?;
        n.peer = Some(peer);
        Ok(())
    }

    /// Waits until a running node other than `old` serves `slot` as master, and the cluster
    /// state is ok again; returns the new master's port.
    pub async fn wait_for_new_master(
        &self,
        slot: u16,
        old: u16,
        timeout: Duration,
    ) -> Result<u16, RedisError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(p)) = self.master_of_slot(slot)
                && p != old
                && redis_cli(p, &["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok"))
            {
                return Ok(p);
            }
            if Instant::now() > deadline {
                return Err(RedisError::Topology(format!(
                    "no replica took over slot {slot} from {old} within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_parse() {
        let text = "e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460\n\
                    67ed 127.0.0.1:30002@40002 master,fail - 0 0 2 connected 5461-10922 12000\n\
                    292f 127.0.0.1:30004@40004 slave e7d1 0 0 1 connected\n";
        let n = parse_cluster_nodes(text);
        assert_eq!(n.len(), 3);
        assert_eq!(n[0].slots, vec![(0, 5460)]);
        assert!(n[0].master && !n[0].failed && n[0].master_id.is_none() && n[0].port == 30001);
        assert_eq!(n[2].master_id.as_deref(), Some("e7d1"));
        assert!(n[1].failed && n[1].slots == vec![(5461, 10922), (12000, 12000)]);
        assert!(!n[2].master && n[2].slots.is_empty());
    }
}
