//! Kubernetes strategic merge patch (`application/strategic-merge-patch+json`).
//!
//! Follows apimachinery's `strategicpatch` as the API server applies it
//! (`MergeParallelList` and `IgnoreUnmatchedNulls` on): maps merge recursively, `null`
//! deletes, lists are replaced unless their patch strategy is `merge`, in which case lists of
//! objects are merged by their merge key and lists of scalars are merged as sets. Directives:
//! `$patch: replace|delete|merge` (in maps and as list elements), `$retainKeys`,
//! `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`. Merged lists are
//! ordered like the real server: patch items in patch (or `$setElementOrder`) order, server
//! only items interleaved by their live order, new items ahead of the live items that follow.

use super::{ListKeys, ListType, PatchError, WithMetadata};
use serde_json::{Map, Value};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// Applies a strategic merge patch to `target` and returns the patched object.
///
/// `keys` gives the patch strategy of each list (through
/// [`ListKeys::strategic_list_type`]); lists it does not know are replaced. The semantics of
/// `metadata.finalizers` (set) and `metadata.ownerReferences` (merged by `uid`) are built in.
/// Malformed directives are [`PatchError::BadRequest`]; a list element missing its merge key
/// is [`PatchError::Unprocessable`].
pub fn strategic_merge_patch(
    target: &Value,
    patch: &Value,
    keys: &dyn ListKeys,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::BadRequest(
            "strategic merge patch must be a JSON object".into(),
        ));
    };
    let original = match target {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let keys = WithMetadata(keys);
    let mut path = Vec::new();
    merge_map(original, patch.clone(), &keys, &mut path).map(Value::Object)
}

fn bad(msg: impl Into<String>) -> PatchError {
    PatchError::BadRequest(msg.into())
}

/// The merge key of a list with patch strategy `merge` (`None` for sets of scalars), or
/// `None` when the list is replaced.
fn list_strategy(keys: &dyn ListKeys, path: &[String]) -> Option<Option<String>> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match keys.strategic_list_type(&p) {
        Some(ListType::Map(k)) => Some(k.into_iter().next()),
        Some(ListType::Set) => Some(None),
        Some(ListType::Atomic) | None => None,
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    keys: &dyn ListKeys,
    path: &mut Vec<String>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => {
                patch.remove(DIRECTIVE);
                // The replacement is used as-is apart from nested directives and nulls,
                // which a typed decode would have dropped.
                merge_map(Map::new(), patch, keys, path)
            }
            Some("delete") => Ok(Map::new()),
            Some("merge") => {
                patch.remove(DIRECTIVE);
                merge_map(original, patch, keys, path)
            }
            _ => Err(bad(format!(
                "Unknown patch type: {directive} in map: {}",
                Value::Object(patch.clone())
            ))),
        };
    }

    apply_retain_keys(&mut original, &mut patch)?;
    merge_set_element_order(&mut original, &mut patch, keys, path)?;

    for (k, patch_v) in patch {
        if let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            if field.is_empty() {
                return Err(bad("invalid $deleteFromPrimitiveList directive"));
            }
            let Value::Array(to_delete) = patch_v else {
                return Err(bad(
                    "Unable to find the list of primitives to delete in the $deleteFromPrimitiveList directive",
                ));
            };
            if let Some(Value::Array(current)) = original.get_mut(field) {
                current.retain(|v| !to_delete.contains(v));
            }
            continue;
        }
        if k.starts_with(SET_ELEMENT_ORDER) {
            // Only reachable for an empty field name, which merge_set_element_order rejects.
            continue;
        }
        if patch_v.is_null() {
            original.remove(&k);
            continue;
        }
        path.push(k.clone());
        let merged = match (original.remove(&k), patch_v) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                Value::Object(merge_map(o, p, keys, path)?)
            }
            (Some(Value::Array(o)), Value::Array(p)) => match list_strategy(keys, path) {
                Some(merge_key) => {
                    Value::Array(merge_slice(o, p, merge_key.as_deref(), keys, path)?)
                }
                None => merge_new_value(Value::Array(p), keys, path)?,
            },
            // New fields, scalars and type changes: the patch value wins.
            (_, v) => merge_new_value(v, keys, path)?,
        };
        path.pop();
        original.insert(k, merged);
    }
    Ok(original)
}

/// A patch value without counterpart in the original: it is taken as-is, except that
/// directives are resolved against an empty original and nulls are dropped (the real server
/// decodes the result into a typed object, which loses both).
fn merge_new_value(
    v: Value,
    keys: &dyn ListKeys,
    path: &mut Vec<String>,
) -> Result<Value, PatchError> {
    match v {
        Value::Object(p) => Ok(Value::Object(merge_map(Map::new(), p, keys, path)?)),
        Value::Array(items) => {
            let has_map_elements = items.iter().any(Value::is_object);
            if has_map_elements {
                if let Some(Some(key)) = list_strategy(keys, path) {
                    return Ok(Value::Array(merge_slice(
                        Vec::new(),
                        items,
                        Some(&key),
                        keys,
                        path,
                    )?));
                }
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(match item {
                        Value::Object(m) => Value::Object(merge_map(Map::new(), m, keys, path)?),
                        other => other,
                    });
                }
                Ok(Value::Array(out))
            } else {
                Ok(Value::Array(items))
            }
        }
        other => Ok(other),
    }
}

fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(bad(
            "invalid patch: the $retainKeys directive must be a list of field names",
        ));
    };
    let retain: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !retain.contains(&k.as_str()) {
            return Err(PatchError::Unprocessable(format!(
                "the patch field {k:?} is not in the $retainKeys list"
            )));
        }
    }
    original.retain(|k, _| retain.contains(&k.as_str()));
    Ok(())
}

fn merge_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    keys: &dyn ListKeys,
    path: &mut Vec<String>,
) -> Result<(), PatchError> {
    let order_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for order_key in order_keys {
        let Some(order) = patch.remove(&order_key) else {
            continue;
        };
        let field = order_key.trim_start_matches(SET_ELEMENT_ORDER).to_string();
        if field.is_empty() {
            return Err(bad(
                "invalid $setElementOrder directive: missing field name",
            ));
        }
        let Value::Array(order) = order else {
            return Err(bad(
                "invalid patch: the $setElementOrder directive must be a list",
            ));
        };
        path.push(field.clone());
        let strategy = list_strategy(keys, path);
        let original_list = match original.get(&field) {
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => return Err(bad(format!("{field} is not a list"))),
            None => None,
        };
        let patch_list = match patch.remove(&field) {
            Some(Value::Array(a)) => Some(a),
            Some(Value::Null) | None => None,
            Some(_) => return Err(bad(format!("{field} in the patch is not a list"))),
        };
        let merge_key = strategy.clone().flatten();
        let merged = match (original_list.clone(), patch_list) {
            (Some(o), None) => o,
            (None, Some(p)) => match strategy {
                Some(_) => merge_slice(Vec::new(), p, merge_key.as_deref(), keys, path)?,
                None => p,
            },
            (Some(o), Some(p)) => match strategy {
                Some(_) => merge_slice(o, p, merge_key.as_deref(), keys, path)?,
                None => p,
            },
            (None, None) => {
                path.pop();
                continue;
            }
        };
        let (patch_items, server_only) = partition(merged, &order, merge_key.as_deref());
        let server_order = original_list.unwrap_or_default();
        let ordered = normalize_element_order(
            patch_items,
            server_only,
            &order,
            &server_order,
            merge_key.as_deref(),
        );
        path.pop();
        original.insert(field, Value::Array(ordered));
    }
    Ok(())
}

fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: Option<&str>,
    keys: &dyn ListKeys,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let maps = original.iter().chain(patch.iter()).any(Value::is_object);
    if !maps {
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(patch.iter()) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (p, s) = partition(merged, &patch, None);
        return Ok(normalize_element_order(p, s, &patch, &original, None));
    }
    if original.iter().chain(patch.iter()).any(|v| !v.is_object()) {
        return Err(PatchError::Unprocessable(format!(
            "list {} mixes objects and other values",
            path.join(".")
        )));
    }
    let Some(key) = merge_key else {
        return Err(PatchError::Unprocessable(format!(
            "cannot merge lists without merge key for {}",
            path.join(".")
        )));
    };
    let server_order = original.clone();
    // Special elements: `{"$patch": "delete", key: v}` and `{"$patch": "replace"}`.
    let mut current = original;
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let directive = item.get(DIRECTIVE).cloned();
        match directive {
            None => plain.push(item),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let Some(kv) = item.get(key) else {
                        return Err(no_merge_key(&item, key));
                    };
                    current.retain(|o| o.get(key) != Some(kv));
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(bad("merging lists cannot yet be specified in the patch"));
                }
                _ => return Err(bad(format!("Unknown patch type: {d} in map: {item}"))),
            },
        }
    }
    if replace {
        let mut out = Vec::with_capacity(plain.len());
        for item in plain {
            match item {
                Value::Object(m) => out.push(Value::Object(merge_map(Map::new(), m, keys, path)?)),
                other => out.push(other),
            }
        }
        return Ok(out);
    }
    for item in &plain {
        if item.get(key).is_none() {
            return Err(no_merge_key(item, key));
        }
    }
    let mut merged = current;
    for item in plain.iter().cloned() {
        let Value::Object(p) = item else {
            continue;
        };
        let kv = p.get(key).cloned();
        match merged.iter().position(|o| o.get(key) == kv.as_ref()) {
            Some(i) => {
                let o = match std::mem::take(&mut merged[i]) {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                merged[i] = Value::Object(merge_map(o, p, keys, path)?);
            }
            None => merged.push(Value::Object(merge_map(Map::new(), p, keys, path)?)),
        }
    }
    let (p, s) = partition(merged, &plain, Some(key));
    Ok(normalize_element_order(
        p,
        s,
        &plain,
        &server_order,
        Some(key),
    ))
}

fn no_merge_key(item: &Value, key: &str) -> PatchError {
    PatchError::Unprocessable(format!(
        "map: {item} does not contain declared merge key: {key}"
    ))
}

/// Identity of a list element for ordering: its merge key value, or itself for scalars.
fn identity<'a>(v: &'a Value, merge_key: Option<&str>) -> Option<&'a Value> {
    match merge_key {
        Some(k) => v.get(k),
        None => Some(v),
    }
}

fn index_in(list: &[Value], v: &Value, merge_key: Option<&str>) -> Option<usize> {
    let id = identity(v, merge_key)?;
    list.iter().position(|o| identity(o, merge_key) == Some(id))
}

/// Splits `merged` into the items present in `by` and the others (server-only items).
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    merge_key: Option<&str>,
) -> (Vec<Value>, Vec<Value>) {
    merged
        .into_iter()
        .partition(|v| index_in(by, v, merge_key).is_some())
}

/// Sorts the patch items by `patch_order` and the server-only items by `server_order`, then
/// interleaves them by their live order, patch items winning when undecidable.
fn normalize_element_order(
    mut patch_items: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Vec<Value> {
    patch_items.sort_by_key(|v| index_in(patch_order, v, merge_key).unwrap_or(usize::MAX));
    server_only.sort_by_key(|v| index_in(server_order, v, merge_key).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => match (
                index_in(server_order, l, merge_key),
                index_in(server_order, r, merge_key),
            ) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some(v) = next {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::{NoListKeys, builtin_list_keys};
    use serde_json::json;

    fn deploy() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"replicas": 1, "template": {"spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}],
                     "ports": [{"containerPort": 80}]},
                    {"name": "sidecar", "image": "side:1"}
                ],
                "tolerations": [{"key": "k1"}]
            }}}
        })
    }

    fn smp(target: &Value, patch: Value) -> Result<Value, PatchError> {
        strategic_merge_patch(target, &patch, &builtin_list_keys("apps", "Deployment"))
    }

    fn containers(v: &Value) -> &Value {
        &v["spec"]["template"]["spec"]["containers"]
    }

    #[test]
    fn containers_merge_by_name() -> Result<(), PatchError> {
        let out = smp(
            &deploy(),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"app","image":"app:2"}]}}}}),
        )?;
        assert_eq!(containers(&out)[0]["image"], "app:2");
        assert_eq!(
            containers(&out)[0]["env"],
            json!([{"name":"A","value":"1"}])
        );
        assert_eq!(
            containers(&out)[1],
            json!({"name":"sidecar","image":"side:1"})
        );
        Ok(())
    }

    #[test]
    fn new_items_go_first_like_the_real_server() -> Result<(), PatchError> {
        let out = smp(
            &deploy(),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"new","image":"n"}]}}}}),
        )?;
        let names: Vec<&str> = containers(&out)
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["new", "app", "sidecar"]);
        Ok(())
    }

    #[test]
    fn set_element_order_controls_order() -> Result<(), PatchError> {
        let out = smp(
            &deploy(),
            json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers": [{"name":"sidecar"},{"name":"app"},{"name":"new"}],
            "containers":[{"name":"new","image":"n"}]}}}}),
        )?;
        let names: Vec<&str> = containers(&out)
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["sidecar", "app", "new"]);
        assert!(out.to_string().find("$setElementOrder").is_none());
        Ok(())
    }

    #[test]
    fn nested_env_and_ports_merge() -> Result<(), PatchError> {
        let out = smp(
            &deploy(),
            json!({"spec":{"template":{"spec":{"containers":[
                {"name":"app","env":[{"name":"B","value":"2"},{"name":"A","value":"9"}],"ports":[{"containerPort":443}]}
            ]}}}}),
        )?;
        let c = &containers(&out)[0];
        // Patch items take the patch order.
        assert_eq!(
            c["env"],
            json!([{"name":"B","value":"2"},{"name":"A","value":"9"}])
        );
        assert_eq!(
            c["ports"],
            json!([{"containerPort":443},{"containerPort":80}])
        );
        Ok(())
    }

    #[test]
    fn delete_directive_in_list_and_map() -> Result<(), PatchError> {
        let out = smp(
            &deploy(),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}),
        )?;
        assert_eq!(containers(&out).as_array().map(Vec::len), Some(1));
        let out = smp(
            &deploy(),
            json!({"metadata":{"labels":{"$patch":"delete"}}}),
        )?;
        assert_eq!(out["metadata"]["labels"], json!({}));
        Ok(())
    }

    #[test]
    fn replace_directives() -> Result<(), PatchError> {
        let out = smp(
            &deploy(),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"only","image":"o"},{"$patch":"replace"}]}}}}),
        )?;
        assert_eq!(*containers(&out), json!([{"name":"only","image":"o"}]));
        let out = smp(
            &deploy(),
            json!({"metadata":{"labels":{"$patch":"replace","x":"y"}}}),
        )?;
        assert_eq!(out["metadata"]["labels"], json!({"x":"y"}));
        Ok(())
    }

    #[test]
    fn lists_without_strategy_are_replaced() -> Result<(), PatchError> {
        let out = smp(
            &deploy(),
            json!({"spec":{"template":{"spec":{"tolerations":[{"key":"k2"}]}}}}),
        )?;
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key":"k2"}])
        );
        Ok(())
    }

    #[test]
    fn finalizers_merge_as_set_and_delete_from_primitive_list() -> Result<(), PatchError> {
        let out = smp(&deploy(), json!({"metadata":{"finalizers":["b","a"]}}))?;
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "a"]));
        let out = smp(
            &out,
            json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a"]}}),
        )?;
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        Ok(())
    }

    #[test]
    fn owner_references_merge_by_uid() -> Result<(), PatchError> {
        let t = json!({"metadata":{"ownerReferences":[{"uid":"1","name":"a"}]}});
        let out = strategic_merge_patch(
            &t,
            &json!({"metadata":{"ownerReferences":[{"uid":"2","name":"b"}]}}),
            &NoListKeys,
        )?;
        assert_eq!(
            out["metadata"]["ownerReferences"].as_array().map(Vec::len),
            Some(2)
        );
        Ok(())
    }

    #[test]
    fn nulls_delete_and_retain_keys() -> Result<(), PatchError> {
        let out = smp(
            &deploy(),
            json!({"spec":{"replicas":null},"metadata":{"labels":{"app":null,"new":"x"}}}),
        )?;
        assert!(out["spec"].get("replicas").is_none());
        assert_eq!(out["metadata"]["labels"], json!({"new":"x"}));
        let pod = json!({"spec":{"volumes":[{"name":"v","emptyDir":{},"hostPath":{"path":"/x"}}]}});
        let out = strategic_merge_patch(
            &pod,
            &json!({"spec":{"volumes":[{"name":"v","$retainKeys":["name","configMap"],"configMap":{"name":"c"}}]}}),
            &builtin_list_keys("", "Pod"),
        )?;
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name":"v","configMap":{"name":"c"}}])
        );
        Ok(())
    }

    #[test]
    fn errors() {
        let e = smp(
            &deploy(),
            json!({"spec":{"template":{"spec":{"containers":[{"image":"no-name"}]}}}}),
        );
        assert!(matches!(e, Err(PatchError::Unprocessable(_))), "{e:?}");
        let e = smp(&deploy(), json!({"metadata":{"labels":{"$patch":"bogus"}}}));
        assert!(matches!(e, Err(PatchError::BadRequest(_))), "{e:?}");
        let e = smp(&deploy(), json!([1]));
        assert!(matches!(e, Err(PatchError::BadRequest(_))), "{e:?}");
    }

    #[test]
    fn node_addresses_merge_by_type_for_patches() -> Result<(), PatchError> {
        let node = json!({"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.1"},{"type":"Hostname","address":"n"}]}});
        let out = strategic_merge_patch(
            &node,
            &json!({"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.2"}]}}),
            &builtin_list_keys("", "Node"),
        )?;
        assert_eq!(
            out["status"]["addresses"],
            json!([{"type":"InternalIP","address":"10.0.0.2"},{"type":"Hostname","address":"n"}])
        );
        Ok(())
    }
}
