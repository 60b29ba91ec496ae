//! Small helpers over Kubernetes objects held as JSON.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// `metadata.<field>` as a string ("" when absent).
pub(crate) fn meta<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

/// `metadata.name`.
pub(crate) fn name(obj: &Value) -> &str {
    meta(obj, "name")
}

/// `metadata.namespace`.
pub(crate) fn namespace(obj: &Value) -> &str {
    meta(obj, "namespace")
}

/// `metadata.uid`.
pub(crate) fn uid(obj: &Value) -> &str {
    meta(obj, "uid")
}

/// Whether the object has a deletion timestamp.
pub(crate) fn is_deleting(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

/// The uid of the object's controller (the owner reference with `controller: true`).
pub(crate) fn controller_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

/// A controller owner reference to `owner`.
pub(crate) fn controller_ref(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// An integer field, defaulting to `default`.
pub(crate) fn int(v: &Value, default: i64) -> i64 {
    v.as_i64().unwrap_or(default)
}

/// The object's labels.
pub(crate) fn labels(obj: &Value) -> BTreeMap<String, String> {
    string_map(&obj["metadata"]["labels"])
}

/// A JSON object of strings as a map.
pub(crate) fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `labels` satisfy a `LabelSelector` (`matchLabels` and `matchExpressions`). An empty
/// selector matches everything, as for workloads.
pub(crate) fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector["matchLabels"].as_object().is_none_or(|m| {
        m.iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
    });
    let exprs_ok = selector["matchExpressions"].as_array().is_none_or(|es| {
        es.iter().all(|e| {
            expression_matches(
                e["key"].as_str().unwrap_or_default(),
                e["operator"].as_str().unwrap_or_default(),
                &e["values"],
                labels.get(e["key"].as_str().unwrap_or_default()),
            )
        })
    });
    labels_ok && exprs_ok
}

/// One selector requirement (`In`, `NotIn`, `Exists`, `DoesNotExist`, and the node-affinity
/// `Gt`/`Lt`) against the value of its key.
pub(crate) fn expression_matches(
    _key: &str,
    operator: &str,
    values: &Value,
    value: Option<&String>,
) -> bool {
    let values: Vec<&str> = values
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match operator {
        "In" => value.is_some_and(|v| values.contains(&v.as_str())),
        "NotIn" => value.is_none_or(|v| !values.contains(&v.as_str())),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|s| number(s))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|s| number(s))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// The condition of `type` in `status.conditions`.
pub(crate) fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Whether the condition of `type` has status `True`.
pub(crate) fn condition_true(obj: &Value, kind: &str) -> bool {
    condition(obj, kind).is_some_and(|c| c["status"] == "True")
}

/// Builds conditions for a status, keeping `lastTransitionTime` (and `lastUpdateTime`) from
/// `old` when the condition's status did not change, so that rewriting an unchanged status is a
/// no-op.
pub(crate) fn conditions_with_times(old: &Value, new: Vec<Value>, now: &str) -> Value {
    let old = old.as_array();
    let out: Vec<Value> = new
        .into_iter()
        .map(|mut c| {
            let prev = old.and_then(|o| o.iter().find(|p| p["type"] == c["type"]));
            let same_status = prev.is_some_and(|p| p["status"] == c["status"]);
            let same_all = prev.is_some_and(|p| {
                p["status"] == c["status"]
                    && p["reason"] == c["reason"]
                    && p["message"] == c["message"]
            });
            if let Some(m) = c.as_object_mut() {
                let pick = |field: &str, keep: bool| match prev {
                    Some(p) if keep && !p[field].is_null() => p[field].clone(),
                    _ => json!(now),
                };
                if m.contains_key("lastTransitionTime") {
                    m.insert(
                        "lastTransitionTime".into(),
                        pick("lastTransitionTime", same_status),
                    );
                }
                if m.contains_key("lastUpdateTime") {
                    m.insert("lastUpdateTime".into(), pick("lastUpdateTime", same_all));
                }
            }
            c
        })
        .collect();
    Value::Array(out)
}

/// A condition with both timestamps (to be filled by [`conditions_with_times`]).
pub(crate) fn cond(kind: &str, status: bool, reason: &str, message: &str) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(kind));
    m.insert(
        "status".into(),
        json!(if status { "True" } else { "False" }),
    );
    if !reason.is_empty() {
        m.insert("reason".into(), json!(reason));
    }
    if !message.is_empty() {
        m.insert("message".into(), json!(message));
    }
    m.insert("lastTransitionTime".into(), Value::Null);
    Value::Object(m)
}

/// FNV-1a, 32 bits: the hash upstream controllers use for `pod-template-hash` and revisions.
pub(crate) fn fnv32a(data: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in data {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Upstream's `rand.SafeEncodeString`: maps each character onto an alphabet without vowels or
/// confusable characters, so hashes never spell words.
pub(crate) fn safe_encode(s: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

/// The `pod-template-hash` / `controller-revision-hash` of a pod template: FNV-1a over the
/// template (and the collision count), safe-encoded like upstream's `ComputeHash`.
pub(crate) fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut data = serde_json::to_vec(template).unwrap_or_default();
    if let Some(c) = collision_count {
        data.extend_from_slice(c.to_string().as_bytes());
    }
    safe_encode(&fnv32a(&data).to_string())
}

/// Resolves an `IntOrString` (`3` or `"25%"`) against `total`, rounding percentages up or down.
pub(crate) fn int_or_percent(v: &Value, total: i64, round_up: bool, default: i64) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(default),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) if round_up => (p * total + 99) / 100,
            Some(p) => p * total / 100,
            None => s.parse().unwrap_or(default),
        },
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [
            ("app".to_owned(), "a".to_owned()),
            ("tier".to_owned(), "web".to_owned()),
        ]
        .into_iter()
        .collect();
        assert!(selector_matches(
            &json!({"matchLabels": {"app": "a"}}),
            &labels
        ));
        assert!(!selector_matches(
            &json!({"matchLabels": {"app": "b"}}),
            &labels
        ));
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}),
            &labels
        ));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}),
            &labels
        ));
    }

    #[test]
    fn percentages_round_like_upstream() {
        assert_eq!(int_or_percent(&json!("25%"), 3, true, 0), 1);
        assert_eq!(int_or_percent(&json!("25%"), 3, false, 0), 0);
        assert_eq!(int_or_percent(&json!(2), 3, false, 0), 2);
    }

    #[test]
    fn template_hashes_are_safe_and_stable() {
        let a = template_hash(&json!({"spec": {"containers": []}}), None);
        assert_eq!(a, template_hash(&json!({"spec": {"containers": []}}), None));
        assert_ne!(
            a,
            template_hash(&json!({"spec": {"containers": []}}), Some(1))
        );
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
