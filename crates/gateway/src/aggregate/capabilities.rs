//! Backends' capabilities: ordering, tool filters and overrides, and the candidates that
//! conflict resolution chooses exposed names for.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};
use vmcp_types::config::{AggregationConfig, BackendToolsConfig, ToolOverrideConfig};

use super::AggregationError;

/// What one backend offers (raw MCP JSON objects exactly as the backend sent them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendCapabilities {
    /// The backend's configured name.
    pub backend: Arc<str>,
    /// `tools/list` entries.
    pub tools: Vec<Value>,
    /// `resources/list` entries.
    pub resources: Vec<Value>,
    /// `resources/templates/list` entries.
    pub resource_templates: Vec<Value>,
    /// `prompts/list` entries.
    pub prompts: Vec<Value>,
}

impl BackendCapabilities {
    /// A backend that offers nothing yet.
    pub fn new(backend: impl Into<Arc<str>>) -> Self {
        Self { backend: backend.into(), ..Self::default() }
    }
}

/// A tool or prompt that survived filtering, before its exposed name is chosen.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate<'a> {
    /// Position of the backend in the ordered backend list.
    pub(super) rank: usize,
    /// The backend's name.
    pub(super) backend: &'a Arc<str>,
    /// The backend's own name for the tool or prompt.
    pub(super) original: &'a str,
    /// The object as the backend sent it.
    pub(super) source: &'a Value,
    /// The override of this tool, if any (never set for prompts).
    pub(super) patch: Option<&'a ToolOverrideConfig>,
}

impl<'a> Candidate<'a> {
    /// The name fixed by an override; it is exposed exactly (no prefix).
    pub(super) fn renamed(&self) -> Option<&'a str> {
        self.patch.and_then(|p| p.name.as_deref())
    }

    /// The exposed JSON object: the backend's object with `name` replaced and the override's
    /// description and annotations applied; every other field is kept untouched.
    pub(super) fn exposed_object(&self, exposed: &str) -> Value {
        let mut object = self.source.clone();
        if let Some(fields) = object.as_object_mut() {
            fields.insert("name".to_owned(), Value::String(exposed.to_owned()));
            if let Some(patch) = self.patch {
                apply_override(fields, patch);
            }
        }
        object
    }
}

/// Applies an override's description and annotations (key by key) to a tool object.
fn apply_override(tool: &mut Map<String, Value>, patch: &ToolOverrideConfig) {
    if let Some(description) = &patch.description {
        tool.insert("description".to_owned(), Value::String(description.clone()));
    }
    if let Some(annotations) = &patch.annotations {
        let slot = tool.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        if let Some(existing) = slot.as_object_mut() {
            existing.extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
}

/// The backends of `caps` in configured order (backends missing from `backend_order` follow,
/// sorted by name); errors if a backend appears twice.
pub(super) fn order_backends<'a>(
    backend_order: &[Arc<str>],
    caps: &'a [BackendCapabilities],
) -> Result<Vec<&'a BackendCapabilities>, AggregationError> {
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(backend_order.len());
    for (i, name) in backend_order.iter().enumerate() {
        position.entry(name).or_insert(i);
    }
    let mut ordered: Vec<&BackendCapabilities> = caps.iter().collect();
    ordered.sort_by(|a, b| {
        let key =
            |c: &BackendCapabilities| position.get(&*c.backend).copied().unwrap_or(usize::MAX);
        key(a).cmp(&key(b)).then_with(|| a.backend.cmp(&b.backend))
    });
    if let Some(pair) = ordered.windows(2).find(|w| matches!(w, [a, b] if a.backend == b.backend)) {
        let backend = pair.first().map(|c| c.backend.to_string()).unwrap_or_default();
        return Err(AggregationError::DuplicateBackend { backend });
    }
    Ok(ordered)
}

/// The string field `key` of a JSON object, if present.
pub(super) fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key)?.as_str()
}

/// The first `aggregation.tools` entry for `backend`.
fn tools_config<'a>(
    config: &'a AggregationConfig,
    backend: &str,
) -> Option<&'a BackendToolsConfig> {
    config.tools.iter().find(|t| t.backend == backend)
}

/// Named entries of `items` (objects with a string `name`), first occurrence of each name only.
fn named(items: &[Value]) -> impl Iterator<Item = (&str, &Value)> {
    let mut seen = HashSet::new();
    items
        .iter()
        .filter_map(|item| Some((str_field(item, "name")?, item)))
        .filter(move |(name, _)| seen.insert(*name))
}

/// Tool candidates of all backends, in backend order then each backend's own order, after the
/// backend's filter (allow-list of original names; empty allows all); overrides attached.
pub(super) fn tool_candidates<'a>(
    config: &'a AggregationConfig,
    backends: &[&'a BackendCapabilities],
) -> Vec<Candidate<'a>> {
    let mut out = Vec::new();
    for (rank, caps) in backends.iter().enumerate() {
        let settings = tools_config(config, &caps.backend);
        let allowed = |name: &str| {
            settings.is_none_or(|s| s.filter.is_empty() || s.filter.iter().any(|f| f == name))
        };
        out.extend(named(&caps.tools).filter(|(name, _)| allowed(name)).map(|(name, tool)| {
            Candidate {
                rank,
                backend: &caps.backend,
                original: name,
                source: tool,
                patch: settings.and_then(|s| s.overrides.get(name)),
            }
        }));
    }
    out
}

/// Prompt candidates of all backends, in backend order then each backend's own order.
pub(super) fn prompt_candidates<'a>(backends: &[&'a BackendCapabilities]) -> Vec<Candidate<'a>> {
    let mut out = Vec::new();
    for (rank, caps) in backends.iter().enumerate() {
        out.extend(named(&caps.prompts).map(|(name, prompt)| Candidate {
            rank,
            backend: &caps.backend,
            original: name,
            source: prompt,
            patch: None,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backend(name: &str, tools: Vec<Value>) -> BackendCapabilities {
        BackendCapabilities { tools, ..BackendCapabilities::new(name) }
    }

    #[test]
    fn order_follows_configuration_then_name() {
        let order: Vec<Arc<str>> = vec!["b".into(), "a".into()];
        let caps = [
            BackendCapabilities::new("z"),
            BackendCapabilities::new("a"),
            BackendCapabilities::new("y"),
            BackendCapabilities::new("b"),
        ];
        let names: Vec<&str> =
            order_backends(&order, &caps).unwrap_or_default().iter().map(|c| &*c.backend).collect();
        assert_eq!(names, ["b", "a", "y", "z"]);
    }

    #[test]
    fn duplicate_backend_is_an_error() {
        let caps = [BackendCapabilities::new("a"), BackendCapabilities::new("a")];
        let err = order_backends(&[], &caps).err();
        assert!(
            matches!(err, Some(AggregationError::DuplicateBackend { backend }) if backend == "a")
        );
    }

    #[test]
    fn malformed_and_repeated_entries_are_skipped() {
        let caps = backend(
            "a",
            vec![
                json!({"name": "x"}),
                json!({"title": "no name"}),
                json!(3),
                json!({"name": 4}),
                json!({"name": "x", "description": "second"}),
                json!({"name": "y"}),
            ],
        );
        let config = AggregationConfig::default();
        let names: Vec<&str> =
            tool_candidates(&config, &[&caps]).iter().map(|c| c.original).collect();
        assert_eq!(names, ["x", "y"]);
    }

    #[test]
    fn override_replaces_description_and_merges_annotations() {
        let tool = json!({"name": "x", "description": "old", "title": "T",
            "annotations": {"readOnlyHint": true, "title": "keep"}});
        let patch = ToolOverrideConfig {
            name: Some("renamed".into()),
            description: Some("new".into()),
            annotations: json!({"readOnlyHint": false, "openWorldHint": true}).as_object().cloned(),
        };
        let backend: Arc<str> = "a".into();
        let candidate = Candidate {
            rank: 0,
            backend: &backend,
            original: "x",
            source: &tool,
            patch: Some(&patch),
        };
        assert_eq!(candidate.renamed(), Some("renamed"));
        assert_eq!(
            candidate.exposed_object("renamed"),
            json!({"name": "renamed", "description": "new", "title": "T",
                "annotations": {"readOnlyHint": false, "title": "keep", "openWorldHint": true}})
        );
    }

    #[test]
    fn annotations_are_created_when_missing_or_not_an_object() {
        let patch = ToolOverrideConfig {
            annotations: json!({"idempotentHint": true}).as_object().cloned(),
            ..ToolOverrideConfig::default()
        };
        let backend: Arc<str> = "a".into();
        for tool in [json!({"name": "x"}), json!({"name": "x", "annotations": "bogus"})] {
            let candidate = Candidate {
                rank: 0,
                backend: &backend,
                original: "x",
                source: &tool,
                patch: Some(&patch),
            };
            assert_eq!(candidate.renamed(), None);
            assert_eq!(
                candidate.exposed_object("a_x"),
                json!({"name": "a_x", "annotations": {"idempotentHint": true}})
            );
        }
    }
}
