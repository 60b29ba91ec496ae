//! Checks a parsed document against the structural OpenAPI schema of its CRD, the way the
//! API server does with `fieldValidation=Strict`: every unknown field, wrong type and
//! missing required field is reported with its path, not just the first one serde meets.
//!
//! The schema is the one kube derives for the CRD (`CustomResourceExt::crd`), so YAML files
//! and stored objects are held to the same rules. A structural schema has no `$ref`s; an
//! object with `properties` is closed unless it carries `x-kubernetes-preserve-unknown-fields`,
//! and an object with `additionalProperties` is a map.

use serde_json::{Map, Value};

use super::FieldError;

/// Appends to `errors` every way `value` (at `path`) breaks `schema`.
pub(crate) fn check(value: &Value, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        if !flag(schema, "nullable")
            && let Some(want) = schema.get("type").and_then(Value::as_str)
        {
            errors.push(FieldError::new(
                path,
                format!("must be {}, got null", article(want)),
            ));
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(FieldError::new(
                path,
                format!("must be an integer or a string, got {}", describe(value)),
            ));
        }
        return;
    }
    if let Some(want) = schema.get("type").and_then(Value::as_str)
        && let Err(reason) = check_type(value, want, schema)
    {
        errors.push(FieldError::new(path, reason));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.push(FieldError::new(
            path,
            format!("must be one of {}, got {value}", names.join(", ")),
        ));
    }
    match value {
        Value::Object(object) => check_object(object, schema, path, errors),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    check(item, item_schema, &format!("{path}[{index}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn check_object(
    object: &Map<String, Value>,
    schema: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|s| s.is_object());
    let open = flag(schema, "x-kubernetes-preserve-unknown-fields");

    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for field in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(field) {
                errors.push(FieldError::new(join(path, field), "required field missing"));
            }
        }
    }
    for (key, child) in object {
        if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
            check(child, child_schema, &join(path, key), errors);
        } else if let Some(value_schema) = additional {
            check(child, value_schema, &format!("{path}[{key}]"), errors);
        } else if properties.is_some() && !open {
            errors.push(FieldError::new(join(path, key), "unknown field"));
        }
    }
}

fn check_type(value: &Value, want: &str, schema: &Value) -> Result<(), String> {
    let ok = match want {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        // A type this walker does not know is left to serde.
        _ => true,
    };
    if !ok {
        // YAML turns unquoted `yes`, `y`, `1.30` into booleans and numbers; say how to keep a string.
        let hint = if want == "string" && (value.is_boolean() || value.is_number()) {
            " (quote it to keep it a string)"
        } else {
            ""
        };
        return Err(format!(
            "must be {}, got {}{hint}",
            article(want),
            describe(value)
        ));
    }
    if want == "string"
        && schema.get("format").and_then(Value::as_str) == Some("date-time")
        && value
            .as_str()
            .is_some_and(|s| s.parse::<k8s_openapi::jiff::Timestamp>().is_err())
    {
        return Err(format!("must be an RFC 3339 time, got {}", describe(value)));
    }
    if want == "integer" {
        let format = schema.get("format").and_then(Value::as_str);
        let in_range = match format {
            Some("int32") => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            Some("int64") | None => value.as_i64().is_some(),
            // Unsigned formats (uint16, ...) are checked by serde after this walk.
            Some(_) => true,
        };
        if !in_range {
            return Err(format!(
                "must be {} integer, got {value}",
                if format == Some("int32") {
                    "a 32-bit"
                } else {
                    "a 64-bit"
                }
            ));
        }
    }
    Ok(())
}

/// `spec` + `replicas` → `spec.replicas`; the root has an empty path.
pub(crate) fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn article(json_type: &str) -> String {
    match json_type {
        "object" => "an object".into(),
        "array" => "a list".into(),
        "integer" => "an integer".into(),
        "boolean" => "a boolean".into(),
        other => format!("a {other}"),
    }
}

/// What a value is, for "got ..." in error messages.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {:?}", super::syntax::abbreviate(s)),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}
