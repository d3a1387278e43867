//! The orchestration: which processes run for which scenario, and in what order the cells are
//! measured (every round visits every cell, and each cell measures every target back to back in
//! an order rotated by the round, so slow drift of the machine spreads evenly over targets).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use vmcp_e2e::oidc::{OidcOptions, OidcProvider};
use vmcp_e2e::ports::free_port;
use vmcp_e2e::redis::RedisServer;

use crate::configs::{Auth, Setup};
use crate::load::{self, Method, Target};
use crate::procs::{self, Env, Proc};
use crate::report::{self, DIRECT, LoadRow, Report, TOOLHIVE, VMCP};
use crate::stats::{CellStats, median_of_rounds};
use crate::{cluster, idle, restore, storage, toolhive};

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `smoke` or `full`.
    pub mode: String,
    /// Scenarios to run: base, oidc, redis, restore, idle.
    pub scenarios: Vec<String>,
    /// Rounds per cell.
    pub rounds: usize,
    /// Client counts.
    pub clients: Vec<usize>,
    /// Warm-up per cell.
    pub warmup: Duration,
    /// Measured time per cell.
    pub measure: Duration,
    /// Build and measure ToolHive.
    pub toolhive: bool,
    /// ToolHive version (default: v0.44.0, else the newest served).
    pub toolhive_version: Option<String>,
    /// Idle-session steps for vmcp-gateway.
    pub idle_steps: Vec<usize>,
    /// Idle-session steps for ToolHive.
    pub toolhive_idle_steps: Vec<usize>,
    /// Wall-time cap of one idle step.
    pub idle_step_cap: Duration,
    /// Sessions (one user each) for the cold-restore measurement.
    pub restore_sessions: usize,
    /// Sessions created to measure Redis bytes.
    pub redis_sessions: usize,
    /// Sessions of the Redis Cluster scale-out (over 3 replicas).
    pub cluster_sessions: usize,
    /// Of those, restored on a cold replica.
    pub cluster_restores: usize,
    /// Where ToolHive is built and cached.
    pub cache: PathBuf,
    /// Processes, pinning, limits.
    pub env: Env,
}

impl Plan {
    fn has(&self, s: &str) -> bool {
        self.scenarios.iter().any(|x| x == s)
    }
}

const HMAC: &str = "vmcp-bench-session-hmac-secret-0123456789abcdef";

async fn target(label: &str, p: &Proc, bearer: Option<String>) -> anyhow::Result<Target> {
    let tool = load::discover_tool(&p.url(), bearer).await?;
    Ok(Target { label: label.into(), url: p.url(), pid: Some(p.pid()), tool })
}

/// Starts ToolHive for `setup`; on failure records why in `notes` and returns `None`.
async fn start_toolhive(
    plan: &Plan,
    setup: &Setup,
    notes: &mut Vec<String>,
    what: &str,
) -> Option<Proc> {
    plan.env.toolhive.as_ref()?;
    match procs::toolhive(&plan.env, setup, HMAC).await {
        Ok(p) => Some(p),
        Err(e) => {
            notes.push(format!("ToolHive vmcp could not run the {what} scenario: {e:#}"));
            None
        }
    }
}

/// Runs every cell of one scenario over all rounds and returns the median rows.
async fn matrix(
    plan: &Plan,
    scenario: &str,
    targets: &[Target],
    bearer: Option<String>,
) -> Vec<LoadRow> {
    type Key = (usize, usize, usize); // method index, clients, target index
    let methods = [Method::Call, Method::List];
    let mut cells: BTreeMap<Key, (Vec<CellStats>, Option<String>)> = BTreeMap::new();
    for round in 0..plan.rounds {
        for (mi, method) in methods.iter().enumerate() {
            for &clients in &plan.clients {
                for k in 0..targets.len() {
                    let ti = (k + round) % targets.len();
                    let t = &targets[ti];
                    let r = load::run_cell(
                        t,
                        *method,
                        clients,
                        bearer.clone(),
                        plan.warmup,
                        plan.measure,
                    )
                    .await;
                    let entry = cells.entry((mi, clients, ti)).or_default();
                    match r {
                        Ok((stats, err)) => {
                            eprintln!(
                                "[bench] {scenario} round {round} {} x{clients} {}: p50 {:.3} ms, {:.0} req/s, {} errors",
                                method.name(),
                                t.label,
                                stats.p50_ms,
                                stats.req_per_s,
                                stats.errors
                            );
                            entry.0.push(stats);
                            if entry.1.is_none() {
                                entry.1 = err;
                            }
                        }
                        Err(e) => {
                            eprintln!(
                                "[bench] {scenario} {} x{clients} {}: {e:#}",
                                method.name(),
                                t.label
                            );
                            entry.1.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
            }
        }
    }
    cells
        .into_iter()
        .map(|((mi, clients, ti), (rounds, first_error))| LoadRow {
            scenario: scenario.into(),
            method: methods[mi].name().into(),
            clients,
            target: targets[ti].label.clone(),
            median: median_of_rounds(&rounds),
            rounds,
            first_error,
            added_p50_ms: None,
            added_p99_ms: None,
            added_p50_vs_toolhive: None,
            req_s_vs_toolhive: None,
            req_s_vs_direct: None,
        })
        .collect()
}

/// Token exchanges the IdP logs per `tools/call` over 20 calls on one fresh session.
async fn exchanges_per_call(idp: &OidcProvider, t: &Target, bearer: &str) -> anyhow::Result<f64> {
    use crate::mcp::{Conn, Endpoint};
    let count = || idp.log_text().matches("exchange: client=").count();
    let mut conn = Conn::new(Endpoint::parse(&t.url)?, load::REQUEST_TIMEOUT);
    let s = conn.open_session(Some(bearer.to_owned())).await?;
    load::one_call(&mut conn, &s, Method::Call, &t.tool).await?;
    let before = count();
    for _ in 0..20 {
        load::one_call(&mut conn, &s, Method::Call, &t.tool).await?;
    }
    let after = count();
    let _ = conn.delete(&s).await;
    Ok((after - before) as f64 / 20.0)
}

fn oidc_users(n: usize) -> serde_json::Value {
    let mut users = serde_json::Map::new();
    for i in 0..n {
        users.insert(format!("u{i}"), json!({"password": "pw", "sub": format!("u{i}-sub")}));
    }
    json!({ "users": users })
}

/// Runs the plan.
pub async fn run(mut plan: Plan) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut rep = Report {
        mode: plan.mode.clone(),
        rounds: plan.rounds,
        measure_s: plan.measure.as_secs_f64(),
        machine: machine(),
        loadavg: [loadavg(), String::new()],
        pinning: if plan.env.pin {
            "gateway under test on core 0; backends, load generator, Redis and the OpenID provider on core 1 (taskset)".into()
        } else {
            "none (smoke)".into()
        },
        toolhive: "not measured".into(),
        // Before any process under test starts, so nothing else wakes the cores.
        wake: crate::wake::measure(plan.env.pin),
        ..Default::default()
    };
    if plan.toolhive {
        match toolhive::ensure(&plan.cache, plan.toolhive_version.as_deref()) {
            Ok((bin, version)) => {
                rep.toolhive = format!("{} {version}", toolhive::MODULE);
                plan.env.toolhive = Some(bin);
            }
            Err(e) => rep.notes.push(format!("ToolHive vmcp could not be built: {e}")),
        }
    }
    let env = plan.env.clone();
    let weather = procs::backend(&env, "weather").await?;
    let notes = procs::backend(&env, "notes").await?;
    let backends = vec![("weather".to_owned(), weather.url()), ("notes".to_owned(), notes.url())];
    let setup = |auth: Auth, redis: Option<String>| -> anyhow::Result<Setup> {
        Ok(Setup { port: free_port()?, backends: backends.clone(), auth, redis })
    };

    if plan.has("base") {
        let s = setup(Auth::Anonymous, None)?;
        let gw = procs::vmcp_gateway(&env, &s).await?;
        let th =
            start_toolhive(&plan, &setup(Auth::Anonymous, None)?, &mut rep.notes, "base").await;
        let direct =
            Target { label: DIRECT.into(), url: weather.url(), pid: None, tool: "search".into() };
        let mut targets = vec![direct, target(VMCP, &gw, None).await?];
        if let Some(th) = &th {
            targets.push(target(TOOLHIVE, th, None).await?);
        }
        rep.load.extend(matrix(&plan, "base", &targets, None).await);
    }

    let needs_idp = plan.has("oidc") || plan.has("restore");
    let idp = if needs_idp {
        let opts = OidcOptions {
            access_ttl: Some(7200),
            log: true,
            config: Some(oidc_users(plan.restore_sessions)),
            ..Default::default()
        };
        Some(OidcProvider::start_with(opts).await?)
    } else {
        None
    };
    let oidc_auth =
        |idp: &OidcProvider| Auth::Oidc { issuer: idp.issuer().into(), token_url: idp.token_url() };

    if let (true, Some(idp)) = (plan.has("oidc"), &idp) {
        let bearer = idp.password_token("alice", "alice-pw", None).await?;
        let gw = procs::vmcp_gateway(&env, &setup(oidc_auth(idp), None)?).await?;
        let th = start_toolhive(&plan, &setup(oidc_auth(idp), None)?, &mut rep.notes, "oidc").await;
        let mut targets = vec![target(VMCP, &gw, Some(bearer.clone())).await?];
        if let Some(th) = &th {
            match target(TOOLHIVE, th, Some(bearer.clone())).await {
                Ok(t) => targets.push(t),
                Err(e) => rep.notes.push(format!("ToolHive vmcp, OIDC + token exchange: {e:#}")),
            }
        }
        rep.load.extend(matrix(&plan, "oidc", &targets, Some(bearer.clone())).await);
        for t in &targets {
            match exchanges_per_call(idp, t, &bearer).await {
                Ok(n) => {
                    rep.idp_exchanges_per_call.insert(t.label.clone(), n);
                }
                Err(e) => rep.notes.push(format!("counting exchanges of {}: {e:#}", t.label)),
            }
        }
    }

    let redis = if plan.has("redis") || plan.has("restore") {
        Some(RedisServer::start().await?)
    } else {
        None
    };
    let redis_addr = redis.as_ref().map(|r| format!("127.0.0.1:{}", r.port()));

    if let (true, Some(addr)) = (plan.has("redis"), &redis_addr) {
        let gw = procs::vmcp_gateway(&env, &setup(Auth::Anonymous, Some(addr.clone()))?).await?;
        let th = start_toolhive(
            &plan,
            &setup(Auth::Anonymous, Some(addr.clone()))?,
            &mut rep.notes,
            "redis",
        )
        .await;
        let mut targets = vec![target(VMCP, &gw, None).await?];
        if let Some(th) = &th {
            targets.push(target(TOOLHIVE, th, None).await?);
        }
        rep.load.extend(matrix(&plan, "redis", &targets, None).await);
        rep.redis
            .push(storage::bytes_per_session(VMCP, &gw.url(), addr, plan.redis_sessions).await);
        if let Some(th) = &th {
            rep.redis.push(
                storage::bytes_per_session(TOOLHIVE, &th.url(), addr, plan.redis_sessions).await,
            );
        }
    }

    if let (true, Some(idp), Some(addr)) = (plan.has("restore"), &idp, &redis_addr) {
        let mut bearers = Vec::new();
        for i in 0..plan.restore_sessions {
            bearers.push(idp.password_token(&format!("u{i}"), "pw", None).await?);
        }
        let warm_bearer = idp.password_token("alice", "alice-pw", None).await?;
        let a = procs::vmcp_gateway(&env, &setup(oidc_auth(idp), Some(addr.clone()))?).await?;
        let b = procs::vmcp_gateway(&env, &setup(oidc_auth(idp), Some(addr.clone()))?).await?;
        let tool = load::discover_tool(&b.url(), Some(warm_bearer.clone())).await?;
        rep.restore.push(
            restore::run(VMCP, &a.url(), &b.url(), &backends[0].1, &tool, &bearers, idp).await?,
        );
        drop((a, b));
        let sa = setup(oidc_auth(idp), Some(addr.clone()))?;
        let sb = setup(oidc_auth(idp), Some(addr.clone()))?;
        if let Some(ta) = start_toolhive(&plan, &sa, &mut rep.notes, "restore").await
            && let Some(tb) = start_toolhive(&plan, &sb, &mut rep.notes, "restore").await
        {
            match load::discover_tool(&tb.url(), Some(warm_bearer)).await {
                Ok(tool) => rep.restore.push(
                    restore::run(
                        TOOLHIVE,
                        &ta.url(),
                        &tb.url(),
                        &backends[0].1,
                        &tool,
                        &bearers,
                        idp,
                    )
                    .await?,
                ),
                Err(e) => rep.notes.push(format!("ToolHive vmcp restore: {e:#}")),
            }
        }
    }
    if plan.has("cluster") {
        match cluster::run(&env, &backends, plan.cluster_sessions, plan.cluster_restores).await {
            Ok(row) => rep.cluster = Some(row),
            Err(e) => rep.notes.push(format!("Redis Cluster scale-out: {e:#}")),
        }
    }
    drop((weather, notes, idp, redis));

    if plan.has("idle") {
        for (label, steps) in [(VMCP, &plan.idle_steps), (TOOLHIVE, &plan.toolhive_idle_steps)] {
            if steps.is_empty() || (label == TOOLHIVE && env.toolhive.is_none()) {
                continue;
            }
            // Fresh backends: their memory growth is part of what an idle session costs.
            let w = procs::backend(&env, "weather").await?;
            let n = procs::backend(&env, "notes").await?;
            let s = Setup {
                port: free_port()?,
                backends: vec![("weather".into(), w.url()), ("notes".into(), n.url())],
                auth: Auth::Anonymous,
                redis: None,
            };
            let gw = if label == VMCP {
                procs::vmcp_gateway(&env, &s).await?
            } else {
                match start_toolhive(&plan, &s, &mut rep.notes, "idle").await {
                    Some(p) => p,
                    None => continue,
                }
            };
            let subject = idle::Subject {
                label: label.into(),
                url: gw.url(),
                pid: gw.pid(),
                backends: vec![w.pid(), n.pid()],
                tool: load::discover_tool(&gw.url(), None).await?,
            };
            match idle::run(&subject, steps, plan.idle_step_cap).await {
                Ok(rows) => rep.idle.extend(rows),
                Err(e) => {
                    rep.notes.push(format!("idle sessions, {label}: {e:#}; log: {}", gw.log_tail()))
                }
            }
        }
    }
    report::add_ratios(&mut rep.load);
    rep.duration_s = started.elapsed().as_secs_f64();
    rep.loadavg[1] = loadavg();
    Ok(rep)
}

/// The 1-, 5- and 15-minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")?.split(':').nth(1).map(|s| s.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    format!("{cpu}, {cores} cores")
}
