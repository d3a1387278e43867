//! One handle over the three Redis deployments the session store supports, so a test can run
//! the same scenario against each: standalone ([`RedisServer`]), Cluster ([`RedisCluster`]) and
//! Sentinel ([`RedisSentinel`]).

use std::time::Duration;

use crate::redis::{RedisError, RedisServer};
use crate::redis_cluster::RedisCluster;
use crate::redis_sentinel::RedisSentinel;

/// Which deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One `redis-server`.
    Standalone,
    /// 3 masters + 3 replicas.
    Cluster,
    /// 1 master, 2 replicas, 3 sentinels.
    Sentinel,
}

/// A running deployment of any [`Topology`]; stopped on drop.
#[derive(Debug)]
pub enum AnyRedis {
    /// One `redis-server`.
    Standalone(RedisServer),
    /// A Cluster.
    Cluster(RedisCluster),
    /// A Sentinel deployment.
    Sentinel(RedisSentinel),
}

impl AnyRedis {
    /// Starts a deployment and waits until it serves.
    pub async fn start(topology: Topology) -> Result<Self, RedisError> {
        Ok(match topology {
            Topology::Standalone => Self::Standalone(RedisServer::start().await?),
            Topology::Cluster => Self::Cluster(RedisCluster::start().await?),
            Topology::Sentinel => Self::Sentinel(RedisSentinel::start().await?),
        })
    }

    /// The URL the gateway is configured with (`sessionStorage.redis.url`).
    pub fn url(&self) -> String {
        match self {
            Self::Standalone(r) => r.url(),
            Self::Cluster(c) => c.url(),
            Self::Sentinel(s) => s.url(),
        }
    }

    /// Which deployment this is.
    pub fn topology(&self) -> Topology {
        match self {
            Self::Standalone(_) => Topology::Standalone,
            Self::Cluster(_) => Topology::Cluster,
            Self::Sentinel(_) => Topology::Sentinel,
        }
    }

    /// Port of the master holding `key`.
    pub fn master_for(&self, key: &str) -> Result<u16, RedisError> {
        match self {
            Self::Standalone(r) => Ok(r.port()),
            Self::Cluster(c) => {
                let slot = c.slot_of(key)?;
                c.master_of_slot(slot)?
                    .ok_or_else(|| RedisError::Topology(format!("no master serves slot {slot}")))
            }
            Self::Sentinel(s) => s.master_port(),
        }
    }

    /// Ports of the replicas of the master holding `key` (none for standalone).
    pub fn replicas_for(&self, key: &str) -> Result<Vec<u16>, RedisError> {
        match self {
            Self::Standalone(_) => Ok(vec![]),
            Self::Cluster(c) => {
                let slot = c.slot_of(key)?;
                match c.master_of_slot(slot)? {
                    Some(m) => c.replicas_of(m),
                    None => Ok(vec![]),
                }
            }
            Self::Sentinel(s) => s.replica_ports(),
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the replicas on `ports`: a frozen replica
    /// receives no replication stream, so writes meanwhile exist on the master only.
    pub fn freeze(&self, ports: &[u16], frozen: bool) {
        let signal = if frozen { "STOP" } else { "CONT" };
        for p in ports {
            match self {
                Self::Standalone(_) => {}
                Self::Cluster(c) => c.signal(*p, signal),
                Self::Sentinel(s) => s.signal(*p, signal),
            }
        }
    }

    /// Kills (SIGKILL) the master holding `key` (Cluster: the master of its slot; Sentinel: the
    /// monitored master). Standalone has no replica to fail over to: an error.
    pub fn kill_master_for(&mut self, key: &str) -> Result<KilledMaster, RedisError> {
        match self {
            Self::Standalone(_) => {
                Err(RedisError::Topology("standalone redis cannot fail over".into()))
            }
            Self::Cluster(c) => {
                let (port, slot) = c.kill_master_of(key)?;
                Ok(KilledMaster { port, slot: Some(slot) })
            }
            Self::Sentinel(s) => Ok(KilledMaster { port: s.kill_master()?, slot: None }),
        }
    }

    /// Waits until a replica has replaced `killed`; returns the new master's port.
    pub async fn wait_for_takeover(
        &self,
        killed: &KilledMaster,
        timeout: Duration,
    ) -> Result<u16, RedisError> {
        match (self, killed.slot) {
            (Self::Cluster(c), Some(slot)) => {
                c.wait_for_new_master(slot, killed.port, timeout).await
            }
            (Self::Sentinel(s), _) => s.wait_for_new_master(killed.port, timeout).await,
            _ => Err(RedisError::Topology("nothing to wait for".into())),
        }
    }

    /// Waits until the killed master's data is replicated again: a Cluster node is started
    /// again, as Kubernetes restarts a failed pod, rejoins as a replica of its successor, and
    /// this waits until it is in sync (a shard whose only replica took over has none until
    /// then). Sentinel keeps a replica after a failover, so nothing is restarted there, but the
    /// sentinels must first point it at the new master and it must sync: this waits until the
    /// new master has every running replica online.
    pub async fn bring_back(&mut self, killed: &KilledMaster) -> Result<(), RedisError> {
        match self {
            Self::Cluster(c) => {
                c.restart(killed.port).await?;
                c.wait_healthy(Duration::from_secs(60)).await
            }
            Self::Sentinel(s) => s.wait_healthy(Duration::from_secs(60)).await,
            Self::Standalone(_) => Ok(()),
        }
    }

    /// Sentinel only: a second failover of the running master (see
    /// [`RedisSentinel::force_failover`]); other topologies: an error.
    pub async fn force_failover(&self, timeout: Duration) -> Result<u16, RedisError> {
        match self {
            Self::Sentinel(s) => s.force_failover(timeout).await,
            _ => Err(RedisError::Topology("only Sentinel fails over on request here".into())),
        }
    }

    /// The Sentinel deployment's published events with their times relative to `since`, for a
    /// failure message; empty for other topologies.
    pub fn failover_events(&self, since: std::time::Instant) -> String {
        match self {
            Self::Sentinel(s) => s.events(since),
            _ => String::new(),
        }
    }

    /// When the harness last saw Sentinel change who serves or replicates the data (see
    /// [`RedisSentinel::last_topology_change`]); `None` for other topologies.
    pub fn last_topology_change(&self) -> Option<std::time::Instant> {
        match self {
            Self::Sentinel(s) => s.last_topology_change(),
            _ => None,
        }
    }

    /// Kills the master holding `key` and waits until a replica has taken over; returns how
    /// long that took as the harness saw it.
    pub async fn fail_over(
        &mut self,
        key: &str,
        timeout: Duration,
    ) -> Result<Duration, RedisError> {
        let started = std::time::Instant::now();
        let killed = self.kill_master_for(key)?;
        self.wait_for_takeover(&killed, timeout).await?;
        Ok(started.elapsed())
    }
}

/// A master [`AnyRedis::kill_master_for`] killed.
#[derive(Debug, Clone, Copy)]
pub struct KilledMaster {
    /// Its port.
    pub port: u16,
    /// The slot it served that the key hashes to (Cluster only).
    pub slot: Option<u16>,
}
