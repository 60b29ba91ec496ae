//! Server-side apply of untyped objects, with the API resource of each kind resolved once
//! (a static table for the Cluster API, CAPV and Flux kinds, discovery for anything an add-on
//! brings).

use std::collections::HashMap;
use std::sync::Mutex;

use fledge_core::names;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::discovery::Scope;
use kube::{Api, Client};
use serde_json::Value;

/// `cluster.x-k8s.io/v1beta2`.
pub const CAPI: (&str, &str) = ("cluster.x-k8s.io", "v1beta2");
/// `controlplane.cluster.x-k8s.io/v1beta2`.
pub const CONTROL_PLANE: (&str, &str) = ("controlplane.cluster.x-k8s.io", "v1beta2");
/// `bootstrap.cluster.x-k8s.io/v1beta2`.
pub const BOOTSTRAP: (&str, &str) = ("bootstrap.cluster.x-k8s.io", "v1beta2");
/// `infrastructure.cluster.x-k8s.io/v1beta2`.
pub const INFRA: (&str, &str) = ("infrastructure.cluster.x-k8s.io", "v1beta2");
/// `helm.toolkit.fluxcd.io/v2`.
pub const HELM: (&str, &str) = ("helm.toolkit.fluxcd.io", "v2");

/// The API resource of a namespaced CRD kind whose plural is its lowercase name plus `s`.
pub fn resource(gv: (&str, &str), kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_ascii_lowercase());
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(gv.0, gv.1, kind), &plural)
}

/// A reference to an applied object, as recorded in inventories.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct ObjRef {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Namespace; empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Why an object could not be applied or deleted.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The object has no apiVersion, kind or name.
    #[error("object without apiVersion, kind or metadata.name")]
    Malformed,
    /// The kind is unknown to the API server.
    #[error("{kind} ({api_version}) is not served by the cluster: {source}")]
    UnknownKind {
        /// apiVersion.
        api_version: String,
        /// kind.
        kind: String,
        /// Discovery's error.
        #[source]
        source: kube::Error,
    },
    /// The API refused the write.
    #[error("{what}: {source}")]
    Api {
        /// The object.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    /// The API server could not be reached or the connection broke: retry later rather
    /// than report the object as failed.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Malformed => false,
            ApplyError::UnknownKind { source, .. } | ApplyError::Api { source, .. } => {
                !matches!(source, kube::Error::Api(_))
            }
        }
    }
}

/// Applies and deletes untyped objects; caches discovery.
pub struct Applier {
    client: Client,
    resources: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

impl Applier {
    /// An applier over `client`.
    pub fn new(client: Client) -> Self {
        Applier {
            client,
            resources: Mutex::new(HashMap::new()),
        }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The resource of `apiVersion`/`kind` and whether it is namespaced.
    ///
    /// # Errors
    /// [`ApplyError::UnknownKind`] when discovery does not find it.
    pub async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), ApplyError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.lock().get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = split_api_version(api_version);
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|source| ApplyError::UnknownKind {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
                source,
            })?;
        let namespaced = caps.scope == Scope::Namespaced;
        self.lock().insert(key, (resource.clone(), namespaced));
        Ok((resource, namespaced))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (ApiResource, bool)>> {
        self.resources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The API of `r`'s kind in its namespace.
    async fn api_for(&self, r: &ObjRef) -> Result<Api<DynamicObject>, ApplyError> {
        let (resource, namespaced) = self.resolve(&r.api_version, &r.kind).await?;
        Ok(if namespaced {
            Api::namespaced_with(self.client.clone(), &r.namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        })
    }

    /// The reference of `obj`, with its namespace defaulted to `default` for namespaced
    /// kinds (cleared for cluster-scoped ones), written back into `obj`.
    ///
    /// # Errors
    /// [`ApplyError::Malformed`], [`ApplyError::UnknownKind`].
    pub async fn normalize(&self, obj: &mut Value) -> Result<ObjRef, ApplyError> {
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let api_version = text(&obj["apiVersion"]).ok_or(ApplyError::Malformed)?;
        let kind = text(&obj["kind"]).ok_or(ApplyError::Malformed)?;
        let name = text(&obj["metadata"]["name"]).ok_or(ApplyError::Malformed)?;
        let (_, namespaced) = self.resolve(&api_version, &kind).await?;
        let namespace = if namespaced {
            let ns = text(&obj["metadata"]["namespace"]).unwrap_or_else(|| "default".to_owned());
            obj["metadata"]["namespace"] = Value::String(ns.clone());
            ns
        } else {
            if let Some(meta) = obj["metadata"].as_object_mut() {
                meta.remove("namespace");
            }
            String::new()
        };
        Ok(ObjRef {
            api_version,
            kind,
            namespace,
            name,
        })
    }

    /// Server-side apply of `obj` (already [`Applier::normalize`]d), forcing ownership of the
    /// fields it sets (objects moved by the pivot were created by `fledge-manager`).
    ///
    /// # Errors
    /// See [`ApplyError`].
    pub async fn apply(&self, r: &ObjRef, obj: &Value) -> Result<DynamicObject, ApplyError> {
        let api = self.api_for(r).await?;
        api.patch(
            &r.name,
            &PatchParams::apply(names::AGENT_FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(|source| ApplyError::Api {
            what: format!("applying {r}"),
            source,
        })
    }

    /// Reads an object; `None` when absent.
    ///
    /// # Errors
    /// See [`ApplyError`].
    pub async fn get(&self, r: &ObjRef) -> Result<Option<DynamicObject>, ApplyError> {
        let api = self.api_for(r).await?;
        api.get_opt(&r.name)
            .await
            .map_err(|source| ApplyError::Api {
                what: format!("reading {r}"),
                source,
            })
    }

    /// Deletes an object; absent is fine.
    ///
    /// # Errors
    /// See [`ApplyError`].
    pub async fn delete(&self, r: &ObjRef) -> Result<(), ApplyError> {
        let api = self.api_for(r).await?;
        match api.delete(&r.name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(ApplyError::Api {
                what: format!("deleting {r}"),
                source,
            }),
        }
    }
}

/// Lists objects of a namespaced CRD kind in `namespace` with a label selector.
///
/// # Errors
/// The API's error.
pub async fn list(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    selector: &str,
) -> Result<Vec<DynamicObject>, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}
