//! Small types shared by several custom resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// A reference to another object in the same namespace, by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct LocalRef {
    /// Name of the referenced object (same namespace).
    #[schemars(length(min = 1))]
    pub name: String,
}

/// A key in a Secret of the same namespace. Secret values are never copied into ConfigMaps:
/// the operator mounts them into the gateway pod and the gateway reads them from there.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// A key in a ConfigMap of the same namespace, for data that is not secret (a CA bundle).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key within the ConfigMap.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Schema for `conditions`: a list-map keyed by `type`, as the Kubernetes API conventions ask,
/// so that server-side apply merges conditions by type.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

/// Schema for opaque objects whose fields the API server keeps as given (for example a
/// `podTemplateSpec` overlay); the operator interprets them.
pub fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    let mut schema = Schema::default();
    schema.insert("type".into(), "object".into());
    schema.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
    schema
}
