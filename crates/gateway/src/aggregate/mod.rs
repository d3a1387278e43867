//! Capability aggregation: merges the tools, resources, resource templates and prompts of many
//! backends into the one view a client sees, and builds the [`RoutingTable`] that sends each
//! request back to the backend (and name) it came from.
//!
//! Runs when a session starts and on every `list_changed`, so it is a single pass over the
//! backends' lists plus hash lookups. Pipeline for tools: per-backend filter (allow-list of
//! original names) → overrides (name, description, annotations) → conflict resolution
//! (`prefix` | `priority` | `manual`). Prompts go through conflict resolution only. Resources
//! and resource templates are never renamed: the first backend (in backend order) offering a
//! URI or `uriTemplate` wins.
//!
//! Entries that are not JSON objects with a string `name` (tools, prompts), `uri` (resources)
//! or `uriTemplate` (templates) are skipped, as are repeats of a name within one backend.

mod capabilities;
mod conflict;
mod routing;
pub mod template;

use std::sync::Arc;

use serde_json::Value;
use vmcp_types::config::AggregationConfig;

pub use capabilities::BackendCapabilities;
pub use routing::{Route, RoutingTable};

use capabilities::{Candidate, str_field};
use conflict::Resolved;

/// The merged view a client sees, plus the routing table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregated {
    /// Exposed tools, in backend order then each backend's own order.
    pub tools: Vec<Value>,
    /// Exposed resources (first backend wins per URI).
    pub resources: Vec<Value>,
    /// Exposed resource templates (first backend wins per `uriTemplate`).
    pub resource_templates: Vec<Value>,
    /// Exposed prompts, in backend order then each backend's own order.
    pub prompts: Vec<Value>,
    /// Where each exposed name or URI is routed.
    pub routes: RoutingTable,
}

/// Why the backends' capabilities cannot be merged under the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregationError {
    /// Under `manual`, several backends offer the same name and no override renames it.
    #[error(
        "{kind} '{name}' is offered by backends {backends:?} and conflictResolution is 'manual': {hint}",
        hint = manual_hint(kind)
    )]
    UnresolvedConflict {
        /// `"tool"` or `"prompt"`.
        kind: &'static str,
        /// The conflicting name.
        name: String,
        /// Every backend offering it, in backend order.
        backends: Vec<String>,
    },
    /// Two tools or prompts would still be exposed under one name after resolution (an
    /// override renamed a tool onto another's name, or the prefix format produced a clash).
    #[error(
        "{kind} name '{name}' would be exposed more than once (by backends {backends:?}): change the overrides in aggregation.tools or aggregation.prefixFormat so that every exposed name is unique"
    )]
    DuplicateExposedName {
        /// `"tool"` or `"prompt"`.
        kind: &'static str,
        /// The exposed name.
        name: String,
        /// The backends of the clashing entries, in backend order.
        backends: Vec<String>,
    },
    /// The same backend was passed twice in the capabilities.
    #[error("backend '{backend}' appears more than once in the capabilities to aggregate")]
    DuplicateBackend {
        /// The repeated backend name.
        backend: String,
    },
}

/// What to do about an unresolved `manual` conflict of `kind`.
fn manual_hint(kind: &str) -> &'static str {
    if kind == "tool" {
        "add an override in aggregation.tools that renames it for all but one of them"
    } else {
        "prompts cannot be renamed: use conflictResolution 'prefix' or 'priority', or remove it from all but one backend"
    }
}

/// Merges `caps` under `config`. `backend_order` is the configured backend order; `caps` may
/// omit unavailable backends and be in any order (the result does not depend on it).
pub fn aggregate(
    config: &AggregationConfig,
    backend_order: &[Arc<str>],
    caps: &[BackendCapabilities],
) -> Result<Aggregated, AggregationError> {
    let backends = capabilities::order_backends(backend_order, caps)?;
    let tools = capabilities::tool_candidates(config, &backends);
    let tools = conflict::resolve(config, "tool", &tools)?;
    let prompts = capabilities::prompt_candidates(&backends);
    let prompts = conflict::resolve(config, "prompt", &prompts)?;

    let mut routes = RoutingTable::default();
    let tools = expose(tools, |name, route| routes.insert_tool(name, route));
    let prompts = expose(prompts, |name, route| routes.insert_prompt(name, route));
    let mut resources = Vec::new();
    let mut resource_templates = Vec::new();
    for caps in &backends {
        resources.extend(first_wins(&caps.resources, "uri", |uri| {
            routes.insert_resource(uri, &caps.backend)
        }));
        resource_templates.extend(first_wins(&caps.resource_templates, "uriTemplate", |t| {
            routes.insert_template(t, &caps.backend)
        }));
    }
    Ok(Aggregated { tools, resources, resource_templates, prompts, routes })
}

/// The exposed objects of `resolved`, recording each route with `record`.
fn expose(resolved: Vec<Resolved<'_>>, mut record: impl FnMut(String, Route)) -> Vec<Value> {
    resolved
        .into_iter()
        .map(|Resolved { candidate, exposed }| {
            let object = candidate.exposed_object(&exposed);
            record(exposed, route_of(&candidate));
            object
        })
        .collect()
}

/// The route back to a candidate's backend and original name.
fn route_of(candidate: &Candidate<'_>) -> Route {
    Route { backend: Arc::clone(candidate.backend), original: candidate.original.to_owned() }
}

/// Clones of the entries of `items` whose string field `key` `claim` accepts (it returns false
/// when an earlier backend already took the key).
fn first_wins<'a>(
    items: &'a [Value],
    key: &'a str,
    mut claim: impl FnMut(&str) -> bool + 'a,
) -> impl Iterator<Item = Value> + 'a {
    items.iter().filter(move |item| str_field(item, key).is_some_and(&mut claim)).cloned()
}

#[cfg(test)]
mod tests;
