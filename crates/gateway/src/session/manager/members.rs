//! A session's member backends on this replica: connecting them with the live identity (I1),
//! storing changed hints (I7), backing off and retrying failed members (I3, F4), and the
//! messages backends send on their own (notifications, requests to the client).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use super::SessionManager;
use crate::auth::Identity;
use crate::backend::{BackendError, BackendEvent, Connection};
use crate::metrics::BackendLabel;
use crate::session::Session;
use crate::session::slot::{Slot, SlotStatus};

/// How long a backend request to the client waits for the answer when the backend is no
/// longer a member (its own timeout applies otherwise).
const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(30);

impl SessionManager {
    /// Connects every due member concurrently; waits at most the init deadline. Connections
    /// still in progress then finish in the background and announce themselves with
    /// `list_changed`.
    pub(super) async fn connect_all(self: &Arc<Self>, session: &Arc<Session>, identity: &Identity) {
        let mut tasks = tokio::task::JoinSet::new();
        for slot in session.slots().into_iter().filter(|s| s.due()) {
            let me = self.clone();
            let s = session.clone();
            let ident = identity.clone();
            tasks.spawn(async move { me.connect_slot(&s, &slot, &ident, false).await });
        }
        let deadline = tokio::time::sleep(self.settings.init_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = tasks.join_next() => if r.is_none() { break },
                () = &mut deadline => {
                    tracing::warn!(session = %session.id, "backend initialization deadline reached; continuing without the slow backends");
                    // Let the remaining connects finish in the background.
                    let me = self.clone();
                    let s = session.clone();
                    tokio::spawn(async move {
                        while tasks.join_next().await.is_some() {}
                        s.rebuild_view(&me.backends());
                        s.announce_lists_changed();
                    });
                    break;
                }
            }
        }
        session.rebuild_view(&self.backends());
    }

    /// Connects one member with the live identity; records a changed backend session hint;
    /// when `announce`, rebuilds the view and tells the client its lists changed.
    pub async fn connect_slot(
        self: &Arc<Self>,
        session: &Arc<Session>,
        slot: &Arc<Slot>,
        identity: &Identity,
        announce: bool,
    ) -> Result<Arc<Connection>, BackendError> {
        // F4: a member that just failed is not retried on every request: the error comes at
        // once until its backoff ends (the background retry or a later request reconnects it).
        if let Some(left) = slot.backing_off() {
            return Err(BackendError::Unreachable(format!(
                "unavailable; retried in {} ms",
                left.as_millis()
            )));
        }
        let caps_before = slot.capabilities();
        let connected = match slot.ensure(identity, &self.http, session.link()).await {
            Ok(c) => c,
            Err(e) => {
                self.schedule_retry(session, slot);
                return Err(e);
            }
        };
        if connected.reinitialized {
            self.metrics
                .backend_reinit
                .get_or_create(&BackendLabel { backend: slot.def.name.to_string() })
                .inc();
        }
        // A stateless client's context has no record to hold hints.
        if let Some(hint) = connected.new_hint
            && !session.is_stateless_context()
        {
            let store = self.store.clone();
            let (id, name) = (session.id.clone(), slot.def.name.clone());
            if let Err(e) =
                self.timed("set_hint", store.set_hint(&id, &name, hint.as_deref())).await
            {
                tracing::warn!(session = %id, backend = %name, error = %e, "could not store the backend session hint");
            }
        }
        let caps_changed = match (&caps_before, slot.capabilities()) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, &b),
            (None, None) => false,
            _ => true,
        };
        if announce && caps_changed {
            session.rebuild_view(&self.backends());
            session.announce_lists_changed();
        }
        Ok(connected.conn)
    }

    /// Keeps retrying, with the slot's backoff, a member whose credential does not depend on
    /// the caller (members that need the caller's token are retried on the session's next
    /// request instead, with that request's identity: I1). Stops when the session or the
    /// membership goes away.
    pub(super) fn schedule_retry(self: &Arc<Self>, session: &Arc<Session>, slot: &Arc<Slot>) {
        use std::sync::atomic::Ordering::SeqCst;
        if slot.def.credentials.needs_identity() || slot.retrying.swap(true, SeqCst) {
            return;
        }
        let me = Arc::downgrade(self);
        let weak = Arc::downgrade(session);
        let slot = slot.clone();
        tokio::spawn(async move {
            loop {
                let wait = match slot.status() {
                    SlotStatus::Unavailable { retry_at, .. } => {
                        retry_at.saturating_duration_since(Instant::now())
                    }
                    _ => Duration::from_secs(1),
                };
                tokio::time::sleep(wait).await;
                let (Some(m), Some(s)) = (me.upgrade(), weak.upgrade()) else { break };
                if !s.slot(&slot.def.name).is_some_and(|x| Arc::ptr_eq(&x, &slot)) {
                    break;
                }
                if slot.ensure(&Identity::Anonymous, &m.http, s.link()).await.is_ok() {
                    tracing::info!(session = %s.id, backend = %slot.def.name, "backend is back; its capabilities join the session");
                    s.rebuild_view(&m.backends());
                    s.announce_lists_changed();
                    break;
                }
            }
            slot.retrying.store(false, SeqCst);
        });
    }

    /// Starts background connection attempts for members that are due (failed earlier and
    /// past their backoff), with the identity of the request being served (I1).
    pub fn retry_due(self: &Arc<Self>, session: &Arc<Session>, identity: &Identity) {
        for slot in session.slots() {
            if !matches!(slot.status(), SlotStatus::Available) && slot.due() {
                let me = self.clone();
                let s = session.clone();
                let ident = identity.clone();
                tokio::spawn(async move {
                    let _ = me.connect_slot(&s, &slot, &ident, true).await;
                });
            }
        }
    }
}

/// Handles messages backends send on their own: list changes refresh that member's
/// capabilities (when it needs no caller identity) and reach the client; other notifications
/// are forwarded to the client's stream.
pub(in crate::session) async fn dispatch_events(
    manager: Weak<SessionManager>,
    session: Weak<Session>,
    mut rx: mpsc::Receiver<BackendEvent>,
) {
    while let Some(event) = rx.recv().await {
        let (Some(m), Some(s)) = (manager.upgrade(), session.upgrade()) else { return };
        if event.reply.is_some() {
            // A request to the client: relayed without holding up the session's other events.
            let timeout = s.slot(&event.backend).map_or(DEFAULT_ASK_TIMEOUT, |x| x.def.timeout);
            tokio::spawn(async move { crate::session::asks::relay(&s, event, timeout).await });
            continue;
        }
        let (backend, msg) = (event.backend, event.message);
        let method = msg.get("method").and_then(Value::as_str).unwrap_or_default().to_owned();
        if method.ends_with("/list_changed") {
            if let Some(slot) = s.slot(&backend) {
                slot.mark_stale();
                if !slot.def.credentials.needs_identity() {
                    let _ = slot.ensure(&Identity::Anonymous, &m.http, s.link()).await;
                    s.rebuild_view(&m.backends());
                }
            }
            s.outbox.send(msg);
        } else {
            s.outbox.send(msg);
        }
    }
}
