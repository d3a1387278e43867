//! Unit tests of the aggregation: conflict resolution, filters, overrides, routing. Examples
//! here; property tests over random backends and configurations in `tests/properties.rs`.

use std::collections::BTreeMap;

use serde_json::{Map, json};
use vmcp_types::config::{BackendToolsConfig, ConflictResolution, ToolOverrideConfig};

use super::*;

mod properties;

fn order(names: &[&str]) -> Vec<Arc<str>> {
    names.iter().map(|n| Arc::from(*n)).collect()
}

fn tool(name: &str) -> Value {
    json!({"name": name, "inputSchema": {"type": "object"}})
}

fn backend(name: &str, tools: &[&str], prompts: &[&str]) -> BackendCapabilities {
    BackendCapabilities {
        tools: tools.iter().map(|t| tool(t)).collect(),
        prompts: prompts.iter().map(|p| json!({"name": p})).collect(),
        ..BackendCapabilities::new(name)
    }
}

fn config(strategy: ConflictResolution) -> AggregationConfig {
    AggregationConfig { conflict_resolution: strategy, ..AggregationConfig::default() }
}

fn priority(order: &[&str]) -> AggregationConfig {
    AggregationConfig {
        priority_order: order.iter().map(|s| s.to_string()).collect(),
        ..config(ConflictResolution::Priority)
    }
}

fn with_tools(mut config: AggregationConfig, tools: Vec<BackendToolsConfig>) -> AggregationConfig {
    config.tools = tools;
    config
}

fn rename(backend: &str, from: &str, to: &str) -> BackendToolsConfig {
    let patch = ToolOverrideConfig { name: Some(to.into()), ..ToolOverrideConfig::default() };
    BackendToolsConfig {
        backend: backend.into(),
        filter: Vec::new(),
        overrides: BTreeMap::from([(from.to_owned(), patch)]),
    }
}

fn names(values: &[Value]) -> Vec<&str> {
    values.iter().filter_map(|v| v["name"].as_str()).collect()
}

fn route(backend: &str, original: &str) -> Route {
    Route { backend: backend.into(), original: original.into() }
}

#[test]
fn prefix_exposes_every_tool_and_prompt_with_the_prefix() {
    let caps = [backend("a", &["x", "y"], &["p"]), backend("b", &["x"], &["p"])];
    let out = aggregate(&config(ConflictResolution::Prefix), &order(&["a", "b"]), &caps).unwrap();
    assert_eq!(names(&out.tools), ["a_x", "a_y", "b_x"]);
    assert_eq!(names(&out.prompts), ["a_p", "b_p"]);
    assert_eq!(out.routes.tool("b_x"), Some(&route("b", "x")));
    assert_eq!(out.routes.prompt("a_p"), Some(&route("a", "p")));
    assert_eq!(out.routes.tool("x"), None);
    assert_eq!(out.tools[0]["inputSchema"], json!({"type": "object"}));
}

#[test]
fn prefix_uses_the_configured_format() {
    let config = AggregationConfig {
        prefix_format: "mcp-{backend}__".into(),
        ..config(ConflictResolution::Prefix)
    };
    let out = aggregate(&config, &order(&["gh"]), &[backend("gh", &["search"], &[])]).unwrap();
    assert_eq!(names(&out.tools), ["mcp-gh__search"]);
}

#[test]
fn prefix_clash_is_a_duplicate_exposed_name() {
    let caps = [backend("a", &[], &["b_x"]), backend("a_b", &[], &["x"])];
    let err = aggregate(&config(ConflictResolution::Prefix), &order(&["a", "a_b"]), &caps);
    assert_eq!(
        err,
        Err(AggregationError::DuplicateExposedName {
            kind: "prompt",
            name: "a_b_x".into(),
            backends: vec!["a".into(), "a_b".into()],
        })
    );
}

#[test]
fn priority_keeps_unique_names_and_first_listed_backend_wins() {
    let caps = [backend("a", &["x", "only_a"], &["p"]), backend("b", &["x", "only_b"], &["p"])];
    let out = aggregate(&priority(&["b", "a"]), &order(&["a", "b"]), &caps).unwrap();
    assert_eq!(names(&out.tools), ["only_a", "x", "only_b"]);
    assert_eq!(out.routes.tool("x"), Some(&route("b", "x")));
    assert_eq!(out.routes.tool("only_a"), Some(&route("a", "only_a")));
    assert_eq!(out.routes.prompt("p"), Some(&route("b", "p")));
}

#[test]
fn priority_ranks_unlisted_backends_after_in_backend_order() {
    let caps = [backend("c", &["x"], &[]), backend("b", &["x"], &[]), backend("a", &["x"], &[])];
    let out = aggregate(&priority(&["z"]), &order(&["c", "a", "b"]), &caps).unwrap();
    assert_eq!(out.routes.tool("x"), Some(&route("c", "x")));
    let out = aggregate(&priority(&["b"]), &order(&["c", "a", "b"]), &caps).unwrap();
    assert_eq!(out.routes.tool("x"), Some(&route("b", "x")));
    assert_eq!(names(&out.tools), ["x"]);
}

#[test]
fn priority_falls_back_when_the_preferred_backend_is_unavailable() {
    let caps = [backend("b", &["x"], &[]), backend("c", &["x"], &[])];
    let out = aggregate(&priority(&["a", "c", "b"]), &order(&["a", "b", "c"]), &caps).unwrap();
    assert_eq!(out.routes.tool("x"), Some(&route("c", "x")));
}

#[test]
fn priority_resolves_override_clashes_by_priority() {
    let caps = [backend("a", &["x"], &[]), backend("b", &["y"], &[])];
    let renamed = |p: &[&str]| with_tools(priority(p), vec![rename("b", "y", "x")]);
    let out = aggregate(&renamed(&["a", "b"]), &order(&["a", "b"]), &caps).unwrap();
    assert_eq!(out.routes.tool("x"), Some(&route("a", "x")));
    assert_eq!(names(&out.tools), ["x"]);
    let out = aggregate(&renamed(&["b", "a"]), &order(&["a", "b"]), &caps).unwrap();
    assert_eq!(out.routes.tool("x"), Some(&route("b", "y")));
    assert_eq!(names(&out.tools), ["x"]);
}

#[test]
fn priority_clash_within_one_backend_is_an_error() {
    let caps = [backend("a", &["x", "y"], &[])];
    let config = with_tools(priority(&["a"]), vec![rename("a", "y", "x")]);
    let err = aggregate(&config, &order(&["a"]), &caps).unwrap_err();
    assert!(
        matches!(err, AggregationError::DuplicateExposedName { kind: "tool", name, .. } if name == "x")
    );
}

#[test]
fn manual_keeps_unique_names() {
    let caps = [backend("a", &["x"], &["p"]), backend("b", &["y"], &["q"])];
    let out = aggregate(&config(ConflictResolution::Manual), &order(&["a", "b"]), &caps).unwrap();
    assert_eq!(names(&out.tools), ["x", "y"]);
    assert_eq!(names(&out.prompts), ["p", "q"]);
}

#[test]
fn manual_conflict_names_the_tool_and_all_backends() {
    let caps = [
        backend("c", &["search"], &[]),
        backend("a", &["search", "z"], &[]),
        backend("b", &["z", "search"], &[]),
    ];
    let err = aggregate(&config(ConflictResolution::Manual), &order(&["a", "b", "c"]), &caps)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tool 'search' is offered by backends [\"a\", \"b\", \"c\"] and conflictResolution is \
         'manual': add an override in aggregation.tools that renames it for all but one of them"
    );
}

#[test]
fn manual_reports_prompt_conflicts() {
    let caps = [backend("a", &[], &["p"]), backend("b", &[], &["p"])];
    let err =
        aggregate(&config(ConflictResolution::Manual), &order(&["a", "b"]), &caps).unwrap_err();
    assert!(matches!(&err, AggregationError::UnresolvedConflict { kind: "prompt", .. }));
    assert!(err.to_string().starts_with("prompt 'p' is offered by backends [\"a\", \"b\"]"));
}

#[test]
fn manual_conflict_resolved_by_an_override() {
    let caps = [backend("a", &["search"], &[]), backend("b", &["search"], &[])];
    let config =
        with_tools(config(ConflictResolution::Manual), vec![rename("b", "search", "b_search")]);
    let out = aggregate(&config, &order(&["a", "b"]), &caps).unwrap();
    assert_eq!(names(&out.tools), ["search", "b_search"]);
    assert_eq!(out.routes.tool("b_search"), Some(&route("b", "search")));
}

#[test]
fn manual_override_onto_another_name_is_a_duplicate() {
    let caps = [backend("a", &["x"], &[]), backend("b", &["y"], &[])];
    let config = with_tools(config(ConflictResolution::Manual), vec![rename("b", "y", "x")]);
    let err = aggregate(&config, &order(&["a", "b"]), &caps).unwrap_err();
    assert_eq!(
        err,
        AggregationError::DuplicateExposedName {
            kind: "tool",
            name: "x".into(),
            backends: vec!["a".into(), "b".into()],
        }
    );
}

#[test]
fn manual_conflict_lists_only_backends_offering_the_name_unrenamed() {
    let caps = [
        backend("a", &["x"], &[]),
        backend("b", &["x"], &[]),
        backend("c", &["y"], &[]),
        backend("d", &["x"], &[]),
    ];
    let renames = vec![rename("b", "x", "b_x"), rename("c", "y", "x")];
    let config = with_tools(config(ConflictResolution::Manual), renames);
    let err = aggregate(&config, &order(&["a", "b", "c", "d"]), &caps).unwrap_err();
    assert_eq!(
        err,
        AggregationError::UnresolvedConflict {
            kind: "tool",
            name: "x".into(),
            backends: vec!["a".into(), "d".into()],
        }
    );
}

#[test]
fn prefix_override_onto_a_prefixed_name_is_a_duplicate() {
    let caps = [backend("a", &["x", "y"], &[])];
    let config = with_tools(config(ConflictResolution::Prefix), vec![rename("a", "y", "a_x")]);
    let err = aggregate(&config, &order(&["a"]), &caps).unwrap_err();
    assert!(matches!(err, AggregationError::DuplicateExposedName { name, .. } if name == "a_x"));
}

#[test]
fn filter_is_an_allow_list_of_original_names() {
    let caps = [backend("a", &["x", "y", "z"], &["p"]), backend("b", &["x", "y"], &[])];
    let mut settings = rename("a", "z", "zed");
    settings.filter = vec!["z".into(), "x".into(), "missing".into()];
    let config = with_tools(config(ConflictResolution::Prefix), vec![settings]);
    let out = aggregate(&config, &order(&["a", "b"]), &caps).unwrap();
    assert_eq!(names(&out.tools), ["a_x", "zed", "b_x", "b_y"]);
    assert_eq!(names(&out.prompts), ["a_p"]);
}

#[test]
fn override_renames_describes_and_merges_annotations() {
    let source = json!({
        "name": "search", "title": "Search", "description": "old",
        "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}},
        "outputSchema": {"type": "object"}, "_meta": {"k": 1},
        "annotations": {"readOnlyHint": true, "destructiveHint": true},
    });
    let caps = [BackendCapabilities {
        tools: vec![source.clone(), tool("other")],
        ..BackendCapabilities::new("gh")
    }];
    let patch = ToolOverrideConfig {
        name: Some("find".into()),
        description: Some("new".into()),
        annotations: Some(Map::from_iter([
            ("destructiveHint".to_owned(), json!(false)),
            ("openWorldHint".to_owned(), json!(true)),
        ])),
    };
    let settings = BackendToolsConfig {
        backend: "gh".into(),
        filter: Vec::new(),
        overrides: BTreeMap::from([
            ("search".to_owned(), patch),
            (
                "absent".to_owned(),
                ToolOverrideConfig { name: Some("ghost".into()), ..Default::default() },
            ),
        ]),
    };
    let config = with_tools(config(ConflictResolution::Prefix), vec![settings]);
    let out = aggregate(&config, &order(&["gh"]), &caps).unwrap();
    let mut expected = source;
    expected["name"] = json!("find");
    expected["description"] = json!("new");
    expected["annotations"] =
        json!({"readOnlyHint": true, "destructiveHint": false, "openWorldHint": true});
    assert_eq!(
        out.tools,
        vec![expected, json!({"name": "gh_other", "inputSchema": {"type": "object"}})]
    );
    assert_eq!(out.routes.tool("find"), Some(&route("gh", "search")));
    assert_eq!(out.routes.tool("ghost"), None);
}

#[test]
fn overrides_only_apply_to_their_backend() {
    let caps = [backend("a", &["x"], &[]), backend("b", &["x"], &[])];
    let config = with_tools(config(ConflictResolution::Prefix), vec![rename("b", "x", "renamed")]);
    let out = aggregate(&config, &order(&["a", "b"]), &caps).unwrap();
    assert_eq!(names(&out.tools), ["a_x", "renamed"]);
}

#[test]
fn resources_and_templates_first_backend_wins() {
    let mut a = BackendCapabilities::new("a");
    a.resources =
        vec![json!({"uri": "file:///shared", "name": "from a"}), json!({"name": "no uri"})];
    a.resource_templates = vec![json!({"uriTemplate": "weather://{city}/today", "name": "a"})];
    let mut b = BackendCapabilities::new("b");
    b.resources =
        vec![json!({"uri": "file:///shared", "name": "from b"}), json!({"uri": "file:///b"})];
    b.resource_templates = vec![
        json!({"uriTemplate": "weather://{city}/today", "name": "b"}),
        json!({"uriTemplate": "file:///{path}"}),
    ];
    let out = aggregate(&AggregationConfig::default(), &order(&["a", "b"]), &[b, a]).unwrap();
    assert_eq!(
        out.resources,
        vec![json!({"uri": "file:///shared", "name": "from a"}), json!({"uri": "file:///b"})]
    );
    assert_eq!(names(&out.resource_templates), ["a"]);
    assert_eq!(out.resource_templates.len(), 2);
    let routes = &out.routes;
    assert_eq!(routes.resource("file:///shared"), Some(route("a", "file:///shared")));
    assert_eq!(routes.resource("file:///b"), Some(route("b", "file:///b")));
    assert_eq!(routes.resource("file:///a"), Some(route("b", "file:///a")));
    assert_eq!(routes.resource("weather://paris/today"), Some(route("a", "weather://paris/today")));
    assert_eq!(routes.resource("weather://paris/tomorrow"), None);
}

#[test]
fn exact_resource_beats_an_earlier_template() {
    let mut a = BackendCapabilities::new("a");
    a.resource_templates = vec![json!({"uriTemplate": "file:///{path}"})];
    let mut b = BackendCapabilities::new("b");
    b.resources = vec![json!({"uri": "file:///readme"})];
    let out = aggregate(&AggregationConfig::default(), &order(&["a", "b"]), &[a, b]).unwrap();
    assert_eq!(out.routes.resource("file:///readme"), Some(route("b", "file:///readme")));
    assert_eq!(out.routes.resource("file:///other"), Some(route("a", "file:///other")));
}

#[test]
fn completion_refs_route_to_the_original_names() {
    let mut a = backend("a", &[], &["greet"]);
    a.resource_templates = vec![json!({"uriTemplate": "db://{table}"})];
    let out = aggregate(&AggregationConfig::default(), &order(&["a"]), &[a]).unwrap();
    let reference = json!({"type": "ref/prompt", "name": "a_greet"});
    assert_eq!(
        out.routes.completion(&reference),
        Some((route("a", "greet"), json!({"type": "ref/prompt", "name": "greet"})))
    );
    let reference = json!({"type": "ref/resource", "uri": "db://{table}"});
    assert_eq!(
        out.routes.completion(&reference),
        Some((route("a", "db://{table}"), reference.clone()))
    );
    assert_eq!(out.routes.completion(&json!({"type": "ref/prompt", "name": "greet"})), None);
}

#[test]
fn output_follows_backend_order_not_caps_order() {
    let caps = [
        backend("z", &["t"], &[]),
        backend("b", &["t"], &[]),
        backend("y", &["t"], &[]),
        backend("a", &["t"], &[]),
    ];
    let out = aggregate(&AggregationConfig::default(), &order(&["b", "a"]), &caps).unwrap();
    assert_eq!(names(&out.tools), ["b_t", "a_t", "y_t", "z_t"]);
}

#[test]
fn duplicate_backend_is_rejected() {
    let caps = [backend("a", &["x"], &[]), backend("a", &["y"], &[])];
    let err = aggregate(&AggregationConfig::default(), &order(&["a"]), &caps).unwrap_err();
    assert_eq!(err, AggregationError::DuplicateBackend { backend: "a".into() });
}

#[test]
fn empty_input_gives_an_empty_view() {
    let out = aggregate(&AggregationConfig::default(), &order(&["a"]), &[]).unwrap();
    assert_eq!(out, Aggregated::default());
}
