//! `MCPExternalAuthConfig` controller: validates the spec (the sub-object matches the type,
//! required values set, referenced Secrets exist — looked up in the Secret metadata store,
//! values are never read)
//! and reports condition `Valid` and `configHash` (sha256 of the spec).

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use vmcp_types::crd::{
    MCPExternalAuthConfig, MCPExternalAuthConfigSpec, MCPExternalAuthConfigStatus,
};

use super::reflectors::{Stores, Watches};
use super::{
    Context, Error, RefKind, ShutdownSignal, apply_status, error_policy, log_result, namespace,
};
use crate::resources::gateway_config::{auth_secrets, validate_auth_spec};
use crate::resources::sha256_hex;
use crate::status::{self, NewCondition, Status, set_condition, transitioned_to};

const CONTROLLER: &str = "mcpexternalauthconfig";

/// Condition: the spec is usable.
pub const VALID: &str = "Valid";

/// Subscribes to the shared watches; the returned future runs the controller until `shutdown`.
pub(crate) fn run(
    ctx: Arc<Context>,
    w: &mut Watches,
    shutdown: ShutdownSignal,
) -> impl Future<Output = ()> + Send + use<> {
    let c = ctx.clone();
    let controller =
        Controller::for_shared_stream(w.auth_configs.applied(), w.auth_configs.store())
            .with_config(ctx.controller_config())
            .watches_shared_stream(w.secrets.touched(), move |s| {
                let ns = s.namespace().unwrap_or_default();
                c.auth_secrets
                    .referrers(&ns, RefKind::Secret, &s.name_any())
                    .into_iter()
                    .map(|n| ObjectRef::<MCPExternalAuthConfig>::new(&n).within(&ns))
                    .collect::<Vec<_>>()
            })
            .graceful_shutdown_on(shutdown);
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move { log_result(CONTROLLER, r) })
}

/// sha256 (hex) of the spec as JSON: gateways re-render when it changes.
pub fn config_hash(spec: &MCPExternalAuthConfigSpec) -> String {
    sha256_hex(&serde_json::to_vec(spec).unwrap_or_default())
}

/// The status for a spec whose validation gave `problem` (`None`: valid) as
/// `(reason, message)`.
pub fn desired_auth_status(
    prev: Option<&MCPExternalAuthConfigStatus>,
    spec: &MCPExternalAuthConfigSpec,
    generation: Option<i64>,
    problem: Option<(&str, String)>,
    now: &Time,
) -> MCPExternalAuthConfigStatus {
    let mut s = prev.cloned().unwrap_or_default();
    let cond = match problem {
        None => NewCondition::new(VALID, true, "Valid", "the configuration is complete"),
        Some((reason, message)) => NewCondition::new(VALID, false, reason, message),
    };
    set_condition(&mut s.conditions, cond, generation, now);
    s.config_hash = Some(config_hash(spec));
    s.observed_generation = generation;
    s
}

/// Reconciles one `MCPExternalAuthConfig`.
pub async fn reconcile(ac: Arc<MCPExternalAuthConfig>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconciled(CONTROLLER, ac.as_ref(), reconcile_inner(&ac, &ctx)).await
}

async fn reconcile_inner(ac: &MCPExternalAuthConfig, ctx: &Context) -> Result<Action, Error> {
    let ns = namespace(ac)?;
    let name = ac.name_any();
    let secrets = auth_secrets(&ac.spec);
    ctx.auth_secrets.set_unless_gone(
        &ns,
        &name,
        secrets.iter().map(|s| (RefKind::Secret, s.name.clone())).collect::<BTreeSet<_>>(),
        || Stores::get(&ctx.stores.auth_configs, &ns, &name).is_some(),
    );
    let mut problem = validate_auth_spec(&ac.spec).err().map(|m| ("InvalidSpec", m));
    if problem.is_none() {
        for s in secrets {
            if Stores::get(&ctx.stores.secrets, &ns, &s.name).is_none() {
                problem = Some((
                    "SecretNotFound",
                    format!("Secret '{}' (key '{}') not found", s.name, s.key),
                ));
                break;
            }
        }
    }
    let api = ctx.api::<MCPExternalAuthConfig>(&ns);
    let prev = api.get_status(&name).await?.status.unwrap_or_default();
    let new =
        desired_auth_status(Some(&prev), &ac.spec, ac.metadata.generation, problem, &status::now());
    if new != prev {
        apply_status(&api, &name, &new).await?;
        ctx.metrics.status_write(CONTROLLER);
    }
    if transitioned_to(&prev.conditions, &new.conditions, VALID, Status::False)
        && let Some(c) = status::find(&new.conditions, VALID)
    {
        ctx.event(ac, EventType::Warning, &c.reason, "Validate", c.message.clone()).await;
    }
    Ok(ctx.resync())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;
    use k8s_openapi::jiff::Timestamp;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn valid_and_invalid() {
        let ac = fixtures::auth_config();
        let ok = desired_auth_status(None, &ac.spec, Some(1), None, &t(1));
        assert!(status::is_true(&ok.conditions, VALID));
        assert_eq!(ok.config_hash.as_deref().map(str::len), Some(64));
        assert_eq!(desired_auth_status(Some(&ok), &ac.spec, Some(1), None, &t(7)), ok);
        let bad = desired_auth_status(
            Some(&ok),
            &ac.spec,
            Some(2),
            Some((
                "SecretNotFound",
                "Secret 'vmcp-gateway-oidc-client' (key 'client-secret') not found".into(),
            )),
            &t(9),
        );
        let c = status::find(&bad.conditions, VALID).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "SecretNotFound"));
        assert_eq!(c.last_transition_time, t(9));
        insta::assert_yaml_snapshot!("auth_config_status_valid", ok);
    }

    #[test]
    fn hash_follows_spec() {
        let a = fixtures::auth_config().spec;
        let mut b = a.clone();
        assert_eq!(config_hash(&a), config_hash(&b));
        b.token_exchange.as_mut().unwrap().audience = Some("other".into());
        assert_ne!(config_hash(&a), config_hash(&b));
    }
}
