//! Restore: a session held only in the store is re-established on this replica with the live
//! request's identity (I1, I2), single-flight per id, published only once connected (F1).

use std::sync::Arc;
use std::time::Instant;

use super::super::store::StoreError;
use super::{SessionError, SessionManager};
use crate::auth::{Binding, Identity};
use crate::backend::BackendDef;
use crate::metrics::Outcome;
use crate::session::Session;
use crate::session::record::SCHEMA_VERSION;
use crate::session::slot::Slot;

impl SessionManager {
    /// Restore (single-flight per id on this replica).
    pub(super) async fn restore(
        self: &Arc<Self>,
        id: &str,
        identity: &Identity,
    ) -> Result<Arc<Session>, SessionError> {
        let lock = {
            let mut r = self.restoring.lock();
            r.entry(Arc::from(id)).or_insert_with(|| Arc::new(tokio::sync::Mutex::new(()))).clone()
        };
        // Removes the entry however this request ends (a cancelled request included).
        let _entry = RestoringEntry { manager: self, id };
        let _guard = lock.lock().await;
        if let Some(s) = self.local.read().get(id).cloned() {
            return Ok(s);
        }
        let start = Instant::now();
        let result = self.restore_inner(id, identity).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(SessionError::NotFound) => "not_found",
            Err(SessionError::AuthRequired) => "auth_required",
            Err(SessionError::Store(_)) => "store_error",
        };
        self.metrics.restores.get_or_create(&Outcome { outcome: outcome.into() }).inc();
        self.metrics.restore_seconds.observe(start.elapsed().as_secs_f64());
        result
    }

    async fn restore_inner(
        self: &Arc<Self>,
        id: &str,
        identity: &Identity,
    ) -> Result<Arc<Session>, SessionError> {
        let record = match self.timed("load", self.store.load(id)).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(SessionError::NotFound),
            // A record this gateway cannot read (written by a newer gateway, or damaged) can
            // never be restored here: unknown, so the client starts a new session, rather than
            // 503 on every retry (L8).
            Err(StoreError::Corrupt { reason, .. }) => {
                tracing::warn!(session = %id, %reason, "stored session cannot be restored by this gateway");
                return Err(SessionError::NotFound);
            }
            Err(e) => return Err(e.into()),
        };
        if record.v > SCHEMA_VERSION {
            tracing::warn!(session = %id, version = record.v, "session record written by a newer gateway; not restoring");
            return Err(SessionError::NotFound);
        }
        let binding = Binding::from_stored(record.binding.clone());
        if !binding.matches(&identity.binding()) {
            return Err(self.reject_foreign(id, identity));
        }
        let set = self.backends();
        let slots: Vec<Arc<Slot>> = record
            .members
            .iter()
            .filter_map(|m| set.defs.get(m.as_str()))
            .map(|d| member(d, record.hints.get(d.name.as_ref()).cloned()))
            .collect();
        // I1: a restored session is re-established with the live request's identity; a member
        // that needs a token cannot be served to an anonymous request.
        if matches!(identity, Identity::Anonymous)
            && slots.iter().any(|s| s.def.credentials.needs_identity())
        {
            return Err(SessionError::AuthRequired);
        }
        let side = super::super::ClientSide {
            binding,
            protocol_version: record.protocol_version.clone(),
            capabilities: super::super::asks::relayed_capabilities(&record.client),
        };
        let session = self.build(Arc::from(id), side, record.generation, slots);
        tracing::info!(session = %id, subject = identity.subject(), members = record.members.len(), "restoring session from the store");
        self.connect_all(&session, identity).await;
        // I3: restore never writes membership; only hints changed by connect_slot were written.
        // I4: if the configuration changed since the record was written, adjust by CAS.
        if !self.reconcile_membership(&session).await {
            session.park();
            return Err(SessionError::NotFound);
        }
        // I5: a DELETE on another replica while this restore ran is not missed.
        if !self.timed("exists", self.store.exists(id)).await? {
            session.park();
            return Err(SessionError::NotFound);
        }
        // Published only now: concurrent requests waited on the restore and see the full view.
        self.publish(&session);
        Ok(session)
    }
}

/// A member slot for `def`. A backend that needs no caller identity and whose catalog is
/// fresh starts from the catalog: its backend session opens (or resumes `hint`) on first use,
/// so an idle client session holds nothing on it (I8). Others connect now, with the live
/// identity (I1).
pub(super) fn member(def: &Arc<BackendDef>, hint: Option<String>) -> Arc<Slot> {
    let shared = !def.credentials.needs_identity()
        && def.transport == vmcp_types::config::BackendTransport::StreamableHttp;
    match def.catalog.fresh(crate::session::slot::CATALOG_FRESH).filter(|_| shared) {
        Some(caps) => Arc::new(Slot::preloaded(def.clone(), hint, caps)),
        None => Arc::new(Slot::new(def.clone(), hint)),
    }
}

/// Removes a session id from the single-flight map when the restore that added it ends.
struct RestoringEntry<'a> {
    manager: &'a SessionManager,
    id: &'a str,
}

impl Drop for RestoringEntry<'_> {
    fn drop(&mut self) {
        self.manager.restoring.lock().remove(self.id);
    }
}
