//! Every `examples/k8s/` object deserializes into its type and passes the CRDs' CEL rules
//! (evaluated locally); every `examples/k8s/invalid/` object fails with the message its
//! `# expect:` line names, except those marked `# rejected-by: schema` (a required field or a
//! length, which the local CEL evaluator does not check). The real API server check of every
//! file is in the e2e crate (`tests/tests/kube_apiserver/examples.rs`).
#![cfg(feature = "crd")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use kube::core::cel::Validator;
use serde_json::Value;
use vmcp_types::crd::*;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/k8s")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The openAPIV3Schema of the CRD for `kind`, or None for a kind that is not ours.
fn schema_for(kind: &str) -> Option<Value> {
    let crd = all_crds().into_iter().find(|c| c.spec.names.kind == kind)?;
    let schema = crd.spec.versions[0].schema.clone()?.open_api_v3_schema?;
    Some(serde_json::to_value(schema).unwrap())
}

fn deserializes(doc: &Value) -> Result<(), String> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let r = match kind {
        "MCPGroup" => serde_json::from_value::<MCPGroup>(doc.clone()).map(drop),
        "MCPServer" => serde_json::from_value::<MCPServer>(doc.clone()).map(drop),
        "MCPExternalAuthConfig" => {
            serde_json::from_value::<MCPExternalAuthConfig>(doc.clone()).map(drop)
        }
        "VirtualMCPServer" => serde_json::from_value::<VirtualMCPServer>(doc.clone()).map(drop),
        _ => Ok(()),
    };
    r.map_err(|e| e.to_string())
}

#[test]
fn valid_examples_deserialize_and_pass_cel() {
    let mut kinds = Vec::new();
    for file in yaml_files(&examples_dir()) {
        for doc in documents(&file) {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            deserializes(&doc).unwrap_or_else(|e| panic!("{}: {kind}: {e}", file.display()));
            if let Some(schema) = schema_for(&kind) {
                if let Err(e) = Validator::new().validate(&schema, &doc, None) {
                    panic!("{}: {kind} fails CEL: {e}", file.display());
                }
                kinds.push(kind);
            }
        }
    }
    for k in ["MCPGroup", "MCPServer", "MCPExternalAuthConfig", "VirtualMCPServer"] {
        assert!(kinds.iter().any(|x| x == k), "examples/k8s has no {k}");
    }
}

#[test]
fn invalid_examples_fail_with_expected_message() {
    let files = yaml_files(&examples_dir().join("invalid"));
    assert!(files.len() >= 4, "one invalid example per CEL rule");
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if text.lines().any(|l| l.starts_with("# rejected-by: schema")) {
            continue;
        }
        checked += 1;
        let expected = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no '# expect:' line", file.display()));
        let doc = &documents(&file)[0];
        let kind = doc["kind"].as_str().unwrap();
        let schema = schema_for(kind).unwrap();
        let errors = Validator::new()
            .validate(&schema, doc, None)
            .expect_err(&format!("{} must be rejected", file.display()));
        assert!(
            errors.as_slice().iter().any(|e| e.message == expected),
            "{}: expected '{expected}', got: {errors}",
            file.display()
        );
    }
    assert!(checked >= 10, "only {checked} CEL examples checked");
}

#[test]
fn crds_are_namespaced_with_status_and_short_names() {
    let crds = all_crds();
    assert_eq!(crds.len(), 5);
    for crd in &crds {
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, VERSION);
        assert!(crd.spec.names.short_names.as_ref().is_some_and(|s| !s.is_empty()));
        if crd.spec.names.kind == "MCPServerEntry" {
            // Nothing observes a remote entry: it has no status (its gateways report it).
            assert!(v.subresources.is_none());
            continue;
        }
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        assert!(crd.spec.names.short_names.as_ref().is_some_and(|s| !s.is_empty()));
        let schema = serde_json::to_value(v.schema.as_ref().unwrap()).unwrap();
        let conditions =
            &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{}", crd.spec.names.kind);
        assert_eq!(conditions["x-kubernetes-list-map-keys"][0], "type");
        let status = &schema["openAPIV3Schema"]["properties"]["status"]["properties"];
        assert!(status["observedGeneration"].is_object());
    }
    let vmcp = crds.iter().find(|c| c.spec.names.kind == "VirtualMCPServer").unwrap();
    assert_eq!(vmcp.spec.names.short_names.as_deref(), Some(&["vmcp".to_owned()][..]));
    let cols: Vec<_> = vmcp.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["Phase", "URL", "Backends", "Ready", "Age"]);
}

/// Structural schema: no `anyOf`/`oneOf` of differing types, every property typed (or
/// explicitly preserved), unknown fields preserved only on the intended opaque objects.
#[test]
fn schemas_are_structural() {
    fn walk(v: &Value, path: &str, preserved: &mut Vec<String>) {
        let Some(obj) = v.as_object() else { return };
        assert!(
            !obj.contains_key("oneOf") && !obj.contains_key("$ref"),
            "{path}: untagged unions and $refs are not structural"
        );
        if obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
            preserved.push(path.to_owned());
        }
        let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        let preserve = obj.contains_key("x-kubernetes-preserve-unknown-fields");
        if !int_or_string && !preserve && !obj.contains_key("anyOf") {
            assert!(obj.contains_key("type"), "{path}: every schema node needs a type");
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                walk(p, &format!("{path}.{k}"), preserved);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(p) = obj.get(key) {
                walk(p, &format!("{path}[]"), preserved);
            }
        }
    }
    for crd in all_crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_for(&kind).unwrap();
        let mut preserved = Vec::new();
        walk(&schema, &kind, &mut preserved);
        for p in &preserved {
            assert!(
                p.ends_with("podTemplateSpec") || p.ends_with("annotations"),
                "{p}: unknown fields preserved where it was not intended"
            );
        }
    }
}
