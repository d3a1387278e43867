//! Idle sessions: create many sessions (initialize + initialized, then nothing) through a few
//! keep-alive connections and read what they cost the gateway (RSS, open sockets) and the
//! backends (RSS). A failure to create sessions (e.g. the gateway out of file descriptors) is
//! a measured result: the step stops and reports it.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::load::{Method, REQUEST_TIMEOUT, one_call};
use crate::mcp::{Conn, Endpoint};
use crate::procfs;
use crate::report::IdleRow;

/// Concurrent connections that create sessions.
const WORKERS: usize = 16;
/// Give up a step after this many failed creations.
const MAX_FAILURES: u64 = 100;
/// Stop when the backends together grow past this (the machine has 24 GiB).
const BACKEND_RSS_CAP_KIB: u64 = 6 * 1024 * 1024;

/// What is measured: the gateway process, the backends' processes, the MCP URL.
#[derive(Debug, Clone)]
pub struct Subject {
    /// Target label.
    pub label: String,
    /// MCP endpoint.
    pub url: String,
    /// Gateway pid.
    pub pid: u32,
    /// Backend pids.
    pub backends: Vec<u32>,
    /// The tool to call on the oldest session.
    pub tool: String,
}

fn backend_rss(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| procfs::rss_kib(*p).ok()).sum()
}

#[derive(Debug, Default)]
struct Shared {
    next: usize,
    created: usize,
    failures: u64,
    first_error: Option<String>,
    stop: Option<String>,
}

/// Creates sessions up to each count in `steps` (cumulative), with a wall-time cap per step.
pub async fn run(
    subject: &Subject,
    steps: &[usize],
    step_cap: Duration,
) -> anyhow::Result<Vec<IdleRow>> {
    let endpoint = Endpoint::parse(&subject.url)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = procfs::rss_kib(subject.pid)?;
    let sockets0 = procfs::sockets(subject.pid)?;
    let brss0 = backend_rss(&subject.backends);
    let mut oldest_conn = Conn::new(endpoint.clone(), REQUEST_TIMEOUT);
    let oldest = oldest_conn.open_session(None).await?;
    let shared = Rc::new(RefCell::new(Shared { created: 1, next: 1, ..Default::default() }));
    let mut rows = Vec::new();
    for &goal in steps {
        let t0 = Instant::now();
        let before = shared.borrow().created;
        let deadline = t0 + step_cap;
        let local = tokio::task::LocalSet::new();
        for _ in 0..WORKERS {
            let (shared, endpoint, backends) =
                (shared.clone(), endpoint.clone(), subject.backends.clone());
            local.spawn_local(async move {
                let mut conn = Conn::new(endpoint, REQUEST_TIMEOUT);
                loop {
                    {
                        let mut s = shared.borrow_mut();
                        if s.stop.is_some() || s.next >= goal {
                            break;
                        }
                        if Instant::now() > deadline {
                            s.stop.get_or_insert(format!("stopped at the {step_cap:?} step cap"));
                            break;
                        }
                        s.next += 1;
                    }
                    let r = conn.open_session(None).await;
                    let mut s = shared.borrow_mut();
                    match r {
                        Ok(_) => {
                            s.created += 1;
                            if s.created % 2000 == 0 && backend_rss(&backends) > BACKEND_RSS_CAP_KIB
                            {
                                s.stop
                                    .get_or_insert("stopped: backends grew past 6 GiB RSS".into());
                            }
                        }
                        Err(e) => {
                            s.failures += 1;
                            s.first_error.get_or_insert_with(|| e.to_string());
                            if s.failures >= MAX_FAILURES {
                                s.stop.get_or_insert(format!(
                                    "stopped after {MAX_FAILURES} failed creations"
                                ));
                            }
                        }
                    }
                }
            });
        }
        local.await;
        let elapsed = t0.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (created, failures, first_error, stop) = {
            let s = shared.borrow();
            (s.created, s.failures, s.first_error.clone(), s.stop.clone())
        };
        let rss = procfs::rss_kib(subject.pid).unwrap_or(0);
        let oldest_call = match tokio::time::timeout(
            Duration::from_secs(12),
            one_call(&mut oldest_conn, &oldest, Method::Call, &subject.tool),
        )
        .await
        {
            Ok(Ok(_)) => "ok".to_owned(),
            Ok(Err(e)) => format!("error: {e}"),
            Err(_) => "error: no answer in 12 s".to_owned(),
        };
        let per = |kib: u64, base: u64| (kib.saturating_sub(base)) as f64 / created.max(1) as f64;
        let first_error = match &stop {
            Some(stop) => Some(format!("{stop}; {}", first_error.unwrap_or_default())),
            None => first_error,
        };
        rows.push(IdleRow {
            target: subject.label.clone(),
            requested: goal,
            created,
            failures,
            first_error,
            sessions_per_s: (created - before) as f64 / elapsed.max(1e-9),
            gateway_kib_per_session: per(rss, rss0),
            gateway_rss_mib: rss as f64 / 1024.0,
            gateway_sockets: procfs::sockets(subject.pid).unwrap_or(0),
            gateway_sockets_before: sockets0,
            backend_kib_per_session: per(backend_rss(&subject.backends), brss0),
            oldest_session_call: oldest_call,
        });
        eprintln!("[bench] idle {}: {:?}", subject.label, rows.last());
        if stop.is_some() {
            break;
        }
    }
    Ok(rows)
}
