//! The benchmark's results: data types (written as JSON) and their markdown tables (pure).

use serde::Serialize;

use crate::stats::CellStats;

/// Label of the direct-backend target.
pub const DIRECT: &str = "direct";
/// Label of this project's gateway.
pub const VMCP: &str = "vmcp-gateway";
/// Label of ToolHive's gateway.
pub const TOOLHIVE: &str = "toolhive-vmcp";

/// One (scenario, method, clients, target) cell: the median of its rounds.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRow {
    /// `base` (anonymous, memory sessions), `oidc` (OIDC in, token exchange out), `redis`.
    pub scenario: String,
    /// `tools/call` or `tools/list`.
    pub method: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Target label.
    pub target: String,
    /// Median over rounds.
    pub median: CellStats,
    /// Each round.
    pub rounds: Vec<CellStats>,
    /// The first error message, if any request failed.
    pub first_error: Option<String>,
    /// p50 minus the direct backend's p50 (same method and clients, base scenario).
    pub added_p50_ms: Option<f64>,
    /// p99 minus the direct backend's p99.
    pub added_p99_ms: Option<f64>,
    /// This row's added p50 divided by ToolHive's added p50 in the same cell.
    pub added_p50_vs_toolhive: Option<f64>,
    /// This row's req/s divided by ToolHive's req/s in the same cell.
    pub req_s_vs_toolhive: Option<f64>,
    /// This row's req/s divided by the direct backend's.
    pub req_s_vs_direct: Option<f64>,
}

/// Fills the ratio fields of every row from the other rows of the same run.
pub fn add_ratios(rows: &mut [LoadRow]) {
    let find = |rows: &[LoadRow], scenario: &str, r: &LoadRow, target: &str| {
        rows.iter()
            .find(|o| {
                o.scenario == scenario
                    && o.method == r.method
                    && o.clients == r.clients
                    && o.target == target
            })
            .map(|o| o.median.clone())
    };
    let snapshot = rows.to_vec();
    for r in rows.iter_mut() {
        if r.target == DIRECT {
            continue;
        }
        let direct = find(&snapshot, "base", r, DIRECT);
        let th = find(&snapshot, &r.scenario, r, TOOLHIVE);
        if let Some(d) = &direct {
            r.added_p50_ms = Some(r.median.p50_ms - d.p50_ms);
            r.added_p99_ms = Some(r.median.p99_ms - d.p99_ms);
            r.req_s_vs_direct = (d.req_per_s > 0.0).then(|| r.median.req_per_s / d.req_per_s);
        }
        if r.target != TOOLHIVE
            && let Some(t) = &th
        {
            if let (Some(d), Some(mine)) = (&direct, r.added_p50_ms) {
                let theirs = t.p50_ms - d.p50_ms;
                r.added_p50_vs_toolhive = (theirs > 0.0).then(|| mine / theirs);
            }
            r.req_s_vs_toolhive = (t.req_per_s > 0.0).then(|| r.median.req_per_s / t.req_per_s);
        }
    }
}

/// Redis bytes per stored session.
#[derive(Debug, Clone, Serialize)]
pub struct RedisRow {
    /// Target label.
    pub target: String,
    /// Sessions created for the measurement.
    pub sessions: usize,
    /// New keys per session (`DBSIZE` delta / sessions).
    pub keys_per_session: f64,
    /// Median `MEMORY USAGE` of the new keys, bytes.
    pub memory_usage_median: i64,
    /// Largest `MEMORY USAGE` seen among sampled keys, bytes.
    pub memory_usage_max: i64,
    /// `used_memory` delta / sessions, bytes.
    pub used_memory_per_session: f64,
    /// Why it could not be measured.
    pub error: Option<String>,
}

/// Cold restore on a fresh replica.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RestoreRow {
    /// Target label.
    pub target: String,
    /// Sessions restored.
    pub sessions: usize,
    /// First call on replica B, ms.
    pub cold: Option<CellStats>,
    /// Second call on replica B (same session), ms.
    pub warm: Option<CellStats>,
    /// The IdP's token-exchange latency measured by the bench itself, ms.
    pub idp: Option<CellStats>,
    /// The backend's time for the four capability lists a resumed backend session is asked,
    /// asked at once directly by the bench, ms.
    pub backend: Option<CellStats>,
    /// Per session: cold − warm − IdP exchange − backend lists (the gateway's own restore
    /// share), ms.
    pub own_share: Option<CellStats>,
    /// Failed restores and the first error.
    pub errors: u64,
    /// The first error.
    pub first_error: Option<String>,
}

/// Idle sessions: what each costs the gateway (and the backends).
#[derive(Debug, Clone, Serialize, Default)]
pub struct IdleRow {
    /// Target label.
    pub target: String,
    /// Sessions asked for at this step.
    pub requested: usize,
    /// Sessions that exist (created successfully, cumulative).
    pub created: usize,
    /// Failed creations (cumulative).
    pub failures: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Sessions created per second during this step.
    pub sessions_per_s: f64,
    /// Gateway RSS growth per session since the start, KiB.
    pub gateway_kib_per_session: f64,
    /// Gateway RSS, MiB.
    pub gateway_rss_mib: f64,
    /// Open sockets in the gateway.
    pub gateway_sockets: u64,
    /// Open sockets before the first session.
    pub gateway_sockets_before: u64,
    /// Growth of both backends' RSS per session, KiB.
    pub backend_kib_per_session: f64,
    /// Did a call on the first (oldest) session still work after this step?
    pub oldest_session_call: String,
}

/// Scale-out on one Redis Cluster: 3 replicas, many sessions, a cold 4th replica.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClusterRow {
    /// Sessions asked for.
    pub requested: usize,
    /// Sessions created.
    pub created: usize,
    /// Failed creations.
    pub failures: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Creations per second through the 3 replicas.
    pub sessions_per_s: f64,
    /// Growth of the masters' `used_memory` per session, bytes.
    pub masters_bytes_per_session: f64,
    /// Growth of every node's `used_memory` (masters and replicas) per session, bytes.
    pub all_nodes_bytes_per_session: f64,
    /// Median `MEMORY USAGE` of sampled records, bytes.
    pub memory_usage_median: i64,
    /// RSS growth of each replica per session it created, KiB.
    pub replica_kib_per_session: Vec<f64>,
    /// Sessions restored on the cold replica.
    pub restored: usize,
    /// First call of a session on the cold replica (restore from the Cluster), ms.
    pub restore_cold: Option<CellStats>,
    /// Second call of that session there, ms.
    pub restore_warm: Option<CellStats>,
    /// Failed restores.
    pub restore_errors: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// `smoke` or `full`.
    pub mode: String,
    /// CPU model and core count.
    pub machine: String,
    /// `/proc/loadavg` at the start and at the end (other work on the machine skews results).
    pub loadavg: [String; 2],
    /// How processes were pinned.
    pub pinning: String,
    /// What a wake-up across cores costs on this machine, and its idle policy.
    pub wake: crate::wake::WakeCost,
    /// Rounds per cell.
    pub rounds: usize,
    /// Measured seconds per cell (after warm-up).
    pub measure_s: f64,
    /// ToolHive version measured, or why it is missing.
    pub toolhive: String,
    /// Load cells.
    pub load: Vec<LoadRow>,
    /// Redis bytes.
    pub redis: Vec<RedisRow>,
    /// Cold restore.
    pub restore: Vec<RestoreRow>,
    /// Idle sessions.
    pub idle: Vec<IdleRow>,
    /// Scale-out on one Redis Cluster.
    pub cluster: Option<ClusterRow>,
    /// Token exchanges the IdP performed per `tools/call` in the OIDC scenario, per target
    /// (counted from the provider's grant log over a series of calls on one session).
    pub idp_exchanges_per_call: std::collections::BTreeMap<String, f64>,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
    /// Wall time of the whole run, s.
    pub duration_s: f64,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.digits$}"))
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.2}x"))
}

/// The report as markdown: one table per section.
pub fn markdown(r: &Report) -> String {
    let mut m = format!(
        "## vmcp bench ({mode})\n\nMachine: {machine}; load average at start {l0}, at end {l1}. Pinning: {pin}. ToolHive: {th}. Median of {rounds} alternating round(s), {measure:.1} s measured per cell. Run took {dur:.0} s.\n\n{wake}\n\n",
        mode = r.mode,
        machine = r.machine,
        l0 = r.loadavg[0],
        l1 = r.loadavg[1],
        pin = r.pinning,
        th = r.toolhive,
        rounds = r.rounds,
        measure = r.measure_s,
        dur = r.duration_s,
        wake = crate::wake::describe(&r.wake)
    );
    m.push_str("### Load (closed loop, keep-alive, one MCP session per client)\n\n");
    m.push_str("| scenario | method | clients | target | p50 ms | p90 ms | p99 ms | req/s | gateway CPU ms/req | added p50 / p99 ms | added p50 ÷ ToolHive's | req/s ÷ ToolHive's | req/s ÷ direct | errors |\n");
    m.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for row in &r.load {
        let s = &row.median;
        m.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {} / {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.method,
            row.clients,
            row.target,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.req_per_s,
            opt(s.cpu_ms_per_req, 3),
            opt(row.added_p50_ms, 2),
            opt(row.added_p99_ms, 2),
            ratio(row.added_p50_vs_toolhive),
            ratio(row.req_s_vs_toolhive),
            ratio(row.req_s_vs_direct),
            s.errors
        ));
    }
    if !r.idp_exchanges_per_call.is_empty() {
        let each: Vec<String> =
            r.idp_exchanges_per_call.iter().map(|(t, n)| format!("{t} {n:.2}")).collect();
        m.push_str(&format!(
            "\nToken exchanges at the IdP per `tools/call` (oidc scenario): {}.\n",
            each.join(", ")
        ));
    }
    if !r.restore.is_empty() {
        m.push_str("\n### Cold restore (session made on replica A, first call on a fresh replica B; OIDC + token exchange + Redis)\n\n");
        m.push_str("| target | sessions | cold call p50 / p99 ms | warm call p50 ms | IdP exchange p50 ms | backend lists p50 ms | gateway's own share p50 / p90 / p99 ms | errors |\n|---|---|---|---|---|---|---|---|\n");
        for x in &r.restore {
            let pp = |s: &Option<CellStats>| {
                s.as_ref().map_or("–".into(), |s| format!("{:.2} / {:.2}", s.p50_ms, s.p99_ms))
            };
            let p50 = |s: &Option<CellStats>| {
                s.as_ref().map_or("–".into(), |s| format!("{:.2}", s.p50_ms))
            };
            let own = x.own_share.as_ref().map_or("–".into(), |s| {
                format!("{:.2} / {:.2} / {:.2}", s.p50_ms, s.p90_ms, s.p99_ms)
            });
            let err = match &x.first_error {
                Some(e) => format!("{} ({})", x.errors, e.replace('|', "/")),
                None => x.errors.to_string(),
            };
            m.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                x.target,
                x.sessions,
                pp(&x.cold),
                p50(&x.warm),
                p50(&x.idp),
                p50(&x.backend),
                own,
                err
            ));
        }
    }
    if !r.redis.is_empty() {
        m.push_str("\n### Redis bytes per session record\n\n| target | sessions | keys / session | MEMORY USAGE median (max) B | used_memory Δ / session B | note |\n|---|---|---|---|---|---|\n");
        for x in &r.redis {
            m.push_str(&format!(
                "| {} | {} | {:.2} | {} ({}) | {:.0} | {} |\n",
                x.target,
                x.sessions,
                x.keys_per_session,
                x.memory_usage_median,
                x.memory_usage_max,
                x.used_memory_per_session,
                x.error.as_deref().unwrap_or("").replace('|', "/")
            ));
        }
    }
    if let Some(x) = &r.cluster {
        m.push_str("\n### Redis Cluster scale-out (3 replicas, 3 masters + 3 replicas; restore on a cold 4th replica)\n\n| sessions (asked) | failed | sessions/s | Redis B / session (masters) | Redis B / session (all nodes) | MEMORY USAGE median B | replica KiB / session | cold restore p50 / p99 ms | warm p50 ms | restore errors | first failure |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        let kib: Vec<String> =
            x.replica_kib_per_session.iter().map(|k| format!("{k:.1}")).collect();
        let p = |c: &Option<CellStats>, f: fn(&CellStats) -> f64| c.as_ref().map(f);
        m.push_str(&format!(
            "| {} ({}) | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} / {} | {} | {} | {} |\n",
            x.created,
            x.requested,
            x.failures,
            x.sessions_per_s,
            x.masters_bytes_per_session,
            x.all_nodes_bytes_per_session,
            x.memory_usage_median,
            kib.join(", "),
            opt(p(&x.restore_cold, |c| c.p50_ms), 3),
            opt(p(&x.restore_cold, |c| c.p99_ms), 3),
            opt(p(&x.restore_warm, |c| c.p50_ms), 3),
            x.restore_errors,
            x.first_error.as_deref().unwrap_or("").replace('|', "/")
        ));
    }
    if !r.idle.is_empty() {
        m.push_str("\n### Idle sessions (initialize + initialized, then nothing)\n\n| target | asked | created | failed | sessions/s | gateway KiB / session | gateway RSS MiB | gateway sockets (before) | backends KiB / session | oldest session still works | first failure |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        for x in &r.idle {
            m.push_str(&format!(
                "| {} | {} | {} | {} | {:.0} | {:.1} | {:.0} | {} ({}) | {:.1} | {} | {} |\n",
                x.target,
                x.requested,
                x.created,
                x.failures,
                x.sessions_per_s,
                x.gateway_kib_per_session,
                x.gateway_rss_mib,
                x.gateway_sockets,
                x.gateway_sockets_before,
                x.backend_kib_per_session,
                x.oldest_session_call.replace('|', "/"),
                x.first_error.as_deref().unwrap_or("").replace('|', "/")
            ));
        }
    }
    if !r.notes.is_empty() {
        m.push_str("\n### Notes\n\n");
        for n in &r.notes {
            m.push_str(&format!("- {}\n", n.replace('\n', " ")));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, target: &str, p50: f64, rps: f64) -> LoadRow {
        LoadRow {
            scenario: scenario.into(),
            method: "tools/call".into(),
            clients: 1,
            target: target.into(),
            median: CellStats {
                p50_ms: p50,
                p99_ms: p50 * 2.0,
                req_per_s: rps,
                ..Default::default()
            },
            rounds: vec![],
            first_error: None,
            added_p50_ms: None,
            added_p99_ms: None,
            added_p50_vs_toolhive: None,
            req_s_vs_toolhive: None,
            req_s_vs_direct: None,
        }
    }

    #[test]
    fn ratios_compare_added_latency_and_throughput() {
        let mut rows = vec![
            row("base", DIRECT, 0.1, 1000.0),
            row("base", VMCP, 0.4, 600.0),
            row("base", TOOLHIVE, 1.3, 200.0),
            row("oidc", VMCP, 0.5, 500.0),
        ];
        add_ratios(&mut rows);
        let v = &rows[1];
        assert!((v.added_p50_ms.unwrap() - 0.3).abs() < 1e-9);
        assert!((v.added_p50_vs_toolhive.unwrap() - 0.25).abs() < 1e-9);
        assert!((v.req_s_vs_toolhive.unwrap() - 3.0).abs() < 1e-9);
        assert!(rows[2].added_p50_vs_toolhive.is_none(), "ToolHive is not compared to itself");
        assert!(rows[3].req_s_vs_toolhive.is_none(), "no ToolHive row in that scenario");
        assert!((rows[3].added_p50_ms.unwrap() - 0.4).abs() < 1e-9, "direct comes from base");
        let md = markdown(&Report { load: rows, ..Default::default() });
        assert!(md.contains("| base | tools/call | 1 | vmcp-gateway | 0.40 |"), "{md}");
        assert!(md.contains("0.25x"), "{md}");
    }
}
