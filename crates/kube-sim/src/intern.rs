//! A process-wide interner for large immutable JSON values (CRD schemas).
//!
//! One process hosts many clusters that usually install the same CRDs; each CRD's
//! `openAPIV3Schema` is megabytes once parsed. Interning hands every cluster the same
//! `Arc<Value>` for equal schemas, so N clusters hold one copy. Values are immutable behind
//! the `Arc`: a cluster that updates its CRD interns the new schema (or gets a fresh copy),
//! it never changes what another cluster sees.
//!
//! Entries are `Weak`: a schema no cluster uses any more is freed, and its slot is dropped
//! on a later call.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use serde_json::Value;

type Table = HashMap<u64, Vec<Weak<Value>>>;

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The shared copy of `value`: an existing `Arc` holding an identical value (same content
/// and same key order, so serializations stay byte-identical), or `value` itself, registered.
pub fn intern(value: Value) -> Arc<Value> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hash_value(&value, &mut hasher);
    let hash = hasher.finish();
    // A poisoned lock only means another thread panicked mid-insert; the table is still a
    // valid map of weak pointers.
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let slot = table.entry(hash).or_default();
    slot.retain(|w| w.strong_count() > 0);
    if let Some(found) = slot
        .iter()
        .filter_map(Weak::upgrade)
        .find(|v| same(v, &value))
    {
        return found;
    }
    let shared = Arc::new(value);
    slot.push(Arc::downgrade(&shared));
    if table.len() > 64 && table.len().is_power_of_two() {
        // Occasional sweep of slots whose values all died.
        table.retain(|_, s| s.iter().any(|w| w.strong_count() > 0));
    }
    shared
}

/// Hashes a value, map keys in order.
fn hash_value<H: Hasher>(v: &Value, h: &mut H) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => {
            1u8.hash(h);
            b.hash(h);
        }
        Value::Number(n) => {
            2u8.hash(h);
            n.to_string().hash(h);
        }
        Value::String(s) => {
            3u8.hash(h);
            s.hash(h);
        }
        Value::Array(a) => {
            4u8.hash(h);
            a.len().hash(h);
            for x in a {
                hash_value(x, h);
            }
        }
        Value::Object(m) => {
            5u8.hash(h);
            m.len().hash(h);
            for (k, x) in m {
                k.hash(h);
                hash_value(x, h);
            }
        }
    }
}

/// Equality that also requires the same map key order (`Value`'s `==` ignores it).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k1, v1), (k2, v2))| k1 == k2 && same(v1, v2))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_values_share_one_allocation() {
        let a = intern(json!({"type": "object", "properties": {"x": {"type": "string"}}}));
        let b = intern(json!({"type": "object", "properties": {"x": {"type": "string"}}}));
        assert!(Arc::ptr_eq(&a, &b));
        let c = intern(json!({"type": "object", "properties": {"x": {"type": "integer"}}}));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn key_order_is_part_of_identity() {
        let a = intern(json!({"p": 1, "q": 2, "interned-order-test": true}));
        let b = intern(json!({"q": 2, "p": 1, "interned-order-test": true}));
        assert!(!Arc::ptr_eq(&a, &b));
        let keys: Vec<&String> = b
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, ["q", "p", "interned-order-test"]);
    }

    #[test]
    fn dropped_values_are_not_resurrected() {
        let v = json!({"interned-drop-test": [1, 2, 3]});
        let first = intern(v.clone());
        let weak = Arc::downgrade(&first);
        drop(first);
        assert!(weak.upgrade().is_none());
        let second = intern(v.clone());
        assert_eq!(*second, v);
    }
}
