//! Membership over time: configuration reloads (I4), re-checks after missed termination
//! notices (I5), and idle eviction.

use std::sync::Arc;
use std::time::Duration;

use super::{BackendSet, SessionManager};
use crate::auth::Identity;
use crate::session::Session;
use crate::session::slot::{Slot, SlotStatus};
use crate::session::store::CasOutcome;

/// Sessions [`SessionManager::apply_backends`] reconciles at once.
pub const RECONCILE_CONCURRENCY: usize = 64;

impl SessionManager {
    /// Termination notices may have been missed: until [`Self::verify_cached`] succeeds,
    /// cached sessions are checked against the store on every request.
    pub fn mark_feed_unverified(&self) {
        self.feed_unverified.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Checks every locally cached session against the store and forgets those whose record
    /// is gone (after termination notices may have been missed: I5). True when every check
    /// got an answer (then cached hits are trusted again).
    pub async fn verify_cached(self: &Arc<Self>) -> bool {
        use futures::StreamExt;
        let ids: Vec<Arc<str>> = self.local.read().keys().cloned().collect();
        let failed = std::sync::atomic::AtomicBool::new(false);
        futures::stream::iter(ids)
            .for_each_concurrent(32, |id| {
                let failed = &failed;
                async move {
                    match self.timed("exists", self.store.exists(&id)).await {
                        Ok(false) => {
                            tracing::info!(session = %id, "session ended on another replica while notices were missed");
                            self.forget(&id);
                        }
                        Ok(true) => {}
                        Err(_) => failed.store(true, std::sync::atomic::Ordering::Relaxed),
                    }
                }
            })
            .await;
        let ok = !failed.load(std::sync::atomic::Ordering::Relaxed);
        if ok {
            self.feed_unverified.store(false, std::sync::atomic::Ordering::Release);
        }
        ok
    }

    /// Replaces the backend set after a config reload and adjusts every local session in place
    /// (I4): new backends join, removed ones leave, the generation is bumped with CAS, and the
    /// client is told its lists changed. No session is closed. Up to
    /// [`RECONCILE_CONCURRENCY`] sessions at once (L7: each may wait up to the init timeout
    /// for joining backends, so one after another a reload could take hours).
    pub async fn apply_backends(self: &Arc<Self>, set: BackendSet) {
        use futures::StreamExt;
        *self.backends.write() = Arc::new(set);
        let sessions: Vec<Arc<Session>> = self.local.read().values().cloned().collect();
        futures::stream::iter(sessions)
            .for_each_concurrent(RECONCILE_CONCURRENCY, |s| async move {
                self.reconcile_membership(&s).await;
            })
            .await;
    }

    /// Aligns a session's members with the configured backends, writing the new membership
    /// with compare-and-set only when the configuration differs. False when the record is gone.
    pub(super) async fn reconcile_membership(self: &Arc<Self>, session: &Arc<Session>) -> bool {
        let set = self.backends();
        let wanted: Vec<String> = set.order.iter().map(|n| n.to_string()).collect();
        let current = session.member_names();
        let changed_defs = session
            .slots()
            .iter()
            .any(|s| set.defs.get(&s.def.name).is_some_and(|d| !Arc::ptr_eq(d, &s.def)));
        if wanted == current && !changed_defs {
            return true;
        }
        let slots: Vec<Arc<Slot>> = set
            .order
            .iter()
            .filter_map(|n| set.defs.get(n))
            .map(|d| match session.slot(&d.name) {
                Some(s) if Arc::ptr_eq(&s.def, d) => s,
                _ => Arc::new(Slot::new(d.clone(), None)),
            })
            .collect();
        let generation = if wanted != current {
            match self
                .timed(
                    "cas_members",
                    self.store.cas_members(&session.id, session.generation(), &wanted),
                )
                .await
            {
                Ok(CasOutcome::Updated(g)) => g,
                Ok(CasOutcome::Conflict(rec)) => {
                    if rec.members == wanted {
                        rec.generation
                    } else {
                        tracing::warn!(session = %session.id, "membership changed concurrently; keeping the stored generation");
                        rec.generation
                    }
                }
                Ok(CasOutcome::Missing) => {
                    self.forget(&session.id);
                    return false;
                }
                Err(e) => {
                    tracing::warn!(session = %session.id, error = %e, "could not store the new membership; will retry on next change");
                    session.generation()
                }
            }
        } else {
            session.generation()
        };
        session.set_members(slots, generation);
        // New members that need no caller identity connect now (bounded by the init
        // deadline); the others connect on the session's next request, with its identity.
        let joining: Vec<_> = session
            .slots()
            .into_iter()
            .filter(|s| {
                matches!(s.status(), SlotStatus::Idle) && !s.def.credentials.needs_identity()
            })
            .map(|slot| {
                let me = self.clone();
                let s = session.clone();
                async move { me.connect_slot(&s, &slot, &Identity::Anonymous, false).await }
            })
            .collect();
        let _ =
            tokio::time::timeout(self.settings.init_timeout, futures::future::join_all(joining))
                .await;
        session.rebuild_view(&set);
        session.announce_lists_changed();
        tracing::info!(session = %session.id, generation, members = ?wanted, "session membership follows the configuration");
        true
    }

    /// Drops local connections of sessions idle longer than the idle timeout (their records
    /// stay; the next request restores them). Runs until the manager is dropped.
    pub fn spawn_idle_sweeper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        // Often enough that a listening client's record is refreshed well within its TTL.
        let every =
            (self.settings.ttl / 3).clamp(Duration::from_millis(200), Duration::from_secs(5));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                let idle = me.settings.idle_timeout.as_millis() as u64;
                let now = me.now_ms();
                let stale: Vec<Arc<str>> = me
                    .local
                    .read()
                    .values()
                    .filter(|s| {
                        now.saturating_sub(s.last_used.load(std::sync::atomic::Ordering::Relaxed))
                            > idle
                            // A client holding its GET stream open is waiting, not idle.
                            && !s.outbox.is_attached()
                    })
                    .map(|s| s.id.clone())
                    .collect();
                for id in stale {
                    tracing::debug!(session = %id, "idle: dropping local connections");
                    me.forget(&id);
                }
                me.sweep_stateless_contexts();
                // A client that only listens on its GET stream keeps its record alive (M1):
                // the TTL refresh is coalesced like a request's.
                let listening: Vec<Arc<Session>> =
                    me.local.read().values().filter(|s| s.outbox.is_attached()).cloned().collect();
                for s in listening {
                    me.touch(&s);
                }
            }
        });
    }
}
