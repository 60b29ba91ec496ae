//! OpenAPI v3 structural schema handling for CustomResourceDefinitions.
//!
//! Everything here is pure code over `serde_json::Value` and follows what
//! kube-apiserver does for custom resources, in the order it does it:
//! [`prune()`] unknown fields (on decode), [`default()`] (after pruning), then
//! [`validate()`]. `x-kubernetes-validations` (CEL rules) are deliberately
//! skipped: they are neither evaluated nor reported.

pub mod default;
pub mod listkeys;
pub mod prune;
pub mod validate;

pub use default::default;
pub use listkeys::SchemaListKeys;
pub use prune::prune;
pub use validate::{Cause, invalid_message, validate};

use serde_json::{Map, Value};

/// The schema node of object property `key`, if the schema declares one
/// (explicit `properties` first, then an `additionalProperties` schema).
pub(crate) fn property_schema<'a>(schema: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(p) = schema.get("properties").and_then(|p| p.get(key)) {
        return Some(p);
    }
    schema.get("additionalProperties").filter(|a| a.is_object())
}

/// The `items` schema of an array schema node.
pub(crate) fn items_schema(schema: &Map<String, Value>) -> Option<&Value> {
    schema.get("items").filter(|i| i.is_object())
}

/// Whether `x-kubernetes-preserve-unknown-fields: true` is set on the node.
pub(crate) fn preserves_unknown(schema: &Map<String, Value>) -> bool {
    flag(schema, "x-kubernetes-preserve-unknown-fields")
}

/// Whether `x-kubernetes-embedded-resource: true` is set on the node.
pub(crate) fn embedded_resource(schema: &Map<String, Value>) -> bool {
    flag(schema, "x-kubernetes-embedded-resource")
}

/// Reads a boolean extension or keyword, absent meaning false.
pub(crate) fn flag(schema: &Map<String, Value>, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Appends an object key to a Kubernetes field path (`spec` + `replicas`).
pub(crate) fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Appends a list index to a Kubernetes field path (`spec.items` + `[0]`).
pub(crate) fn index_path(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// The standard `ObjectMeta` fields kept in the metadata of embedded resources.
pub(crate) const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

#[cfg(test)]
mod tests;
