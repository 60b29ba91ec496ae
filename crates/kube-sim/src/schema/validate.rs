//! Validation of an object against a CRD `openAPIV3Schema`.
//!
//! Field paths, reasons and messages reproduce kube-apiserver's output for
//! custom resources (kube-openapi validation errors converted to
//! `field.Error`s), e.g.
//! `spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use base64::Engine;
use regex::Regex;
use serde::Serialize;
use serde_json::{Map, Number, Value};

use super::{child_path, embedded_resource, index_path, items_schema};

/// One validation failure, shaped like a `Status.details.causes` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueInvalid`.
    pub reason: String,
    /// Human-readable message without the field, e.g. `Required value`.
    pub message: String,
    /// Kubernetes field path, e.g. `spec.replicas`.
    pub field: String,
}

impl Cause {
    fn new(reason: &str, field: &str, message: String) -> Self {
        Self {
            reason: reason.to_string(),
            message,
            field: field.to_string(),
        }
    }

    /// `field.Required(path, detail)`.
    fn required(field: &str, detail: &str) -> Self {
        Self::new(
            "FieldValueRequired",
            field,
            with_detail("Required value", detail),
        )
    }

    /// `field.Invalid(path, value, detail)`.
    fn invalid(field: &str, value: &BadValue, detail: &str) -> Self {
        Self::new(
            "FieldValueInvalid",
            field,
            with_detail(&format!("Invalid value: {}", value.render()), detail),
        )
    }

    /// `field.TypeInvalid(path, value, detail)`.
    fn type_invalid(field: &str, value: &BadValue, detail: &str) -> Self {
        Self::new(
            "FieldValueTypeInvalid",
            field,
            with_detail(&format!("Invalid value: {}", value.render()), detail),
        )
    }

    /// `field.NotSupported(path, value, allowed)`.
    fn not_supported(field: &str, value: &Value, allowed: &[Value]) -> Self {
        let quoted = allowed
            .iter()
            .map(|v| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                go_quote(&text)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let detail = if allowed.is_empty() {
            String::new()
        } else {
            format!("supported values: {quoted}")
        };
        Self::new(
            "FieldValueNotSupported",
            field,
            with_detail(
                &format!(
                    "Unsupported value: {}",
                    BadValue::Json(value.clone()).render()
                ),
                &detail,
            ),
        )
    }

    /// `field.TooLongMaxLength(path, value, max)`: the value is not printed.
    fn too_long(field: &str, max: u64) -> Self {
        Self::new(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {max} bytes"),
        )
    }

    /// `field.TooMany(path, actual, max)`.
    fn too_many(field: &str, actual: usize, max: u64) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        Self::new(
            "FieldValueTooMany",
            field,
            format!("Too many: {actual}: must have at most {max} {unit}"),
        )
    }

    /// `field.Duplicate(path, value)`.
    fn duplicate(field: &str, value: &BadValue) -> Self {
        Self::new(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {}", value.render()),
        )
    }
}

/// Renders causes the way the apiserver aggregates field errors into the
/// Status message after `<Kind>.<group> "<name>" is invalid: `: a single error
/// verbatim, several as `[a, b]` (duplicates removed like `utilerrors.NewAggregate`).
pub fn invalid_message(causes: &[Cause]) -> String {
    let mut seen = HashSet::new();
    let rendered: Vec<String> = causes
        .iter()
        .map(|c| {
            if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, c.message)
            }
        })
        .filter(|m| seen.insert(m.clone()))
        .collect();
    match rendered.len() {
        1 => rendered.into_iter().next().unwrap_or_default(),
        _ => format!("[{}]", rendered.join(", ")),
    }
}

/// Validates `obj` against `schema` (a CRD version's `openAPIV3Schema`) and
/// returns every failure found, in schema order.
///
/// Call it after [`super::prune()`] and [`super::default()`], as the apiserver
/// does; unknown fields are not reported here. The root `metadata` is only
/// checked against what the schema declares for it (ObjectMeta validation is
/// the server's job).
pub fn validate(obj: &Value, schema: &Value) -> Vec<Cause> {
    let mut v = Validator { causes: Vec::new() };
    v.node(obj, schema, "");
    // The apiserver's order follows Go map iteration (random); sorted is stable.
    v.causes
        .sort_by(|a, b| (&a.field, &a.message).cmp(&(&b.field, &b.message)));
    v.causes
}

struct Validator {
    causes: Vec<Cause>,
}

impl Validator {
    fn node(&mut self, data: &Value, schema: &Value, path: &str) {
        let Some(s) = schema.as_object() else {
            return;
        };
        if !self.check_type(data, s, path) || data.is_null() {
            return;
        }
        self.composition(data, s, path);
        if let Some(Value::Array(allowed)) = s.get("enum")
            && !allowed.iter().any(|a| json_equal(a, data))
        {
            self.causes.push(Cause::not_supported(path, data, allowed));
        }
        match data {
            Value::String(text) => self.string(text, s, path),
            Value::Number(n) => self.number(n, s, path),
            Value::Array(items) => self.array(items, s, path),
            Value::Object(map) => self.object(map, s, path),
            Value::Bool(_) | Value::Null => {}
        }
    }

    /// The type validator; returns false when the value has the wrong type,
    /// which (like kube-openapi) stops validation of this node.
    fn check_type(&mut self, data: &Value, s: &Map<String, Value>, path: &str) -> bool {
        let types: Vec<&str> = if super::flag(s, "x-kubernetes-int-or-string") {
            vec!["integer", "string"]
        } else {
            match s.get("type") {
                Some(Value::String(t)) => vec![t.as_str()],
                Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            }
        };
        if types.is_empty() {
            return true;
        }
        let actual = json_type(data);
        let ok = match data {
            Value::Null => types.contains(&"null") || super::flag(s, "nullable"),
            Value::Number(n) => {
                types.contains(&actual)
                    || (actual == "integer" && types.contains(&"number"))
                    || (actual == "number"
                        && types.contains(&"integer")
                        && n.as_f64().is_some_and(|f| f.fract() == 0.0))
            }
            _ => types.contains(&actual),
        };
        if !ok {
            let wanted = types.join(",");
            let detail = format!(
                "{} in body must be of type {wanted}: {}",
                path,
                go_quote(actual)
            );
            self.causes.push(Cause::type_invalid(
                path,
                &BadValue::Json(Value::String(actual.to_string())),
                &detail,
            ));
        }
        ok
    }

    /// allOf / anyOf / oneOf / not: value validations only in structural schemas.
    fn composition(&mut self, data: &Value, s: &Map<String, Value>, path: &str) {
        if let Some(Value::Array(all)) = s.get("allOf") {
            for sub in all {
                self.node(data, sub, path);
            }
        }
        let sub_valid = |sub: &Value| validate_at(data, sub, path).is_empty();
        if let Some(Value::Array(any)) = s.get("anyOf")
            && !any.is_empty()
            && !any.iter().any(sub_valid)
        {
            let detail = format!(
                "{} must validate at least one schema (anyOf)",
                go_quote(path)
            );
            self.causes
                .push(Cause::invalid(path, &BadValue::Empty, &detail));
            if let Some(first) = any.first() {
                self.causes.extend(validate_at(data, first, path));
            }
        }
        if let Some(Value::Array(one)) = s.get("oneOf")
            && !one.is_empty()
            && one.iter().filter(|sub| sub_valid(sub)).count() != 1
        {
            let detail = format!(
                "{} must validate one and only one schema (oneOf)",
                go_quote(path)
            );
            self.causes
                .push(Cause::invalid(path, &BadValue::Empty, &detail));
        }
        if let Some(not) = s.get("not")
            && not.is_object()
            && sub_valid(not)
        {
            let detail = format!("{} must not validate the schema (not)", go_quote(path));
            self.causes
                .push(Cause::invalid(path, &BadValue::Empty, &detail));
        }
    }

    fn string(&mut self, text: &str, s: &Map<String, Value>, path: &str) {
        let len = text.chars().count() as u64;
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            self.causes.push(Cause::too_long(path, max));
        }
        if let Some(min) = s.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            let detail = format!("{path} in body should be at least {min} chars long");
            self.causes
                .push(Cause::invalid(path, &str_value(text), &detail));
        }
        if let Some(pattern) = s.get("pattern").and_then(Value::as_str) {
            // An invalid pattern is a CRD authoring error the apiserver rejects when
            // the CRD is created; here it simply does not constrain the value.
            if let Ok(re) = Regex::new(pattern)
                && !re.is_match(text)
            {
                let detail = format!("{path} in body should match '{pattern}'");
                self.causes
                    .push(Cause::invalid(path, &str_value(text), &detail));
            }
        }
        if let Some(format) = s.get("format").and_then(Value::as_str)
            && !string_format_ok(format, text)
        {
            let detail = format!(
                "{path} in body must be of type {format}: {}",
                go_quote(text)
            );
            self.causes
                .push(Cause::type_invalid(path, &str_value(text), &detail));
        }
    }

    fn number(&mut self, n: &Number, s: &Map<String, Value>, path: &str) {
        let Some(value) = n.as_f64() else {
            return;
        };
        let bad = BadValue::Json(Value::Number(n.clone()));
        if let Some(m) = s.get("multipleOf").and_then(Value::as_f64)
            && m > 0.0
            && (value / m).fract() != 0.0
        {
            let detail = format!("{path} in body should be a multiple of {}", go_float(m));
            self.causes.push(Cause::invalid(path, &bad, &detail));
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            let exclusive = super::flag(s, "exclusiveMaximum");
            if (exclusive && value >= max) || value > max {
                let op = if exclusive {
                    "less than"
                } else {
                    "less than or equal to"
                };
                let detail = format!("{path} in body should be {op} {}", go_float(max));
                self.causes.push(Cause::invalid(path, &bad, &detail));
            }
        }
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            let exclusive = super::flag(s, "exclusiveMinimum");
            if (exclusive && value <= min) || value < min {
                let op = if exclusive {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                let detail = format!("{path} in body should be {op} {}", go_float(min));
                self.causes.push(Cause::invalid(path, &bad, &detail));
            }
        }
        let (lo, hi) = match s.get("format").and_then(Value::as_str) {
            Some("int32") => (f64::from(i32::MIN), f64::from(i32::MAX)),
            Some("int64") => (i64::MIN as f64, i64::MAX as f64),
            _ => return,
        };
        let fits = match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => (i as f64) >= lo && (i as f64) <= hi,
            (None, Some(u)) => (u as f64) <= hi && u <= i64::MAX as u64,
            _ => value >= lo && value <= hi,
        };
        if !fits {
            let format = s.get("format").and_then(Value::as_str).unwrap_or_default();
            let detail = format!(
                "{path} in body must be of type {format}: {}",
                go_quote(&n.to_string())
            );
            self.causes.push(Cause::type_invalid(path, &bad, &detail));
        }
    }

    fn array(&mut self, items: &[Value], s: &Map<String, Value>, path: &str) {
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            self.causes.push(Cause::too_many(path, items.len(), max));
        }
        if let Some(min) = s.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            let detail = format!("{path} in body should have at least {min} items");
            self.causes.push(Cause::invalid(
                path,
                &BadValue::Int(items.len() as i64),
                &detail,
            ));
        }
        if let Some(item_schema) = items_schema(s) {
            for (i, item) in items.iter().enumerate() {
                self.node(item, item_schema, &index_path(path, i));
            }
        }
        self.list_type(items, s, path);
    }

    /// `x-kubernetes-list-type: set|map` uniqueness, as the apiserver checks it.
    fn list_type(&mut self, items: &[Value], s: &Map<String, Value>, path: &str) {
        match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].iter().any(|prev| json_equal(prev, item)) {
                        self.causes.push(Cause::duplicate(
                            &index_path(path, i),
                            &BadValue::Json(item.clone()),
                        ));
                    }
                }
            }
            Some("map") => {
                let keys: Vec<&str> = s
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|ks| ks.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if keys.is_empty() {
                    return;
                }
                let item_schema = items_schema(s).and_then(Value::as_object);
                let mut seen: Vec<Map<String, Value>> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let Some(obj) = item.as_object() else {
                        continue;
                    };
                    let mut key = Map::new();
                    for k in &keys {
                        match obj.get(*k) {
                            Some(v) => {
                                key.insert((*k).to_string(), v.clone());
                            }
                            None => {
                                // A key field with a default counts as present.
                                let defaulted = item_schema
                                    .and_then(|is| super::property_schema(is, k))
                                    .and_then(|ps| ps.get("default"));
                                if let Some(d) = defaulted {
                                    key.insert((*k).to_string(), d.clone());
                                } else {
                                    self.causes.push(Cause::required(
                                        &child_path(&index_path(path, i), k),
                                        "",
                                    ));
                                }
                            }
                        }
                    }
                    if seen.contains(&key) {
                        self.causes.push(Cause::duplicate(
                            &index_path(path, i),
                            &BadValue::Json(Value::Object(key)),
                        ));
                    } else {
                        seen.push(key);
                    }
                }
            }
            _ => {}
        }
    }

    fn object(&mut self, map: &Map<String, Value>, s: &Map<String, Value>, path: &str) {
        if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
            && map.len() as u64 > max
        {
            self.causes.push(Cause::too_many(path, map.len(), max));
        }
        if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
            && (map.len() as u64) < min
        {
            let detail = format!("{path} in body should have at least {min} properties");
            self.causes.push(Cause::invalid(
                path,
                &BadValue::Int(map.len() as i64),
                &detail,
            ));
        }
        if let Some(Value::Array(required)) = s.get("required") {
            for key in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(key) {
                    self.causes
                        .push(Cause::required(&child_path(path, key), ""));
                }
            }
        }
        if embedded_resource(s) && !path.is_empty() {
            self.embedded(map, path);
        }
        let props = s.get("properties").and_then(Value::as_object);
        let additional = s.get("additionalProperties").filter(|a| a.is_object());
        for (key, value) in map {
            let sub = props.and_then(|p| p.get(key)).or(additional);
            if let Some(sub) = sub {
                self.node(value, sub, &child_path(path, key));
            }
        }
    }

    /// The implicit apiVersion/kind checks of `x-kubernetes-embedded-resource`.
    fn embedded(&mut self, map: &Map<String, Value>, path: &str) {
        for key in ["apiVersion", "kind"] {
            let field = child_path(path, key);
            match map.get(key) {
                None => self
                    .causes
                    .push(Cause::required(&field, "must not be empty")),
                Some(Value::String(v)) if v.is_empty() => {
                    self.causes
                        .push(Cause::invalid(&field, &str_value(v), "must not be empty"));
                }
                Some(Value::String(_)) => {}
                Some(other) => self.causes.push(Cause::invalid(
                    &field,
                    &BadValue::Json(other.clone()),
                    "must be a string",
                )),
            }
        }
    }
}

/// Validates a sub-schema in isolation (for anyOf/oneOf/not decisions).
fn validate_at(data: &Value, schema: &Value, path: &str) -> Vec<Cause> {
    let mut v = Validator { causes: Vec::new() };
    v.node(data, schema, path);
    v.causes
}

/// A `field.Error` bad value, rendered like Go's `ErrorBody`.
enum BadValue {
    /// No value was recorded: rendered as `""` like the apiserver does.
    Empty,
    Int(i64),
    Json(Value),
}

impl BadValue {
    fn render(&self) -> String {
        match self {
            BadValue::Empty => "\"\"".to_string(),
            BadValue::Int(i) => i.to_string(),
            BadValue::Json(v) => go_value(v),
        }
    }
}

fn str_value(s: &str) -> BadValue {
    BadValue::Json(Value::String(s.to_string()))
}

fn with_detail(head: &str, detail: &str) -> String {
    if detail.is_empty() {
        head.to_string()
    } else {
        format!("{head}: {detail}")
    }
}

/// The JSON type name kube-openapi infers for a decoded value.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Equality as the apiserver sees decoded JSON: `1` and `1.0` are the same number.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Go's `%q` for a string (close enough: JSON escaping of the same characters).
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Go's `%v` for a float64 (`%g` with the shortest representation).
pub(crate) fn go_float(f: f64) -> String {
    if f == 0.0 {
        return "0".to_string();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    // Go switches to exponent notation outside [1e-4, 1e6) for the shortest form.
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

/// Go's rendering of an unstructured value in `field.Error.ErrorBody`.
fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "\"null\"".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_f64() => n.as_f64().map(go_float).unwrap_or_default(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => go_quote(s),
        Value::Array(_) | Value::Object(_) => go_syntax(v),
    }
}

/// Go's `%#v` for `map[string]interface{}` / `[]interface{}` trees.
fn go_syntax(v: &Value) -> String {
    match v {
        Value::Null => "interface {}(nil)".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_f64() => n.as_f64().map(go_float).unwrap_or_default(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => go_quote(s),
        Value::Array(items) => format!(
            "[]interface {{}}{{{}}}",
            items.iter().map(go_syntax).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let body = keys
                .iter()
                .map(|k| format!("{}:{}", go_quote(k), go_syntax(&map[k.as_str()])))
                .collect::<Vec<_>>()
                .join(", ");
            format!("map[string]interface {{}}{{{body}}}")
        }
    }
}

fn regex_cell(cell: &'static OnceLock<Option<Regex>>, pattern: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(pattern).ok()).as_ref()
}

/// String formats the apiserver's format registry checks; unknown formats pass.
fn string_format_ok(format: &str, s: &str) -> bool {
    static UUID: OnceLock<Option<Regex>> = OnceLock::new();
    static HOSTNAME: OnceLock<Option<Regex>> = OnceLock::new();
    static EMAIL: OnceLock<Option<Regex>> = OnceLock::new();
    static DURATION: OnceLock<Option<Regex>> = OnceLock::new();
    static MAC: OnceLock<Option<Regex>> = OnceLock::new();
    static URI: OnceLock<Option<Regex>> = OnceLock::new();
    let matches = |cell: &'static OnceLock<Option<Regex>>, pattern: &str| {
        regex_cell(cell, pattern).is_none_or(|re| re.is_match(s))
    };
    match format {
        "date-time" | "datetime" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "int32" => s.parse::<i32>().is_ok(),
        "int64" => s.parse::<i64>().is_ok(),
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
                (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
                (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
                _ => false,
            }
        }),
        "uuid" => matches(
            &UUID,
            r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$",
        ),
        "hostname" => {
            s.len() <= 255
                && matches(
                    &HOSTNAME,
                    r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.?$",
                )
        }
        "email" => matches(&EMAIL, r"^[^@\s]+@[^@\s]+$"),
        "mac" => matches(&MAC, r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$"),
        "duration" => matches(
            &DURATION,
            r"^[-+]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*(ns|us|µs|ms|s|m|h|d|w|sec|second|seconds|min|minute|minutes|hour|hours|day|days|week|weeks)\s*)+$",
        ),
        // Loose on purpose: any absolute or relative reference without spaces.
        "uri" => matches(&URI, r"^\S+$"),
        _ => true,
    }
}
