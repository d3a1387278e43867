//! Loading the gateway configuration, building the backend set from it, and reloading it when
//! the file changes (backends added or removed without dropping sessions).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vmcp_types::config::{FieldError, GatewayConfig, load_file};

use crate::auth::outgoing::{self, CredentialFactory};
use crate::backend::BackendDef;
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

/// Builds the backend set (credentials resolved) from a validated configuration.
pub fn build_backends(
    cfg: &GatewayConfig,
    factory: &dyn CredentialFactory,
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
        match outgoing::build(&b.name, &b.auth, factory) {
            Ok(credentials) => defs.push(Arc::new(BackendDef {
                name: Arc::from(b.name.as_str()),
                url,
                transport: b.transport,
                timeout: b.timeout,
                credentials,
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

/// Keeps unchanged backend definitions (same config) so sessions keep their connections.
pub fn carry_over(old: &BackendSet, mut new: BackendSet) -> BackendSet {
    for (name, def) in new.defs.iter_mut() {
        if let Some(prev) = old.defs.get(name)
            && prev.config == def.config
        {
            *def = prev.clone();
        }
    }
    new
}

/// Watches the config file (polling its content every `interval`) and applies backend and
/// aggregation changes. An invalid new file is logged with every problem and ignored.
pub fn spawn_reloader(
    path: PathBuf,
    initial: GatewayConfig,
    manager: Arc<SessionManager>,
    factory: Arc<dyn CredentialFactory>,
    interval: Duration,
) {
    tokio::spawn(async move {
        let mut last = std::fs::read(&path).unwrap_or_default();
        let mut current = initial;
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let Ok(bytes) = tokio::fs::read(&path).await else { continue };
            if bytes == last {
                continue;
            }
            last = bytes;
            match reload(&path, &current, &manager, factory.as_ref()).await {
                Ok(Some(cfg)) => current = cfg,
                Ok(None) => {}
                Err(e) => {
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
) -> Result<Option<GatewayConfig>, GatewayConfigError> {
    let cfg = load_file(path)?;
    if cfg.backends == current.backends && cfg.aggregation == current.aggregation {
        if cfg != *current {
            tracing::warn!(
                "configuration changed outside backends/aggregation; those changes apply after a restart"
            );
        }
        return Ok(Some(cfg));
    }
    let set = carry_over(&manager.backends(), build_backends(&cfg, factory)?);
    tracing::info!(backends = ?set.order, "configuration reloaded; adjusting sessions in place");
    manager.apply_backends(set).await;
    Ok(Some(cfg))
}
