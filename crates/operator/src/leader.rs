//! Leader election with a `coordination.k8s.io/v1` Lease (the client-go protocol, small).
//!
//! kube-runtime 5 has no leader election, so this is a short own loop:
//!
//! - **Acquire**: every `retry_period`, read the Lease. Take it (optimistic concurrency:
//!   `replace` with the read `resourceVersion`, a 409 means someone else won) when it does not
//!   exist, has no holder, is ours, or has not changed for longer than its
//!   `leaseDurationSeconds` *as observed on this replica's monotonic clock* (so clock skew
//!   between nodes does not matter).
//! - **Hold**: renew every `retry_period`. If no renewal succeeded for `renew_deadline`
//!   (shorter than the lease duration), or another holder took the Lease, leadership is lost:
//!   the caller stops the controllers and exits, and the restarted pod becomes a candidate.
//! - **Release**: on graceful shutdown (after the controllers stopped) the holder clears
//!   `holderIdentity` and sets a 1 s duration, so a standby takes over at once.
//!
//! RBAC: `get`, `create`, `update` on `leases` in the Lease's namespace.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

/// Why leadership could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Another replica holds the Lease now, or renewal failed for too long.
    #[error("lost the leader lease {lease}: {reason}")]
    Lost {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What happened.
        reason: String,
    },
}

/// Lease settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (`holderIdentity`).
    pub identity: String,
    /// How long a Lease is valid without renewal (default 15 s).
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before giving up (default 10 s).
    pub renew_deadline: Duration,
    /// Pause between attempts (default 2 s).
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// Defaults with a given name, namespace and identity.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A unique identity: `$POD_NAME` (or the host name) plus a random suffix.
pub fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "vmcp-operator".into());
    format!("{base}-{:08x}", rand::random::<u32>())
}

/// What one attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the Lease (acquired or renewed).
    Held,
    /// Another replica holds a live Lease.
    HeldBy(String),
    /// The write lost a race (409); try again.
    Conflict,
}

/// Can `me` take a Lease whose spec is `spec`, unchanged for `unchanged_for` on our clock?
pub fn can_take(
    spec: &LeaseSpec,
    me: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> bool {
    match spec.holder_identity.as_deref().filter(|h| !h.is_empty()) {
        None => true,
        Some(h) if h == me => true,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_duration, Duration::from_secs);
            unchanged_for > duration
        }
    }
}

/// Runs the election for one replica.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// resourceVersion last seen and when (on our clock) it was first seen.
    observed: Option<(String, Instant)>,
}

impl LeaderElector {
    /// An elector for `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self { api: Api::namespaced(client, &config.namespace), config, observed: None }
    }

    /// `namespace/name` of the Lease.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn spec_now(&self, prev: Option<&LeaseSpec>, taking: bool) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let existed = prev.is_some();
        let prev = prev.cloned().unwrap_or_default();
        let transitions = prev.lease_transitions.unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(15),
            ),
            acquire_time: if taking { Some(now.clone()) } else { prev.acquire_time.clone() },
            renew_time: Some(now),
            // A new holder of an existing Lease is a transition (as in client-go).
            lease_transitions: Some(if taking && existed {
                transitions.saturating_add(1)
            } else {
                transitions
            }),
            ..prev
        }
    }

    /// One acquire-or-renew attempt.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec_now(None, true)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
                Err(e) => Err(e),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let unchanged_for = match &self.observed {
            Some((seen, at)) if *seen == rv => at.elapsed(),
            _ => {
                self.observed = Some((rv, Instant::now()));
                Duration::ZERO
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let me = self.config.identity.as_str();
        if !can_take(&spec, me, unchanged_for, self.config.lease_duration) {
            return Ok(Attempt::HeldBy(spec.holder_identity.unwrap_or_default()));
        }
        let ours = spec.holder_identity.as_deref() == Some(me);
        let updated = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(self.spec_now(Some(&spec), !ours)),
        };
        match self.api.replace(&self.config.name, &PostParams::default(), &updated).await {
            Ok(l) => {
                self.observed = l.metadata.resource_version.map(|rv| (rv, Instant::now()));
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease (`true`) or `shutdown` resolves (`false`).
    pub async fn acquire(&mut self, shutdown: impl Future<Output = ()>) -> bool {
        tokio::pin!(shutdown);
        let mut last_holder = String::new();
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => {
                    tracing::info!(lease = %self.lease(), identity = %self.config.identity, "acquired leadership");
                    return true;
                }
                Ok(Attempt::HeldBy(h)) if h != last_holder => {
                    tracing::info!(lease = %self.lease(), holder = %h, "waiting for leadership");
                    last_holder = h;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.lease(), error = %e, "cannot read or take the lease")
                }
            }
            tokio::select! {
                () = &mut shutdown => return false,
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
    }

    /// Renews until `stop` resolves (then releases the Lease and returns `Ok`) or leadership
    /// is lost (`Err`).
    pub async fn hold(mut self, stop: impl Future<Output = ()>) -> Result<(), LeaderError> {
        tokio::pin!(stop);
        let mut last_renew = Instant::now();
        loop {
            tokio::select! {
                () = &mut stop => {
                    self.release().await;
                    return Ok(());
                }
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => last_renew = Instant::now(),
                Ok(Attempt::HeldBy(h)) => {
                    return Err(LeaderError::Lost {
                        lease: self.lease(),
                        reason: format!("{h} holds it now"),
                    });
                }
                Ok(Attempt::Conflict) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.lease(), error = %e, "cannot renew the lease")
                }
            }
            if last_renew.elapsed() > self.config.renew_deadline {
                return Err(LeaderError::Lost {
                    lease: self.lease(),
                    reason: format!("no renewal for {:?}", self.config.renew_deadline),
                });
            }
        }
    }

    /// Gives the Lease up if this replica holds it (errors are logged).
    pub async fn release(&self) {
        let lease = match self.api.get_opt(&self.config.name).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(lease = %self.lease(), error = %e, "cannot release the lease");
                return;
            }
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        let released = Lease { metadata: lease.metadata, spec: Some(spec) };
        match self.api.replace(&self.config.name, &PostParams::default(), &released).await {
            Ok(_) => tracing::info!(lease = %self.lease(), "released leadership"),
            Err(e) => tracing::warn!(lease = %self.lease(), error = %e, "cannot release the lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, secs: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_duration_seconds: secs,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn take_rules() {
        let d = Duration::from_secs(15);
        assert!(can_take(&spec(None, None), "me", Duration::ZERO, d));
        assert!(can_take(&spec(Some(""), Some(15)), "me", Duration::ZERO, d));
        assert!(can_take(&spec(Some("me"), Some(15)), "me", Duration::ZERO, d));
        assert!(!can_take(&spec(Some("other"), Some(15)), "me", Duration::from_secs(10), d));
        assert!(can_take(&spec(Some("other"), Some(15)), "me", Duration::from_secs(16), d));
        // A released lease (duration 1 s) is taken quickly.
        assert!(can_take(&spec(Some("other"), Some(1)), "me", Duration::from_secs(2), d));
        // Without a duration the default applies.
        assert!(!can_take(&spec(Some("other"), None), "me", Duration::from_secs(14), d));
    }

    #[test]
    fn identities_are_unique() {
        assert_ne!(default_identity(), default_identity());
    }
}
