//! The termination feed's connections (I5): the subscriber that copies published ids to
//! receivers, and the task that keeps it subscribed and its health honest with a liveness
//! message every [`CANARY_EVERY`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// Each replica publishes a liveness message on the termination channel this often; the
/// subscription counts as alive only while such messages arrive (an idle subscriber has no
/// reply outstanding, so a connection a NAT dropped silently looks healthy otherwise: M1).
pub(super) const CANARY_EVERY: Duration = Duration::from_secs(1);
/// The subscription is considered dead when no liveness message arrived for this long.
const CANARY_STALE: Duration = Duration::from_secs(3);
/// Liveness messages start with this (session ids are 32 hex digits, so never).
const CANARY: &str = "alive:";
/// Client answers to backend requests relayed between replicas start with this (see
/// [`super::RedisStore::publish_answer`]).
pub(super) const ANSWER: &str = "answer:";
/// Buffer of termination ids per receiver.
pub(super) const TERMINATIONS_CAPACITY: usize = 4096;

/// The termination subscription (I5).
pub(super) struct Subscription {
    pub(super) client: SubscriberClient,
    pub(super) healthy: Arc<AtomicBool>,
    /// Times the subscription came back after being down (see [`RedisStore::feed_epoch`]).
    pub(super) restored: Arc<AtomicU64>,
    pub(super) tx: broadcast::Sender<String>,
    /// Relayed client answers: `<session id> <JSON-RPC response>`.
    pub(super) answers: broadcast::Sender<String>,
    pub(super) tasks: Vec<JoinHandle<()>>,
}

/// When the last liveness message arrived on the subscription.
#[derive(Debug)]
pub(super) struct Liveness {
    start: std::time::Instant,
    last_ms: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Self { start: std::time::Instant::now(), last_ms: AtomicU64::new(0) }
    }
}

impl Liveness {
    fn seen(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Release);
    }

    fn silent_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Acquire)))
    }
}

/// Copies published ids from the subscriber connection to the broadcast channel (liveness
/// messages only mark the subscription alive; relayed client answers go to `answers`).
pub(super) async fn forward_terminations(
    sub: SubscriberClient,
    channel: String,
    tx: broadcast::Sender<String>,
    answers: broadcast::Sender<String>,
    alive: Arc<Liveness>,
) {
    let mut rx = sub.message_rx();
    loop {
        match rx.recv().await {
            Ok(message) => {
                if *message.channel == *channel
                    && let Some(id) = message.value.into_string()
                {
                    if id.starts_with(CANARY) {
                        alive.seen();
                    } else if let Some(answer) = id.strip_prefix(ANSWER) {
                        let _ = answers.send(answer.to_owned());
                    } else {
                        let _ = tx.send(id);
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "session termination notices were dropped");
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// The connections of the termination feed.
pub(super) struct Feed {
    pub(super) sub: SubscriberClient,
    pub(super) publisher: fred::clients::Client,
    pub(super) channel: String,
}

/// Keeps the subscription alive and its health honest: re-subscribes after reconnects,
/// publishes a liveness message every [`CANARY_EVERY`], marks the feed down when none came
/// back for [`CANARY_STALE`] (and forces the subscriber to reconnect), and up again, with a
/// new epoch, when they flow again.
pub(super) async fn keep_subscribed(
    feed: Feed,
    healthy: Arc<AtomicBool>,
    restored: Arc<AtomicU64>,
    alive: Arc<Liveness>,
) {
    let Feed { sub, publisher, channel } = feed;
    let canary = format!("{CANARY}{:032x}", rand::random::<u128>());
    let mut errors = sub.error_rx();
    let mut reconnects = sub.reconnect_rx();
    let mut tick = tokio::time::interval(CANARY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut forced_at: Option<std::time::Instant> = None;
    alive.seen();
    loop {
        tokio::select! {
            e = errors.recv() => {
                if matches!(e, Err(broadcast::error::RecvError::Closed)) {
                    break;
                }
            }
            r = reconnects.recv() => {
                if matches!(r, Err(broadcast::error::RecvError::Closed)) {
                    break;
                }
                if let Err(e) = sub.subscribe(channel.as_str()).await {
                    tracing::warn!(error = %e, "session termination subscription is down");
                }
            }
            _ = tick.tick() => {
                let publish = publisher.publish::<(), _, _>(channel.as_str(), canary.as_str());
                let _ = tokio::time::timeout(CANARY_EVERY, publish).await;
                if alive.silent_for() > CANARY_STALE {
                    if healthy.swap(false, Ordering::AcqRel) {
                        tracing::warn!("session termination feed is silent; checking sessions against the store");
                    }
                    // A silently dead connection is never noticed by the client: replace it.
                    if forced_at.is_none_or(|t| t.elapsed() > 2 * CANARY_STALE) {
                        forced_at = Some(std::time::Instant::now());
                        // The command connection may be just as dead: its timed-out commands
                        // leave nothing pending for the client's own unresponsiveness check.
                        let _ = tokio::time::timeout(CANARY_STALE, publisher.force_reconnection()).await;
                        let _ = tokio::time::timeout(CANARY_STALE, sub.force_reconnection()).await;
                        let _ = tokio::time::timeout(CANARY_STALE, sub.subscribe(channel.as_str())).await;
                    }
                } else if !healthy.swap(true, Ordering::AcqRel) {
                    restored.fetch_add(1, Ordering::AcqRel);
                    tracing::info!("session termination feed restored");
                }
            }
        }
    }
}
