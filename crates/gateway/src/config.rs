//! Loading the gateway configuration, building the backend set from it, and reloading it when
//! the file or a backend's secret file changes (backends added, removed or given a new
//! credential without dropping sessions).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vmcp_types::config::{FieldError, GatewayConfig, load_file};

use crate::auth::outgoing::{self, CredentialFactory};
use crate::backend::BackendDef;
pub use crate::credential_files::{Fingerprint, watched_fingerprint};
use crate::credential_files::{MissingFile, credential_fingerprint};
use crate::session::SessionManager;
use crate::session::manager::BackendSet;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GatewayConfigError {
    /// The file is invalid (every problem listed).
    #[error(transparent)]
    Invalid(#[from] vmcp_types::config::ConfigError),
    /// Backend credentials or URLs could not be prepared (every problem listed).
    #[error("{} backend problem(s):\n{}", .0.len(), .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Backends(Vec<FieldError>),
}

/// When the backends are built: at start-up a missing secret file is an error (unless the
/// bearer token says `waitForFile`); at a reload it only leaves that backend out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildPhase {
    /// The gateway is starting.
    Startup,
    /// The configuration or a secret file changed while running.
    Reload,
}

/// Builds the backend set (credentials resolved) from a validated configuration. A backend
/// whose secret file does not exist (yet) is left out with a log line naming it and the file
/// (see [`BuildPhase`]); it joins at the first reload after the file appears.
pub fn build_backends(
    cfg: &GatewayConfig,
    factory: &dyn CredentialFactory,
    phase: BuildPhase,
) -> Result<BackendSet, GatewayConfigError> {
    let mut defs = Vec::new();
    let mut errors = Vec::new();
    for (i, b) in cfg.backends.iter().enumerate() {
        let url = match url::Url::parse(&b.url) {
            Ok(u) => u,
            Err(e) => {
                errors.push(FieldError::new(format!("backends[{i}].url"), e.to_string()));
                continue;
            }
        };
        // Read before the credential: a file that changes in between is seen as changed at
        // the next check, never the other way round.
        let fingerprint = match credential_fingerprint(&b.auth) {
            Ok(f) => f,
            Err(MissingFile(file)) => {
                let waits = b.auth.bearer_token.as_ref().is_some_and(|t| t.wait_for_file);
                match (phase, waits) {
                    // Building the credential reports the missing file as an error.
                    (BuildPhase::Startup, false) => Default::default(),
                    (_, true) => {
                        tracing::warn!(backend = %b.name, file = %file.display(), "backend left out until its secret file exists");
                        continue;
                    }
                    (BuildPhase::Reload, false) => {
                        tracing::error!(backend = %b.name, file = %file.display(), "backend left out: its secret file does not exist; it joins once the file exists");
                        continue;
                    }
                }
            }
        };
        match outgoing::build(&b.name, &b.auth, factory) {
            Ok(credentials) => defs.push(Arc::new(BackendDef {
                name: Arc::from(b.name.as_str()),
                http1: crate::backend::http1_pool::Pool::for_url(&url),
                url,
                transport: b.transport,
                timeout: b.timeout,
                credentials,
                credential_fingerprint: fingerprint,
                config: b.clone(),
                catalog: Default::default(),
            })),
            Err(e) => errors.push(FieldError::new(
                format!("backends[{i}].auth"),
                format!("backend '{}': {e}", b.name),
            )),
        }
    }
    if errors.is_empty() {
        Ok(BackendSet::new(defs, cfg.aggregation.clone()))
    } else {
        Err(GatewayConfigError::Backends(errors))
    }
}

/// Keeps unchanged backend definitions (same config, same secret file content) so sessions
/// keep their connections; a backend whose secret files changed gets its new definition.
pub fn carry_over(old: &BackendSet, mut new: BackendSet) -> BackendSet {
    for (name, def) in new.defs.iter_mut() {
        if let Some(prev) = old.defs.get(name)
            && prev.config == def.config
            && prev.credential_fingerprint == def.credential_fingerprint
        {
            *def = prev.clone();
        }
    }
    new
}

/// Is `new` (after [`carry_over`]) the same set as `old`: same order, same definitions, same
/// aggregation?
fn unchanged(old: &BackendSet, new: &BackendSet) -> bool {
    old.order == new.order
        && old.aggregation == new.aggregation
        && new.defs.iter().all(|(n, d)| old.defs.get(n).is_some_and(|o| Arc::ptr_eq(o, d)))
}

/// Watches the config file and the secret files its backends read (polling their content
/// every `interval`) and applies backend and aggregation changes. An invalid new file is
/// logged with every problem and ignored. `watched` is the [`watched_fingerprint`] of
/// `initial`, taken before its backends were built.
pub fn spawn_reloader(
    path: PathBuf,
    initial: GatewayConfig,
    watched: Fingerprint,
    manager: Arc<SessionManager>,
    factory: Arc<dyn CredentialFactory>,
    interval: Duration,
) {
    tokio::spawn(async move {
        // Not the file's content now: it may have changed since `initial` was read (the
        // kubelet can update a ConfigMap volume while a starting gateway waits for Redis), so
        // the first check parses the file and applies any difference.
        let mut last = Vec::new();
        let mut current = initial;
        let mut files = watched;
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let Ok(bytes) = tokio::fs::read(&path).await else { continue };
            let now = watched_fingerprint(&current);
            if bytes == last && now == files {
                continue;
            }
            last = bytes;
            match reload(&path, &current, &manager, factory.as_ref()).await {
                Ok((cfg, watched)) => {
                    current = cfg;
                    files = watched;
                }
                Err(e) => {
                    // Tried again when the file or a secret file changes again.
                    files = now;
                    tracing::error!(path = %path.display(), "configuration change rejected; keeping the running configuration:\n{e}")
                }
            }
        }
    });
}

async fn reload(
    path: &Path,
    current: &GatewayConfig,
    manager: &Arc<SessionManager>,
    factory: &dyn CredentialFactory,
) -> Result<(GatewayConfig, Fingerprint), GatewayConfigError> {
    let cfg = load_file(path)?;
    // Before the credentials are read: a file changing meanwhile is seen at the next check.
    let watched = watched_fingerprint(&cfg);
    let restart_only = |c: &GatewayConfig| GatewayConfig {
        backends: Vec::new(),
        aggregation: Default::default(),
        ..c.clone()
    };
    if restart_only(&cfg) != restart_only(current) {
        tracing::warn!(
            "configuration changed outside backends/aggregation; those changes apply after a restart"
        );
    }
    let old = manager.backends();
    let set = carry_over(&old, build_backends(&cfg, factory, BuildPhase::Reload)?);
    if unchanged(&old, &set) {
        return Ok((cfg, watched));
    }
    tracing::info!(backends = ?set.order, "configuration reloaded; adjusting sessions in place");
    manager.apply_backends(set).await;
    Ok((cfg, watched))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use vmcp_types::config::{BackendConfig, BearerTokenAuth, OutgoingAuthConfig, SecretSource};

    use super::*;
    use crate::auth::outgoing::{CredentialSource, OutgoingAuthError};

    struct NoExchange;
    impl CredentialFactory for NoExchange {
        fn token_exchange(
            &self,
            _: &str,
            _: &vmcp_types::config::TokenExchangeAuth,
        ) -> Result<Arc<dyn CredentialSource>, OutgoingAuthError> {
            Err(OutgoingAuthError::NoToken)
        }
    }

    fn backend(name: &str, token_file: Option<&Path>, wait_for_file: bool) -> BackendConfig {
        let mut auth = OutgoingAuthConfig::default();
        if let Some(f) = token_file {
            auth.auth_type = vmcp_types::config::OutgoingAuthType::BearerToken;
            auth.bearer_token = Some(BearerTokenAuth {
                token: SecretSource { env: None, file: Some(f.to_owned()) },
                wait_for_file,
            });
        }
        BackendConfig {
            name: name.into(),
            url: format!("http://127.0.0.1:1/{name}"),
            transport: Default::default(),
            timeout: Duration::from_secs(1),
            auth,
        }
    }

    fn config(backends: Vec<BackendConfig>) -> GatewayConfig {
        GatewayConfig { backends, ..GatewayConfig::default() }
    }

    fn names(set: &BackendSet) -> Vec<&str> {
        set.order.iter().map(|n| &**n).collect()
    }

    #[test]
    fn a_missing_secret_file_leaves_its_backend_out_except_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "token-a").unwrap();
        let strict = config(vec![backend("a", Some(&a), false), backend("b", Some(&b), false)]);
        let set = build_backends(&strict, &NoExchange, BuildPhase::Reload).unwrap();
        assert_eq!(names(&set), ["a"]);
        let e = build_backends(&strict, &NoExchange, BuildPhase::Startup).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("backend 'b'") && e.contains(&b.display().to_string()), "{e}");
        let waiting = config(vec![backend("a", Some(&a), false), backend("b", Some(&b), true)]);
        let set = build_backends(&waiting, &NoExchange, BuildPhase::Startup).unwrap();
        assert_eq!(names(&set), ["a"]);
        std::fs::write(&b, "token-b").unwrap();
        let set = build_backends(&waiting, &NoExchange, BuildPhase::Startup).unwrap();
        assert_eq!(names(&set), ["a", "b"]);
    }

    /// A backend whose secret file changed is rebuilt (new credential); the others keep their
    /// definitions, so their sessions keep their connections.
    #[test]
    fn carry_over_keeps_a_definition_only_while_its_secret_content_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "token-a").unwrap();
        std::fs::write(&b, "token-b").unwrap();
        let cfg = config(vec![backend("a", Some(&a), false), backend("b", Some(&b), false)]);
        let build = || build_backends(&cfg, &NoExchange, BuildPhase::Reload).unwrap();
        let old = build();
        let same = carry_over(&old, build());
        assert!(unchanged(&old, &same));
        std::fs::write(&b, "token-b-rotated").unwrap();
        let new = carry_over(&old, build());
        assert!(!unchanged(&old, &new));
        assert!(Arc::ptr_eq(&old.defs["a"], &new.defs["a"]), "a kept its definition");
        assert!(!Arc::ptr_eq(&old.defs["b"], &new.defs["b"]), "b was rebuilt");
        assert_ne!(old.defs["b"].credential_fingerprint, new.defs["b"].credential_fingerprint);
        // The same content again is the same fingerprint: nothing rebuilt.
        let again = carry_over(&new, build());
        assert!(unchanged(&new, &again));
    }

    #[test]
    fn the_watched_fingerprint_sees_a_file_appear_and_change() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let cfg = config(vec![backend("a", Some(&a), true), backend("plain", None, false)]);
        let missing = watched_fingerprint(&cfg);
        assert_eq!(watched_fingerprint(&cfg), missing);
        std::fs::write(&a, "one").unwrap();
        let one = watched_fingerprint(&cfg);
        assert_ne!(one, missing);
        std::fs::write(&a, "two").unwrap();
        assert_ne!(watched_fingerprint(&cfg), one);
    }
}
