//! The CustomResourceDefinitions of the manager's state: `WorkloadCluster` and
//! `ClusterProfile`, generated from the spec types of `fledge-core`, printed by
//! `fledge-manager crds`, kept in `deploy/crds/`, and installed by `serve` on start.

use std::time::Duration;

use fledge_core::names::MANAGER_FIELD_MANAGER;
use fledge_core::spec::{ClusterProfile, WorkloadCluster};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, CustomResourceExt};

/// Errors while installing the CRDs.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The server-side apply of a CRD failed.
    #[error("applying CustomResourceDefinition {name}: {source}")]
    Apply {
        /// The CRD's name.
        name: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// Waiting for a CRD to be Established failed.
    #[error("waiting for CustomResourceDefinition {name} to be Established: {reason}")]
    Establish {
        /// The CRD's name.
        name: String,
        /// Why the wait ended.
        reason: String,
    },
    /// A CRD could not be turned into JSON (cannot happen with derived CRDs).
    #[error("serializing CustomResourceDefinition {name}: {source}")]
    Serialize {
        /// The CRD's name.
        name: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// The CRDs with the file name each has under `deploy/crds/`, in a fixed order.
pub fn all() -> [(&'static str, CustomResourceDefinition); 2] {
    [
        ("workloadclusters.yaml", WorkloadCluster::crd()),
        ("clusterprofiles.yaml", ClusterProfile::crd()),
    ]
}

/// One CRD as a YAML document (deterministic: same types, same bytes).
///
/// # Errors
/// The CRD cannot be serialized (never for derived CRDs).
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, CrdError> {
    let value = serde_json::to_value(crd).map_err(|source| CrdError::Serialize {
        name: crd.metadata.name.clone().unwrap_or_default(),
        source,
    })?;
    Ok(fledge_core::render::to_yaml_stream(&[value]))
}

/// Every CRD as one multi-document YAML stream.
///
/// # Errors
/// See [`to_yaml`].
pub fn all_yaml() -> Result<String, CrdError> {
    let docs = all()
        .iter()
        .map(|(_, crd)| to_yaml(crd))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(docs.join("---\n"))
}

/// Installs or updates the CRDs with server-side apply and waits until each is Established.
///
/// # Errors
/// An apply failed, or a CRD was not Established within `timeout`.
pub async fn install(client: &Client, timeout: Duration) -> Result<(), CrdError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    // Forcing takes over fields another manager (an older `kubectl apply`) set: the manager
    // owns these CRDs unless the admin passes --skip-crd-install.
    let params = PatchParams::apply(MANAGER_FIELD_MANAGER).force();
    for (_, crd) in all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        tracing::info!(crd = %name, "Applying CustomResourceDefinition");
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|source| CrdError::Apply {
                name: name.clone(),
                source,
            })?;
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                return Err(CrdError::Establish {
                    name,
                    reason: err.to_string(),
                });
            }
            Err(_) => {
                return Err(CrdError::Establish {
                    name,
                    reason: format!("not Established after {}s", timeout.as_secs()),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/crds/` must match the types; regenerate with the command in the message.
    #[test]
    fn deploy_crds_are_up_to_date() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
        for (file, crd) in all() {
            let want = to_yaml(&crd).expect("serializes");
            let got = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(
                got == want,
                "deploy/crds/{file} is stale or missing; regenerate with \
                 `cargo run -p fledge-manager -- crds --output-dir deploy/crds`"
            );
        }
    }

    #[test]
    fn printer_columns_are_simple_field_paths() {
        // kubectl evaluates printer columns as JSONPath over the object; functions such as
        // `.length` are not supported and make `kubectl get` fail, so only plain field paths.
        for (file, crd) in all() {
            for version in &crd.spec.versions {
                for column in version.additional_printer_columns.iter().flatten() {
                    let path = &column.json_path;
                    assert!(path.starts_with('.'), "{file}: {path}");
                    assert!(
                        path[1..].split('.').all(|segment| !segment.is_empty()
                            && segment
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                            && segment != "length"),
                        "{file}: printer column {} has an unsupported JSONPath {path}",
                        column.name
                    );
                }
            }
        }
    }

    #[test]
    fn crds_print_deterministically_as_two_documents() {
        let yaml = all_yaml().expect("serializes");
        assert_eq!(yaml, all_yaml().expect("serializes"));
        assert_eq!(yaml.matches("kind: CustomResourceDefinition").count(), 2);
    }
}
