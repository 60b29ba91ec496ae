//! Reading YAML into typed documents: the YAML itself, `apiVersion`/`kind`, the structural
//! schema (unknown fields, types, required fields) and finally serde.

use std::sync::LazyLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResourceExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::schema::{self, describe};
use super::{Document, FieldError};
use crate::spec::{API_VERSION, ClusterProfile, WorkloadCluster};

/// One non-empty document of a file, loaded or not.
pub(crate) struct Loaded {
    /// `Kind/name` when both are strings, otherwise `documents[i]`; what multi-document
    /// errors are prefixed with.
    pub(crate) label: String,
    pub(crate) result: Result<Document, Vec<FieldError>>,
}

/// Splits `yaml` into its documents and loads each one on its own, so that one broken
/// document does not hide the errors of the others.
pub(crate) fn load_all(yaml: &str) -> Result<Vec<Loaded>, Vec<FieldError>> {
    // Duplicate keys are an error here (serde-saphyr's default), as with kubectl. The
    // message is rendered for users (no snippet, no hints about parser options); it
    // carries the line and column.
    let values = serde_saphyr::from_multiple::<Value>(yaml).map_err(|err| {
        let message = err
            .without_snippet()
            .render_with_formatter(&serde_saphyr::UserMessageFormatter);
        vec![FieldError::new("", format!("invalid YAML: {message}"))]
    })?;
    if values.is_empty() {
        return Err(vec![FieldError::new("", "contains no documents")]);
    }
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(index, value)| Loaded {
            label: label(&value, index),
            result: load_one(value),
        })
        .collect())
}

/// Prefixes the errors of a document of a multi-document file with its label.
pub(crate) fn prefix(label: &str, errors: Vec<FieldError>) -> impl Iterator<Item = FieldError> {
    errors.into_iter().map(move |err| {
        let path = if err.path.is_empty() {
            label.to_string()
        } else {
            format!("{label}: {}", err.path)
        };
        FieldError::new(path, err.reason)
    })
}

fn label(value: &Value, index: usize) -> String {
    let kind = value.get("kind").and_then(Value::as_str);
    let name = value.pointer("/metadata/name").and_then(Value::as_str);
    match (kind, name) {
        (Some(kind), Some(name)) if !kind.is_empty() && !name.is_empty() => {
            format!("{kind}/{name}")
        }
        _ => format!("documents[{index}]"),
    }
}

fn load_one(value: Value) -> Result<Document, Vec<FieldError>> {
    let Value::Object(object) = &value else {
        return Err(vec![FieldError::new(
            "",
            format!(
                "must be a mapping with apiVersion, kind, metadata and spec, got {}",
                describe(&value)
            ),
        )]);
    };
    let mut errors = Vec::new();
    match object.get("apiVersion") {
        Some(Value::String(api_version)) if api_version == API_VERSION => {}
        Some(Value::String(api_version)) => errors.push(FieldError::new(
            "apiVersion",
            format!("must be {API_VERSION}, got {api_version:?}"),
        )),
        Some(other) => errors.push(FieldError::new(
            "apiVersion",
            format!("must be {API_VERSION}, got {}", describe(other)),
        )),
        None => errors.push(FieldError::new("apiVersion", "required field missing")),
    }
    let kind = match object.get("kind") {
        Some(Value::String(kind)) if kind == "WorkloadCluster" || kind == "ClusterProfile" => {
            Some(kind.as_str())
        }
        Some(other) => {
            errors.push(FieldError::new(
                "kind",
                format!(
                    "must be WorkloadCluster or ClusterProfile, got {}",
                    describe(other)
                ),
            ));
            None
        }
        None => {
            errors.push(FieldError::new("kind", "required field missing"));
            None
        }
    };
    // Without a known kind there is no schema to hold the rest of the document to.
    let Some(kind) = kind else {
        return Err(errors);
    };
    let crd_schema = match kind {
        "WorkloadCluster" => &*WORKLOAD_CLUSTER_SCHEMA,
        _ => &*CLUSTER_PROFILE_SCHEMA,
    };
    let (crd_schema, meta_schema) = match (crd_schema, &*OBJECT_META_SCHEMA) {
        (Ok(crd_schema), Ok(meta_schema)) => (crd_schema, meta_schema),
        (Err(reason), _) | (_, Err(reason)) => {
            errors.push(FieldError::new("", reason.clone()));
            return Err(errors);
        }
    };
    // The CRD schema covers only `spec` and `status`: the API server handles the type
    // fields itself (checked above) and validates `metadata` as an ObjectMeta, as done here.
    let mut rest = object.clone();
    rest.remove("apiVersion");
    rest.remove("kind");
    let metadata = rest.remove("metadata");
    schema::check(&Value::Object(rest), crd_schema, "", &mut errors);
    match metadata {
        Some(metadata) => schema::check(&metadata, meta_schema, "metadata", &mut errors),
        None => errors.push(FieldError::new("metadata", "required field missing")),
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // The schema walk catches nearly everything; serde is the last word (one error at most).
    match kind {
        "WorkloadCluster" => typed::<WorkloadCluster>(value).map(Document::WorkloadCluster),
        _ => typed::<ClusterProfile>(value).map(Document::ClusterProfile),
    }
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, Vec<FieldError>> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        // serde_path_to_error writes the root as ".".
        let path = if path == "." { String::new() } else { path };
        vec![FieldError::new(path, err.into_inner().to_string())]
    })
}

static WORKLOAD_CLUSTER_SCHEMA: LazyLock<Result<Value, String>> =
    LazyLock::new(|| crd_schema(serde_json::to_value(WorkloadCluster::crd())));
static CLUSTER_PROFILE_SCHEMA: LazyLock<Result<Value, String>> =
    LazyLock::new(|| crd_schema(serde_json::to_value(ClusterProfile::crd())));
static OBJECT_META_SCHEMA: LazyLock<Result<Value, String>> = LazyLock::new(|| {
    // The same generator settings kube-derive uses for CRD schemas, so that ObjectMeta
    // comes out structural (inlined, `nullable`) like the spec does.
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .into_generator();
    serde_json::to_value(generator.into_root_schema_for::<ObjectMeta>())
        .map_err(|err| format!("internal error: ObjectMeta schema: {err}"))
});

fn crd_schema(crd: Result<Value, serde_json::Error>) -> Result<Value, String> {
    let crd = crd.map_err(|err| format!("internal error: CRD schema: {err}"))?;
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
        .cloned()
        .ok_or_else(|| "internal error: the CRD has no openAPIV3Schema".to_string())
}
