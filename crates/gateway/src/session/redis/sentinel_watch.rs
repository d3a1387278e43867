//! Following a Sentinel failover as the sentinels announce it.
//!
//! Two gaps of a client that only asks the sentinels where the master is when it reconnects:
//!
//! - **Lost acknowledged writes.** In a failover whose old master still runs (a failover on
//!   request, `SENTINEL FAILOVER`, as Redis charts run in a pre-stop hook; or a second failover
//!   after a sentinel missed the new master's answers), the old master goes on accepting writes
//!   after a replica was promoted, and a replica that still follows it acknowledges them
//!   (`WAIT`) until the sentinels point it at the new master, which then discards them. So
//!   while any sentinel reports a failover of the service in progress (`+try-failover` up to
//!   `+switch-master` and the store's reconnection, or the sentinel's `-failover-abort-…`), the
//!   store acknowledges no write: the [`FailoverFence`] turns them into "store unavailable"
//!   (HTTP 503), and a write whose `WAIT` was under way when a failover began is not
//!   acknowledged either.
//! - **A demoted master keeps its clients.** It is converted into a replica only when the
//!   sentinels next look at it, about 10 s later; until then every write there fails. On
//!   `+switch-master <service> <old ip> <old port> <new ip> <new port>` the store's connections
//!   reconnect, and so ask the sentinels again.
//!
//! One subscription per sentinel. Best effort: a sentinel that cannot be reached (or that
//! requires a password) is retried in the background; without its notices the store still
//! follows the master once its connection breaks. A fence is lifted after [`FENCE_MAX`] even
//! when no end of the failover was heard.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::clients::{Client, SubscriberClient};
use fred::prelude::{ClientLike, EventInterface, PubsubInterface, ServerConfig};
use fred::types::Builder;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::connection::COMMAND_TIMEOUT;
use crate::session::store::StoreError;

/// The longest a failover keeps writes from being acknowledged when its end is never heard.
pub(super) const FENCE_MAX: Duration = Duration::from_secs(60);

/// The events of a failover up to the new master's announcement: from the first until the
/// replicas are pointed at the new master, one that still follows the old master may
/// acknowledge writes the new master will not have. (The leader's later steps, reconfiguring
/// the replicas, can come after the other sentinels already announced the switch; by then the
/// store writes to the new master, so they do not raise the fence.)
const FAILOVER_STEPS: &[&str] = &[
    "+try-failover",
    "+elected-leader",
    "+failover-state-select-slave",
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
    "+failover-state-wait-promotion",
    "+promoted-slave",
    "+failover-state-reconf-slaves",
];
/// The event announcing a failover's result.
const SWITCH_MASTER: &str = "+switch-master";
/// The prefix of the events announcing that a sentinel gave up its failover.
const FAILOVER_ABORT: &str = "-failover-abort";

/// What a sentinel's event means for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Notice {
    /// This sentinel is failing the service's master over.
    FailoverInProgress,
    /// This sentinel gave its failover up.
    FailoverAborted,
    /// The service's master is now `ip:port`.
    SwitchedTo(String),
}

/// The meaning of the event on `channel` with `text` for `service`, if it concerns it.
///
/// Texts: `+switch-master <name> <old ip> <old port> <new ip> <new port>`; events about a master
/// `master <name> <ip> <port> …`; about a replica or sentinel `<type> <id> <ip> <port> @ <name>
/// <master ip> <master port>`.
fn classify(channel: &str, text: &str, service: &str) -> Option<Notice> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if channel == SWITCH_MASTER {
        return match fields.as_slice() {
            [name, _, _, ip, port] if *name == service => {
                Some(Notice::SwitchedTo(format!("{ip}:{port}")))
            }
            _ => None,
        };
    }
    let name = match fields.iter().position(|f| *f == "@") {
        Some(at) => fields.get(at + 1),
        None if fields.first() == Some(&"master") => fields.get(1),
        None => None,
    };
    if name != Some(&service) {
        return None;
    }
    if FAILOVER_STEPS.contains(&channel) {
        Some(Notice::FailoverInProgress)
    } else if channel.starts_with(FAILOVER_ABORT) {
        Some(Notice::FailoverAborted)
    } else {
        None
    }
}

/// Which sentinels report a failover in progress, since when; writes are acknowledged only
/// while none does (for at most [`FENCE_MAX`] each).
#[derive(Debug, Default)]
pub(super) struct FailoverFence {
    in_progress: Mutex<HashMap<usize, Instant>>,
    /// Incremented each time a failover begins.
    epoch: AtomicU64,
}

impl FailoverFence {
    fn begin(&self, sentinel: usize) {
        let mut in_progress = self.in_progress.lock();
        if in_progress.insert(sentinel, Instant::now()).is_none() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn abort(&self, sentinel: usize) {
        self.in_progress.lock().remove(&sentinel);
    }

    fn end(&self) {
        self.in_progress.lock().clear();
    }

    fn raised(&self) -> bool {
        self.in_progress.lock().values().any(|since| since.elapsed() < FENCE_MAX)
    }

    /// Before a write is waited for: the current epoch, or `Unavailable` while a failover is
    /// in progress.
    pub(super) fn enter(&self, op: &str) -> Result<u64, StoreError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if self.raised() {
            return Err(unacknowledged(op));
        }
        Ok(epoch)
    }

    /// After the write's `WAIT`: `Unavailable` when a failover began since [`Self::enter`].
    pub(super) fn leave(&self, op: &str, entered: u64) -> Result<(), StoreError> {
        if self.epoch.load(Ordering::Acquire) != entered || self.raised() {
            return Err(unacknowledged(op));
        }
        Ok(())
    }
}

fn unacknowledged(op: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "redis {op}: a Sentinel failover is in progress; the write is not acknowledged until it ends"
    ))
}

/// The store's connections, which follow the master.
#[derive(Clone)]
pub(super) struct StoreConnections {
    /// Commands.
    pub(super) commands: Client,
    /// The termination feed.
    pub(super) feed: SubscriberClient,
}

impl StoreConnections {
    async fn reconnect(&self) {
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.commands.force_reconnection()).await;
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.feed.force_reconnection()).await;
    }
}

/// The subscriptions to the sentinels and the tasks that act on their events.
#[derive(Debug, Default)]
pub(super) struct SentinelWatch {
    clients: Vec<SubscriberClient>,
    tasks: Vec<JoinHandle<()>>,
}

impl SentinelWatch {
    /// For a Sentinel configuration in `builder`: subscribes to every sentinel's events (in the
    /// background), keeps `fence` raised while a failover of the configured service is in
    /// progress, and reconnects the `store`'s connections when its master moves. Nothing for
    /// other configurations.
    pub(super) fn start(
        builder: &Builder,
        store: StoreConnections,
        fence: Arc<FailoverFence>,
    ) -> Self {
        let Some(config) = builder.get_config() else { return Self::default() };
        let ServerConfig::Sentinel { hosts, service_name, .. } = &config.server else {
            return Self::default();
        };
        let (tx, rx) = mpsc::channel::<String>(16);
        let mut watch = Self::default();
        for (index, host) in hosts.iter().enumerate() {
            let mut sentinel = config.clone();
            sentinel.server = ServerConfig::Centralized { server: host.clone() };
            // Sentinels have no databases, and the data nodes' password is not theirs.
            sentinel.database = None;
            sentinel.password = None;
            sentinel.username = None;
            // A sentinel that is down now is retried in the background; it must not stop the
            // gateway from starting.
            sentinel.fail_fast = false;
            let mut b = Builder::from_config(sentinel);
            if let Some(policy) = builder.get_policy() {
                b.set_policy(policy.clone());
            }
            b.set_connection_config(builder.get_connection_config().clone());
            let client = match b.build_subscriber_client() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(sentinel = %host, error = %e, "cannot watch this redis sentinel for failovers");
                    continue;
                }
            };
            watch.tasks.push(client.manage_subscriptions());
            let listener = Listener {
                client: client.clone(),
                index,
                service: service_name.clone(),
                fence: fence.clone(),
                switched: tx.clone(),
            };
            watch.tasks.push(tokio::spawn(listener.run()));
            watch.clients.push(client);
        }
        watch.tasks.push(tokio::spawn(reconnect_on_switch(rx, store, fence)));
        watch
    }

    /// Stops listening (the subscriptions are closed in the background).
    pub(super) fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            for c in self.clients.clone() {
                rt.spawn(async move {
                    let _ = c.quit().await;
                });
            }
        }
    }
}

/// One sentinel's subscription.
struct Listener {
    client: SubscriberClient,
    index: usize,
    service: String,
    fence: Arc<FailoverFence>,
    switched: mpsc::Sender<String>,
}

impl Listener {
    /// Connects, subscribes to the failover events (again after each reconnect) and acts on
    /// those about the service.
    async fn run(self) {
        let mut messages = self.client.message_rx();
        if let Err(e) = self.client.init().await {
            tracing::warn!(error = %e, "cannot watch a redis sentinel for failovers");
            return;
        }
        let channels: Vec<&str> = FAILOVER_STEPS.iter().copied().chain([SWITCH_MASTER]).collect();
        if let Err(e) = self.client.subscribe(channels).await {
            tracing::warn!(error = %e, "cannot subscribe to a redis sentinel's failover events");
        }
        if let Err(e) = self.client.psubscribe(format!("{FAILOVER_ABORT}*")).await {
            tracing::warn!(error = %e, "cannot subscribe to a redis sentinel's failover events");
        }
        while let Ok(message) = messages.recv().await {
            let Some(text) = message.value.as_string() else { continue };
            let notice = classify(&message.channel, &text, &self.service);
            match notice {
                Some(Notice::FailoverInProgress) => {
                    if !self.fence.raised() {
                        tracing::warn!(event = %message.channel, "redis sentinel failover in progress; session writes are not acknowledged until it ends");
                    }
                    self.fence.begin(self.index);
                }
                Some(Notice::FailoverAborted) => self.fence.abort(self.index),
                Some(Notice::SwitchedTo(_)) | None => {}
            }
            if let Some(Notice::SwitchedTo(to)) = notice
                && self.switched.send(to).await.is_err()
            {
                return;
            }
        }
    }
}

/// Reconnects the store once per new master address (each sentinel announces it), and only
/// then lifts the fence: a write acknowledged after that went to the new master.
async fn reconnect_on_switch(
    mut rx: mpsc::Receiver<String>,
    store: StoreConnections,
    fence: Arc<FailoverFence>,
) {
    let mut current: Option<String> = None;
    while let Some(to) = rx.recv().await {
        if current.as_deref() != Some(to.as_str()) {
            tracing::info!(master = %to, "redis sentinels switched the session store's master; reconnecting");
            current = Some(to);
            store.reconnect().await;
        }
        fence.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "vmcp-primary";

    #[test]
    fn a_switch_of_the_service_names_the_new_master() {
        assert_eq!(
            classify(SWITCH_MASTER, "vmcp-primary 127.0.0.1 6379 10.0.0.7 6380", S),
            Some(Notice::SwitchedTo("10.0.0.7:6380".into()))
        );
        assert_eq!(classify(SWITCH_MASTER, "other 127.0.0.1 6379 10.0.0.7 6380", S), None);
        assert_eq!(classify(SWITCH_MASTER, "vmcp-primary 127.0.0.1 6379", S), None);
    }

    #[test]
    fn failover_steps_about_the_service_raise_the_fence_and_aborts_lower_it() {
        let master = "master vmcp-primary 127.0.0.1 6379";
        let replica = "slave 127.0.0.1:6380 127.0.0.1 6380 @ vmcp-primary 127.0.0.1 6379";
        assert_eq!(classify("+try-failover", master, S), Some(Notice::FailoverInProgress));
        assert_eq!(classify("+selected-slave", replica, S), Some(Notice::FailoverInProgress));
        assert_eq!(
            classify("-failover-abort-not-elected", master, S),
            Some(Notice::FailoverAborted)
        );
        assert_eq!(classify("+try-failover", "master other 127.0.0.1 6379", S), None);
        assert_eq!(classify("+sdown", master, S), None);
        assert_eq!(classify("+slave-reconf-inprog", replica, S), None, "after the switch");
        assert_eq!(classify("+selected-slave", "slave 127.0.0.1:6380 127.0.0.1 6380", S), None);
    }

    #[test]
    fn the_fence_refuses_acknowledgements_while_any_sentinel_fails_over() {
        let fence = FailoverFence::default();
        let before = fence.enter("create").unwrap();
        fence.begin(0);
        assert!(fence.leave("create", before).is_err(), "a failover began during the WAIT");
        assert!(fence.enter("create").is_err());
        fence.begin(1);
        fence.abort(0);
        assert!(fence.enter("create").is_err(), "sentinel 1 still fails over");
        fence.end();
        let after = fence.enter("create").unwrap();
        assert!(fence.leave("create", after).is_ok());
    }
}
