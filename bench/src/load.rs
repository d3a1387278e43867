//! The closed-loop load generator: N clients, each with its own keep-alive connection and its
//! own MCP session, sending one request after another for a fixed time.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mcp::{Conn, Endpoint, McpError, Session};
use crate::procfs;
use crate::stats::{CellStats, summarize};

/// Per-request timeout of the load generator.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which request the clients repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Method {
    /// `tools/call` of the weather backend's cheap `search` tool.
    #[serde(rename = "tools/call")]
    Call,
    /// `tools/list`.
    #[serde(rename = "tools/list")]
    List,
}

impl Method {
    /// The JSON-RPC method name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Call => "tools/call",
            Method::List => "tools/list",
        }
    }
}

/// One target as the load generator sees it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Label in reports.
    pub label: String,
    /// MCP endpoint.
    pub url: String,
    /// The gateway process whose CPU is measured (`None`: the direct backend).
    pub pid: Option<u32>,
    /// Name of the weather `search` tool as this target exposes it.
    pub tool: String,
}

/// The name of the weather backend's `search` tool in a `tools/list` result: `search` on the
/// backend itself, `weather_search` (or another weather-prefixed form) through a gateway.
pub fn pick_tool(list: &Value) -> Option<String> {
    let names: Vec<&str> =
        list.get("tools")?.as_array()?.iter().filter_map(|t| t.get("name")?.as_str()).collect();
    if names.contains(&"search") && !names.iter().any(|n| n.starts_with("weather")) {
        return Some("search".into());
    }
    names.iter().find(|n| n.starts_with("weather") && n.ends_with("search")).map(|n| n.to_string())
}

/// Opens one session on `url` and finds the weather search tool's name there.
pub async fn discover_tool(url: &str, bearer: Option<String>) -> anyhow::Result<String> {
    let mut conn = Conn::new(Endpoint::parse(url)?, REQUEST_TIMEOUT);
    let s = conn.open_session(bearer).await?;
    let list = conn.request(&s, "tools/list", json!({})).await?;
    let _ = conn.delete(&s).await;
    pick_tool(&list).ok_or_else(|| anyhow::anyhow!("{url}: no weather search tool in {list}"))
}

/// The params of one request of `method`.
pub fn params(method: Method, tool: &str) -> Value {
    match method {
        Method::Call => json!({"name": tool, "arguments": {"query": "bench"}}),
        Method::List => json!({}),
    }
}

/// Runs `clients` clients against `target` for `warmup + measure`, recording only requests that
/// start after the warm-up. Returns the statistics and the first error seen.
pub async fn run_cell(
    target: &Target,
    method: Method,
    clients: usize,
    bearer: Option<String>,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<(CellStats, Option<String>)> {
    let endpoint = Endpoint::parse(&target.url)?;
    let mut opened = Vec::new();
    for _ in 0..clients {
        let mut c = Conn::new(endpoint.clone(), REQUEST_TIMEOUT);
        let s = c.open_session(bearer.clone()).await?;
        opened.push((c, s));
    }
    let p = params(method, &target.tool);
    let start = Instant::now() + Duration::from_millis(5);
    let from = start + warmup;
    let until = from + measure;
    let samples = Rc::new(RefCell::new(Vec::<u64>::new()));
    let errors = Rc::new(RefCell::new((0u64, None::<String>)));
    let local = tokio::task::LocalSet::new();
    let cpu_task = target.pid.map(|pid| {
        local.spawn_local(async move {
            tokio::time::sleep_until(from.into()).await;
            let a = procfs::cpu_ms(pid).ok();
            tokio::time::sleep_until(until.into()).await;
            let b = procfs::cpu_ms(pid).ok();
            a.zip(b).map(|(a, b)| b - a)
        })
    });
    let mut handles = Vec::new();
    for (mut conn, session) in opened {
        let (samples, errors, p) = (samples.clone(), errors.clone(), p.clone());
        handles.push(local.spawn_local(async move {
            tokio::time::sleep_until(start.into()).await;
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                let r = conn.request(&session, method.name(), p.clone()).await;
                let t1 = Instant::now();
                if t0 < from || t1 > until {
                    continue;
                }
                match r {
                    Ok(_) => samples.borrow_mut().push((t1 - t0).as_micros() as u64),
                    Err(e) => {
                        let mut e2 = errors.borrow_mut();
                        e2.0 += 1;
                        e2.1.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (conn, session)
        }));
    }
    let (cpu, conns) = local
        .run_until(async {
            let mut conns = Vec::new();
            for h in handles {
                conns.push(h.await?);
            }
            let cpu = match cpu_task {
                Some(t) => t.await?,
                None => None,
            };
            anyhow::Ok((cpu, conns))
        })
        .await?;
    for (mut conn, session) in conns {
        let _ = conn.delete(&session).await;
    }
    let micros = std::mem::take(&mut *samples.borrow_mut());
    let (n_err, first) = errors.borrow().clone();
    Ok((summarize(micros, n_err, measure.as_secs_f64(), cpu), first))
}

/// Convenience for callers that only need a one-off request.
pub async fn one_call(
    conn: &mut Conn,
    session: &Session,
    method: Method,
    tool: &str,
) -> Result<Value, McpError> {
    conn.request(session, method.name(), params(method, tool)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Value {
        json!({"tools": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()})
    }

    #[test]
    fn picks_the_weather_search_tool_under_any_prefix() {
        assert_eq!(pick_tool(&list(&["forecast", "search", "slow_report"])).unwrap(), "search");
        assert_eq!(
            pick_tool(&list(&["notes_search", "weather_search", "weather_forecast"])).unwrap(),
            "weather_search"
        );
        assert_eq!(
            pick_tool(&list(&["weather.search", "notes.search"])).unwrap(),
            "weather.search"
        );
        assert!(pick_tool(&list(&["notes_search"])).is_none());
        assert!(pick_tool(&json!({})).is_none());
    }

    #[test]
    fn params_name_the_tool() {
        assert_eq!(params(Method::Call, "t")["name"], "t");
        assert_eq!(params(Method::List, "t"), json!({}));
    }
}
