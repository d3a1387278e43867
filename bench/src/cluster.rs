//! Scale-out on one Redis Cluster: sessions created round robin through 3 gateway replicas that
//! share a real Redis Cluster (3 masters + 3 replicas), then what they cost Redis (the masters'
//! `used_memory` growth per session, `MEMORY USAGE` of sampled records) and each replica (RSS
//! growth per session it created), and the first call of sampled sessions on a 4th, cold
//! replica (restore from the Cluster) against the second call there.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use vmcp_e2e::ports::free_port;
use vmcp_e2e::redis_cluster::RedisCluster;

use crate::configs::{Auth, Setup};
use crate::load::{Method, REQUEST_TIMEOUT, discover_tool, one_call};
use crate::mcp::{Conn, Endpoint, Session};
use crate::procs::{self, Env, Proc};
use crate::report::ClusterRow;
use crate::stats::{median, summarize};
use crate::{procfs, resp};

/// Concurrent connections creating sessions (spread over the replicas).
const WORKERS: usize = 24;
/// Give up after this many failed creations.
const MAX_FAILURES: u64 = 100;
/// Records sampled for `MEMORY USAGE`.
const MEMORY_SAMPLE: usize = 200;

#[derive(Default)]
struct Shared {
    next: usize,
    created: usize,
    failures: u64,
    first_error: Option<String>,
    sample: Vec<Session>,
}

fn used_memory_sum(ports: &[u16]) -> impl std::future::Future<Output = anyhow::Result<i64>> {
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    async move {
        let mut sum = 0;
        for a in &addrs {
            sum += resp::used_memory(a).await?;
        }
        Ok(sum)
    }
}

/// Runs the workload: `sessions` created, `restores` of them restored on a cold replica.
pub async fn run(
    env: &Env,
    backends: &[(String, String)],
    sessions: usize,
    restores: usize,
) -> anyhow::Result<ClusterRow> {
    let cluster = RedisCluster::start().await?;
    let masters = cluster.masters()?;
    let all_nodes = cluster.ports();
    let setup = || -> anyhow::Result<Setup> {
        Ok(Setup {
            port: free_port()?,
            backends: backends.to_vec(),
            auth: Auth::Anonymous,
            redis: Some(cluster.url()),
        })
    };
    let mut replicas: Vec<Proc> = Vec::new();
    for _ in 0..3 {
        replicas.push(procs::vmcp_gateway(env, &setup()?).await?);
    }
    let tool = discover_tool(&replicas[0].url(), None).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0: Vec<u64> = replicas.iter().map(|r| procfs::rss_kib(r.pid()).unwrap_or(0)).collect();
    let (masters0, all0) = (used_memory_sum(&masters).await?, used_memory_sum(&all_nodes).await?);

    let every = (sessions / restores.max(1)).max(1);
    let shared = Rc::new(RefCell::new(Shared::default()));
    let t0 = Instant::now();
    let local = tokio::task::LocalSet::new();
    for w in 0..WORKERS {
        let endpoint = Endpoint::parse(&replicas[w % replicas.len()].url())?;
        let shared = shared.clone();
        local.spawn_local(async move {
            let mut conn = Conn::new(endpoint, REQUEST_TIMEOUT);
            loop {
                let n = {
                    let mut s = shared.borrow_mut();
                    if s.next >= sessions || s.failures >= MAX_FAILURES {
                        break;
                    }
                    s.next += 1;
                    s.next
                };
                let r = conn.open_session(None).await;
                let mut s = shared.borrow_mut();
                match r {
                    Ok(session) => {
                        s.created += 1;
                        if n % every == 0 && s.sample.len() < restores {
                            s.sample.push(session);
                        }
                    }
                    Err(e) => {
                        s.failures += 1;
                        s.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        });
    }
    local.await;
    let elapsed = t0.elapsed().as_secs_f64();
    let shared = Rc::try_unwrap(shared).map_err(|_| anyhow::anyhow!("workers still running"))?;
    let shared = shared.into_inner();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let created = shared.created.max(1);
    let per_session = |now: i64, before: i64| (now - before) as f64 / created as f64;
    let mut row = ClusterRow {
        requested: sessions,
        created: shared.created,
        failures: shared.failures,
        first_error: shared.first_error.clone(),
        sessions_per_s: shared.created as f64 / elapsed.max(1e-9),
        masters_bytes_per_session: per_session(used_memory_sum(&masters).await?, masters0),
        all_nodes_bytes_per_session: per_session(used_memory_sum(&all_nodes).await?, all0),
        ..Default::default()
    };
    // Each replica created a third of the sessions.
    let share = created as f64 / replicas.len() as f64;
    row.replica_kib_per_session = replicas
        .iter()
        .zip(&rss0)
        .map(|(r, before)| {
            procfs::rss_kib(r.pid()).unwrap_or(0).saturating_sub(*before) as f64 / share
        })
        .collect();
    let addr = format!("127.0.0.1:{}", masters[0]);
    let keys = resp::scan(&addr, "vmcp:session:*", MEMORY_SAMPLE).await?;
    let mut sizes = Vec::new();
    for k in keys.iter().take(MEMORY_SAMPLE) {
        sizes.push(resp::int(&addr, &["MEMORY", "USAGE", k]).await? as f64);
    }
    row.memory_usage_median = median(&sizes) as i64;

    // Cold restores on a 4th replica.
    let cold_replica = procs::vmcp_gateway(env, &setup()?).await?;
    let mut conn = Conn::new(Endpoint::parse(&cold_replica.url())?, REQUEST_TIMEOUT);
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for s in &shared.sample {
        let t = Instant::now();
        if let Err(e) = one_call(&mut conn, s, Method::Call, &tool).await {
            row.restore_errors += 1;
            row.first_error.get_or_insert_with(|| format!("restore on the cold replica: {e}"));
            continue;
        }
        let t_cold = t.elapsed();
        let t = Instant::now();
        if one_call(&mut conn, s, Method::Call, &tool).await.is_err() {
            row.restore_errors += 1;
            continue;
        }
        cold.push(t_cold.as_micros() as u64);
        warm.push(t.elapsed().as_micros() as u64);
    }
    row.restored = cold.len();
    if !cold.is_empty() {
        row.restore_cold = Some(summarize(cold, 0, 0.0, None));
        row.restore_warm = Some(summarize(warm, 0, 0.0, None));
    }
    eprintln!("[bench] cluster: {row:?}");
    drop((replicas, cold_replica, cluster));
    Ok(row)
}
