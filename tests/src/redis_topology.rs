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

    /// Kills the master holding `key` (Cluster: the master of its slot; Sentinel: the monitored
    /// master) and waits until a replica has taken over. Returns how long the harness saw no
    /// master for the key. Standalone has no replica to fail over to: an error.
    pub async fn fail_over(
        &mut self,
        key: &str,
        timeout: Duration,
    ) -> Result<Duration, RedisError> {
        let started = std::time::Instant::now();
        match self {
            Self::Standalone(_) => {
                return Err(RedisError::Topology("standalone redis cannot fail over".into()));
            }
            Self::Cluster(c) => {
                let (old, slot) = c.kill_master_of(key)?;
                c.wait_for_new_master(slot, old, timeout).await?;
            }
            Self::Sentinel(s) => {
                let old = s.kill_master()?;
                s.wait_for_new_master(old, timeout).await?;
            }
        }
        Ok(started.elapsed())
    }
}
