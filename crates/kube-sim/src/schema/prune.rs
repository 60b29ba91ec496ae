//! Structural pruning of unknown fields, as kube-apiserver does on decode.

use serde_json::{Map, Value};

use super::{
    OBJECT_META_FIELDS, child_path, embedded_resource, index_path, items_schema, preserves_unknown,
};

/// Removes the fields of `obj` that `schema` does not declare and returns the
/// removed paths (e.g. `spec.foo`, `spec.items[0].bar`), in the form the
/// apiserver reports as `unknown field "spec.foo"` for `fieldValidation=Warn|Strict`.
///
/// Nothing below `x-kubernetes-preserve-unknown-fields: true` is removed,
/// except under explicitly declared properties. `apiVersion`, `kind` and
/// `metadata` are kept at the root and at `x-kubernetes-embedded-resource`
/// nodes; the metadata of embedded resources is reduced to ObjectMeta fields.
pub fn prune(obj: &mut Value, schema: &Value) -> Vec<String> {
    let mut pruned = Vec::new();
    prune_node(obj, schema.as_object(), "", true, &mut pruned);
    pruned
}

fn prune_node(
    x: &mut Value,
    schema: Option<&Map<String, Value>>,
    path: &str,
    resource_root: bool,
    pruned: &mut Vec<String>,
) {
    match x {
        Value::Object(map) => {
            let Some(s) = schema else {
                if !resource_root {
                    drain(map, path, pruned);
                }
                return;
            };
            let preserve = preserves_unknown(s);
            let resource_root = resource_root || embedded_resource(s);
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let field = child_path(path, &key);
                if resource_root {
                    match (key.as_str(), map.get_mut(&key)) {
                        ("apiVersion" | "kind", Some(Value::String(_))) => continue,
                        ("metadata", Some(Value::Object(meta))) => {
                            // The root's metadata is decoded as ObjectMeta by the server;
                            // an embedded resource's metadata is coerced to it here.
                            if !path.is_empty() {
                                meta.retain(|k, _| {
                                    let keep = OBJECT_META_FIELDS.contains(&k.as_str());
                                    if !keep {
                                        pruned.push(child_path(&field, k));
                                    }
                                    keep
                                });
                            }
                            continue;
                        }
                        _ => {}
                    }
                }
                let sub = s
                    .get("properties")
                    .and_then(|p| p.get(&key))
                    .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
                    .and_then(Value::as_object);
                match (sub, map.get_mut(&key)) {
                    (Some(sub), Some(value)) => prune_node(value, Some(sub), &field, false, pruned),
                    (None, _) if preserve || allows_any(s) => {}
                    (None, _) => {
                        map.remove(&key);
                        pruned.push(field);
                    }
                    (Some(_), None) => {}
                }
            }
        }
        Value::Array(items) => {
            let item_schema = schema.and_then(items_schema).and_then(Value::as_object);
            if item_schema.is_none() && schema.is_some_and(preserves_unknown) {
                return;
            }
            for (i, item) in items.iter_mut().enumerate() {
                prune_node(item, item_schema, &index_path(path, i), false, pruned);
            }
        }
        _ => {}
    }
}

/// `additionalProperties: true` (not structural, but tolerated) keeps everything.
fn allows_any(s: &Map<String, Value>) -> bool {
    s.get("additionalProperties").and_then(Value::as_bool) == Some(true)
}

fn drain(map: &mut Map<String, Value>, path: &str, pruned: &mut Vec<String>) {
    for key in map.keys() {
        pruned.push(child_path(path, key));
    }
    map.clear();
}
