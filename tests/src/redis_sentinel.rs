//! A real Redis Sentinel deployment on loopback: one master, two replicas (`--replicaof`) and
//! three sentinels (`redis-server <conf> --sentinel`, quorum 2) monitoring the master under
//! [`SERVICE`], each on a free port, persistence off, in a temp dir removed on drop.
//!
//! The sentinels declare a master down after 1 s without an answer, so a killed master is
//! replaced by a replica within a few seconds ([`RedisSentinel::kill_master`],
//! [`RedisSentinel::wait_for_new_master`]).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::ports::free_port;
use crate::process::Peer;
use crate::redis::{RedisError, ping, redis_cli, redis_cli_binary, redis_server_binary};

/// The monitored service name (`sentinelServiceName` in the URL).
pub const SERVICE: &str = "vmcp-primary";
const REPLICAS: usize = 2;
const SENTINELS: usize = 3;
/// A master silent this long is considered down by a sentinel.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);

#[derive(Debug)]
struct Node {
    port: u16,
    peer: Option<Peer>,
}

/// A running Sentinel deployment; everything is stopped and the folder removed on drop.
#[derive(Debug)]
pub struct RedisSentinel {
    data: Vec<Node>,
    sentinels: Vec<Node>,
    watch: EventWatch,
    _dir: tempfile::TempDir,
}

/// Sentinel events that change who serves or replicates the data.
const TOPOLOGY_EVENTS: &[&str] = &[
    "+switch-master",
    "+promoted-slave",
    "+convert-to-slave",
    "+fix-slave-config",
    "+slave-reconf-sent",
    "+slave-reconf-done",
    "+failover-end",
    "+failover-end-for-timeout",
];

/// One event a sentinel published.
#[derive(Debug, Clone)]
pub struct SentinelEvent {
    /// When the harness read it.
    pub at: Instant,
    /// The sentinel's port.
    pub sentinel: u16,
    /// The event (its channel), e.g. `+switch-master`.
    pub event: String,
    /// The event's text, e.g. `vmcp-primary 127.0.0.1 6379 127.0.0.1 6380`.
    pub detail: String,
}

/// Every sentinel's published events, read as they come: one `redis-cli psubscribe '*'` per
/// sentinel (its raw output is one element per line: `pmessage`, pattern, channel, text) and a
/// thread per child; the children are killed on drop.
#[derive(Debug)]
struct EventWatch {
    children: Vec<std::process::Child>,
    seen: Arc<Mutex<Vec<SentinelEvent>>>,
}

impl EventWatch {
    fn start(sentinels: &[u16]) -> Result<Self, RedisError> {
        let cli = redis_cli_binary()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut children = Vec::with_capacity(sentinels.len());
        for &port in sentinels {
            let mut child = Command::new(&cli)
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "psubscribe", "*"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    RedisError::Topology(format!("redis-cli psubscribe on {port}: {e}"))
                })?;
            let Some(out) = child.stdout.take() else {
                return Err(RedisError::Topology("redis-cli psubscribe: no stdout".into()));
            };
            children.push(child);
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(out).lines().map_while(Result::ok);
                while let Some(line) = lines.next() {
                    if line != "pmessage" {
                        continue;
                    }
                    let (Some(_pattern), Some(event), Some(detail)) =
                        (lines.next(), lines.next(), lines.next())
                    else {
                        return;
                    };
                    seen.lock().push(SentinelEvent {
                        at: Instant::now(),
                        sentinel: port,
                        event,
                        detail,
                    });
                }
            });
        }
        Ok(Self { children, seen })
    }

    fn seen(&self) -> Vec<SentinelEvent> {
        self.seen.lock().clone()
    }
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl RedisSentinel {
    /// Starts the master, its replicas (waiting until they are in sync) and the sentinels
    /// (waiting until each knows both replicas and the two other sentinels).
    pub async fn start() -> Result<Self, RedisError> {
        let bin = redis_server_binary()?;
        let dir = tempfile::tempdir().map_err(RedisError::TempDir)?;
        let mut data = Vec::with_capacity(REPLICAS + 1);
        for i in 0..=REPLICAS {
            let port = free_port().map_err(RedisError::Port)?;
            let node_dir = dir.path().join(format!("data-{i}"));
            std::fs::create_dir_all(&node_dir).map_err(RedisError::TempDir)?;
            let mut cmd = Command::new(&bin);
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir);
            if let Some(master) = data.first().map(|m: &Node| m.port) {
                cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
            }
            let mut peer =
                Peer::spawn("redis-server (sentinel data)", cmd, node_dir.join("redis.log"))?;
            peer.wait_ready(Duration::from_secs(10), || ping(port, None)).await?;
            data.push(Node { port, peer: Some(peer) });
        }
        let master = data[0].port;
        let mut sentinels = Vec::with_capacity(SENTINELS);
        for i in 0..SENTINELS {
            let port = free_port().map_err(RedisError::Port)?;
            let sdir = dir.path().join(format!("sentinel-{i}"));
            std::fs::create_dir_all(&sdir).map_err(RedisError::TempDir)?;
            let conf = sdir.join("sentinel.conf");
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds {SERVICE} {}\n\
                 sentinel failover-timeout {SERVICE} 10000\n\
                 sentinel parallel-syncs {SERVICE} 2\n",
                sdir.display(),
                DOWN_AFTER.as_millis()
            );
            std::fs::write(&conf, text).map_err(RedisError::TempDir)?;
            let mut cmd = Command::new(&bin);
            cmd.arg(&conf).arg("--sentinel");
            let mut peer = Peer::spawn("redis-sentinel", cmd, sdir.join("sentinel.log"))?;
            peer.wait_ready(Duration::from_secs(10), || ping(port, None)).await?;
            sentinels.push(Node { port, peer: Some(peer) });
        }
        let watch = EventWatch::start(&sentinels.iter().map(|n| n.port).collect::<Vec<_>>())?;
        let s = Self { data, sentinels, watch, _dir: dir };
        s.wait_healthy(Duration::from_secs(30)).await?;
        Ok(s)
    }

    /// Waits until every running sentinel names a running master that has all other running
    /// data nodes as in-sync replicas, and knows the other sentinels.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), RedisError> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(problem) = self.health_problem() else { return Ok(()) };
            if Instant::now() > deadline {
                return Err(RedisError::Topology(format!("sentinel setup not healthy: {problem}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn health_problem(&self) -> Option<String> {
        let running: Vec<u16> =
            self.data.iter().filter(|n| n.peer.is_some()).map(|n| n.port).collect();
        for s in self.sentinels.iter().filter(|n| n.peer.is_some()) {
            let master = match self.master_seen_by(s.port) {
                Ok(m) => m,
                Err(e) => return Some(e.to_string()),
            };
            if !running.contains(&master) {
                return Some(format!("sentinel {} names {master}, which is down", s.port));
            }
            let info = redis_cli(master, &["INFO", "replication"]).ok()?;
            if !info.contains("role:master") {
                return Some(format!("{master} is not a master yet"));
            }
            let online = info.matches("state=online").count();
            if online + 1 < running.len() {
                return Some(format!("{master} has {online} replicas online"));
            }
            let others = redis_cli(s.port, &["SENTINEL", "SENTINELS", SERVICE]).ok()?;
            let known = others.lines().filter(|l| l.trim() == "name").count();
            if known + 1 < self.sentinels.len() {
                return Some(format!("sentinel {} knows {known} other sentinels", s.port));
            }
        }
        None
    }

    fn master_seen_by(&self, sentinel: u16) -> Result<u16, RedisError> {
        let out = redis_cli(sentinel, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE])?;
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| RedisError::Topology(format!("sentinel {sentinel} answered {out:?}")))
    }

    /// The master's port, as the first running sentinel names it.
    pub fn master_port(&self) -> Result<u16, RedisError> {
        let s = self
            .sentinels
            .iter()
            .find(|n| n.peer.is_some())
            .ok_or_else(|| RedisError::Topology("no sentinel is running".into()))?;
        self.master_seen_by(s.port)
    }

    /// `redis-sentinel://127.0.0.1:<s1>/0?sentinelServiceName=<SERVICE>&node=…` (every
    /// sentinel as a seed).
    pub fn url(&self) -> String {
        let mut url = format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={SERVICE}",
            self.sentinels[0].port
        );
        for n in &self.sentinels[1..] {
            url.push_str(&format!("&node=127.0.0.1:{}", n.port));
        }
        url
    }

    /// Ports of the master and replicas.
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|n| n.port).collect()
    }

    /// Ports of the running data nodes other than the master.
    pub fn replica_ports(&self) -> Result<Vec<u16>, RedisError> {
        let master = self.master_port()?;
        Ok(self
            .data
            .iter()
            .filter(|n| n.peer.is_some() && n.port != master)
            .map(|n| n.port)
            .collect())
    }

    /// Sends `signal` to the data node on `port` (e.g. `STOP` to freeze a replica, `CONT`).
    pub fn signal(&self, port: u16, signal: &str) {
        if let Some(p) = self.data.iter().find(|n| n.port == port).and_then(|n| n.peer.as_ref()) {
            p.signal(signal);
        }
    }

    /// The events the sentinels published, one per line: when the harness read it (relative to
    /// `since`), the sentinel's port, the event and its text.
    pub fn events(&self, since: Instant) -> String {
        self.watch
            .seen()
            .iter()
            .map(|e| {
                let at = e.at.saturating_duration_since(since).as_secs_f64();
                format!("{at:>8.3}s sentinel {}: {} {}\n", e.sentinel, e.event, e.detail)
            })
            .collect()
    }

    /// When the harness last saw a sentinel change who serves or replicates the data (a switch
    /// of master, a promotion, a node converted or reconfigured as a replica, a failover's end):
    /// each of these closes client connections or stalls replication for a moment.
    pub fn last_topology_change(&self) -> Option<Instant> {
        self.watch
            .seen()
            .iter()
            .filter(|e| TOPOLOGY_EVENTS.contains(&e.event.as_str()))
            .map(|e| e.at)
            .max()
    }

    /// Asks a sentinel for a failover of the running master (`SENTINEL FAILOVER`, retried while
    /// a previous failover is still finishing) and waits until a replica has replaced it; the
    /// old master keeps running and thinking it is master until the sentinels next look at it
    /// and convert it into a replica. Returns the new master's port.
    pub async fn force_failover(&self, timeout: Duration) -> Result<u16, RedisError> {
        let old = self.master_port()?;
        let deadline = Instant::now() + timeout;
        let sentinel = self
            .sentinels
            .iter()
            .find(|n| n.peer.is_some())
            .ok_or_else(|| RedisError::Topology("no sentinel is running".into()))?;
        loop {
            match redis_cli(sentinel.port, &["SENTINEL", "FAILOVER", SERVICE]) {
                Ok(out) if out.trim() == "OK" => break,
                Ok(out) | Err(RedisError::Topology(out)) if Instant::now() < deadline => {
                    tracing::debug!(answer = %out.trim(), "SENTINEL FAILOVER refused; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(out) => {
                    return Err(RedisError::Topology(format!(
                        "SENTINEL FAILOVER on {}: {}",
                        sentinel.port,
                        out.trim()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        self.wait_for_new_master(old, deadline.saturating_duration_since(Instant::now())).await
    }

    /// Kills (SIGKILL) the current master; returns its port.
    pub fn kill_master(&mut self) -> Result<u16, RedisError> {
        let port = self.master_port()?;
        if let Some(n) = self.data.iter_mut().find(|n| n.port == port)
            && let Some(mut p) = n.peer.take()
        {
            p.signal_and_wait("KILL");
        }
        Ok(port)
    }

    /// Waits until the sentinels name another, running master and it accepts writes; returns
    /// its port.
    pub async fn wait_for_new_master(
        &self,
        old: u16,
        timeout: Duration,
    ) -> Result<u16, RedisError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(p) = self.master_port()
                && p != old
                && redis_cli(p, &["INFO", "replication"]).is_ok_and(|i| i.contains("role:master"))
            {
                return Ok(p);
            }
            if Instant::now() > deadline {
                return Err(RedisError::Topology(format!(
                    "the sentinels did not replace master {old} within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
