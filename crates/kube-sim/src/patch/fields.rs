//! Field sets (the ownership unit of server-side apply) and their `fieldsV1` encoding.
//!
//! A set is a tree whose edges are path elements encoded exactly as in `fieldsV1`:
//! `f:<field>` (object field), `k:<json of the key fields>` (element of an associative list),
//! `v:<json value>` (element of a set list) and `i:<index>`; a node is a *member* of the set
//! when it carries `.` in `fieldsV1` or is a leaf.

use super::{ListKeys, ListType};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A set of field paths, as stored in `managedFields[].fieldsV1`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

/// A member path of a set: its encoded path elements (`f:spec`, `f:replicas`).
pub(crate) type PathKey = Vec<String>;

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the set has no member.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// Decodes a `fieldsV1` object. Unknown shapes are ignored rather than rejected because
    /// the field manager must never fail a write over a malformed entry.
    pub fn from_fields_v1(v: &Value) -> Self {
        let mut set = FieldSet::new();
        if let Value::Object(m) = v {
            for (k, child) in m {
                if k == "." {
                    set.member = true;
                } else {
                    let mut c = FieldSet::from_fields_v1(child);
                    // A leaf (`{}`) is a member.
                    if child.as_object().is_some_and(Map::is_empty) {
                        c.member = true;
                    }
                    if !c.is_empty() {
                        set.children.insert(k.clone(), c);
                    }
                }
            }
        }
        set
    }

    /// Encodes the set as a `fieldsV1` object.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, c) in &self.children {
            if !c.is_empty() {
                m.insert(k.clone(), c.to_fields_v1());
            }
        }
        Value::Object(m)
    }

    /// Marks `path` as a member.
    pub(crate) fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((head, rest)) => self.children.entry(head.clone()).or_default().insert(rest),
        }
    }

    /// The child node at `element`, if any.
    pub(crate) fn child(&self, element: &str) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// Whether the node itself is a member.
    pub(crate) fn is_member(&self) -> bool {
        self.member
    }

    /// Whether `path` is a member or a prefix of a member.
    pub(crate) fn has_prefix(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => !self.is_empty(),
            Some((head, rest)) => self.children.get(head).is_some_and(|c| c.has_prefix(rest)),
        }
    }

    /// The members of `self` or `other`.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.member |= other.member;
        for (k, c) in &other.children {
            let merged = match out.children.get(k) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(k.clone(), merged);
        }
        out
    }

    /// The members of `self` not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            let d = match other.children.get(k) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(k.clone(), d);
            }
        }
        out
    }

    /// The members of both `self` and `other`.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            if let Some(o) = other.children.get(k) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(k.clone(), i);
                }
            }
        }
        out
    }

    /// All member paths, in order.
    pub(crate) fn members(&self) -> Vec<PathKey> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect(&mut prefix, &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<PathKey>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }
}

/// Formats an encoded path like the API server does in conflict messages:
/// `.spec.containers[name="nginx"].image`, `.metadata.finalizers[="a"]`.
pub(crate) fn format_path(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let parts: Vec<String> = match serde_json::from_str::<Map<String, Value>>(k) {
                Ok(m) => m.iter().map(|(n, v)| format!("{n}={v}")).collect(),
                Err(_) => vec![k.to_string()],
            };
            s.push('[');
            s.push_str(&parts.join(","));
            s.push(']');
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = el.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        } else {
            s.push_str(el);
        }
    }
    s
}

/// Canonical encoding of a list element's key: the key fields sorted by name, compact JSON.
/// `None` when the element is not an object or has none of the key fields.
pub(crate) fn element_key(
    item: &Value,
    key_fields: &[String],
    keys: &dyn ListKeys,
    path: &[&str],
) -> Option<String> {
    let obj = item.as_object()?;
    let mut parts: BTreeMap<&str, Value> = BTreeMap::new();
    for k in key_fields {
        match obj.get(k) {
            Some(v) if !v.is_null() => {
                parts.insert(k, v.clone());
            }
            _ => {
                if let Some(d) = keys.map_key_default(path, k) {
                    parts.insert(k, d);
                }
            }
        }
    }
    if parts.is_empty() {
        return None;
    }
    let m: Map<String, Value> = parts.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Some(format!("k:{}", Value::Object(m)))
}

/// Encoding of a set element.
pub(crate) fn value_element(v: &Value) -> String {
    format!("v:{v}")
}

/// The leaves of an object: every member path of its field set, with the value for plain
/// leaves and `None` for list elements (which own their children separately).
pub(crate) type Leaves = BTreeMap<PathKey, Option<Value>>;

/// Error for associative lists with two elements of the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DuplicateKey(pub(crate) String);

/// Computes the leaves of `v`. With `strict`, duplicate keys in associative lists and sets are
/// an error (for applied configurations); otherwise duplicates are folded together.
pub(crate) fn leaves(v: &Value, keys: &dyn ListKeys, strict: bool) -> Result<Leaves, DuplicateKey> {
    let mut out = Leaves::new();
    let mut path: Vec<String> = Vec::new();
    let mut enc: Vec<String> = Vec::new();
    if let Value::Object(m) = v {
        for (k, c) in m {
            path.push(k.clone());
            enc.push(format!("f:{k}"));
            walk(c, keys, strict, &mut path, &mut enc, &mut out)?;
            enc.pop();
            path.pop();
        }
    }
    Ok(out)
}

fn walk(
    v: &Value,
    keys: &dyn ListKeys,
    strict: bool,
    path: &mut Vec<String>,
    enc: &mut Vec<String>,
    out: &mut Leaves,
) -> Result<(), DuplicateKey> {
    // An owned copy: `path` is extended while `p` is still in use.
    let here = path.clone();
    let p: Vec<&str> = here.iter().map(String::as_str).collect();
    match v {
        Value::Object(m) if !m.is_empty() && !keys.map_is_atomic(&p) => {
            for (k, c) in m {
                path.push(k.clone());
                enc.push(format!("f:{k}"));
                walk(c, keys, strict, path, enc, out)?;
                enc.pop();
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match keys.list_type(&p) {
            Some(ListType::Map(key_fields)) if items.iter().all(Value::is_object) => {
                let mut seen = std::collections::BTreeSet::new();
                for item in items {
                    let Some(k) = element_key(item, &key_fields, keys, &p) else {
                        // An element without key cannot be tracked per element: own the list whole.
                        out.insert(enc.clone(), Some(v.clone()));
                        return Ok(());
                    };
                    if !seen.insert(k.clone()) && strict {
                        return Err(DuplicateKey(format!(
                            "{}{}",
                            format_path(enc),
                            format_path(std::slice::from_ref(&k))
                        )));
                    }
                    enc.push(k);
                    out.insert(enc.clone(), None);
                    if let Value::Object(m) = item {
                        for (f, c) in m {
                            path.push(f.clone());
                            enc.push(format!("f:{f}"));
                            walk(c, keys, strict, path, enc, out)?;
                            enc.pop();
                            path.pop();
                        }
                    }
                    enc.pop();
                }
            }
            Some(ListType::Set) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
                for item in items {
                    enc.push(value_element(item));
                    if out.insert(enc.clone(), Some(item.clone())).is_some() && strict {
                        return Err(DuplicateKey(format_path(enc)));
                    }
                    enc.pop();
                }
            }
            _ => {
                out.insert(enc.clone(), Some(v.clone()));
            }
        },
        _ => {
            out.insert(enc.clone(), Some(v.clone()));
        }
    }
    Ok(())
}

/// The field set of some leaves.
pub(crate) fn set_of(leaves: &Leaves) -> FieldSet {
    let mut s = FieldSet::new();
    for p in leaves.keys() {
        s.insert(p);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::NoListKeys;
    use serde_json::json;

    #[test]
    fn fields_v1_round_trip() {
        let v = json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}}},
            "f:finalizers": {"v:\"a\"": {}}
        });
        let s = FieldSet::from_fields_v1(&v);
        assert_eq!(s.to_fields_v1(), v);
        assert_eq!(s.members().len(), 5);
    }

    #[test]
    fn set_algebra() {
        let a = FieldSet::from_fields_v1(&json!({"f:a": {}, "f:b": {"f:c": {}}}));
        let b = FieldSet::from_fields_v1(&json!({"f:b": {"f:c": {}, "f:d": {}}}));
        assert_eq!(
            a.union(&b).to_fields_v1(),
            json!({"f:a": {}, "f:b": {"f:c": {}, "f:d": {}}})
        );
        assert_eq!(a.difference(&b).to_fields_v1(), json!({"f:a": {}}));
        assert_eq!(
            a.intersection(&b).to_fields_v1(),
            json!({"f:b": {"f:c": {}}})
        );
        assert!(a.difference(&a).is_empty());
    }

    #[test]
    fn path_formatting() {
        let p: Vec<String> = vec![
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"nginx\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(format_path(&p), ".spec.containers[name=\"nginx\"].image");
        let p: Vec<String> = vec![
            "f:ports".into(),
            "k:{\"containerPort\":80,\"protocol\":\"TCP\"}".into(),
        ];
        assert_eq!(format_path(&p), ".ports[containerPort=80,protocol=\"TCP\"]");
        let p: Vec<String> = vec!["f:metadata".into(), "f:finalizers".into(), "v:\"x\"".into()];
        assert_eq!(format_path(&p), ".metadata.finalizers[=\"x\"]");
    }

    #[test]
    fn leaves_of_empty_map_and_atomic_list() {
        let l =
            leaves(&json!({"spec": {"a": {}, "b": [1, 2]}}), &NoListKeys, true).unwrap_or_default();
        let s = set_of(&l);
        assert_eq!(s.to_fields_v1(), json!({"f:spec": {"f:a": {}, "f:b": {}}}));
    }
}
