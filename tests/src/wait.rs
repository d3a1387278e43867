//! Waiting for something another process does: [`eventually`].

use std::future::Future;
use std::time::{Duration, Instant};

/// First pause between two polls of [`eventually`]; it doubles up to [`MAX_POLL_INTERVAL`].
pub const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Longest pause between two polls of [`eventually`].
pub const MAX_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Polls `f` until it returns `Some`, and returns that value; panics naming `what` when
/// `timeout` passes first. Polls fast at first (a reconcile or a reload usually lands within
/// milliseconds) and then every half second (so a poll that runs `kubectl` does not load the
/// machine).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut pause = FIRST_POLL_INTERVAL;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_and_backs_off() {
        let start = Instant::now();
        let mut n = 0;
        let v = eventually("the fourth poll", Duration::from_secs(5), || {
            n += 1;
            let found = (n == 4).then_some(n);
            async move { found }
        })
        .await;
        assert_eq!(v, 4);
        // 100 + 200 + 400 ms of pauses (a sleep is never shorter).
        assert!(start.elapsed() >= Duration::from_millis(700), "{:?}", start.elapsed());
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 1s waiting for nothing")]
    async fn panics_naming_what_it_waited_for() {
        eventually("nothing", Duration::from_secs(1), || async { None::<()> }).await;
    }
}
