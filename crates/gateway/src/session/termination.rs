//! The termination feed (I5): a DELETE on any replica ends the session on this one within a
//! second. Ids published on Redis pub/sub are forgotten here; while the subscription is down,
//! cached sessions are checked against the store on every request; and whenever ids may have
//! been missed (the subscription came back, or this receiver lagged), every cached session is
//! checked against the store once. The same feed carries client answers to backend requests
//! that reached a replica other than the one holding the call.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::SessionManager;
use super::manager::TerminationFeedProbe;
use super::redis::RedisStore;

/// How often the feed's epoch is compared (a restored subscription triggers a full check).
const EPOCH_CHECK_EVERY: Duration = Duration::from_millis(500);

/// How long to wait before checking cached sessions again after the store did not answer.
const VERIFY_RETRY: Duration = Duration::from_secs(1);

/// Connects `manager` to the termination feed of `redis`; runs until the manager is dropped.
pub fn follow(manager: &Arc<SessionManager>, redis: Arc<RedisStore>) {
    let probe = redis.clone();
    manager
        .set_termination_feed(TerminationFeedProbe(Arc::new(move || probe.subscription_healthy())));
    let mut rx = redis.subscribe_terminations();
    manager.set_answer_relay(redis.clone());
    let mut answers = redis.subscribe_answers();
    let weak = Arc::downgrade(manager);
    tokio::spawn(async move {
        let mut epoch = redis.feed_epoch();
        let mut tick = tokio::time::interval(EPOCH_CHECK_EVERY);
        loop {
            let missed = tokio::select! {
                r = rx.recv() => match r {
                    Ok(id) => {
                        let Some(m) = weak.upgrade() else { return };
                        m.forget(&id);
                        false
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "termination notices missed; checking cached sessions");
                        true
                    }
                    Err(RecvError::Closed) => return,
                },
                a = answers.recv() => {
                    // A client's answer that reached another replica (documented in asks.rs).
                    if let Ok(a) = a
                        && let Some((sid, json)) = a.split_once(' ')
                        && let Ok(message) = serde_json::from_str(json)
                    {
                        let Some(m) = weak.upgrade() else { return };
                        m.take_relayed_answer(sid, message);
                    }
                    false
                }
                _ = tick.tick() => {
                    let now = redis.feed_epoch();
                    std::mem::replace(&mut epoch, now) != now
                }
            };
            if missed {
                let Some(m) = weak.upgrade() else { return };
                m.mark_feed_unverified();
                // Until every cached session got an answer, requests check the store.
                while !m.verify_cached().await {
                    tokio::time::sleep(VERIFY_RETRY).await;
                }
            }
        }
    });
}
