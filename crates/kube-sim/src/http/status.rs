//! `Status` errors: every failure the API server reports, in the shape of `meta/v1 Status`.
//!
//! Messages follow kube-apiserver's wording, because clients (kubectl, kube-rs users) show them
//! verbatim and tests match on them.

use serde_json::{Value, json};

use crate::schema::Cause;

/// A failed API request; becomes a `Status` object with the matching HTTP code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 404: the object (or the resource type) does not exist.
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// API group of the resource (`""` for core).
        group: String,
        /// Plural resource name, e.g. `configmaps`.
        resource: String,
        /// Object name.
        name: String,
    },
    /// 404 for a path that names no known resource or route.
    #[error("the server could not find the requested resource")]
    NoRoute,
    /// 409: create of an existing name.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// API group of the resource.
        group: String,
        /// Plural resource name.
        resource: String,
        /// Object name.
        name: String,
    },
    /// 409: optimistic-concurrency or precondition failure, or an apply conflict.
    #[error("{message}")]
    Conflict {
        /// API group of the resource.
        group: String,
        /// Plural resource name.
        resource: String,
        /// Object name.
        name: String,
        /// Full message.
        message: String,
        /// Causes (apply conflicts list the conflicting fields).
        causes: Vec<Cause>,
    },
    /// 422: the object failed validation.
    #[error(
        "{kind} \"{name}\" is invalid: {}",
        crate::schema::invalid_message(causes)
    )]
    Invalid {
        /// API group of the resource.
        group: String,
        /// Kind of the object, e.g. `ConfigMap`.
        kind: String,
        /// Object name.
        name: String,
        /// One cause per invalid field.
        causes: Vec<Cause>,
    },
    /// 400: the request could not be understood.
    #[error("{0}")]
    BadRequest(String),
    /// 405: the verb is not supported by this resource.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 410: the requested resourceVersion or continue token is too old.
    #[error("{0}")]
    Gone(String),
    /// 410 with reason `Expired` (continue tokens, watch history).
    #[error("{0}")]
    Expired(String),
    /// 401: no valid credentials.
    #[error("Unauthorized")]
    Unauthorized,
    /// 403: the request is understood but refused.
    #[error("{message}")]
    Forbidden {
        /// API group of the resource.
        group: String,
        /// Plural resource name.
        resource: String,
        /// Object name.
        name: String,
        /// Full message.
        message: String,
    },
    /// 415: the request body's content type is not supported here.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 406: the requested response type cannot be produced.
    #[error("{0}")]
    NotAcceptable(String),
    /// 413: the body or the resulting object is too large.
    #[error("{0}")]
    RequestEntityTooLarge(String),
    /// 504: the requested resourceVersion is newer than the server's.
    #[error("{0}")]
    Timeout(String),
    /// 500: a bug or an unexpected state.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Gone(_) | ApiError::Expired(_) => 410,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::NotAcceptable(_) => 406,
            ApiError::RequestEntityTooLarge(_) => 413,
            ApiError::Timeout(_) => 504,
            ApiError::Internal(_) => 500,
        }
    }

    /// The `Status.reason` (a `metav1.StatusReason`).
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::Gone(_) => "Gone",
            ApiError::Expired(_) => "Expired",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::RequestEntityTooLarge(_) => "RequestEntityTooLarge",
            ApiError::Timeout(_) => "Timeout",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// Whether this is a 404 for an object.
    pub fn is_not_found(&self) -> bool {
        self.code() == 404
    }

    /// Whether this is a 409 (AlreadyExists or Conflict).
    pub fn is_conflict(&self) -> bool {
        self.code() == 409
    }

    /// A 422 with a single cause.
    pub fn invalid(
        group: &str,
        kind: &str,
        name: &str,
        field: &str,
        reason: &str,
        message: String,
    ) -> Self {
        ApiError::Invalid {
            group: group.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            causes: vec![Cause {
                reason: reason.to_owned(),
                message,
                field: field.to_owned(),
            }],
        }
    }

    /// The standard optimistic-concurrency conflict.
    pub fn modified(group: &str, resource: &str, name: &str) -> Self {
        let qualified = qualified(group, resource);
        ApiError::Conflict {
            group: group.to_owned(),
            resource: resource.to_owned(),
            name: name.to_owned(),
            message: format!(
                "Operation cannot be fulfilled on {qualified} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
            causes: Vec::new(),
        }
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::NotFound {
                group,
                resource,
                name,
            }
            | ApiError::AlreadyExists {
                group,
                resource,
                name,
            }
            | ApiError::Forbidden {
                group,
                resource,
                name,
                ..
            } => Some(json!({"name": name, "group": group, "kind": resource})),
            ApiError::Conflict {
                group,
                resource,
                name,
                causes,
                ..
            } => {
                let mut d = json!({"name": name, "group": group, "kind": resource});
                if !causes.is_empty() {
                    d["causes"] = causes_json(causes);
                }
                Some(d)
            }
            ApiError::Invalid {
                group,
                kind,
                name,
                causes,
            } => Some(
                json!({"name": name, "group": group, "kind": kind, "causes": causes_json(causes)}),
            ),
            ApiError::Timeout(_) => Some(
                json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
            ),
            _ => None,
        };
        if let Some(mut d) = details {
            // Like Go's omitempty: empty strings are not serialized.
            if let Some(map) = d.as_object_mut() {
                map.retain(|_, v| v.as_str() != Some(""));
            }
            status["details"] = d;
        }
        status
    }

    /// The human-readable message (what `Display` prints, with group-qualified resources).
    pub fn message(&self) -> String {
        match self {
            ApiError::NotFound {
                group,
                resource,
                name,
            } => format!("{} \"{name}\" not found", qualified(group, resource)),
            ApiError::AlreadyExists {
                group,
                resource,
                name,
            } => format!("{} \"{name}\" already exists", qualified(group, resource)),
            ApiError::Invalid {
                group,
                kind,
                name,
                causes,
            } => {
                let kind = if group.is_empty() {
                    kind.clone()
                } else {
                    format!("{kind}.{group}")
                };
                let msgs: Vec<String> = causes
                    .iter()
                    .map(|c| {
                        if c.field.is_empty() {
                            c.message.clone()
                        } else {
                            format!("{}: {}", c.field, c.message)
                        }
                    })
                    .collect();
                if msgs.len() == 1 {
                    format!("{kind} \"{name}\" is invalid: {}", msgs[0])
                } else {
                    format!("{kind} \"{name}\" is invalid: [{}]", msgs.join(", "))
                }
            }
            other => other.to_string(),
        }
    }
}

fn causes_json(causes: &[Cause]) -> Value {
    Value::Array(
        causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect(),
    )
}

/// `resource.group`, or `resource` for the core group (how Kubernetes names a GroupResource).
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

/// A success `Status` (returned by deletes of most built-in types and by deletecollection).
pub fn success_status(group: &str, resource: &str, name: &str, uid: &str) -> Value {
    let mut details = json!({"name": name, "group": group, "kind": resource, "uid": uid});
    if let Some(map) = details.as_object_mut() {
        map.retain(|_, v| v.as_str() != Some(""));
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_has_standard_shape() {
        let err = ApiError::NotFound {
            group: "apps".into(),
            resource: "deployments".into(),
            name: "web".into(),
        };
        let s = err.to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["details"]["kind"], "deployments");
        assert_eq!(s["details"]["group"], "apps");
    }

    #[test]
    fn invalid_lists_causes_with_fields() {
        let err = ApiError::invalid(
            "",
            "ConfigMap",
            "Bad",
            "metadata.name",
            "FieldValueInvalid",
            "Invalid value: \"Bad\": must be lowercase".into(),
        );
        let s = err.to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
        assert!(s["details"].get("group").is_none());
        assert!(
            s["message"]
                .as_str()
                .unwrap()
                .starts_with("ConfigMap \"Bad\" is invalid: metadata.name:")
        );
    }
}
