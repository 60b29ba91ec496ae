//! Types of the generated field table (`schema.rs`).

/// One protobuf message type.
pub(super) struct Message {
    /// OpenAPI definition name (`io.k8s.api.core.v1.Secret`), for error messages.
    pub name: &'static str,
    /// Messages whose JSON form is not a plain object.
    pub special: Special,
    pub fields: &'static [Field],
}

/// Messages the decoder converts by hand, because their Go type has a custom JSON form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Special {
    None,
    /// `metav1.Time` `{seconds, nanos}`: RFC 3339 with second precision.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `metav1.FieldsV1` `{Raw}`: the raw bytes are JSON.
    FieldsV1,
    /// `resource.Quantity` `{string}`: the string.
    Quantity,
    /// `intstr.IntOrString` `{type, intVal, strVal}`: a number or a string.
    IntOrString,
    /// `runtime.RawExtension` `{raw}`: embedded JSON (or a nested protobuf envelope).
    RawExtension,
    /// A Go `[]string` typedef (`{items: [...]}` on the wire), an array in JSON.
    StringList,
}

/// The scalar or message type of a field.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Str,
    Bool,
    I32,
    I64,
    F64,
    Bytes,
    /// Index into `MESSAGES`.
    M(u16),
}

/// How a field appears in JSON, i.e. what Go's `encoding/json` would do with it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Shape {
    /// `omitempty` value field: dropped when it holds the zero value.
    Omit,
    /// No `omitempty`: emitted whenever it is on the wire, zero or not.
    Req,
    /// `omitempty` pointer: emitted whenever it is on the wire (a set zero counts).
    Ptr,
    /// Repeated field: a JSON array, dropped when empty.
    Rep,
    /// `map<string, kind>`: a JSON object, dropped when empty.
    Map,
    /// Go embedded struct: its fields are merged into the enclosing object.
    Inline,
}

/// One field of a message.
pub(super) struct Field {
    pub tag: u32,
    pub json: &'static str,
    pub kind: Kind,
    pub shape: Shape,
}

/// Shorthand used by the generated table.
pub(super) const fn f(tag: u32, json: &'static str, kind: Kind, shape: Shape) -> Field {
    Field {
        tag,
        json,
        kind,
        shape,
    }
}
