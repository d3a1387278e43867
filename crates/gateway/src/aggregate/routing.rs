//! The routing table: which backend serves an exposed tool, prompt, resource or completion
//! reference, and under which original name.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use serde_json::Value;

use super::template::UriTemplate;

/// Where a client request goes: the backend and the name (or URI) the backend knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Name of the backend that serves the request.
    pub backend: Arc<str>,
    /// The backend's own name for the tool or prompt (before any override), or the URI.
    pub original: String,
}

/// A resource template kept for routing, in backend order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TemplateRoute {
    /// The parsed template; `None` if it uses unsupported RFC 6570 features.
    parsed: Option<UriTemplate>,
    /// The backend that offers it.
    backend: Arc<str>,
}

/// Maps exposed names and URIs back to backends; built by [`super::aggregate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    tools: HashMap<String, Route>,
    prompts: HashMap<String, Route>,
    resources: HashMap<String, Arc<str>>,
    templates: Vec<TemplateRoute>,
    template_index: HashMap<String, usize>,
}

impl RoutingTable {
    /// The route of the tool exposed as `exposed` (`tools/call`).
    pub fn tool(&self, exposed: &str) -> Option<&Route> {
        self.tools.get(exposed)
    }

    /// The route of the prompt exposed as `exposed` (`prompts/get`).
    pub fn prompt(&self, exposed: &str) -> Option<&Route> {
        self.prompts.get(exposed)
    }

    /// The route of `resources/read` / `resources/subscribe` for `uri`: an exactly listed
    /// resource first, else the first resource template (in backend order) that matches.
    /// `original` is `uri` unchanged (URIs are never renamed).
    pub fn resource(&self, uri: &str) -> Option<Route> {
        let backend = match self.resources.get(uri) {
            Some(backend) => backend,
            None => {
                &self
                    .templates
                    .iter()
                    .find(|t| t.parsed.as_ref().is_some_and(|p| p.matches(uri)))?
                    .backend
            }
        };
        Some(Route { backend: Arc::clone(backend), original: uri.to_owned() })
    }

    /// The route of a `completion/complete` reference and the reference rewritten for the
    /// backend: `ref/prompt` by exposed prompt name (the name is replaced by the original),
    /// `ref/resource` by template string or URI (unchanged).
    pub fn completion(&self, reference: &Value) -> Option<(Route, Value)> {
        match reference.get("type")?.as_str()? {
            "ref/prompt" => {
                let route = self.prompt(reference.get("name")?.as_str()?)?;
                let mut rewritten = reference.clone();
                rewritten
                    .as_object_mut()?
                    .insert("name".to_owned(), Value::String(route.original.clone()));
                Some((route.clone(), rewritten))
            }
            "ref/resource" => {
                let uri = reference.get("uri")?.as_str()?;
                let route = self.template(uri).or_else(|| self.resource(uri))?;
                Some((route, reference.clone()))
            }
            _ => None,
        }
    }

    /// The route of the resource template whose `uriTemplate` is exactly `template`.
    fn template(&self, template: &str) -> Option<Route> {
        let index = *self.template_index.get(template)?;
        let backend = &self.templates.get(index)?.backend;
        Some(Route { backend: Arc::clone(backend), original: template.to_owned() })
    }

    /// Records an exposed tool.
    pub(super) fn insert_tool(&mut self, exposed: String, route: Route) {
        self.tools.insert(exposed, route);
    }

    /// Records an exposed prompt.
    pub(super) fn insert_prompt(&mut self, exposed: String, route: Route) {
        self.prompts.insert(exposed, route);
    }

    /// Records a resource unless its URI is already taken; returns whether it was recorded.
    pub(super) fn insert_resource(&mut self, uri: &str, backend: &Arc<str>) -> bool {
        match self.resources.entry(uri.to_owned()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(Arc::clone(backend));
                true
            }
        }
    }

    /// Records a resource template unless its `uriTemplate` is already taken; returns whether
    /// it was recorded.
    pub(super) fn insert_template(&mut self, template: &str, backend: &Arc<str>) -> bool {
        match self.template_index.entry(template.to_owned()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(self.templates.len());
                self.templates.push(TemplateRoute {
                    parsed: UriTemplate::parse(template),
                    backend: Arc::clone(backend),
                });
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> RoutingTable {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut t = RoutingTable::default();
        t.insert_prompt("a_greet".into(), Route { backend: a.clone(), original: "greet".into() });
        assert!(t.insert_resource("file:///readme", &b));
        assert!(!t.insert_resource("file:///readme", &a));
        assert!(t.insert_template("file:///{path}", &a));
        assert!(t.insert_template("file:///{+path}", &b));
        assert!(!t.insert_template("file:///{path}", &b));
        t
    }

    fn route(backend: &str, original: &str) -> Route {
        Route { backend: backend.into(), original: original.into() }
    }

    #[test]
    fn resource_prefers_exact_uri_then_first_template() {
        let t = table();
        assert_eq!(t.resource("file:///readme"), Some(route("b", "file:///readme")));
        assert_eq!(t.resource("file:///other"), Some(route("a", "file:///other")));
        assert_eq!(t.resource("file:///dir/x"), Some(route("b", "file:///dir/x")));
        assert_eq!(t.resource("http://x"), None);
    }

    #[test]
    fn completion_rewrites_prompt_names() {
        let t = table();
        let reference = json!({"type": "ref/prompt", "name": "a_greet"});
        let expected = json!({"type": "ref/prompt", "name": "greet"});
        assert_eq!(t.completion(&reference), Some((route("a", "greet"), expected)));
        assert_eq!(t.completion(&json!({"type": "ref/prompt", "name": "greet"})), None);
    }

    #[test]
    fn completion_routes_resource_refs_by_template_or_uri() {
        let t = table();
        let by_template = json!({"type": "ref/resource", "uri": "file:///{+path}"});
        assert_eq!(
            t.completion(&by_template),
            Some((route("b", "file:///{+path}"), by_template.clone()))
        );
        let by_uri = json!({"type": "ref/resource", "uri": "file:///readme"});
        assert_eq!(t.completion(&by_uri), Some((route("b", "file:///readme"), by_uri.clone())));
        assert_eq!(t.completion(&json!({"type": "ref/resource", "uri": "nope://"})), None);
    }

    #[test]
    fn completion_rejects_malformed_refs() {
        let t = table();
        for reference in [
            json!({"type": "ref/tool", "name": "a_greet"}),
            json!({"name": "a_greet"}),
            json!({"type": "ref/prompt"}),
            json!({"type": "ref/prompt", "name": 1}),
            json!({"type": "ref/resource"}),
            json!("ref/prompt"),
        ] {
            assert_eq!(t.completion(&reference), None, "{reference}");
        }
    }
}
