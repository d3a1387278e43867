//! The `podTemplateSpec` overlay: the user's partial pod template merged over the generated one.
//!
//! The merge is a JSON merge patch (RFC 7386: objects merge key by key, `null` deletes a key,
//! scalars replace) with one refinement for lists: when every item of both lists is an object
//! with a string `name` (containers, volumes, volumeMounts, env, ports, ...), items merge by
//! name and new names are appended, so an overlay can add an env var to the `gateway` container
//! without restating the container. Any other list replaces the generated one.
//!
//! The pod selector labels are restored after the merge (a Deployment's selector is immutable
//! and must match its template).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use super::RenderError;

/// Merges `overlay` into `base` (see the module documentation).
pub fn merge_json(base: &mut Value, overlay: &Value) {
    match overlay {
        Value::Object(o) => {
            if !base.is_object() {
                *base = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(b) = base {
                for (k, v) in o {
                    if v.is_null() {
                        b.remove(k);
                    } else {
                        merge_json(b.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        Value::Array(o) => match base {
            Value::Array(b) if named_items(b) && named_items(o) => {
                for item in o {
                    let name = item.get("name").cloned();
                    match b.iter_mut().find(|x| x.get("name") == name.as_ref()) {
                        Some(existing) => merge_json(existing, item),
                        None => b.push(strip_nulls(item)),
                    }
                }
            }
            _ => *base = strip_nulls(overlay),
        },
        other => *base = other.clone(),
    }
}

fn named_items(list: &[Value]) -> bool {
    list.iter().all(|i| i.get("name").is_some_and(Value::is_string))
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// `template` with `overlay` merged over it; `selector` labels are kept.
pub fn overlay_pod_template(
    template: PodTemplateSpec,
    overlay: Option<&Value>,
    selector: &BTreeMap<String, String>,
) -> Result<PodTemplateSpec, RenderError> {
    let Some(overlay) = overlay else { return Ok(template) };
    let mut value =
        serde_json::to_value(&template).map_err(|e| RenderError::PodTemplate(e.to_string()))?;
    merge_json(&mut value, overlay);
    let mut merged: PodTemplateSpec =
        serde_json::from_value(value).map_err(|e| RenderError::PodTemplate(e.to_string()))?;
    let meta = merged.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(Default::default);
    for (k, v) in selector {
        labels.insert(k.clone(), v.clone());
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_objects_and_nulls() {
        let mut base = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]});
        merge_json(&mut base, &json!({"a": null, "b": {"c": 5}, "e": [3], "f": {"g": null}}));
        assert_eq!(base, json!({"b": {"c": 5, "d": 3}, "e": [3], "f": {}}));
    }

    #[test]
    fn named_lists_merge_by_name() {
        let mut base = json!({"containers": [
            {"name": "gateway", "image": "gw", "env": [{"name": "A", "value": "1"}]}
        ]});
        merge_json(
            &mut base,
            &json!({"containers": [
                {"name": "gateway", "env": [{"name": "B", "value": "2"}]},
                {"name": "sidecar", "image": "side"}
            ]}),
        );
        assert_eq!(
            base,
            json!({"containers": [
                {"name": "gateway", "image": "gw",
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "sidecar", "image": "side"}
            ]})
        );
    }

    #[test]
    fn selector_labels_survive_and_bad_overlays_fail() {
        let selector = BTreeMap::from([("app".to_owned(), "x".to_owned())]);
        let t = overlay_pod_template(
            PodTemplateSpec::default(),
            Some(&json!({"metadata": {"labels": {"app": "changed", "team": "a"}}})),
            &selector,
        )
        .unwrap();
        let labels = t.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["app"], "x");
        assert_eq!(labels["team"], "a");
        let err = overlay_pod_template(
            PodTemplateSpec::default(),
            Some(&json!({"spec": {"containers": "nope"}})),
            &selector,
        )
        .unwrap_err();
        assert!(matches!(err, RenderError::PodTemplate(_)));
    }
}
