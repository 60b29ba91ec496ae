//! Patch engines of the simulated API server: pure functions over `serde_json::Value`.
//!
//! - [`merge_patch`]: RFC 7386 JSON merge patch (`application/merge-patch+json`).
//! - [`json_patch()`]: RFC 6902 JSON patch (`application/json-patch+json`), atomic.
//! - [`strategic_merge_patch`]: Kubernetes strategic merge patch
//!   (`application/strategic-merge-patch+json`) for built-in types.
//! - [`apply()`]: server-side apply (`application/apply-patch+yaml`) with `managedFields`.
//! - [`track_update`]: `managedFields` bookkeeping for every non-apply write.
//!
//! How the HTTP layer uses them, by `Content-Type` of a `PATCH`:
//! - `application/merge-patch+json`: [`merge_patch`] then [`track_update`].
//! - `application/json-patch+json`: [`json_patch()`] (error → [`PatchError::status_code`]) then
//!   [`track_update`].
//! - `application/strategic-merge-patch+json`: 415 unless [`strategic_supported`], else
//!   [`strategic_merge_patch`] with [`builtin_list_keys`] then [`track_update`].
//! - `application/apply-patch+yaml` (YAML converted to JSON): [`apply()`]; the result already
//!   carries its `managedFields` ([`ApplyError::Conflict`] → 409, [`ApplyError::Invalid`] → 400).
//!
//! Creates and updates call [`track_update`] too (`old = None` for a create).
//!
//! List semantics (which lists are merged per element and by which keys) come from a
//! [`ListKeys`] implementation: [`BuiltinListKeys`] for built-in kinds, a CRD schema backed
//! implementation (in `crate::schema`) for custom resources.

pub mod apply;
pub mod builtin;
pub mod fields;
pub mod json;
pub mod merge;
pub mod strategic;

pub use apply::{
    ApplyError, ApplyOptions, Conflict, Conflicts, UpdateOptions, apply, track_update,
};
pub use builtin::{BuiltinListKeys, builtin_list_keys, strategic_supported};
pub use fields::FieldSet;
pub use json::json_patch;
pub use merge::merge_patch;
pub use strategic::strategic_merge_patch;

use serde_json::Value;

/// How the elements of a list are identified when merging and when tracking field ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// An associative list: elements are objects identified by the values of these key fields
    /// (`x-kubernetes-list-type: map` + `x-kubernetes-list-map-keys`, or a `patchMergeKey`).
    /// For strategic merge patch only the first key is used, as Kubernetes' `patchMergeKey`
    /// names a single field.
    Map(Vec<String>),
    /// A list of scalars treated as a set (`x-kubernetes-list-type: set`, or
    /// `patchStrategy: merge` on a list of scalars such as `metadata.finalizers`).
    Set,
    /// The list is one value: replaced whole and owned whole.
    Atomic,
}

/// Source of list semantics for one resource type.
///
/// `path` is the sequence of field names from the object root to the list, list elements
/// being transparent: the containers of a Deployment are at
/// `["spec", "template", "spec", "containers"]` and the env of any of them at
/// `["spec", "template", "spec", "containers", "env"]`. Keys of free-form maps
/// (`additionalProperties`) appear as ordinary segments.
pub trait ListKeys {
    /// The semantics of the list at `path`, or `None` when unknown (treated as atomic).
    fn list_type(&self, path: &[&str]) -> Option<ListType>;

    /// The semantics a strategic merge patch uses for the list at `path`.
    ///
    /// Kubernetes' `patchStrategy`/`patchMergeKey` tags occasionally differ from the
    /// server-side apply list type (e.g. `status.addresses` of a Node is merged by `type`
    /// but atomic for apply), hence a separate hook; by default the same as [`Self::list_type`].
    fn strategic_list_type(&self, path: &[&str]) -> Option<ListType> {
        self.list_type(path)
    }

    /// Whether the object at `path` is an atomic map/struct (`x-kubernetes-map-type: atomic`,
    /// `+structType=atomic`): replaced whole by apply and owned whole.
    fn map_is_atomic(&self, path: &[&str]) -> bool {
        let _ = path;
        false
    }

    /// Default value of a list map key field, used when an element omits it (e.g. the
    /// `protocol` of a container port defaults to `TCP`).
    fn map_key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        let _ = (path, key);
        None
    }
}

/// A [`ListKeys`] that knows nothing: every list is atomic, every map granular.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoListKeys;

impl ListKeys for NoListKeys {
    fn list_type(&self, _path: &[&str]) -> Option<ListType> {
        None
    }
}

/// Wraps a type's [`ListKeys`] with the semantics of `metadata` shared by every kind, so a
/// CRD schema implementation does not have to know them.
pub(crate) struct WithMetadata<'a>(pub(crate) &'a dyn ListKeys);

impl WithMetadata<'_> {
    fn metadata_list(path: &[&str]) -> Option<Option<ListType>> {
        match path {
            ["metadata", "finalizers"] => Some(Some(ListType::Set)),
            ["metadata", "ownerReferences"] => Some(Some(ListType::Map(vec!["uid".into()]))),
            ["metadata", "managedFields"] => Some(Some(ListType::Atomic)),
            ["metadata", ..] => Some(None),
            _ => None,
        }
    }
}

impl ListKeys for WithMetadata<'_> {
    fn list_type(&self, path: &[&str]) -> Option<ListType> {
        match Self::metadata_list(path) {
            Some(t) => t,
            None => self.0.list_type(path),
        }
    }

    fn strategic_list_type(&self, path: &[&str]) -> Option<ListType> {
        match Self::metadata_list(path) {
            Some(t) => t,
            None => self.0.strategic_list_type(path),
        }
    }

    fn map_is_atomic(&self, path: &[&str]) -> bool {
        match path {
            ["metadata", ..] => false,
            _ => self.0.map_is_atomic(path),
        }
    }

    fn map_key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        match path {
            ["metadata", ..] => None,
            _ => self.0.map_key_default(path, key),
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is malformed (HTTP 400 BadRequest).
    #[error("{0}")]
    BadRequest(String),
    /// The patch is well-formed but cannot be applied to this object, e.g. a failed JSON
    /// patch `test` operation or a missing path (HTTP 422 UnprocessableEntity).
    #[error("{0}")]
    Unprocessable(String),
}

impl PatchError {
    /// The HTTP status code the API server answers with for this error.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::BadRequest(_) => 400,
            PatchError::Unprocessable(_) => 422,
        }
    }
}
