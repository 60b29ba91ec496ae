//! The protobuf encoding of the OpenAPI v2 document (gnostic's `openapi.v2.Document`), which
//! kubectl asks for with `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`
//! (`kubectl explain --output=plaintext-openapiv2`).
//!
//! Only what clients read is encoded: `swagger`, `info` and `definitions` with their schemas and
//! vendor extensions (`x-kubernetes-group-version-kind` is how kubectl finds a kind). Field
//! numbers come from gnostic's `openapiv2/OpenAPIv2.proto`. Values of type `Any` carry their
//! JSON text in the `yaml` field (JSON is YAML), as gnostic does.

use serde_json::Value;

/// The media type of the protobuf OpenAPI v2 document.
pub const MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn string_field(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        bytes_field(out, field, s.as_bytes());
    }
}

fn bool_field(out: &mut Vec<u8>, field: u32, b: bool) {
    if b {
        tag(out, field, 0);
        varint(out, 1);
    }
}

fn int_field(out: &mut Vec<u8>, field: u32, v: &Value) {
    if let Some(i) = v.as_i64().filter(|i| *i != 0) {
        tag(out, field, 0);
        // int64 is encoded as its two's complement varint.
        varint(out, i as u64);
    }
}

fn double_field(out: &mut Vec<u8>, field: u32, v: &Value) {
    if let Some(d) = v.as_f64() {
        tag(out, field, 1);
        out.extend_from_slice(&d.to_bits().to_le_bytes());
    }
}

/// `Any { yaml = 2 }` holding the JSON text of `v`.
fn any(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 2, &v.to_string());
    out
}

/// `NamedAny { name = 1, value = 2 }`.
fn named_any(name: &str, v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 1, name);
    bytes_field(&mut out, 2, &any(v));
    out
}

fn schema(s: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(map) = s.as_object() else {
        return out;
    };
    let str_of = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or_default();
    string_field(&mut out, 1, str_of("$ref"));
    string_field(&mut out, 2, str_of("format"));
    string_field(&mut out, 3, str_of("title"));
    string_field(&mut out, 4, str_of("description"));
    if let Some(d) = map.get("default") {
        bytes_field(&mut out, 5, &any(d));
    }
    let null = Value::Null;
    let get = |k: &str| map.get(k).unwrap_or(&null);
    double_field(&mut out, 6, get("multipleOf"));
    double_field(&mut out, 7, get("maximum"));
    bool_field(&mut out, 8, get("exclusiveMaximum").as_bool() == Some(true));
    double_field(&mut out, 9, get("minimum"));
    bool_field(
        &mut out,
        10,
        get("exclusiveMinimum").as_bool() == Some(true),
    );
    int_field(&mut out, 11, get("maxLength"));
    int_field(&mut out, 12, get("minLength"));
    string_field(&mut out, 13, str_of("pattern"));
    int_field(&mut out, 14, get("maxItems"));
    int_field(&mut out, 15, get("minItems"));
    bool_field(&mut out, 16, get("uniqueItems").as_bool() == Some(true));
    int_field(&mut out, 17, get("maxProperties"));
    int_field(&mut out, 18, get("minProperties"));
    for r in get("required").as_array().into_iter().flatten() {
        if let Some(r) = r.as_str() {
            bytes_field(&mut out, 19, r.as_bytes());
        }
    }
    for e in get("enum").as_array().into_iter().flatten() {
        bytes_field(&mut out, 20, &any(e));
    }
    match get("additionalProperties") {
        Value::Bool(b) => {
            // AdditionalPropertiesItem { boolean = 2 } (set even when false: it is a oneof).
            let mut item = Vec::new();
            tag(&mut item, 2, 0);
            varint(&mut item, u64::from(*b));
            bytes_field(&mut out, 21, &item);
        }
        v @ Value::Object(_) => {
            let mut item = Vec::new();
            bytes_field(&mut item, 1, &schema(v));
            bytes_field(&mut out, 21, &item);
        }
        _ => {}
    }
    let types: Vec<&str> = match get("type") {
        Value::String(t) => vec![t.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let mut item = Vec::new();
        for t in types {
            bytes_field(&mut item, 1, t.as_bytes());
        }
        bytes_field(&mut out, 22, &item);
    }
    let items: Vec<&Value> = match get("items") {
        v @ Value::Object(_) => vec![v],
        Value::Array(a) => a.iter().collect(),
        _ => Vec::new(),
    };
    if !items.is_empty() {
        let mut item = Vec::new();
        for i in items {
            bytes_field(&mut item, 1, &schema(i));
        }
        bytes_field(&mut out, 23, &item);
    }
    for a in get("allOf").as_array().into_iter().flatten() {
        bytes_field(&mut out, 24, &schema(a));
    }
    if let Some(props) = get("properties").as_object() {
        let mut p = Vec::new();
        for (name, s) in props {
            let mut named = Vec::new();
            string_field(&mut named, 1, name);
            bytes_field(&mut named, 2, &schema(s));
            bytes_field(&mut p, 1, &named);
        }
        bytes_field(&mut out, 25, &p);
    }
    string_field(&mut out, 26, str_of("discriminator"));
    bool_field(&mut out, 27, get("readOnly").as_bool() == Some(true));
    if let Some(e) = map.get("example") {
        bytes_field(&mut out, 30, &any(e));
    }
    for (k, v) in map.iter().filter(|(k, _)| k.starts_with("x-")) {
        bytes_field(&mut out, 31, &named_any(k, v));
    }
    out
}

/// Encodes a swagger 2.0 JSON document as gnostic's `openapi.v2.Document`.
pub fn encode_v2(doc: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 1, doc["swagger"].as_str().unwrap_or("2.0"));
    let mut info = Vec::new();
    string_field(
        &mut info,
        1,
        doc["info"]["title"].as_str().unwrap_or("Kubernetes"),
    );
    string_field(
        &mut info,
        2,
        doc["info"]["version"].as_str().unwrap_or_default(),
    );
    bytes_field(&mut out, 2, &info);
    if let Some(defs) = doc["definitions"].as_object() {
        let mut d = Vec::new();
        for (name, s) in defs {
            let mut named = Vec::new();
            string_field(&mut named, 1, name);
            bytes_field(&mut named, 2, &schema(s));
            bytes_field(&mut d, 1, &named);
        }
        bytes_field(&mut out, 9, &d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn varints_and_fields_use_protobuf_wire_format() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        let mut s = Vec::new();
        string_field(&mut s, 1, "2.0");
        assert_eq!(s, [0x0a, 3, b'2', b'.', b'0']);
    }

    #[test]
    fn definitions_carry_types_properties_and_extensions() {
        let doc = json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.4"},
            "definitions": {"io.k8s.api.core.v1.ConfigMap": {"type": "object",
                "properties": {"data": {"type": "object", "additionalProperties": {"type": "string"}}},
                "x-kubernetes-group-version-kind": [{"group": "", "kind": "ConfigMap", "version": "v1"}]}}});
        let bytes = encode_v2(&doc);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("io.k8s.api.core.v1.ConfigMap"));
        assert!(text.contains("x-kubernetes-group-version-kind"));
        assert!(text.contains("\"kind\":\"ConfigMap\""));
        assert_eq!(bytes[0], 0x0a, "field 1 (swagger) first");
    }
}
