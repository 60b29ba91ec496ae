//! Structural defaulting, as kube-apiserver applies it to custom resources.

use serde_json::{Map, Value};

use super::{flag, items_schema, property_schema};

/// Applies the `default:` values of `schema` to `obj`.
///
/// First, `null` values of properties that are neither `nullable` nor
/// defaulted are removed (the apiserver prunes them before defaulting); then
/// missing properties and non-nullable `null`s get their default, and
/// defaulting recurses into the result (so defaults nested in a defaulted
/// object apply too).
pub fn default(obj: &mut Value, schema: &Value) {
    if let Some(s) = schema.as_object() {
        prune_nulls(obj, s);
        apply(obj, s);
    }
}

/// A `null` the schema does not allow, which a default may replace.
fn non_nullable_null(v: &Value, s: &Map<String, Value>) -> bool {
    v.is_null() && !flag(s, "nullable")
}

fn prune_nulls(x: &mut Value, s: &Map<String, Value>) {
    match x {
        Value::Object(map) => {
            map.retain(|k, v| {
                let Some(sub) = property_schema(s, k).and_then(Value::as_object) else {
                    return true;
                };
                !non_nullable_null(v, sub) || sub.contains_key("default")
            });
            for (k, v) in map.iter_mut() {
                if let Some(sub) = property_schema(s, k).and_then(Value::as_object) {
                    prune_nulls(v, sub);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = items_schema(s).and_then(Value::as_object) {
                for item in items {
                    prune_nulls(item, sub);
                }
            }
        }
        _ => {}
    }
}

fn apply(x: &mut Value, s: &Map<String, Value>) {
    match x {
        Value::Object(map) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, prop) in props {
                    let Some(prop) = prop.as_object() else {
                        continue;
                    };
                    let Some(default) = prop.get("default") else {
                        continue;
                    };
                    let missing = map.get(k).is_none_or(|v| non_nullable_null(v, prop));
                    if missing {
                        map.insert(k.clone(), default.clone());
                    }
                }
            }
            let additional = s.get("additionalProperties").and_then(Value::as_object);
            for (k, v) in map.iter_mut() {
                let from_props = s
                    .get("properties")
                    .and_then(|p| p.get(k))
                    .and_then(Value::as_object);
                if let Some(sub) = from_props {
                    apply(v, sub);
                } else if let Some(sub) = additional {
                    fill_null(v, sub);
                    apply(v, sub);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = items_schema(s).and_then(Value::as_object) {
                for item in items {
                    fill_null(item, sub);
                    apply(item, sub);
                }
            }
        }
        _ => {}
    }
}

/// Replaces a non-nullable `null` list item or map value by its default.
fn fill_null(v: &mut Value, s: &Map<String, Value>) {
    if non_nullable_null(v, s)
        && let Some(d) = s.get("default")
    {
        *v = d.clone();
    }
}
