//! Backend health probes for `/readyz` detail and logs.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Identity;
use crate::backend::{BackendError, Connection};
use crate::session::SessionManager;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes every configured backend concurrently. A backend whose credential needs a caller
/// identity is only checked for reachability (any HTTP answer counts); the others get a full
/// `initialize` with their own credential, and the probe session is closed again.
pub async fn probe_all(manager: &Arc<SessionManager>) -> Vec<(Arc<str>, Result<(), String>)> {
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
                let headers = def.credentials.headers(&Identity::Anonymous).await?;
                let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
                let (conn, _) = Connection::open(def.clone(), http, &headers, None, tx).await?;
                conn.close(&headers).await;
                Ok(())
            })
            .await
            .unwrap_or(Err(BackendError::Timeout(PROBE_TIMEOUT)));
            (def.name.clone(), r.map_err(|e| e.to_string()))
        }
    });
    futures::future::join_all(probes).await
}
