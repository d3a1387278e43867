//! Backend health probes for `/readyz` detail and logs.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::BackendError;
use crate::session::SessionManager;
use crate::session::manager::BackendSet;
use crate::session::slot::Slot;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes every configured backend concurrently. A backend whose credential needs a caller
/// identity is only checked for reachability (any HTTP answer counts); the others get a full
/// `initialize` with their own credential, and the probe session is closed again.
pub async fn probe_all(manager: &Arc<SessionManager>) -> Vec<ProbeResult> {
    let set = manager.backends();
    let probes = set.order.iter().filter_map(|n| set.defs.get(n)).map(|def| {
        let def = def.clone();
        let http = manager.http().clone();
        async move {
            let r = tokio::time::timeout(PROBE_TIMEOUT, async {
                if def.credentials.needs_identity() {
                    return http
                        .get(def.url.clone())
                        .send()
                        .await
                        .map(drop)
                        .map_err(|e| BackendError::from_reqwest(e, PROBE_TIMEOUT));
                }
                // Lists too: the catalog new sessions start from (I8).
                Slot::discover(def.clone(), &http).await
            })
            .await
            .unwrap_or(Err(BackendError::Timeout(PROBE_TIMEOUT)));
            (def.name.clone(), r)
        }
    });
    futures::future::join_all(probes).await
}

/// Closes every backend's call connections that sat unused for the pool's idle timeout
/// (they are otherwise only noticed when the next call to that backend looks for one).
fn close_idle_connections(set: &BackendSet) {
    for def in set.defs.values() {
        if let Some(pool) = &def.http1 {
            pool.close_idle();
        }
    }
}

/// One backend's probe result: `Err` holds why it is unavailable (for logs; only its
/// [`BackendError::kind`] is shown on `/readyz`).
pub type ProbeResult = (Arc<str>, Result<(), BackendError>);

/// How often backends are probed in the background.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// A readiness check of a dependency (e.g. "the session store is connected").
pub type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Backend probe results refreshed in the background, so that `/readyz` (called by every
/// kubelet probe) costs no backend round trip.
pub struct Monitor {
    results: parking_lot::RwLock<Vec<ProbeResult>>,
    store_ready: Option<ReadyCheck>,
    startup_wait: parking_lot::Mutex<Option<StartupWait>>,
}

/// Backends left out at start-up until their secret file exists (`waitForFile`): the gateway
/// is not ready before they joined, or until the grace ended. A pod that starts before the
/// kubelet wrote the file (its Secret got the key after the pod was created) so gets no
/// traffic without that backend; later membership changes never make a ready gateway unready.
#[derive(Debug)]
struct StartupWait {
    names: Vec<Arc<str>>,
    until: std::time::Instant,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").field("results", &self.results).finish_non_exhaustive()
    }
}

impl Monitor {
    /// Starts probing every [`PROBE_INTERVAL`] (first probe right away). `store_ready`, when
    /// given, decides readiness: a gateway whose session store is unreachable is not ready.
    pub fn spawn(manager: Arc<SessionManager>, store_ready: Option<ReadyCheck>) -> Arc<Self> {
        let monitor = Arc::new(Self {
            results: parking_lot::RwLock::new(Vec::new()),
            store_ready,
            startup_wait: parking_lot::Mutex::new(None),
        });
        let weak = Arc::downgrade(&monitor);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_INTERVAL);
            loop {
                tick.tick().await;
                let results = probe_all(&manager).await;
                close_idle_connections(&manager.backends());
                for (name, r) in &results {
                    if let Err(e) = r {
                        tracing::warn!(backend = %name, error = %e, "backend probe failed");
                    }
                }
                let Some(m) = weak.upgrade() else { return };
                *m.results.write() = results;
            }
        });
        monitor
    }

    /// The last probe result of each backend (absent: not probed yet).
    pub fn backends(&self) -> Vec<ProbeResult> {
        self.results.read().clone()
    }

    /// Holds readiness until each of `names` is in the backend set, for at most `grace` (see
    /// [`StartupWait`]).
    pub fn await_at_startup(&self, names: Vec<Arc<str>>, grace: Duration) {
        if !names.is_empty() {
            let until = std::time::Instant::now() + grace;
            *self.startup_wait.lock() = Some(StartupWait { names, until });
        }
    }

    /// The start-up backends `set` still lacks (empty once all joined or the grace ended; the
    /// wait then ends for good).
    pub fn awaited(&self, set: &BackendSet) -> Vec<Arc<str>> {
        let mut wait = self.startup_wait.lock();
        let Some(w) = wait.as_ref() else { return Vec::new() };
        let missing: Vec<Arc<str>> =
            w.names.iter().filter(|n| !set.defs.contains_key(*n)).cloned().collect();
        if missing.is_empty() {
            *wait = None;
        } else if std::time::Instant::now() >= w.until {
            tracing::warn!(backends = ?missing, "ready without backends whose secret file never appeared");
            *wait = None;
            return Vec::new();
        }
        missing
    }

    /// Is the gateway ready to serve (its session store reachable)?
    pub fn ready(&self) -> bool {
        self.store_ready.as_ref().is_none_or(|f| f())
    }
}
