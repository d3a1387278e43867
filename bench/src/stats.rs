//! Pure statistics: percentiles of latency samples and the median across rounds.

use serde::Serialize;

/// What one measured cell (one target, one workload, one round) produced.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CellStats {
    /// Completed requests.
    pub requests: u64,
    /// Failed requests (any error: HTTP, JSON-RPC, timeout).
    pub errors: u64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile (ms).
    pub p90_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// Completed requests per second of wall time.
    pub req_per_s: f64,
    /// CPU time (user + system) of the gateway process per request, in ms; `None` for the
    /// direct backend (no gateway).
    pub cpu_ms_per_req: Option<f64>,
}

/// The `q` quantile (0..=1) of sorted samples, nearest-rank; 0 for no samples.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarizes latency samples (microseconds) over `wall_s` seconds.
pub fn summarize(mut micros: Vec<u64>, errors: u64, wall_s: f64, cpu_ms: Option<f64>) -> CellStats {
    micros.sort_unstable();
    let n = micros.len() as u64;
    let ms = |q| quantile(&micros, q) as f64 / 1000.0;
    CellStats {
        requests: n,
        errors,
        p50_ms: ms(0.50),
        p90_ms: ms(0.90),
        p99_ms: ms(0.99),
        req_per_s: if wall_s > 0.0 { n as f64 / wall_s } else { 0.0 },
        cpu_ms_per_req: cpu_ms.map(|c| if n > 0 { c / n as f64 } else { 0.0 }),
    }
}

/// The median of values (the middle one; the mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// The per-field median of rounds; request and error counts are summed.
pub fn median_of_rounds(rounds: &[CellStats]) -> CellStats {
    let f = |g: fn(&CellStats) -> f64| median(&rounds.iter().map(g).collect::<Vec<_>>());
    let cpu: Vec<f64> = rounds.iter().filter_map(|r| r.cpu_ms_per_req).collect();
    CellStats {
        requests: rounds.iter().map(|r| r.requests).sum(),
        errors: rounds.iter().map(|r| r.errors).sum(),
        p50_ms: f(|r| r.p50_ms),
        p90_ms: f(|r| r.p90_ms),
        p99_ms: f(|r| r.p99_ms),
        req_per_s: f(|r| r.req_per_s),
        cpu_ms_per_req: (!cpu.is_empty()).then(|| median(&cpu)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.9), 90);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[7], 0.99), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn summarize_converts_to_ms_and_rates() {
        let s = summarize(vec![3000, 1000, 2000, 4000], 1, 2.0, Some(8.0));
        assert_eq!(s.requests, 4);
        assert_eq!(s.errors, 1);
        assert_eq!(s.p50_ms, 2.0);
        assert_eq!(s.p99_ms, 4.0);
        assert_eq!(s.req_per_s, 2.0);
        assert_eq!(s.cpu_ms_per_req, Some(2.0));
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn rounds_take_field_medians_and_sum_counts() {
        let r = |p50, rps| CellStats {
            requests: 10,
            errors: 1,
            p50_ms: p50,
            req_per_s: rps,
            ..Default::default()
        };
        let m = median_of_rounds(&[r(1.0, 100.0), r(9.0, 300.0), r(2.0, 200.0)]);
        assert_eq!(m.p50_ms, 2.0);
        assert_eq!(m.req_per_s, 200.0);
        assert_eq!(m.requests, 30);
        assert_eq!(m.errors, 3);
        assert_eq!(m.cpu_ms_per_req, None);
    }
}
