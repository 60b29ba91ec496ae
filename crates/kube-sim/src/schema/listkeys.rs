//! List semantics (`x-kubernetes-list-type`) read from a CRD schema, for
//! strategic-merge-like merging and server-side apply of custom resources.

use serde_json::{Map, Value};

use super::items_schema;
use crate::patch::{ListKeys, ListType};

/// [`ListKeys`] backed by a CRD version's `openAPIV3Schema`.
///
/// Lists with `x-kubernetes-list-type: map` are associative by
/// `x-kubernetes-list-map-keys`, `set` lists are sets, and every other list
/// the schema declares is atomic (the CRD default).
#[derive(Debug, Clone)]
pub struct SchemaListKeys {
    schema: Value,
}

impl SchemaListKeys {
    /// Wraps a CRD version's `openAPIV3Schema`.
    pub fn new(schema: Value) -> Self {
        Self { schema }
    }

    /// The schema this table reads from.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// The schema node at `path`: field names from the root, list items transparent.
    fn node(&self, path: &[&str]) -> Option<&Map<String, Value>> {
        let mut node = self.schema.as_object()?;
        for segment in path {
            node = transparent(node)?;
            let next = node
                .get("properties")
                .and_then(|p| p.get(*segment))
                .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))?;
            node = next.as_object()?;
        }
        Some(node)
    }
}

/// Steps through (possibly nested) list item schemas.
fn transparent(mut node: &Map<String, Value>) -> Option<&Map<String, Value>> {
    while node.get("type").and_then(Value::as_str) == Some("array") {
        node = items_schema(node)?.as_object()?;
    }
    Some(node)
}

impl ListKeys for SchemaListKeys {
    fn list_type(&self, path: &[&str]) -> Option<ListType> {
        let node = self.node(path)?;
        if node.get("type").and_then(Value::as_str) != Some("array") {
            return None;
        }
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => {
                let keys: Vec<String> = node
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|ks| {
                        ks.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                if keys.is_empty() {
                    Some(ListType::Atomic)
                } else {
                    Some(ListType::Map(keys))
                }
            }
            Some("set") => Some(ListType::Set),
            _ => Some(ListType::Atomic),
        }
    }

    fn map_is_atomic(&self, path: &[&str]) -> bool {
        self.node(path)
            .and_then(transparent)
            .and_then(|n| n.get("x-kubernetes-map-type"))
            .and_then(Value::as_str)
            == Some("atomic")
    }

    fn map_key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        let items = transparent(self.node(path)?)?;
        items
            .get("properties")
            .and_then(|p| p.get(key))
            .and_then(|k| k.get("default"))
            .cloned()
    }
}
