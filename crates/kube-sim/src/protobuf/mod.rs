//! Decoding of Kubernetes protobuf request bodies into the JSON the JSON API would receive.
//!
//! kubectl's typed commands (`kubectl create secret|configmap|namespace|deployment|token …`)
//! send `application/vnd.kubernetes.protobuf` and do not fall back to JSON, so the simulated
//! API server turns those bodies into ordinary JSON objects and handles them like any JSON
//! request. Answers can stay JSON: every client accepts both.
//!
//! Wire format: the 4-byte magic `k8s\0`, then a `runtime.Unknown` message
//! `{TypeMeta typeMeta = 1 {apiVersion = 1, kind = 2}; bytes raw = 2; string contentEncoding = 3;
//! string contentType = 4}` whose `raw` is the object of that kind (e.g. `k8s.io.api.core.v1.Secret`).
//!
//! No crate ships Kubernetes' protobuf descriptors, so `schema.rs` is a field table generated
//! by `generate.py` from `k8s-pb` (field numbers and wire types) and `k8s-openapi` (JSON names,
//! required fields, embedded structs). The JSON follows Go's `encoding/json` on the API types:
//! camelCase names from the Go struct tags, embedded structs inlined, `bytes` as base64,
//! `Time`/`MicroTime` as RFC 3339 strings, `Quantity` as a string, `IntOrString` as a number or a string, `FieldsV1`/`RawExtension` as embedded JSON,
//! and zero-valued `omitempty` fields left out. Two deliberate differences from kubectl's own
//! JSON: a zero `creationTimestamp` is left out instead of being sent as `null`, and empty
//! lists and maps are left out (protobuf cannot tell `nil` from empty).

// Generated (see generate.py); kept in the generator's one-field-per-line layout.
#[rustfmt::skip]
mod schema;
mod table;

use base64::Engine as _;
use prost::encoding::{WireType, decode_key, decode_varint};
use serde_json::{Map, Value};

use table::{Field, Kind, Message, Shape, Special};

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The 4-byte prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// How deep messages (and bodies embedded in `RawExtension`s) may nest before decoding gives up;
/// protects the stack against hostile input.
const MAX_DEPTH: usize = 64;

/// Why a protobuf body could not be turned into JSON.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtobufError {
    /// The body does not start with `k8s\0`.
    #[error("body does not start with the Kubernetes protobuf magic prefix")]
    MissingMagic,
    /// The bytes are not a well-formed protobuf message of the expected type.
    #[error("malformed protobuf: {0}")]
    Malformed(String),
    /// The envelope names no kind, so the body cannot be interpreted.
    #[error("protobuf envelope has no typeMeta.kind")]
    MissingKind,
    /// The envelope names a kind this decoder has no schema for.
    #[error("protobuf is not supported for {kind} in {api_version}")]
    UnsupportedKind {
        /// `typeMeta.apiVersion` of the envelope.
        api_version: String,
        /// `typeMeta.kind` of the envelope.
        kind: String,
    },
    /// The envelope declares a content encoding (e.g. gzip); the apiserver supports none either.
    #[error("unsupported protobuf content encoding {0:?}")]
    UnsupportedEncoding(String),
    /// A field holds a value with no JSON form (invalid embedded JSON, NaN, …).
    #[error("invalid value in field {field}: {message}")]
    InvalidValue {
        /// JSON name of the field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Messages nest deeper than any real object does.
    #[error("protobuf message nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

impl From<prost::DecodeError> for ProtobufError {
    fn from(e: prost::DecodeError) -> Self {
        ProtobufError::Malformed(e.to_string())
    }
}

/// Whether [`decode_to_json`] understands bodies of this `apiVersion` and `kind`.
///
/// `DeleteOptions` is accepted under any group version (the apiserver registers it in all).
pub fn is_supported(api_version: &str, kind: &str) -> bool {
    root_message(api_version, kind).is_some()
}

/// Decodes a Kubernetes protobuf body (magic + `runtime.Unknown` envelope) into the JSON
/// object a JSON client would have sent, including `apiVersion` and `kind`.
///
/// Never panics; garbage input yields an error.
pub fn decode_to_json(body: &[u8]) -> Result<Value, ProtobufError> {
    decode_envelope(body, 0)
}

fn root_message(api_version: &str, kind: &str) -> Option<usize> {
    schema::ROOTS
        .iter()
        .find(|(av, k, _)| *k == kind && (*av == "*" || *av == api_version))
        .map(|(_, _, index)| *index)
}

fn decode_envelope(body: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    let mut rest = body
        .strip_prefix(MAGIC)
        .ok_or(ProtobufError::MissingMagic)?;
    let (mut api_version, mut kind, mut raw, mut encoding) =
        (String::new(), String::new(), &[][..], String::new());
    while !rest.is_empty() {
        let (tag, wire) = decode_key(&mut rest)?;
        match (tag, wire) {
            (1, WireType::LengthDelimited) => {
                let mut type_meta = take_len(&mut rest)?;
                while !type_meta.is_empty() {
                    let (tag, wire) = decode_key(&mut type_meta)?;
                    match (tag, wire) {
                        (1, WireType::LengthDelimited) => {
                            api_version = take_string(&mut type_meta)?
                        }
                        (2, WireType::LengthDelimited) => kind = take_string(&mut type_meta)?,
                        _ => skip(&mut type_meta, wire)?,
                    }
                }
            }
            (2, WireType::LengthDelimited) => raw = take_len(&mut rest)?,
            (3, WireType::LengthDelimited) => encoding = take_string(&mut rest)?,
            _ => skip(&mut rest, wire)?,
        }
    }
    if !encoding.is_empty() {
        return Err(ProtobufError::UnsupportedEncoding(encoding));
    }
    if kind.is_empty() {
        return Err(ProtobufError::MissingKind);
    }
    let index =
        root_message(&api_version, &kind).ok_or_else(|| ProtobufError::UnsupportedKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let mut object = Map::new();
    object.insert("kind".into(), Value::String(kind));
    object.insert("apiVersion".into(), Value::String(api_version));
    decode_fields(message(index)?, raw, depth + 1, &mut object)?;
    Ok(Value::Object(object))
}

fn message(index: usize) -> Result<&'static Message, ProtobufError> {
    // The generated table only refers to its own entries; a miss is a generator bug, reported
    // as an error rather than a panic.
    schema::MESSAGES
        .get(index)
        .ok_or_else(|| ProtobufError::Malformed(format!("schema has no message #{index}")))
}

/// The values collected for one field while scanning a message: fields may repeat on the wire.
enum Slot {
    Empty,
    Single(Value),
    List(Vec<Value>),
    Object(Map<String, Value>),
}

/// Decodes the fields of `msg` from `buf` into `out` (in table order, which follows the Go struct).
fn decode_fields(
    msg: &'static Message,
    mut buf: &[u8],
    depth: usize,
    out: &mut Map<String, Value>,
) -> Result<(), ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep);
    }
    let mut slots: Vec<Slot> = msg.fields.iter().map(|_| Slot::Empty).collect();
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf)?;
        let Some(pos) = msg.fields.iter().position(|f| f.tag == tag) else {
            // Unknown fields (newer API versions) are dropped, as the Go apiserver does.
            skip(&mut buf, wire)?;
            continue;
        };
        let field = &msg.fields[pos];
        let slot = &mut slots[pos];
        match field.shape {
            Shape::Rep => {
                let mut values = match std::mem::replace(slot, Slot::Empty) {
                    Slot::List(values) => values,
                    _ => Vec::new(),
                };
                let packed = wire == WireType::LengthDelimited
                    && matches!(field.kind, Kind::Bool | Kind::I32 | Kind::I64 | Kind::F64);
                if packed {
                    let mut packed = take_len(&mut buf)?;
                    while !packed.is_empty() {
                        let wire = if field.kind == Kind::F64 {
                            WireType::SixtyFourBit
                        } else {
                            WireType::Varint
                        };
                        values.push(
                            decode_value(field, &mut packed, wire, depth)?.unwrap_or(Value::Null),
                        );
                    }
                } else if let Some(value) = decode_value(field, &mut buf, wire, depth)? {
                    values.push(value);
                }
                *slot = Slot::List(values);
            }
            Shape::Map => {
                let mut entries = match std::mem::replace(slot, Slot::Empty) {
                    Slot::Object(entries) => entries,
                    _ => Map::new(),
                };
                expect_wire(field, wire, WireType::LengthDelimited)?;
                let mut entry = take_len(&mut buf)?;
                let (mut key, mut value) = (String::new(), None);
                while !entry.is_empty() {
                    let (tag, wire) = decode_key(&mut entry)?;
                    match tag {
                        1 => {
                            expect_wire(field, wire, WireType::LengthDelimited)?;
                            key = take_string(&mut entry)?;
                        }
                        2 => value = decode_value(field, &mut entry, wire, depth)?,
                        _ => skip(&mut entry, wire)?,
                    }
                }
                let value = match value {
                    Some(value) => value,
                    None => zero_value(field.kind)?,
                };
                entries.insert(key, value);
                *slot = Slot::Object(entries);
            }
            Shape::Inline => {
                expect_wire(field, wire, WireType::LengthDelimited)?;
                let Kind::M(index) = field.kind else {
                    return Err(ProtobufError::Malformed(format!(
                        "{}.{} is not a message",
                        msg.name, field.json
                    )));
                };
                let mut fields = match std::mem::replace(slot, Slot::Empty) {
                    Slot::Object(fields) => fields,
                    _ => Map::new(),
                };
                decode_fields(
                    message(usize::from(index))?,
                    take_len(&mut buf)?,
                    depth + 1,
                    &mut fields,
                )?;
                *slot = Slot::Object(fields);
            }
            Shape::Omit | Shape::Req | Shape::Ptr => {
                if let Some(value) = decode_value(field, &mut buf, wire, depth)? {
                    // A repeated singular message merges into the earlier one (protobuf semantics).
                    *slot = match (std::mem::replace(slot, Slot::Empty), value) {
                        (Slot::Single(Value::Object(mut old)), Value::Object(new)) => {
                            old.extend(new);
                            Slot::Single(Value::Object(old))
                        }
                        (_, value) => Slot::Single(value),
                    };
                } else {
                    *slot = Slot::Empty;
                }
            }
        }
    }
    for (field, slot) in msg.fields.iter().zip(slots) {
        match slot {
            Slot::Empty => {}
            Slot::List(values) if values.is_empty() => {}
            Slot::List(values) => {
                out.insert(field.json.into(), Value::Array(values));
            }
            Slot::Object(entries) if field.shape == Shape::Inline => out.extend(entries),
            Slot::Object(entries) if entries.is_empty() => {}
            Slot::Object(entries) => {
                out.insert(field.json.into(), Value::Object(entries));
            }
            Slot::Single(value) => {
                let keep = match field.shape {
                    Shape::Omit => matches!(field.kind, Kind::M(_)) || !is_zero(&value),
                    _ => true,
                };
                if keep {
                    out.insert(field.json.into(), value);
                }
            }
        }
    }
    Ok(())
}

/// Decodes one value of `field` (for maps: the entry value). `None` means "omit" (a zero `Time`).
fn decode_value(
    field: &Field,
    buf: &mut &[u8],
    wire: WireType,
    depth: usize,
) -> Result<Option<Value>, ProtobufError> {
    let value = match field.kind {
        Kind::Str => {
            expect_wire(field, wire, WireType::LengthDelimited)?;
            Value::String(take_string(buf)?)
        }
        Kind::Bytes => {
            expect_wire(field, wire, WireType::LengthDelimited)?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(take_len(buf)?))
        }
        Kind::Bool => {
            expect_wire(field, wire, WireType::Varint)?;
            Value::Bool(decode_varint(buf)? != 0)
        }
        Kind::I32 => {
            expect_wire(field, wire, WireType::Varint)?;
            // int32 is sign-extended to 64 bits on the wire; truncation restores it.
            Value::from(decode_varint(buf)? as i32)
        }
        Kind::I64 => {
            expect_wire(field, wire, WireType::Varint)?;
            Value::from(decode_varint(buf)? as i64)
        }
        Kind::F64 => {
            expect_wire(field, wire, WireType::SixtyFourBit)?;
            let bytes: [u8; 8] = take(buf, 8)?
                .try_into()
                .map_err(|_| ProtobufError::Malformed("truncated double".into()))?;
            let number = f64::from_le_bytes(bytes);
            Value::Number(serde_json::Number::from_f64(number).ok_or_else(|| {
                ProtobufError::InvalidValue {
                    field: field.json.into(),
                    message: format!("{number} has no JSON form"),
                }
            })?)
        }
        Kind::M(index) => {
            expect_wire(field, wire, WireType::LengthDelimited)?;
            let msg = message(usize::from(index))?;
            let raw = take_len(buf)?;
            return decode_message(msg, field, raw, depth + 1);
        }
    };
    Ok(Some(value))
}

/// The JSON form of one embedded message; `None` when Go would write `null` (zero `Time`).
fn decode_message(
    msg: &'static Message,
    field: &Field,
    raw: &[u8],
    depth: usize,
) -> Result<Option<Value>, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep);
    }
    let invalid = |message: String| ProtobufError::InvalidValue {
        field: field.json.into(),
        message,
    };
    let value = match msg.special {
        Special::None => {
            let mut object = Map::new();
            decode_fields(msg, raw, depth, &mut object)?;
            Value::Object(object)
        }
        Special::Time | Special::MicroTime => {
            let (seconds, nanos) = (
                scalar_field(raw, 1)?.unwrap_or(0) as i64,
                scalar_field(raw, 2)?.unwrap_or(0) as i32,
            );
            if seconds == 0 && nanos == 0 {
                return Ok(None);
            }
            let time = chrono::DateTime::from_timestamp(seconds, u32::try_from(nanos).unwrap_or(0))
                .ok_or_else(|| invalid(format!("timestamp {seconds}s out of range")))?;
            let format = if msg.special == Special::Time {
                chrono::SecondsFormat::Secs
            } else {
                chrono::SecondsFormat::Micros
            };
            Value::String(time.to_rfc3339_opts(format, true))
        }
        Special::Quantity => Value::String(string_field(raw, 1)?.unwrap_or_else(|| "0".into())),
        Special::IntOrString => {
            if scalar_field(raw, 1)?.unwrap_or(0) == 1 {
                Value::String(string_field(raw, 3)?.unwrap_or_default())
            } else {
                Value::from(scalar_field(raw, 2)?.unwrap_or(0) as i32)
            }
        }
        Special::FieldsV1 => match bytes_field(raw, 1)? {
            Some(bytes) if !bytes.is_empty() => serde_json::from_slice(bytes)
                .map_err(|e| invalid(format!("FieldsV1 is not JSON: {e}")))?,
            _ => return Ok(None),
        },
        Special::RawExtension => match bytes_field(raw, 1)? {
            Some(bytes) if bytes.starts_with(MAGIC) => decode_envelope(bytes, depth)?,
            Some(bytes) if !bytes.is_empty() => serde_json::from_slice(bytes)
                .map_err(|e| invalid(format!("RawExtension is not JSON: {e}")))?,
            _ => return Ok(None),
        },
        Special::StringList => {
            let mut items = Vec::new();
            let mut buf = raw;
            while !buf.is_empty() {
                let (tag, wire) = decode_key(&mut buf)?;
                if tag == 1 && wire == WireType::LengthDelimited {
                    items.push(Value::String(take_string(&mut buf)?));
                } else {
                    skip(&mut buf, wire)?;
                }
            }
            Value::Array(items)
        }
    };
    Ok(Some(value))
}

/// The value of a map entry that is absent on the wire (protobuf omits default values).
fn zero_value(kind: Kind) -> Result<Value, ProtobufError> {
    Ok(match kind {
        Kind::Str | Kind::Bytes => Value::String(String::new()),
        Kind::Bool => Value::Bool(false),
        Kind::I32 | Kind::I64 | Kind::F64 => Value::from(0),
        Kind::M(index) => match message(usize::from(index))?.special {
            Special::Quantity => Value::String("0".into()),
            Special::StringList => Value::Array(Vec::new()),
            _ => Value::Object(Map::new()),
        },
    })
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn expect_wire(field: &Field, actual: WireType, expected: WireType) -> Result<(), ProtobufError> {
    if actual == expected {
        Ok(())
    } else {
        Err(ProtobufError::Malformed(format!(
            "field {} (#{}) has wire type {actual:?}, expected {expected:?}",
            field.json, field.tag
        )))
    }
}

fn take<'a>(buf: &mut &'a [u8], len: usize) -> Result<&'a [u8], ProtobufError> {
    if buf.len() < len {
        return Err(ProtobufError::Malformed("unexpected end of message".into()));
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Ok(head)
}

fn take_len<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], ProtobufError> {
    let len = decode_varint(buf)?;
    let len =
        usize::try_from(len).map_err(|_| ProtobufError::Malformed("length overflows".into()))?;
    take(buf, len)
}

/// Go strings may hold invalid UTF-8; its JSON encoder writes U+FFFD for it, and so do we.
fn take_string(buf: &mut &[u8]) -> Result<String, ProtobufError> {
    Ok(String::from_utf8_lossy(take_len(buf)?).into_owned())
}

fn skip(buf: &mut &[u8], wire: WireType) -> Result<(), ProtobufError> {
    match wire {
        WireType::Varint => {
            decode_varint(buf)?;
        }
        WireType::SixtyFourBit => {
            take(buf, 8)?;
        }
        WireType::ThirtyTwoBit => {
            take(buf, 4)?;
        }
        WireType::LengthDelimited => {
            take_len(buf)?;
        }
        // Kubernetes messages never use (deprecated) groups.
        WireType::StartGroup | WireType::EndGroup => {
            return Err(ProtobufError::Malformed("unexpected protobuf group".into()));
        }
    }
    Ok(())
}

/// The last varint value of field `tag` in a small special message.
fn scalar_field(mut buf: &[u8], want: u32) -> Result<Option<u64>, ProtobufError> {
    let mut found = None;
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf)?;
        if tag == want && wire == WireType::Varint {
            found = Some(decode_varint(&mut buf)?);
        } else {
            skip(&mut buf, wire)?;
        }
    }
    Ok(found)
}

/// The last length-delimited value of field `tag` in a small special message.
fn bytes_field(mut buf: &[u8], want: u32) -> Result<Option<&[u8]>, ProtobufError> {
    let mut found = None;
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf)?;
        if tag == want && wire == WireType::LengthDelimited {
            found = Some(take_len(&mut buf)?);
        } else {
            skip(&mut buf, wire)?;
        }
    }
    Ok(found)
}

fn string_field(buf: &[u8], want: u32) -> Result<Option<String>, ProtobufError> {
    Ok(bytes_field(buf, want)?.map(|b| String::from_utf8_lossy(b).into_owned()))
}

#[cfg(test)]
mod tests;
