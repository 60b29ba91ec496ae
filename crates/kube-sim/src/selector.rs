//! Label and field selectors as used in list, watch and deletecollection requests.
//!
//! Parsing follows `k8s.io/apimachinery/pkg/labels` and `.../fields`; an
//! error means the request is answered with 400 BadRequest.

use std::collections::BTreeMap;

use serde_json::Value;

/// An invalid selector; the server answers it with 400 BadRequest and the
/// error's text as the Status message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The label selector could not be parsed or contains an invalid key or value.
    /// The text is bare; the apiserver's message is `unable to parse requirement: <text>`.
    #[error("{0}")]
    Label(String),
    /// The field selector could not be parsed.
    #[error("{0}")]
    Field(String),
    /// The field selector uses a field the resource does not support.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

// === impl LabelSelector ===

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOperator {
    /// `key=value` / `key==value`, and `key in (a,b)`.
    In,
    /// `key!=value`, and `key notin (a,b)`: also true when the label is absent.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>5` (integer comparison).
    GreaterThan,
    /// `key<5` (integer comparison).
    LessThan,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// How the label is compared.
    pub operator: LabelOperator,
    /// The values (one for `=`/`!=`/`>`/`<`, none for existence checks).
    pub values: Vec<String>,
}

impl LabelRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            LabelOperator::In => value.is_some_and(|v| self.values.contains(v)),
            LabelOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
            LabelOperator::GreaterThan | LabelOperator::LessThan => {
                let (Some(actual), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == LabelOperator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

/// A parsed label selector (`labelSelector` query parameter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Parses the string syntax: `a=b,c!=d,e in (f,g),h notin (i),j,!k,l>1,m<2`.
    /// The empty string selects everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let tokens = lex(s)?;
        let mut parser = Parser { tokens, pos: 0 };
        let mut requirements = Vec::new();
        if parser.peek() == &Token::End {
            return Ok(Self { requirements });
        }
        loop {
            requirements.push(parser.requirement()?);
            match parser.next() {
                Token::End => break,
                Token::Comma => {
                    if parser.peek() == &Token::End {
                        // A trailing comma is tolerated by apimachinery as well.
                        break;
                    }
                }
                other => {
                    return Err(SelectorError::Label(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        other.text()
                    )));
                }
            }
        }
        Ok(Self { requirements })
    }

    /// Builds a selector from the `matchLabels`/`matchExpressions` form of a
    /// `metav1.LabelSelector` object (as found in Deployment specs).
    pub fn from_label_selector_object(v: &Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(labels) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in labels {
                let val = val.as_str().unwrap_or_default().to_string();
                validate_key(k)?;
                validate_value(k, &val)?;
                requirements.push(LabelRequirement {
                    key: k.clone(),
                    operator: LabelOperator::In,
                    values: vec![val],
                });
            }
        }
        for expr in v
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
            validate_key(key)?;
            let values: Vec<String> = expr
                .get("values")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let operator = match expr.get("operator").and_then(Value::as_str) {
                Some("In") => LabelOperator::In,
                Some("NotIn") => LabelOperator::NotIn,
                Some("Exists") => LabelOperator::Exists,
                Some("DoesNotExist") => LabelOperator::DoesNotExist,
                other => {
                    return Err(SelectorError::Label(format!(
                        "{:?} is not a valid label selector operator",
                        other.unwrap_or_default()
                    )));
                }
            };
            requirements.push(LabelRequirement {
                key: key.to_string(),
                operator,
                values,
            });
        }
        Ok(Self { requirements })
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.requirements
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        let labels: BTreeMap<String, String> = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    In,
    NotIn,
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    OpenParen,
    CloseParen,
    Comma,
    End,
}

impl Token {
    fn text(&self) -> &str {
        match self {
            Token::Ident(s) => s,
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Bang => "!",
            Token::Eq => "=",
            Token::DoubleEq => "==",
            Token::NotEq => "!=",
            Token::Gt => ">",
            Token::Lt => "<",
            Token::OpenParen => "(",
            Token::CloseParen => ")",
            Token::Comma => ",",
            Token::End => "",
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(s: &str) -> Result<Vec<Token>, SelectorError> {
    let chars: Vec<char> = s.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if is_special(c) {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let (token, len) = match (c, two.as_str()) {
                (_, "==") => (Token::DoubleEq, 2),
                (_, "!=") => (Token::NotEq, 2),
                ('=', _) => (Token::Eq, 1),
                ('!', _) => (Token::Bang, 1),
                ('(', _) => (Token::OpenParen, 1),
                (')', _) => (Token::CloseParen, 1),
                (',', _) => (Token::Comma, 1),
                ('>', _) => (Token::Gt, 1),
                _ => (Token::Lt, 1),
            };
            tokens.push(token);
            i += len;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        tokens.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word),
        });
    }
    tokens.push(Token::End);
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }

    fn requirement(&mut self) -> Result<LabelRequirement, SelectorError> {
        let negated = self.peek() == &Token::Bang;
        if negated {
            self.pos += 1;
        }
        let key = match self.next() {
            Token::Ident(k) => k,
            other => {
                return Err(SelectorError::Label(format!(
                    "found '{}', expected: !, identifier, or 'end of string'",
                    other.text()
                )));
            }
        };
        validate_key(&key)?;
        if negated {
            return match self.peek() {
                Token::Comma | Token::End => Ok(LabelRequirement {
                    key,
                    operator: LabelOperator::DoesNotExist,
                    values: Vec::new(),
                }),
                other => Err(SelectorError::Label(format!(
                    "found '{}', expected: ',' or 'end of string'",
                    other.text()
                ))),
            };
        }
        let operator = match self.peek() {
            Token::Comma | Token::End => {
                return Ok(LabelRequirement {
                    key,
                    operator: LabelOperator::Exists,
                    values: Vec::new(),
                });
            }
            Token::In | Token::NotIn => {
                let op = if self.next() == Token::In {
                    LabelOperator::In
                } else {
                    LabelOperator::NotIn
                };
                let values = self.value_set()?;
                for v in &values {
                    validate_value(&key, v)?;
                }
                return Ok(LabelRequirement {
                    key,
                    operator: op,
                    values,
                });
            }
            Token::Eq | Token::DoubleEq => LabelOperator::In,
            Token::NotEq => LabelOperator::NotIn,
            Token::Gt => LabelOperator::GreaterThan,
            Token::Lt => LabelOperator::LessThan,
            other => {
                return Err(SelectorError::Label(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    other.text()
                )));
            }
        };
        self.pos += 1;
        let value = match self.peek().clone() {
            Token::Ident(v) => {
                self.pos += 1;
                v
            }
            // `in`/`notin` are ordinary words in value position.
            Token::In | Token::NotIn => self.next().text().to_string(),
            // `key=` selects the empty value.
            Token::Comma | Token::End => String::new(),
            other => {
                return Err(SelectorError::Label(format!(
                    "found '{}', expected: identifier",
                    other.text()
                )));
            }
        };
        if matches!(
            operator,
            LabelOperator::GreaterThan | LabelOperator::LessThan
        ) {
            if value.parse::<i64>().is_err() {
                return Err(SelectorError::Label(format!(
                    "for 'Gt', 'Lt' operators, the value must be an integer: {value:?}"
                )));
            }
        } else {
            validate_value(&key, &value)?;
        }
        Ok(LabelRequirement {
            key,
            operator,
            values: vec![value],
        })
    }

    /// `( v1, v2 )`; `()` is the set holding the empty string, like apimachinery.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        if self.next() != Token::OpenParen {
            return Err(SelectorError::Label("found '', expected: '('".to_string()));
        }
        let mut values = Vec::new();
        let mut expect_value = true;
        loop {
            match self.next() {
                Token::CloseParen => {
                    if expect_value {
                        values.push(String::new());
                    }
                    break;
                }
                Token::Comma if !expect_value => expect_value = true,
                Token::Comma => values.push(String::new()),
                Token::Ident(v) if expect_value => {
                    values.push(v);
                    expect_value = false;
                }
                tok @ (Token::In | Token::NotIn) if expect_value => {
                    values.push(tok.text().to_string());
                    expect_value = false;
                }
                other => {
                    return Err(SelectorError::Label(format!(
                        "found '{}', expected: ',', ')' or identifier",
                        other.text()
                    )));
                }
            }
        }
        Ok(values)
    }
}

const NAME_FMT: &str = "[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?";

fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
                && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// A label key must be a qualified name: `[prefix/]name`.
fn validate_key(key: &str) -> Result<(), SelectorError> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(is_dns_subdomain);
    if prefix_ok && is_label_name(name) {
        return Ok(());
    }
    Err(SelectorError::Label(format!(
        "key: Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', \
         and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', \
         regex used for validation is '{NAME_FMT}') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
    )))
}

/// A label value is empty or a ≤63 character name.
fn validate_value(key: &str, value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_label_name(value) {
        return Ok(());
    }
    Err(SelectorError::Label(format!(
        "values[0][{key}]: Invalid value: {value:?}: a valid label must be an empty string or consist of \
         alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character \
         (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(({NAME_FMT})?')"
    )))
}

// === impl FieldSelector ===

/// One `field=value` / `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field path, e.g. `spec.nodeName`.
    pub field: String,
    /// The (unescaped) value.
    pub value: String,
    /// `!=` instead of `=`/`==`.
    pub negated: bool,
}

/// A parsed field selector (`fieldSelector` query parameter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// Field selectors every resource supports.
const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// The field selectors kube-apiserver supports for a built-in resource beyond
/// `metadata.name`/`metadata.namespace` (empty for unknown resources and CRDs).
pub fn resource_fields(group: &str, resource: &str) -> &'static [&'static str] {
    match (group, resource) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "events") | ("events.k8s.io", "events") => EVENT_FIELDS,
        ("", "secrets") => &["type"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "replicationcontrollers") | ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        ("certificates.k8s.io", "certificatesigningrequests") => &["spec.signerName"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses `a=b,c==d,e!=f` (values may escape `\,`, `\=` and `\\`).
    /// The empty string selects everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut requirements = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, raw)) = split_term(&part) else {
                return Err(SelectorError::Field(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let value = unescape(raw)?;
            requirements.push(FieldRequirement {
                field: field.to_string(),
                value,
                negated: op == "!=",
            });
        }
        Ok(Self { requirements })
    }

    /// The requirements, sorted like apimachinery sorts them.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Rejects fields the resource does not support, like the apiserver's field
    /// label conversion: `metadata.name`, `metadata.namespace`, the built-in
    /// table of [`resource_fields`], plus `extra` (a CRD's `selectableFields`).
    pub fn check_supported(
        &self,
        group: &str,
        resource: &str,
        extra: &[String],
    ) -> Result<(), SelectorError> {
        let builtin = resource_fields(group, resource);
        for r in &self.requirements {
            let f = r.field.as_str();
            let ok = COMMON_FIELDS.contains(&f)
                || builtin.contains(&f)
                || extra.iter().any(|e| e.trim_start_matches('.') == f);
            if !ok {
                return Err(SelectorError::UnsupportedField(r.field.clone()));
            }
        }
        Ok(())
    }

    /// The value of a field for matching: read from the object by path; a
    /// missing field is `""` (or `false`/`0` for the boolean and counter fields).
    pub fn field_value(obj: &Value, field: &str) -> String {
        if let Some(v) = lookup(obj, field) {
            return v;
        }
        // Events of events.k8s.io/v1 carry the same information under other names.
        let alias = match field {
            "source" => lookup(obj, "source.component")
                .or_else(|| lookup(obj, "deprecatedSource.component")),
            "reportingComponent" => lookup(obj, "reportingController"),
            f => f
                .strip_prefix("involvedObject.")
                .and_then(|rest| lookup(obj, &format!("regarding.{rest}"))),
        };
        if let Some(v) = alias {
            return v;
        }
        match field {
            "spec.hostNetwork" | "spec.unschedulable" => "false".to_string(),
            "status.replicas" | "status.successful" => "0".to_string(),
            _ => String::new(),
        }
    }

    /// Whether the object satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = Self::field_value(obj, &r.field);
            (actual == r.value) != r.negated
        })
    }
}

/// Reads a dotted path; scalars are rendered as text, `status.podIPs` as its first IP.
fn lookup(obj: &Value, field: &str) -> Option<String> {
    let mut cur = obj;
    for seg in field.split('.') {
        cur = cur.get(seg)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) => items
            .first()
            .and_then(|i| i.get("ip"))
            .and_then(Value::as_str)
            .map(str::to_string),
        Value::Null | Value::Object(_) => None,
    }
}

/// Splits on commas that are not escaped with a backslash.
fn split_terms(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    terms.push(current);
    terms
}

/// Splits at the first operator (`!=`, `==`, `=`), as apimachinery does.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], op, rhs));
            }
        }
    }
    None
}

fn unescape(s: &str) -> Result<String, SelectorError> {
    let mut out = String::new();
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(SelectorError::Field(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    )));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(SelectorError::Field(format!(
                    "invalid field selector: unescaped character in value: {c}"
                )));
            }
            other => out.push(other),
        }
    }
    if in_slash {
        return Err(SelectorError::Field(
            "invalid field selector: invalid escape sequence: \\".to_string(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
