//! The one place where errors become gRPC statuses.
//!
//! Handlers return [`ApiError`]; this module decides the code and the details:
//! validation problems become INVALID_ARGUMENT with one `google.rpc.BadRequest` field
//! violation per path, Kubernetes API errors are mapped by HTTP code, and a slow
//! management cluster becomes UNAVAILABLE rather than a hung call.

use std::time::Duration;

use fledge_core::validate::FieldError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request or the spec is invalid; one entry per field path.
    #[error("invalid {kind} {name:?}: {}", summary(.errors))]
    Invalid {
        /// `WorkloadCluster` or `ClusterProfile`.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// Every problem, with its path.
        errors: Vec<FieldError>,
    },
    /// The object does not exist in the caller's tenant.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// The kind.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// The name is taken by an object with a different spec.
    #[error("{kind} {name:?} already exists with a different spec")]
    AlreadyExists {
        /// The kind.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// The caller's expected generation is not the stored one.
    #[error(
        "{kind} {name:?} is at generation {actual}, not the expected {expected}; read it again"
    )]
    StaleGeneration {
        /// The kind.
        kind: &'static str,
        /// The name.
        name: String,
        /// What the caller sent.
        expected: i64,
        /// What is stored.
        actual: i64,
    },
    /// The object's state forbids the call.
    #[error("{kind} {name:?}: {reason}")]
    FailedPrecondition {
        /// The kind.
        kind: &'static str,
        /// The name.
        name: String,
        /// Why, for the caller.
        reason: String,
    },
    /// A call to the management cluster failed.
    #[error("{verb} {kind} {name:?}: {source}")]
    Kube {
        /// What was being done (`get`, `create`...).
        verb: &'static str,
        /// The kind.
        kind: &'static str,
        /// The name, or the namespace for lists.
        name: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// The management cluster did not answer in time.
    #[error("{verb} {kind} {name:?}: the management cluster did not answer within {}s", .after.as_secs())]
    Timeout {
        /// What was being done.
        verb: &'static str,
        /// The kind.
        kind: &'static str,
        /// The name.
        name: String,
        /// The deadline that passed.
        after: Duration,
    },
}

fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// An INVALID_ARGUMENT with a single field problem.
    pub fn field(kind: &'static str, name: &str, path: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            kind,
            name: name.to_string(),
            errors: vec![FieldError::new(path, reason)],
        }
    }

    /// Whether this is a Kubernetes 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
            || matches!(self, Self::Kube { source: kube::Error::Api(status), .. } if status.code == 404)
    }

    /// Whether this is a Kubernetes 409 (already exists or conflict).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Kube { source: kube::Error::Api(status), .. } if status.code == 409)
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let message = err.to_string();
        match &err {
            ApiError::Invalid { errors, .. } => {
                let mut details = ErrorDetails::new();
                for error in errors {
                    details.add_bad_request_violation(error.path.clone(), error.reason.clone());
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::NotFound { .. } => Status::not_found(message),
            ApiError::AlreadyExists { .. } => Status::already_exists(message),
            ApiError::StaleGeneration { .. } => Status::aborted(message),
            ApiError::FailedPrecondition { .. } => Status::failed_precondition(message),
            ApiError::Timeout { .. } => Status::unavailable(message),
            ApiError::Kube {
                source, kind, name, ..
            } => match source {
                kube::Error::Api(status) => match status.code {
                    404 => Status::not_found(format!("{kind} {name:?} not found")),
                    // A conflict is a lost race with another writer: the caller retries.
                    409 => Status::aborted(message),
                    // An expired list continue token or watch revision.
                    410 => Status::aborted(message),
                    400 | 422 => Status::invalid_argument(message),
                    429 | 500..=599 => Status::unavailable(message),
                    _ => Status::internal(message),
                },
                // Transport errors: the management cluster is unreachable right now.
                _ => Status::unavailable(message),
            },
        }
    }
}

/// Runs a Kubernetes call under the API deadline, naming the object in any error.
///
/// # Errors
/// [`ApiError::Kube`] for a failed call, [`ApiError::Timeout`] when `after` passed first.
pub async fn kube_call<T>(
    after: Duration,
    verb: &'static str,
    kind: &'static str,
    name: &str,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(after, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(ApiError::Kube {
            verb,
            kind,
            name: name.to_string(),
            source,
        }),
        Err(_) => Err(ApiError::Timeout {
            verb,
            kind,
            name: name.to_string(),
            after,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> ApiError {
        ApiError::Kube {
            verb: "get",
            kind: "WorkloadCluster",
            name: "edge-1".into(),
            source: kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn kube_errors_map_to_grpc_codes() {
        for (http, want) in [
            (404, Code::NotFound),
            (409, Code::Aborted),
            (410, Code::Aborted),
            (422, Code::InvalidArgument),
            (503, Code::Unavailable),
            (403, Code::Internal),
        ] {
            assert_eq!(Status::from(api_error(http)).code(), want, "HTTP {http}");
        }
    }

    #[test]
    fn invalid_specs_carry_one_violation_per_path() {
        let err = ApiError::Invalid {
            kind: "WorkloadCluster",
            name: "edge-1".into(),
            errors: vec![
                FieldError::new("spec.controlPlane.replicas", "must be odd"),
                FieldError::new("spec.workers[0].name", "must not be empty"),
            ],
        };
        let status = Status::from(err);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<String> = details
            .bad_request()
            .expect("bad request details")
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(
            fields,
            ["spec.controlPlane.replicas", "spec.workers[0].name"]
        );
    }
}
