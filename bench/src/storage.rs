//! Redis bytes per session: create sessions, then read the new keys' `MEMORY USAGE`, the
//! `DBSIZE` growth and the `used_memory` growth.

use std::collections::HashSet;
use std::time::Duration;

use crate::load::REQUEST_TIMEOUT;
use crate::mcp::{Conn, Endpoint};
use crate::report::RedisRow;
use crate::resp;
use crate::stats::median;

/// Creates `n` sessions on `url` and measures what they added to the Redis at `redis`.
pub async fn bytes_per_session(label: &str, url: &str, redis: &str, n: usize) -> RedisRow {
    let mut row = RedisRow {
        target: label.to_owned(),
        sessions: 0,
        keys_per_session: 0.0,
        memory_usage_median: 0,
        memory_usage_max: 0,
        used_memory_per_session: 0.0,
        error: None,
    };
    if let Err(e) = measure(&mut row, url, redis, n).await {
        row.error = Some(e.to_string());
    }
    row
}

async fn measure(row: &mut RedisRow, url: &str, redis: &str, n: usize) -> anyhow::Result<()> {
    let before: HashSet<String> = resp::scan(redis, "*", usize::MAX).await?.into_iter().collect();
    let used0 = resp::used_memory(redis).await?;
    let mut conn = Conn::new(Endpoint::parse(url)?, REQUEST_TIMEOUT);
    for _ in 0..n {
        conn.open_session(None).await?;
        row.sessions += 1;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used1 = resp::used_memory(redis).await?;
    let new: Vec<String> = resp::scan(redis, "*", usize::MAX)
        .await?
        .into_iter()
        .filter(|k| !before.contains(k))
        .collect();
    let mut sizes = Vec::new();
    for k in new.iter().take(200) {
        sizes.push(resp::int(redis, &["MEMORY", "USAGE", k]).await? as f64);
    }
    let per = row.sessions.max(1) as f64;
    row.keys_per_session = new.len() as f64 / per;
    row.memory_usage_median = median(&sizes) as i64;
    row.memory_usage_max = sizes.iter().copied().fold(0.0, f64::max) as i64;
    row.used_memory_per_session = (used1 - used0) as f64 / per;
    if new.is_empty() {
        row.error = Some("no new Redis keys: sessions are not stored in Redis".into());
    }
    Ok(())
}
